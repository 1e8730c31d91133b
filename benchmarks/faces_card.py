"""The face generator's model-card material: the shipped samples, a samples figure, what it cannot represent.

* ``--write-samples`` regenerates the faces shipped in ``src/hvp_explore/assets/faces/``: the images of
  ``torch.randn(1, 100, generator=torch.Generator().manual_seed(s))`` for the first eight seeds s = 1..8,
  with no selection, saved as 8-bit PNGs (64x64 RGB). They lie in the generator's range by construction.
* ``docs/figures/model-card-faces-samples.png``: seeds 1..32, the same recipe.
* Reach: the best measurement MSE that the inversion without fine-tuning (CSGM and Gauss-Newton) reaches
  on x4 super-resolution of the two face-cropped photographs of ``benchmarks/faces.py`` (out of
  distribution) against held-out generated faces (seeds 1001-1005): how far real photographs are from
  the generator's range.

    python benchmarks/faces_card.py [--write-samples]    # benchmarks/results/faces-card.json
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, machine, write_json  # noqa: E402
from faces import photographs  # noqa: E402

from hvp_explore import make_problem, observe, save_image  # noqa: E402
from hvp_explore.generators import load_generator  # noqa: E402
from hvp_explore.inversion import invert  # noqa: E402
from hvp_explore.io.figures import contact_sheet  # noqa: E402

SAMPLES = ROOT / "src" / "hvp_explore" / "assets" / "faces"
FIGURE = ROOT / "docs" / "figures" / "model-card-faces-samples.png"


def face(G, seed: int) -> torch.Tensor:
    """The image of the seeded standard-normal latent ``seed`` (the recipe of the shipped samples)."""
    with torch.no_grad():
        return G(torch.randn(1, G.latent_dim, generator=torch.Generator().manual_seed(seed)))[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write-samples", action="store_true", help="rewrite the shipped face samples")
    args = parser.parse_args()
    torch.set_num_threads(2)
    start = time.perf_counter()
    G = load_generator("faces")
    if args.write_samples:
        SAMPLES.mkdir(parents=True, exist_ok=True)
        for seed in range(1, 9):
            save_image(face(G, seed), SAMPLES / f"face-seed{seed:02d}.png")
    contact_sheet([face(G, s) for s in range(1, 33)], [f"seed {s}" for s in range(1, 33)], FIGURE, columns=8, scale=2,
                  title="faces generator: seeds 1-32, z ~ N(0, I), no selection")

    forward = make_problem("sr", G.image_shape, factor=4)
    reach = {}
    cases = {f"generated seed {s}": face(G, s) for s in range(1001, 1006)}
    cases.update({f"photograph {name}": image for name, image in photographs().items()})
    for name, clean in cases.items():
        y = observe(forward, clean[None])
        res = invert(G, forward, y, iagan=False, quiet=True)
        reach[name] = {"csgm_mse": res.measurement_mse, "steps": res.steps_run, "seconds": res.seconds}
        print(name, reach[name], flush=True)
    generated = [v["csgm_mse"] for k, v in reach.items() if k.startswith("generated")]
    print("median generated", statistics.median(generated), flush=True)
    payload = {"command": "python benchmarks/faces_card.py", "machine": machine(), "reach_sr4": reach,
               "generated_median_mse": statistics.median(generated), "seconds": time.perf_counter() - start}
    write_json("faces-card", payload)


if __name__ == "__main__":
    main()
