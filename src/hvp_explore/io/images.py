"""Image and measurement files: loading, saving and pixel-scale conversions.

Images are tensors of shape (C, H, W) with values in [-1, 1], the convention of the generators. A
pixel value ``u`` in 0..255 maps to ``u / 127.5 - 1`` and back with ``round((x + 1) * 127.5)``, so a
save/load round trip of an 8-bit image is exact.

Every problem with an input file raises :class:`ImageError` (a ``ValueError``) with a one-line
message that names the file, says what is wrong and what is expected; the command line shows it
as is.
"""

from __future__ import annotations

import io
import logging
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from hvp_explore.io.atomic import write_bytes_atomic
from hvp_explore.io.files import ImageError, display_path, one_line, open_image_lazily, read_measurements

logger = logging.getLogger(__name__)

_SAVE_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG"}
_GRAY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "I;16N"})
_SIXTEEN_BIT_MODES = frozenset({"I", "I;16", "I;16L", "I;16B", "I;16N"})
#: Pixels converted at a time by :func:`load_image` (float64 temporaries of about 100 MB for RGB).
_BLOCK_PIXELS = 1 << 22


def _open_image(path: Path | str) -> Image.Image:
    """Open and fully decode an image file, turning every failure into a one-line ImageError.

    The header is checked first (:func:`~hvp_explore.io.files.open_image_lazily`: an image, of a size that
    is safe to decode); decoding is what detects truncated data. The EXIF orientation is applied (a phone
    photograph stored sideways or upside down is turned upright, as image viewers show it), so the pixels
    are those the user sees; the rotation keeps the pixel count, so the size check above still holds.
    """
    img = open_image_lazily(path)
    try:
        img.load()
        # in place: no copy of the pixels when the orientation is already upright (most files)
        ImageOps.exif_transpose(img, in_place=True)
    except (OSError, SyntaxError, ValueError, EOFError, TypeError, KeyError) as exc:
        # TypeError and KeyError: a malformed EXIF block (Pillow reads its values as they are stored)
        img.close()
        raise ImageError(f"{display_path(path)} is truncated or corrupt: {one_line(exc)}") from None
    return img


def _image_to_array(img: Image.Image, path: Path | str) -> np.ndarray:
    """Pixels as float64 in [0, 1] with shape (H, W, C), C in {1, 3}, in the image's own colour model."""
    if img.mode in _SIXTEEN_BIT_MODES:
        # Pillow's "I" -> "L" conversion clips instead of rescaling, so 16-bit data is scaled here.
        arr = np.asarray(img, dtype=np.float64) / 65535.0
        if arr.min() < 0 or arr.max() > 1:
            raise ImageError(f"{path} has integer pixels outside the 16-bit range 0..65535: unsupported image")
        return arr[:, :, None]
    if img.mode in _GRAY_MODES:
        return np.asarray(img.convert("L"), dtype=np.float64)[:, :, None] / 255.0
    if img.mode == "F":
        raise ImageError(f"{path} holds floating-point pixels (mode F): expected an 8- or 16-bit PNG or JPEG")
    try:
        rgb = img.convert("RGB")
    except (ValueError, OSError) as exc:
        raise ImageError(f"{path} has an unsupported colour mode {img.mode!r}: {one_line(exc)}") from None
    return np.asarray(rgb, dtype=np.float64) / 255.0


def load_image(path: Path | str, *, channels: int | None = None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Load a PNG or JPEG (or any image Pillow reads) as a tensor (C, H, W) in [-1, 1], upright by its EXIF orientation.

    Grayscale files give C = 1, colour files C = 3 (an alpha channel is dropped). With ``channels``
    set, the image is converted: colour to gray by the ITU-R 601-2 luma
    ``0.299 R + 0.587 G + 0.114 B``, gray to colour by repeating the channel. A conversion is
    reported on this module's logger (``hvp_explore.io.images``, level INFO), never printed.

    Args:
        path: Image file.
        channels: 1 or 3 to convert to that many channels, ``None`` to keep the file's.
        dtype: Floating dtype of the result.

    Returns:
        Tensor (C, H, W) with values ``u / 127.5 - 1`` for 8-bit pixel values ``u``.

    Raises:
        ImageError: Missing file, a directory, an empty, truncated or corrupt file, or a file
            that is not an image.
        ValueError: ``channels`` is not 1, 3 or None.
    """
    if channels not in (None, 1, 3):
        raise ValueError(f"channels must be 1 (grayscale), 3 (RGB) or None (as in the file), got {channels!r}")
    img = _open_image(path)
    width, height = img.size
    # float64 copies of a whole 8192x8192 photograph took 7 GB: the pixels are converted a block of rows at a time,
    # with the same arithmetic per pixel, into the result (so the peak is the decoded file plus the result)
    rows = max(1, _BLOCK_PIXELS // max(width, 1))
    out, have = None, None
    for top in range(0, height, rows):
        arr = _image_to_array(img.crop((0, top, width, min(top + rows, height))), path)
        have = arr.shape[2]
        if channels is not None and channels != have:
            arr = arr @ np.array([0.299, 0.587, 0.114])[:, None] if channels == 1 else np.repeat(arr, 3, axis=2)
        block = (torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1))) * 2.0 - 1.0).to(dtype)
        if out is None:
            out = torch.empty((block.shape[0], height, width), dtype=dtype)
        out[:, top : top + block.shape[1]] = block
    if channels is not None and channels != have:
        logger.info("converted %s from %d to %d channel(s) to match the generator", path, have, channels)
    return out


def center_crop(img: torch.Tensor, aspect: float = 1.0) -> torch.Tensor:
    """The largest centred crop of an image (..., H, W) with width / height = ``aspect`` (a square by default).

    When the excess is odd, the extra row or column is dropped at the end.
    """
    h, w = img.shape[-2:]
    if w >= h * aspect:
        ch, cw = h, max(1, round(h * aspect))
    else:
        ch, cw = max(1, round(w / aspect)), w
    top, left = (h - ch) // 2, (w - cw) // 2
    return img[..., top : top + ch, left : left + cw]


def crop_resize(img: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Centre-crop an image (C, H, W) in [-1, 1] to the aspect of ``size`` = (h, w), then resize it with Lanczos.

    This is what ``--resize`` does to an input whose size differs from the one expected: for a
    square target, the largest centred square, then Lanczos to ``h x w``. The resampling is
    Pillow's Lanczos (a = 3, antialiased when shrinking) on each channel in floating point
    (mode ``F``), so no 8-bit rounding is added; the kernel's overshoot at edges is clamped back
    to [-1, 1].

    Raises:
        ValueError: ``img`` is not (C, H, W) or ``size`` is not two positive integers.
    """
    size = tuple(size)
    if len(size) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in size):
        raise ValueError(f"size must be two positive integers (h, w), got {size!r}")
    if img.dim() != 3:
        raise ValueError(f"expected an image (C, H, W), got shape {tuple(img.shape)}")
    h, w = size
    cropped = center_crop(img, w / h).detach().to("cpu", torch.float32)
    if tuple(cropped.shape[-2:]) == (h, w):
        return cropped.to(img.dtype)
    channels = [Image.fromarray(c.numpy(), mode="F").resize((w, h), Image.Resampling.LANCZOS) for c in cropped]
    out = torch.from_numpy(np.stack([np.asarray(c, dtype=np.float32) for c in channels]))
    return out.clamp(-1.0, 1.0).to(img.dtype)


def crop_resize_mask(missing: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The mask (H, W) of :func:`crop_resize`: the same centre crop, then nearest-neighbour resizing (stays boolean)."""
    h, w = size
    cropped = center_crop(missing, w / h)
    rows = (torch.arange(h) * cropped.shape[0]) // h
    cols = (torch.arange(w) * cropped.shape[1]) // w
    return cropped[rows][:, cols]


def load_mask(path: Path | str) -> torch.Tensor:
    """Load an inpainting mask PNG: white (>= 128 after conversion to gray) marks MISSING pixels.

    This is the convention of common inpainting tools: the white region is the one to fill.

    Returns:
        Bool tensor (H, W), True where the pixel is missing.

    Raises:
        ImageError: As :func:`load_image`.
    """
    img = _open_image(path)
    gray = _image_to_array(img, path)
    if gray.shape[2] == 3:
        gray = gray @ np.array([0.299, 0.587, 0.114])[:, None]
    # Threshold at mid-gray so that anti-aliased or JPEG-compressed masks still split cleanly.
    return torch.from_numpy(gray[:, :, 0] >= 127.5 / 255.0)


def to_uint8(img: torch.Tensor) -> torch.Tensor:
    """Map values in [-1, 1] to 8-bit pixels: ``round((clamp(x, -1, 1) + 1) * 127.5)``.

    Args:
        img: Tensor of any shape.

    Returns:
        ``torch.uint8`` tensor of the same shape, on the CPU.

    Raises:
        ValueError: ``img`` contains NaN.
    """
    img = img.detach().to("cpu", torch.float64)
    if torch.isnan(img).any():
        raise ValueError("image contains NaN values: cannot convert to 8-bit pixels")
    return torch.round((img.clamp(-1.0, 1.0) + 1.0) * 127.5).to(torch.uint8)


def quantize(img: torch.Tensor) -> torch.Tensor:
    """The image an 8-bit file of ``img`` holds, back in [-1, 1]: ``to_uint8(img) / 127.5 - 1``, same dtype and device.

    Saving the result with :func:`save_image` and loading it with :func:`load_image` gives it back
    exactly, so a measurement computed on it is the one a reader of the file recomputes.
    """
    return (to_uint8(img).to(torch.float64) / 127.5 - 1.0).to(device=img.device, dtype=img.dtype)


def upscale_nearest(img: torch.Tensor, scale: int) -> torch.Tensor:
    """Nearest-neighbour upscaling of the last two (H, W) dimensions by an integer factor.

    Every pixel becomes a ``scale x scale`` block, so tiny images (8x8 observations) stay legible.
    """
    if isinstance(scale, bool) or not isinstance(scale, int) or scale < 1:
        raise ValueError(f"scale must be a positive integer, got {scale!r}")
    if img.dim() < 2:
        raise ValueError(f"expected an image with at least 2 dimensions (..., H, W), got shape {tuple(img.shape)}")
    if scale == 1:
        return img
    return img.repeat_interleave(scale, dim=-2).repeat_interleave(scale, dim=-1)


def save_image(img: torch.Tensor, path: Path | str, *, scale: int = 1) -> Path:
    """Write an image in [-1, 1] to PNG or JPEG (by the extension), atomically.

    The file is written to a temporary file in the same folder and moved into place with
    ``os.replace``, so a reader never sees a half-written image. The folder is created if needed.

    Args:
        img: Tensor (C, H, W) with C in {1, 3}, (1, C, H, W), or (H, W); values are clamped to [-1, 1].
        path: Destination, ending in ``.png``, ``.jpg`` or ``.jpeg``.
        scale: Integer nearest-neighbour upscaling factor.

    Returns:
        The path written.
    """
    path = Path(path)
    fmt = _SAVE_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ImageError(f"cannot save {path}: unsupported extension {path.suffix!r}, expected .png, .jpg or .jpeg")
    if img.dim() == 4 and img.shape[0] == 1:
        img = img[0]
    if img.dim() == 2:
        img = img.unsqueeze(0)
    if img.dim() != 3 or img.shape[0] not in (1, 3):
        raise ValueError(f"expected an image of shape (C, H, W) with C = 1 or 3, got shape {tuple(img.shape)}")
    pixels = to_uint8(upscale_nearest(img, scale)).permute(1, 2, 0).numpy()
    pil = Image.fromarray(pixels[:, :, 0] if pixels.shape[2] == 1 else pixels, mode="L" if pixels.shape[2] == 1 else "RGB")
    buffer = io.BytesIO()
    pil.save(buffer, format=fmt)
    return write_bytes_atomic(path, buffer.getvalue())


def load_measurements(path: Path | str) -> torch.Tensor:
    """Load measurements (for example compressed-sensing ones) from a ``.npy`` file.

    Returns:
        float64 tensor with the array's shape.

    Raises:
        ImageError: As :func:`~hvp_explore.io.files.read_measurements` (missing, unreadable, not numeric,
            NaN, infinite, or values that overflow float32).
    """
    return torch.from_numpy(read_measurements(path))
