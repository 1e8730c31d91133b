"""Does the ImageNet-feature metric behave like a perceptual distance? Distortions at equal pixel MSE.

For each reference image, two structure-keeping distortions (a one-pixel shift, a slight Gaussian
blur) are compared with white Gaussian noise scaled to exactly the same pixel MSE: a perceptual
distance should call the shifted and blurred images closer than the noisy one (ratio < 1), where
pixel MSE calls them equal (ratio 1) by construction. References: 16 faces of the ``faces``
generator (seeds 0-15, the images the metric is applied to in an exploration), a photograph (the
public-domain portrait ``grace_hopper.jpg`` shipped with matplotlib, centre-cropped to 64x64) and,
for the grayscale trunk, the 10 shipped Fashion-MNIST samples. Also: the ImageNet class of the
photograph under both input normalisations (the check that the trunk and its weights fit), and the
cost of one residual per input size.

    python benchmarks/metrics.py      # benchmarks/results/metrics.json and the table in docs/metrics.md
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, machine, markdown_table, update_doc_section, write_json  # noqa: E402

from hvp_explore import load_image  # noqa: E402
from hvp_explore.metrics._efficientnet import imagenet_normalize  # noqa: E402
from hvp_explore.data import photo_path, sample_paths  # noqa: E402
from hvp_explore.generators import load_generator  # noqa: E402
from hvp_explore.io.images import crop_resize  # noqa: E402
from hvp_explore.metrics import ClassifierMetric, EfficientNetMetric, PixelMetric, load_efficientnet_lite0  # noqa: E402

DOC = ROOT / "docs" / "metrics.md"
SIGMA_BLUR = 0.7
MILITARY_UNIFORM = 652  # ImageNet class of grace_hopper.jpg


def shift(x: torch.Tensor) -> torch.Tensor:
    """One pixel to the right, the first column repeated."""
    return torch.cat([x[..., :1], x[..., :-1]], dim=-1)


def blur(x: torch.Tensor, sigma: float = SIGMA_BLUR) -> torch.Tensor:
    """Separable Gaussian blur (5 taps, reflect padding)."""
    t = torch.arange(-2, 3, dtype=x.dtype)
    k = torch.exp(-t**2 / (2 * sigma**2))
    k = k / k.sum()
    c = x.shape[1]
    x = F.pad(x, (2, 2, 2, 2), mode="reflect")
    x = F.conv2d(x, k.view(1, 1, 1, 5).repeat(c, 1, 1, 1), groups=c)
    return F.conv2d(x, k.view(1, 1, 5, 1).repeat(c, 1, 1, 1), groups=c)


def matched_noise(x: torch.Tensor, target: torch.Tensor, seed: int) -> torch.Tensor:
    """x plus white Gaussian noise with exactly the pixel MSE of ``target`` against x (per image)."""
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(seed), dtype=x.dtype)
    mse = (target - x).pow(2).flatten(1).mean(1)
    scale = (mse / noise.pow(2).flatten(1).mean(1)).sqrt()
    return x + scale.view(-1, 1, 1, 1) * noise


def ratios(metric, x: torch.Tensor) -> dict:
    """Per image: d(distorted, x) / d(noisy at equal pixel MSE, x), for the shift and the blur."""
    out = {}
    with torch.no_grad():
        for name, fn in (("shift", shift), ("blur", blur)):
            distorted = fn(x)
            noisy = matched_noise(x, distorted, seed=0)
            out[name] = (metric(distorted, x) / metric(noisy, x)).tolist()
    return out


def summary(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "below_one": sum(v < 1 for v in values), "count": len(values)}


def main() -> None:
    torch.set_num_threads(2)
    start = time.perf_counter()
    G = load_generator("faces")
    with torch.no_grad():
        faces = G(torch.randn(16, G.latent_dim, generator=torch.Generator().manual_seed(0)))
    photo = crop_resize(load_image(photo_path(), channels=3), (64, 64))[None]
    fmnist = torch.stack([load_image(p, channels=1) for p in sample_paths()])
    sets = {"faces": faces, "photo": photo, "fashion-mnist": fmnist}
    metrics = {"effnet (resize 128, default)": EfficientNetMetric(), "effnet (no resize)": EfficientNetMetric(resize_to=None),
               "effnet (resize 224)": EfficientNetMetric(resize_to=224), "pixel": PixelMetric(), "fmnist": ClassifierMetric()}
    rows, raw = [], {}
    for mname, metric in metrics.items():
        for sname, images in sets.items():
            if mname == "fmnist" and sname != "fashion-mnist":
                continue  # the Fashion-MNIST trunk is grayscale 32x32 only
            r = ratios(metric, images)
            raw[f"{mname} / {sname}"] = r
            rows.append({"metric": mname, "images": sname, **{f"{k} ratio (median)": summary(v)["median"] for k, v in r.items()},
                         **{f"{k} < noise": f"{summary(v)['below_one']}/{summary(v)['count']}" for k, v in r.items()}})
            print(rows[-1], flush=True)

    net = load_efficientnet_lite0()
    big = crop_resize(load_image(photo_path(), channels=3), (224, 224))[None]
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        p_own = net(imagenet_normalize(big)).softmax(1)[0]
        p_tv = net(((big + 1) / 2 - mean) / std).softmax(1)[0]
    classes = {"checkpoint normalisation (u - 127) / 128": {"top1": int(p_own.argmax()), "p_military_uniform": float(p_own[MILITARY_UNIFORM])},
               "torchvision mean/std": {"top1": int(p_tv.argmax()), "p_military_uniform": float(p_tv[MILITARY_UNIFORM])}}
    print(classes, flush=True)

    cost = []
    for mname in ("effnet (no resize)", "effnet (resize 128, default)", "effnet (resize 224)"):
        metric = metrics[mname]
        with torch.no_grad():
            metric.residual(faces, faces[:1])
            t0 = time.perf_counter()
            for _ in range(3):
                r = metric.residual(faces, faces[:1])
            seconds = (time.perf_counter() - t0) / 3 / faces.shape[0]
        cost.append({"metric": mname, "residual size": r.shape[1], "ms per 64x64 image": 1e3 * seconds})
    payload = {"command": "python benchmarks/metrics.py", "machine": machine(), "blur_sigma": SIGMA_BLUR, "rows": rows,
               "ratios": raw, "photo_class": classes, "cost": cost, "seconds": time.perf_counter() - start}
    write_json("metrics", payload)
    table = markdown_table(rows, [(c, c) for c in ("metric", "images", "shift ratio (median)", "shift < noise", "blur ratio (median)",
                                                    "blur < noise")])
    cost_table = markdown_table(cost, [(c, c) for c in ("metric", "residual size", "ms per 64x64 image")])
    md = (f"Measured by `python benchmarks/metrics.py` ({payload['machine']['date']}, torch {payload['machine']['torch']}, "
          f"{payload['seconds']:.0f} s). Ratio = d(distorted, x) / d(x + white noise of the same pixel MSE, x), median over "
          f"the images; '< noise' counts the images where the distortion is the closer one. Blur: Gaussian, sigma {SIGMA_BLUR} px.\n\n"
          f"{table}\n\nCost of one residual (forward pass of the trunk), 16 faces at once:\n\n{cost_table}\n\n"
          f"ImageNet class of the photograph (224x224): with the checkpoint's normalisation top-1 is class "
          f"{classes['checkpoint normalisation (u - 127) / 128']['top1']} (military uniform, p = "
          f"{classes['checkpoint normalisation (u - 127) / 128']['p_military_uniform']:.2f}); with torchvision's mean/std top-1 is "
          f"{classes['torchvision mean/std']['top1']} (p(military uniform) = {classes['torchvision mean/std']['p_military_uniform']:.2f}).")
    update_doc_section("metric-sanity", md, DOC)


if __name__ == "__main__":
    main()
