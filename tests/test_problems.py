"""Forward operators: values against dense float64 references, adjoints, pseudo-inverses, validation."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from hvp_explore.problems import (
    DEFAULT_TAU,
    CompressedSensing,
    ForwardOperator,
    Inpainting,
    LinearCallable,
    SuperResolution,
    add_noise,
    keys_cubic,
    lr_psnr,
    make_problem,
    measurement_mse,
    observe,
)

F64 = torch.float64
# Every reference here is float64 on matrices with at most a few hundred entries per row, so rounding
# stays near 1e-15; 1e-12 leaves a wide margin while catching any real error (which is O(1e-2) or more).
TOL = 1e-12


def _rand(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=F64)


def _dense(op: ForwardOperator) -> torch.Tensor:
    """The (m, N) matrix of an operator, column j = A e_j."""
    n = op.num_pixels
    eye = torch.eye(n, dtype=F64).reshape(n, *op.image_shape)
    return op(eye).reshape(n, op.num_measurements).T


def _random_matrix_callable(m, shape, seed=3):
    mat = _rand(m, math.prod(shape), seed=seed)
    return (lambda x: x.flatten(1) @ mat.to(x.dtype).T), mat


def _operators():
    fn, _ = _random_matrix_callable(10, (2, 3, 4))
    missing = _rand(6, 7, seed=5) > 0.3
    return {
        "sr-area-2": SuperResolution((2, 8, 12), 2, "area"),
        "sr-area-4": SuperResolution((1, 8, 16), 4, "area"),
        "sr-bicubic-2": SuperResolution((2, 8, 12), 2, "bicubic"),
        "sr-bicubic-4": SuperResolution((1, 16, 8), 4, "bicubic"),
        "sr-bicubic-3": SuperResolution((1, 9, 12), 3, "bicubic"),
        "inpaint": Inpainting((2, 6, 7), missing),
        "cs": CompressedSensing((2, 4, 5), 17, seed=1),
        "callable": LinearCallable(fn, (2, 3, 4)),
    }


OPERATORS = _operators()
OP_IDS = list(OPERATORS)


@pytest.fixture(params=OP_IDS)
def op(request) -> ForwardOperator:
    return OPERATORS[request.param]


# --------------------------------------------------------------------------------------------------
# properties shared by every operator


def test_shapes_and_dtype(op):
    x = _rand(3, *op.image_shape)
    y = op(x)
    assert y.shape == (3, *op.measurement_shape)
    assert op.num_measurements == math.prod(op.measurement_shape)
    assert op.adjoint(y).shape == x.shape
    assert op.pinv(y).shape == x.shape
    # float32 inputs give float32 outputs (the float64 buffers are cast), close to the float64 result.
    y32 = op(x.float())
    assert y32.dtype == torch.float32
    torch.testing.assert_close(y32.double(), y, rtol=1e-5, atol=1e-5)


@settings(max_examples=20, deadline=None)
@given(a=st.floats(-3, 3), b=st.floats(-3, 3), seed=st.integers(0, 2**16))
def test_linearity(a, b, seed):
    for op in OPERATORS.values():
        x1, x2 = _rand(2, *op.image_shape, seed=seed), _rand(2, *op.image_shape, seed=seed + 1)
        torch.testing.assert_close(op(a * x1 + b * x2), a * op(x1) + b * op(x2), rtol=TOL, atol=TOL)


def test_adjoint_identity(op):
    x, y = _rand(4, *op.image_shape, seed=1), _rand(4, *op.measurement_shape, seed=2)
    lhs = (op(x) * y).flatten(1).sum(1)
    rhs = (x * op.adjoint(y)).flatten(1).sum(1)
    torch.testing.assert_close(lhs, rhs, rtol=TOL, atol=TOL)
    # The adjoint is exactly the transpose of the dense matrix.
    m = op.num_measurements
    adj = op.adjoint(torch.eye(m, dtype=F64).reshape(m, *op.measurement_shape)).reshape(m, -1)
    torch.testing.assert_close(adj, _dense(op), rtol=TOL, atol=TOL)


def test_pinv_matches_dense_reference(op):
    a = _dense(op)
    m = op.num_measurements
    p = op.pinv(torch.eye(m, dtype=F64).reshape(m, *op.measurement_shape)).reshape(m, -1).T
    # The reference pinv goes through an SVD: its error is cond(A) * 1e-16, cond(A) <= ~1e2 here.
    torch.testing.assert_close(p, torch.from_numpy(np.linalg.pinv(a.numpy())), rtol=1e-10, atol=1e-10)


def test_pinv_solves_consistent_systems(op):
    x = _rand(3, *op.image_shape, seed=7)
    y = op(x)  # in the range of A
    torch.testing.assert_close(op(op.pinv(y)), y, rtol=1e-10, atol=1e-10)
    # Every operator here has full row rank, so A A^+ = I on arbitrary measurements too.
    y_any = _rand(3, *op.measurement_shape, seed=8)
    torch.testing.assert_close(op(op.pinv(y_any)), y_any, rtol=1e-10, atol=1e-10)


def test_back_projection_is_the_nearest_feasible_point(op):
    x, x_true = _rand(2, *op.image_shape, seed=3), _rand(2, *op.image_shape, seed=4)
    y = op(x_true)
    xb = op.back_project(x, y)
    torch.testing.assert_close(op(xb), y, rtol=1e-10, atol=1e-10)
    # The correction x_b - x = A^+ r lies in the row space of A (orthogonal to its null space).
    a = _dense(op)
    null = torch.linalg.svd(a, full_matrices=True).Vh[a.shape[0] :]
    if null.numel():
        torch.testing.assert_close(null @ (xb - x).flatten(1).T, torch.zeros(null.shape[0], 2, dtype=F64), atol=1e-10, rtol=0)


def test_vmap_jvp_and_vjp_compose(op):
    """The curvature operators push batched tangents through A with torch.func."""
    x = _rand(2, *op.image_shape)
    tangents = _rand(5, 2, *op.image_shape, seed=9)
    out = torch.func.vmap(lambda v: torch.func.jvp(op, (x,), (v,))[1])(tangents)
    torch.testing.assert_close(out, torch.stack([op(v) for v in tangents]), rtol=TOL, atol=TOL)
    cot = _rand(5, 2, *op.measurement_shape, seed=10)
    _, vjp_fn = torch.func.vjp(op, x)
    out = torch.func.vmap(lambda c: vjp_fn(c)[0])(cot)
    torch.testing.assert_close(out, torch.stack([op.adjoint(c) for c in cot]), rtol=TOL, atol=TOL)


def test_shape_errors(op):
    with pytest.raises(ValueError, match=r"expected images of shape \(B, "):
        op(_rand(*op.image_shape))
    with pytest.raises(ValueError, match=r"expected measurements of shape \(B, "):
        op.adjoint(_rand(2, op.num_measurements + 1))


def test_describe_is_json_and_buffers_follow_to(op):
    info = json.loads(json.dumps(op.describe()))
    assert info["image_shape"] == list(op.image_shape)
    assert info["num_measurements"] == op.num_measurements
    assert op.state_dict() == {} or isinstance(op, LinearCallable)  # nothing to save: rebuilt from options
    x = _rand(2, *op.image_shape)
    moved = _operators()[next(k for k, v in OPERATORS.items() if v is op)].to(torch.float32)
    torch.testing.assert_close(moved(x.float()).double(), op(x), rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------------------------------
# super-resolution


@settings(max_examples=30, deadline=None)
@given(
    c=st.floats(-1, 1),
    factor=st.sampled_from([1, 2, 3, 4]),
    kernel=st.sampled_from(["area", "bicubic"]),
    blocks=st.tuples(st.integers(1, 4), st.integers(1, 4)),
    channels=st.sampled_from([1, 3]),
)
def test_downsampling_a_constant_gives_the_constant(c, factor, kernel, blocks, channels):
    op = SuperResolution((channels, blocks[0] * factor, blocks[1] * factor), factor, kernel)
    y = op(torch.full((1, *op.image_shape), c, dtype=F64))
    torch.testing.assert_close(y, torch.full_like(y, c), rtol=0, atol=TOL)


def test_area_is_the_block_mean_and_its_pinv_is_nearest_upsampling():
    op = SuperResolution((2, 8, 12), 4, "area")
    x = _rand(3, 2, 8, 12)
    torch.testing.assert_close(op(x), F.avg_pool2d(x, 4), rtol=TOL, atol=TOL)
    y = _rand(3, 2, 2, 3)
    torch.testing.assert_close(op.pinv(y), y.repeat_interleave(4, 2).repeat_interleave(4, 3), rtol=TOL, atol=TOL)


def test_keys_kernel_values():
    t = torch.tensor([0.0, 0.5, 1.0, 1.5, 2.0, 2.5, -0.5, -1.5], dtype=F64)
    # Catmull-Rom (a = -0.5) by hand: W(0.5) = 9/16, W(1.5) = -1/16, zero at the integers but 0.
    expected = torch.tensor([1.0, 9 / 16, 0.0, -1 / 16, 0.0, 0.0, 9 / 16, -1 / 16], dtype=F64)
    torch.testing.assert_close(keys_cubic(t), expected, rtol=0, atol=TOL)


def _pulse_bicubic_reference(x: torch.Tensor, factor: int) -> torch.Tensor:
    """PULSE's BicubicDownSample (bicubic.py) restated in float64: 1-D convolutions, reflect padding."""
    size = 4 * factor
    k = torch.tensor([float(keys_cubic(torch.tensor((i - size // 2 + 0.5) / factor, dtype=F64))) for i in range(size)], dtype=F64)
    k = k / k.sum()
    c = x.shape[1]
    k1 = k.reshape(1, 1, size, 1).repeat(c, 1, 1, 1)
    k2 = k.reshape(1, 1, 1, size).repeat(c, 1, 1, 1)
    pad = size - factor
    top, left = pad // 2, pad // 2
    x = F.pad(x, (0, 0, top, pad - top), "reflect")
    x = F.conv2d(x, k1, stride=(factor, 1), groups=c)
    x = F.pad(x, (left, pad - left, 0, 0), "reflect")
    return F.conv2d(x, k2, stride=(1, factor), groups=c)


def _direct_keys_downsample_1d(signal: np.ndarray, factor: int) -> np.ndarray:
    """Independent 1-D loop: output j = sum_t W((t - c_j) / f) x[mirror(t)] / sum W, centre c_j."""

    def w(t):  # Keys, a = -0.5, written out again on purpose
        s = abs(t)
        if s <= 1:
            return 1.5 * s**3 - 2.5 * s**2 + 1
        if s < 2:
            return -0.5 * s**3 + 2.5 * s**2 - 4 * s + 2
        return 0.0

    n = len(signal)
    pad = (3 * factor) // 2
    out = []
    for j in range(n // factor):
        centre = j * factor - pad + 2 * factor - 0.5  # PULSE's kernel centre in input coordinates
        taps = [(t, w((t - centre) / factor)) for t in range(j * factor - pad, j * factor - pad + 4 * factor)]
        total = sum(v for _, v in taps)
        acc = 0.0
        for t, v in taps:
            src = -t if t < 0 else (2 * (n - 1) - t if t > n - 1 else t)
            acc += v * signal[src]
        out.append(acc / total)
    return np.array(out)


@pytest.mark.parametrize("factor, shape", [(2, (3, 8, 12)), (4, (1, 16, 32)), (4, (1, 8, 8)), (3, (1, 9, 12)), (8, (1, 32, 16))])
def test_bicubic_matches_pulse(factor, shape):
    op = SuperResolution(shape, factor, "bicubic")
    x = _rand(2, *shape)
    torch.testing.assert_close(op(x), _pulse_bicubic_reference(x, factor), rtol=TOL, atol=TOL)


@pytest.mark.parametrize("factor, n", [(2, 10), (4, 16), (3, 12)])
def test_bicubic_matches_direct_keys_computation(factor, n):
    op = SuperResolution((1, n, n), factor, "bicubic")
    rows = _rand(n, n, seed=11)
    # An image constant along columns: 2-D downsampling reduces to the 1-D reference on each column
    # (the row kernel sums to 1).
    img = rows[:, :1].expand(n, n)
    expected = _direct_keys_downsample_1d(rows[:, 0].numpy(), factor)
    got = op(img.reshape(1, 1, n, n))[0, 0, :, 0].numpy()
    np.testing.assert_allclose(got, expected, rtol=0, atol=TOL)


def test_bicubic_small_images_use_folded_reflection():
    # 4x4 with factor 4 (one output pixel): torch's reflect pad refuses, the folded mirror works,
    # and a constant still maps to itself.
    op = SuperResolution((1, 4, 4), 4, "bicubic")
    torch.testing.assert_close(op(torch.full((1, 1, 4, 4), 0.3, dtype=F64)), torch.full((1, 1, 1, 1), 0.3, dtype=F64))


def test_sr_observation_image_and_measurements_from_image():
    op = SuperResolution((1, 32, 32), 4)
    lr = _rand(1, 8, 8).clamp(-1, 1)
    assert torch.equal(op.measurements_from_image(lr), lr)
    assert torch.equal(op.observation_image(op.measurements_from_image(lr)[None])[0], lr)
    with pytest.raises(ValueError, match=r"super-resolution x4 of 32x32 images expects 8x8 with 1 channel"):
        op.measurements_from_image(_rand(1, 16, 16))


# --------------------------------------------------------------------------------------------------
# inpainting


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**16), h=st.integers(1, 6), w=st.integers(2, 6), channels=st.sampled_from([1, 3]))
def test_mask_keeps_exactly_the_kept_pixels(seed, h, w, channels):
    missing = torch.rand(h, w, generator=torch.Generator().manual_seed(seed)) < 0.5
    missing[0, 0], missing[-1, -1] = True, False  # neither all missing nor all kept
    op = Inpainting((channels, h, w), missing)
    x = _rand(2, channels, h, w, seed=seed)
    expected = torch.stack([torch.cat([x[b, c][~missing] for c in range(channels)]) for b in range(2)])
    assert torch.equal(op(x), expected)
    back = op.adjoint(op(x))
    assert torch.equal(back[:, :, ~missing], x[:, :, ~missing])
    assert torch.equal(back[:, :, missing], torch.zeros_like(x[:, :, missing]))
    assert op.num_measurements == channels * int((~missing).sum())


def test_box_and_mask_png_agree(tmp_path):
    op_box = Inpainting.from_box((3, 8, 10), 2, 1, 4, 3)
    assert op_box.missing[1:4, 2:6].all() and int(op_box.missing.sum()) == 12
    mask = np.zeros((8, 10), np.uint8)
    mask[1:4, 2:6] = 255
    Image.fromarray(mask).save(tmp_path / "mask.png")
    op_png = Inpainting.from_mask_png((3, 8, 10), tmp_path / "mask.png")
    assert torch.equal(op_png.missing, op_box.missing)
    # An RGB mask with light-gray (anti-aliased) missing pixels reads the same.
    rgb = np.repeat(np.where(mask > 0, 200, 30).astype(np.uint8)[:, :, None], 3, axis=2)
    Image.fromarray(rgb).save(tmp_path / "mask-rgb.png")
    assert torch.equal(Inpainting.from_mask_png((3, 8, 10), tmp_path / "mask-rgb.png").missing, op_box.missing)


def test_inpainting_observation_image_is_mid_gray_in_the_hole():
    op = Inpainting.from_box((1, 6, 6), 1, 1, 2, 2)
    x = _rand(1, 1, 6, 6).clamp(-1, 1)
    obs = op.observation_image(op(x))
    assert torch.equal(obs[:, :, ~op.missing], x[:, :, ~op.missing])
    assert torch.equal(obs[:, :, op.missing], torch.zeros(1, 1, 4, dtype=F64))
    # Loading that image back gives the same measurements (the hole is ignored).
    assert torch.equal(op.measurements_from_image(obs[0]), op(x)[0])


def test_inpainting_validation(tmp_path):
    with pytest.raises(ValueError, match=r"box x=5,y=0,w=4,h=2 does not lie inside the 8x8 image"):
        Inpainting.from_box((1, 8, 8), 5, 0, 4, 2)
    with pytest.raises(ValueError, match=r"does not lie inside"):
        Inpainting.from_box((1, 8, 8), 0, 0, 0, 2)
    with pytest.raises(ValueError, match=r"every pixel as missing"):
        Inpainting.from_box((1, 8, 8), 0, 0, 8, 8)
    with pytest.raises(ValueError, match=r"no pixel as missing"):
        Inpainting((1, 4, 4), torch.zeros(4, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"bool tensor"):
        Inpainting((1, 4, 4), torch.zeros(4, 4))
    with pytest.raises(ValueError, match=r"the mask is 4x5 \(HxW\) but the image is 4x4"):
        Inpainting((1, 4, 4), torch.ones(4, 5, dtype=torch.bool))
    Image.fromarray(np.full((16, 16), 255, np.uint8)).save(tmp_path / "big.png")
    with pytest.raises(ValueError, match=r"big.png is 16x16 \(HxW\) but the image is 8x8: the mask must have the image's size"):
        Inpainting.from_mask_png((1, 8, 8), tmp_path / "big.png")


# --------------------------------------------------------------------------------------------------
# compressed sensing


def test_cs_columns_unit_norm_and_seeded():
    op = CompressedSensing((1, 8, 8), 20, seed=3)
    torch.testing.assert_close(op.matrix.norm(dim=0), torch.ones(64, dtype=F64), rtol=0, atol=TOL)
    assert torch.equal(op.matrix, CompressedSensing((1, 8, 8), 20, seed=3).matrix)
    assert not torch.allclose(op.matrix, CompressedSensing((1, 8, 8), 20, seed=4).matrix)
    torch.testing.assert_close(_dense(op), op.matrix, rtol=0, atol=0)
    assert op.describe()["seed"] == 3


def test_cs_square_pinv_inverts():
    op = CompressedSensing((1, 3, 3), 9, seed=0)
    x = _rand(2, 1, 3, 3)
    # m = N: A is invertible, A^+ = A^-1; cond(A) of a 9x9 Gaussian is ~1e1..1e2, so 1e-9 is generous.
    torch.testing.assert_close(op.pinv(op(x)), x, rtol=1e-9, atol=1e-9)


def test_cs_rejects_image_observations():
    with pytest.raises(ValueError, match=r"cs observations are measurement vectors of shape \(5,\): give a .npy file"):
        CompressedSensing((1, 4, 4), 5).measurements_from_image(_rand(1, 4, 4))


# --------------------------------------------------------------------------------------------------
# user callables


def test_callable_dense_and_pinv_match_the_matrix():
    fn, mat = _random_matrix_callable(10, (2, 3, 4))
    op = LinearCallable(fn, (2, 3, 4), dtype=F64)
    assert op.measurement_shape == (10,) and op.probe_dtype == F64
    torch.testing.assert_close(op.dense(), mat, rtol=0, atol=0)


def test_callable_float32_module_moves_with_to():
    conv = torch.nn.Conv2d(1, 2, 3, padding=1, bias=False)
    op = LinearCallable(conv, (1, 5, 5))
    assert op.measurement_shape == (2, 5, 5) and op.probe_dtype == torch.float32
    op = op.to(F64)  # the module is a submodule, so its weights follow
    assert conv.weight.dtype == F64
    x = _rand(2, 1, 5, 5)
    torch.testing.assert_close(op(x), F.conv2d(x, conv.weight, padding=1), rtol=TOL, atol=TOL)
    y = op(x)
    torch.testing.assert_close(op(op.pinv(y)), y, rtol=1e-9, atol=1e-9)


def test_callable_rank_deficient_pinv_is_the_minimum_norm_solution():
    # Summing two channels: rank N/2; A^+ y splits y equally (minimum norm).
    op = LinearCallable(lambda x: x[:, :1] + x[:, 1:], (2, 2, 2))
    y = _rand(1, 1, 2, 2)
    torch.testing.assert_close(op.pinv(y), torch.cat([y / 2, y / 2], dim=1), rtol=TOL, atol=TOL)


def test_callable_user_pinv_and_size_limit():
    op = LinearCallable(lambda x: 2 * x, (1, 8, 8), max_dense_size=16)
    with pytest.raises(ValueError, match=r"needs N = C\*H\*W <= 16, got N = 64: pass pinv="):
        op.pinv(_rand(1, 1, 8, 8))
    op = LinearCallable(lambda x: 2 * x, (1, 8, 8), pinv=lambda y: y / 2, max_dense_size=16)
    y = _rand(1, 1, 8, 8)
    torch.testing.assert_close(op.pinv(y), y / 2)


def test_callable_rejects_nonlinear_and_broken_functions():
    with pytest.raises(ValueError, match=r"not linear: it maps the zero image to a nonzero output"):
        LinearCallable(lambda x: x + 1, (1, 4, 4))
    with pytest.raises(ValueError, match=r"not linear: A\(a x \+ b x'\) differs"):
        LinearCallable(lambda x: torch.tanh(x), (1, 4, 4))
    with pytest.raises(ValueError, match=r"the forward callable failed on images of shape \(1, 1, 4, 4\)"):
        LinearCallable(lambda x: x.view(3, 5), (1, 4, 4))
    with pytest.raises(ValueError, match=r"must map images \(B, 1, 4, 4\) to \(B, \.\.\.\)"):
        LinearCallable(lambda x: x.sum(), (1, 4, 4))
    with pytest.raises(ValueError, match=r"must be callable"):
        LinearCallable(3, (1, 4, 4))


# --------------------------------------------------------------------------------------------------
# noise, feasibility, observe, factory


def test_noise_is_seeded_and_scaled():
    y = torch.zeros(100_000, dtype=F64)
    n1, n2, n3 = add_noise(y, 0.05, seed=1), add_noise(y, 0.05, seed=1), add_noise(y, 0.05, seed=2)
    assert torch.equal(n1, n2) and not torch.equal(n1, n3)
    # sigma is on the [0, 1] scale: 2 sigma on measurements of [-1, 1] images. The sample std of
    # 1e5 normals is within 1% of the truth with overwhelming probability (std error 0.22%).
    assert abs(float(n1.std()) - 0.1) < 1e-3
    assert torch.equal(add_noise(y, 0.0), y)
    with pytest.raises(ValueError, match=r"sigma must be a finite number >= 0"):
        add_noise(y, -0.1)


def test_measurement_mse_closed_forms():
    x = _rand(3, 1, 8, 8).clamp(-1, 1)
    shift = 0.3
    for op in (SuperResolution((1, 8, 8), 2, "area"), SuperResolution((1, 8, 8), 2, "bicubic"), Inpainting.from_box((1, 8, 8), 0, 0, 3, 3)):
        y = op(x)
        torch.testing.assert_close(measurement_mse(op, x, y), torch.zeros(3, dtype=F64), rtol=0, atol=0)
        # A 1 = 1 (rows sum to one / select pixels): MSE = (shift / 2)^2 on the [0, 1] scale.
        torch.testing.assert_close(measurement_mse(op, x + shift, y), torch.full((3,), (shift / 2) ** 2, dtype=F64), rtol=TOL, atol=TOL)
        # Unbatched measurements broadcast over the batch.
        torch.testing.assert_close(measurement_mse(op, x, y[0])[0], torch.tensor(0.0, dtype=F64))
    cs = CompressedSensing((1, 8, 8), 12)
    expected = ((shift * cs.matrix.sum(1) / 2) ** 2).mean()
    torch.testing.assert_close(measurement_mse(cs, x + shift, cs(x)), expected.expand(3), rtol=TOL, atol=TOL)
    assert lr_psnr(1e-2) == pytest.approx(20.0)
    torch.testing.assert_close(lr_psnr(torch.tensor([DEFAULT_TAU])), torch.tensor([-10 * math.log10(2e-3)]))


def test_observe():
    op = SuperResolution((1, 8, 8), 2)
    x = _rand(1, 8, 8)
    torch.testing.assert_close(observe(op, x), op(x[None])[0])
    assert observe(op, x[None]).shape == (1, 1, 4, 4)
    noisy = observe(op, x, noise_sigma=0.1, seed=4)
    torch.testing.assert_close(noisy, add_noise(op(x[None]), 0.1, seed=4)[0])
    with pytest.raises(ValueError, match=r"the clean image has shape \(1, 16, 16\), but the problem expects images of 8x8"):
        observe(op, _rand(1, 16, 16))


def test_make_problem_builds_each_kind(tmp_path):
    sr = make_problem("sr", (1, 32, 32), factor=4, kernel="bicubic")
    assert isinstance(sr, SuperResolution) and sr.measurement_shape == (1, 8, 8) and sr.kernel == "bicubic"
    box = make_problem("inpaint", (1, 32, 32), box="8,8,16,16")
    assert box.box == (8, 8, 16, 16) and box.num_measurements == 32 * 32 - 256
    assert torch.equal(make_problem("inpaint", (1, 32, 32), box=(8, 8, 16, 16)).missing, box.missing)
    Image.fromarray(box.missing.numpy().astype(np.uint8) * 255).save(tmp_path / "m.png")
    assert torch.equal(make_problem("inpaint", (1, 32, 32), mask=tmp_path / "m.png").missing, box.missing)
    assert torch.equal(make_problem("inpaint", (1, 32, 32), mask=str(tmp_path / "m.png")).missing, box.missing)
    assert torch.equal(make_problem("inpaint", (1, 32, 32), mask=box.missing.numpy()).missing, box.missing)
    cs = make_problem("cs", (1, 32, 32), m=100, seed=2)
    assert torch.equal(cs.matrix, CompressedSensing((1, 32, 32), 100, seed=2).matrix)


@pytest.mark.parametrize(
    "kind, kwargs, message",
    [
        ("deblur", {}, r"unknown problem 'deblur': expected one of sr, inpaint, cs"),
        ("sr", {"factor": 3}, r"factor 3 does not divide the image size 32x32 \(HxW\): expected one of 1, 2, 4, 8, 16, 32"),
        ("sr", {"factor": 0}, r"factor must be a positive integer, got 0"),
        ("sr", {"factor": 2.0}, r"factor must be a positive integer, got 2.0"),
        ("sr", {"kernel": "lanczos"}, r"kernel must be one of 'area', 'bicubic', got 'lanczos'"),
        ("sr", {"box": "1,1,2,2"}, r"a box or a mask applies to the inpainting problem only"),
        ("sr", {"m": 10}, r"m applies to compressed sensing \('cs'\) only"),
        ("inpaint", {}, r"inpainting needs exactly one of a mask"),
        ("inpaint", {"box": "1,1,2,2", "mask": np.ones((32, 32), bool)}, r"inpainting needs exactly one of a mask"),
        ("inpaint", {"box": "1,1,2"}, r"a box is four integers 'x,y,w,h'"),
        ("inpaint", {"box": "a,b,c,d"}, r"a box is four integers 'x,y,w,h'"),
        ("inpaint", {"box": (30, 0, 4, 4)}, r"box x=30,y=0,w=4,h=4 does not lie inside the 32x32 image"),
        ("inpaint", {"mask": np.ones((32, 32), bool)}, r"every pixel as missing"),
        ("inpaint", {"mask": np.zeros((32, 32), bool)}, r"no pixel as missing"),
        ("inpaint", {"mask": np.ones((16, 16), bool)}, r"the mask is 16x16 \(HxW\) but the image is 32x32"),
        ("cs", {}, r"compressed sensing needs the number of measurements m \(1..1024\)"),
        ("cs", {"m": 0}, r"m must be an integer in 1..1024"),
        ("cs", {"m": 1025}, r"m must be an integer in 1..1024"),
    ],
)
def test_make_problem_validation(kind, kwargs, message):
    with pytest.raises(ValueError, match=message) as info:
        make_problem(kind, (1, 32, 32), **kwargs)
    assert "\n" not in str(info.value)


def test_make_problem_rejects_a_bad_image_shape():
    with pytest.raises(ValueError, match=r"image_shape must be three positive integers \(C, H, W\)"):
        make_problem("sr", (32, 32))


def test_docs_example_runs(capsys):
    """The example of docs/problems.md runs and prints what its comments claim."""
    text = (Path(__file__).resolve().parents[1] / "docs" / "problems.md").read_text()
    code = re.search(r"```python\n(.*?)```", text, re.S).group(1)
    exec(compile(code, "docs/problems.md", "exec"), {})
    lines = capsys.readouterr().out.split()
    assert float(lines[0]) < 1e-12 and lines[1] == "True"
    assert float(lines[2]) == pytest.approx(-10 * math.log10(0.05**2), abs=1e-4)
    assert float(lines[3]) < 1e-12
