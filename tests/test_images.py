"""Image and measurement files: exact round trips, conversions, and one-line errors for bad inputs."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from hvp_explore.io.images import ImageError, load_image, load_mask, load_measurements, save_image, to_uint8, upscale_nearest


def _pixels(shape, seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)


def _png_bytes(tmp_path, arr, name="ok.png"):
    path = tmp_path / name
    Image.fromarray(arr).save(path)
    return path, path.read_bytes()


# --------------------------------------------------------------------------------------------------
# pixel scale


def test_to_uint8_values():
    x = torch.tensor([-1.0, 1.0, 0.0, -2.0, 3.0, 1 / 127.5 - 1, 254 / 127.5 - 1], dtype=torch.float64)
    # round((x + 1) * 127.5): 0, 255, 127.5 -> 128 (half to even), clamped ends, grid levels 1 and 254.
    assert to_uint8(x).tolist() == [0, 255, 128, 0, 255, 1, 254]
    assert to_uint8(x).dtype == torch.uint8
    with pytest.raises(ValueError, match="NaN"):
        to_uint8(torch.tensor([float("nan")]))


def test_upscale_nearest():
    img = torch.arange(6.0).reshape(1, 2, 3)
    up = upscale_nearest(img, 2)
    assert up.shape == (1, 4, 6)
    assert torch.equal(up[0], torch.tensor([[0, 0, 1, 1, 2, 2], [0, 0, 1, 1, 2, 2], [3, 3, 4, 4, 5, 5], [3, 3, 4, 4, 5, 5]]).float())
    assert upscale_nearest(img, 1) is img
    for bad in (0, 2.0, True):
        with pytest.raises(ValueError, match="scale must be a positive integer"):
            upscale_nearest(img, bad)


# --------------------------------------------------------------------------------------------------
# round trips


@settings(max_examples=15, deadline=None)
@given(channels=st.sampled_from([1, 3]), h=st.integers(1, 9), w=st.integers(1, 9), seed=st.integers(0, 1000))
def test_png_round_trip_is_exact(tmp_path_factory, channels, h, w, seed):
    folder = tmp_path_factory.mktemp("rt")
    u = torch.from_numpy(_pixels((channels, h, w), seed)).double()
    img = u / 127.5 - 1  # every 8-bit level is representable, so the round trip is exact
    path = save_image(img, folder / "x.png")
    back = load_image(path, dtype=torch.float64)
    assert back.shape == (channels, h, w)
    assert torch.equal(to_uint8(back), u.to(torch.uint8))
    torch.testing.assert_close(back, img, rtol=0, atol=1e-12)


def test_load_matches_pillow_pixels(tmp_path):
    arr = _pixels((5, 7, 3), 1)
    path, _ = _png_bytes(tmp_path, arr)
    img = load_image(path)
    assert img.dtype == torch.float32 and img.shape == (3, 5, 7)
    torch.testing.assert_close(img, torch.from_numpy(arr).permute(2, 0, 1).float() / 127.5 - 1, rtol=0, atol=1e-6)


def test_save_with_scale_and_batched_or_2d_input(tmp_path):
    img = torch.from_numpy(_pixels((1, 3, 4), 2)).double() / 127.5 - 1
    save_image(img[None], tmp_path / "big.png", scale=3)
    back = load_image(tmp_path / "big.png", dtype=torch.float64)
    torch.testing.assert_close(back, upscale_nearest(img, 3), rtol=0, atol=1e-12)
    save_image(img[0], tmp_path / "flat.png")
    assert load_image(tmp_path / "flat.png").shape == (1, 3, 4)
    with pytest.raises(ValueError, match=r"expected an image of shape \(C, H, W\) with C = 1 or 3"):
        save_image(torch.zeros(2, 4, 4), tmp_path / "bad.png")


def test_jpeg_round_trip_is_close(tmp_path):
    # A smooth image survives JPEG compression within a few gray levels.
    ramp = torch.linspace(-0.8, 0.8, 32).expand(3, 32, 32).clone()
    save_image(ramp, tmp_path / "x.jpg")
    back = load_image(tmp_path / "x.jpg")
    assert back.shape == (3, 32, 32)
    assert float((back - ramp).abs().max()) < 0.05


def test_save_is_atomic(tmp_path, monkeypatch):
    target = tmp_path / "out.png"
    save_image(torch.zeros(1, 2, 2), target)
    save_image(torch.ones(1, 2, 2), target)  # replaces an existing file
    assert load_image(target).eq(1).all()
    before = target.read_bytes()

    def failing_save(self, fp, format=None, **params):
        fp.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(Image.Image, "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        save_image(-torch.ones(1, 2, 2), target)
    assert target.read_bytes() == before  # the old file is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.png"]  # no temporary left behind


def test_save_creates_folders_and_rejects_unknown_extensions(tmp_path):
    assert save_image(torch.zeros(1, 2, 2), tmp_path / "a" / "b" / "x.png").is_file()
    with pytest.raises(ImageError, match=r"unsupported extension '.bmp', expected .png, .jpg or .jpeg"):
        save_image(torch.zeros(1, 2, 2), tmp_path / "x.bmp")


# --------------------------------------------------------------------------------------------------
# modes and channel conversion


def test_channel_conversion_is_logged(tmp_path, caplog):
    rgb = _pixels((4, 5, 3), 3)
    path, _ = _png_bytes(tmp_path, rgb, "rgb.png")
    with caplog.at_level(logging.INFO, logger="hvp_explore.io.images"):
        gray = load_image(path, channels=1, dtype=torch.float64)
    assert "from 3 to 1 channel" in caplog.text
    luma = (rgb.astype(np.float64) @ np.array([0.299, 0.587, 0.114])) / 255.0 * 2 - 1
    torch.testing.assert_close(gray[0], torch.from_numpy(luma), rtol=0, atol=1e-12)

    g = _pixels((4, 5), 4)
    path, _ = _png_bytes(tmp_path, g, "gray.png")
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="hvp_explore.io.images"):
        rgb3 = load_image(path, channels=3)
    assert "from 1 to 3 channel" in caplog.text
    assert rgb3.shape == (3, 4, 5) and torch.equal(rgb3[0], rgb3[2])
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="hvp_explore.io.images"):
        load_image(path, channels=1)
    assert caplog.text == ""  # no conversion, no notice
    with pytest.raises(ValueError, match="channels must be 1"):
        load_image(path, channels=2)


def test_rgba_palette_and_16_bit(tmp_path):
    rgba = _pixels((3, 4, 4), 5)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    torch.testing.assert_close(load_image(tmp_path / "rgba.png"), torch.from_numpy(rgba[:, :, :3]).permute(2, 0, 1).float() / 127.5 - 1)
    Image.fromarray(_pixels((3, 4, 3), 6)).convert("P").save(tmp_path / "pal.png")
    assert load_image(tmp_path / "pal.png").shape == (3, 3, 4)
    sixteen = np.array([[0, 65535], [32768, 1000]], dtype=np.uint16)
    Image.fromarray(sixteen).save(tmp_path / "16.png")
    got = load_image(tmp_path / "16.png", dtype=torch.float64)
    torch.testing.assert_close(got[0], torch.from_numpy(sixteen / 65535.0 * 2 - 1), rtol=0, atol=1e-12)


def test_load_mask_threshold(tmp_path):
    arr = np.array([[0, 127, 128, 255]], dtype=np.uint8)
    Image.fromarray(arr).save(tmp_path / "m.png")
    assert load_mask(tmp_path / "m.png").tolist() == [[False, False, True, True]]


# --------------------------------------------------------------------------------------------------
# bad inputs: one line naming the file and the problem


def _assert_one_line(exc: pytest.ExceptionInfo, path) -> None:
    msg = str(exc.value)
    assert "\n" not in msg and str(path) in msg
    assert isinstance(exc.value, ValueError)


def test_missing_file(tmp_path):
    with pytest.raises(ImageError, match=r"nope.png not found: expected an image \(PNG or JPEG\) file") as exc:
        load_image(tmp_path / "nope.png")
    _assert_one_line(exc, tmp_path / "nope.png")


def test_directory(tmp_path):
    with pytest.raises(ImageError, match=r"is a directory: expected an image \(PNG or JPEG\) file") as exc:
        load_image(tmp_path)
    _assert_one_line(exc, tmp_path)


def test_empty_png(tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(ImageError, match=r"is empty \(0 bytes\)") as exc:
        load_image(tmp_path / "empty.png")
    _assert_one_line(exc, tmp_path / "empty.png")


@pytest.mark.parametrize("keep", [12, 40, -30])
def test_truncated_png(tmp_path, keep):
    _, data = _png_bytes(tmp_path, _pixels((32, 32), 7))
    bad = tmp_path / "cut.png"
    bad.write_bytes(data[:keep])
    with pytest.raises(ImageError, match=r"is truncated or corrupt") as exc:
        load_image(bad)
    _assert_one_line(exc, bad)


def test_truncated_jpeg(tmp_path):
    save_image(torch.rand(3, 64, 64) * 2 - 1, tmp_path / "x.jpg")
    data = (tmp_path / "x.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError, match=r"is truncated or corrupt") as exc:
        load_image(tmp_path / "cut.jpg")
    _assert_one_line(exc, tmp_path / "cut.jpg")


def test_not_an_image(tmp_path):
    (tmp_path / "notes.png").write_text("hello, this is text\n")
    with pytest.raises(ImageError, match=r"is not an image file: its content is not PNG or JPEG data") as exc:
        load_image(tmp_path / "notes.png")
    _assert_one_line(exc, tmp_path / "notes.png")


def test_mask_errors_are_image_errors(tmp_path):
    with pytest.raises(ImageError, match="not found"):
        load_mask(tmp_path / "mask.png")


# --------------------------------------------------------------------------------------------------
# measurements


def test_measurements_round_trip(tmp_path):
    y = np.random.default_rng(0).normal(size=(3, 7)).astype(np.float32)
    np.save(tmp_path / "y.npy", y)
    got = load_measurements(tmp_path / "y.npy")
    assert got.dtype == torch.float64 and torch.equal(got, torch.from_numpy(y.astype(np.float64)))
    np.save(tmp_path / "i.npy", np.arange(4))
    assert load_measurements(tmp_path / "i.npy").tolist() == [0.0, 1.0, 2.0, 3.0]


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("nan.npy", np.array([1.0, np.nan, 2.0]), r"contains 1 NaN or infinite value\(s\): measurements must be finite"),
        ("inf.npy", np.array([np.inf, -np.inf]), r"contains 2 NaN or infinite value\(s\)"),
        ("obj.npy", np.array([{"a": 1}], dtype=object), r"is not a readable .npy array"),
        ("cplx.npy", np.array([1 + 2j]), r"holds complex128 data: expected a real numeric array"),
        ("text.npy", b"not numpy at all", r"is not a readable .npy array"),
        ("empty.npy", b"", r"is empty \(0 bytes\)"),
        ("y.txt", b"1 2 3", r"measurements must be a NumPy .npy file, got extension '.txt'"),
    ],
)
def test_bad_measurements(tmp_path, name, content, message):
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        np.save(path, content, allow_pickle=True)
    with pytest.raises(ImageError, match=message) as exc:
        load_measurements(path)
    _assert_one_line(exc, path)


def test_missing_measurements(tmp_path):
    with pytest.raises(ImageError, match=r"y.npy not found: expected a measurements \(.npy\) file"):
        load_measurements(tmp_path / "y.npy")
    with pytest.raises(ImageError, match=r"is a directory"):
        load_measurements(tmp_path)

