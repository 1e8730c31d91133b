"""Checks of input files that need no numerical library (so that a bad input is reported at once).

Every check raises :class:`ImageError` (a ``ValueError``) with a one-line message that names the
file; names are shown with control characters and bytes that are not UTF-8 escaped
(:func:`display_path`), so a message is always one printable line.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import warnings
from pathlib import Path

from hvp_explore.settings import MAX_FLOAT, MAX_IMAGE_PIXELS, MIN_TEMP_FREE

__all__ = ["STATE_FILE", "ImageError", "check_file", "check_input", "check_path_text", "check_stage_folder", "check_temp_space",
           "display_path", "one_line", "open_image_lazily", "read_measurements"]

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_JPEG_SIGNATURE = b"\xff\xd8\xff"


class ImageError(ValueError):
    """An input or output file is missing, unreadable or holds invalid data (one-line message)."""


def display_path(path: Path | str) -> str:
    """``path`` as one printable line: undecodable bytes as ``\\xff``, control characters as ``\\n``, ``\\t``, ..."""
    text = os.fspath(path)
    if isinstance(text, bytes):
        text = os.fsdecode(text)
    # file names that are not UTF-8 arrive as lone surrogates (PEP 383); print their bytes instead
    text = text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


def check_path_text(path: Path | str, what: str) -> None:
    """Refuse a path whose name is not valid UTF-8 or holds a control character (a newline, a tab, ...).

    Such names cannot be written to a report, a manifest or a one-line message as they are.
    """
    text = os.fspath(path)
    if isinstance(text, bytes):
        text = os.fsdecode(text)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ImageError(f"{what} {display_path(text)} has a name that is not valid UTF-8: rename it") from None
    if not all(c.isprintable() for c in text):
        raise ImageError(f"{what} {display_path(text)} has a control character (a newline, a tab, ...) in its name: rename it")


def check_file(path: Path, what: str) -> None:
    """Refuse a path that is not a non-empty regular file, with a one-line :class:`ImageError` naming ``what`` was expected."""
    shown = display_path(path)
    if path.is_dir():
        raise ImageError(f"{shown} is a directory: expected {what} file")
    if not path.exists():
        raise ImageError(f"{shown} not found: expected {what} file")
    if not path.is_file():
        raise ImageError(f"{shown} is not a regular file: expected {what} file")
    if path.stat().st_size == 0:
        raise ImageError(f"{shown} is empty (0 bytes): expected {what} file")


def open_image_lazily(path: Path | str):
    """Open an image file WITHOUT decoding its pixels, and check what its header says.

    Pillow's ``Image.open`` reads only the header; the size is checked against
    :data:`~hvp_explore.settings.MAX_IMAGE_PIXELS` before anything is decoded, so a decompression
    bomb (a 12k x 12k PNG of a few kilobytes) is refused in milliseconds.

    Returns:
        The ``PIL.Image.Image``, not yet loaded (call ``load()``; use it as a context manager to close it).

    Raises:
        ImageError: Missing, empty or unreadable file, content that is not an image, a header that
            cannot be decoded, or more pixels than the limit.
    """
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    check_file(path, "an image (PNG or JPEG)")
    shown = display_path(path)
    try:
        with open(path, "rb") as f:
            head = f.read(len(_PNG_SIGNATURE))
    except OSError as exc:
        raise ImageError(f"cannot read {shown}: {one_line(exc)}") from None
    # A file that starts like a PNG or a JPEG but fails to decode is damaged, not of the wrong kind.
    looks_like_image = head.startswith(_PNG_SIGNATURE) or head.startswith(_JPEG_SIGNATURE)
    try:
        with warnings.catch_warnings():
            # the size is checked below, against a smaller limit than Pillow's warning
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(path)
    except UnidentifiedImageError:
        if looks_like_image:
            raise ImageError(f"{shown} is truncated or corrupt: its header cannot be decoded") from None
        raise ImageError(f"{shown} is not an image file: its content is not PNG or JPEG data "
                         "(whatever its extension says)") from None
    except Image.DecompressionBombError:
        raise ImageError(f"{shown} is too large to load safely: its header declares more than "
                         f"{MAX_IMAGE_PIXELS / 1e6:.0f} megapixels") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageError(f"{shown} is truncated or corrupt: {one_line(exc)}") from None
    width, height = img.size
    if width * height > MAX_IMAGE_PIXELS:
        img.close()
        raise ImageError(f"{shown} is {width}x{height} pixels ({width * height / 1e6:.0f} megapixels), more than the "
                         f"{MAX_IMAGE_PIXELS / 1e6:.0f} megapixels hvp-explore reads: shrink it first (nothing was decoded)")
    return img


def one_line(exc: BaseException) -> str:
    """An exception's message on one line (its type name when empty)."""
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def read_measurements(path: Path | str):
    """The measurements in a ``.npy`` file as a float64 NumPy array, checked (NumPy only, no torch).

    Raises:
        ImageError: Missing file, a directory, an empty or unreadable file, a non-``.npy`` file, a
            non-numeric array, values that are NaN or infinite, or values whose square overflows
            float32 (the working precision; :data:`~hvp_explore.settings.MAX_FLOAT`).
    """
    import numpy as np

    path = Path(path)
    shown = display_path(path)
    check_file(path, "a measurements (.npy)")
    if path.suffix.lower() != ".npy":
        raise ImageError(f"{shown}: measurements must be a NumPy .npy file, got extension {path.suffix!r}")
    _check_npy_header(path, shown)
    try:
        arr = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise ImageError(f"{shown} is not a readable .npy array: {one_line(exc)}") from None
    if not isinstance(arr, np.ndarray) or arr.dtype.kind not in "biuf":
        kind = getattr(arr, "dtype", type(arr))
        raise ImageError(f"{shown} holds {kind} data: expected a real numeric array of measurements")
    arr = arr.astype(np.float64)
    bad = ~np.isfinite(arr)
    if bad.any():
        raise ImageError(f"{shown} contains {int(bad.sum())} NaN or infinite value(s): measurements must be finite")
    if arr.size and np.abs(arr).max() > MAX_FLOAT:
        raise ImageError(f"{shown} holds values up to {np.abs(arr).max():.3g}: measurements must stay within {MAX_FLOAT:g} "
                         "(their squares must fit float32, the working precision)")
    return arr


_NPY_SIGNATURE = b"\x93NUMPY"


def _check_npy_header(path: Path, shown: str) -> None:
    """Read a ``.npy`` file's header only: its kind by the magic bytes, and that its data is really there.

    NumPy allocates the array the header declares before it reads a byte of data, so a 128-byte file that
    claims 2**40 values would ask for 8 TiB; and it calls a PNG "pickled data". Both are named here first.
    """
    import numpy as np

    try:
        with open(path, "rb") as f:
            head = f.read(len(_PNG_SIGNATURE))
            if head.startswith(_PNG_SIGNATURE) or head.startswith(_JPEG_SIGNATURE):
                kind = "a PNG" if head.startswith(_PNG_SIGNATURE) else "a JPEG"
                raise ImageError(f"{shown} is {kind} image, not a .npy array (its first bytes say so): give it the "
                                 f"extension {'.png' if kind == 'a PNG' else '.jpg'} to use it as an image")
            if not head.startswith(_NPY_SIGNATURE):
                raise ImageError(f"{shown} is not a readable .npy array: it does not start with NumPy's signature "
                                 "(save measurements with numpy.save)")
            f.seek(0)
            version = np.lib.format.read_magic(f)
            read = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}.get(version)
            if read is None:
                raise ImageError(f"{shown} is a .npy file of format version {version[0]}.{version[1]}: save it with "
                                 "numpy.save (format 1.0 or 2.0)")
            shape, _, dtype = read(f)
            data_bytes = os.fstat(f.fileno()).st_size - f.tell()
    except ImageError:
        raise
    except OSError as exc:
        raise ImageError(f"cannot read {shown}: {one_line(exc)}") from None
    except ValueError as exc:  # a header NumPy cannot parse
        raise ImageError(f"{shown} is not a readable .npy array: {one_line(exc)}") from None
    if dtype.hasobject:
        raise ImageError(f"{shown} is not a readable .npy array: it holds Python objects (pickled data), which hvp-explore "
                         "never loads; save a numeric array")
    count = 1
    for size in shape:
        count *= int(size)
    if count * dtype.itemsize > data_bytes:
        raise ImageError(f"{shown} declares {count} values of shape {tuple(shape)} ({count * dtype.itemsize} bytes) but holds "
                         f"{data_bytes} bytes of data: the file is truncated or its header is wrong (nothing was allocated)")


#: The file of a stage folder that the next stage reads (see :mod:`hvp_explore.io.stages`).
STATE_FILE = "state.pt"


def check_stage_folder(folder: Path | str) -> Path:
    """The ``state.pt`` of a stage's output folder (or the file itself), checked to exist before torch loads.

    Raises:
        ImageError: A name that cannot be shown on one line, or no ``state.pt`` there.
    """
    check_path_text(folder, "input folder")
    folder = Path(folder)
    path = folder / STATE_FILE if folder.is_dir() else folder
    if not path.is_file():
        raise ImageError(f"{display_path(folder)} holds no {STATE_FILE}: give the output folder of 'hvp-explore invert' "
                         "(or a later stage)")
    return path


def check_input(path: Path | str, what: str = "input") -> None:
    """The checks :func:`~hvp_explore.problems.load_observation` makes first: an image file, or a ``.npy`` of measurements.

    An image's header is read (not its pixels): a file that is not an image or too large is refused here.
    """
    check_path_text(path, what)
    path = Path(path)
    if path.suffix.lower() == ".npy":
        read_measurements(path)
    else:
        open_image_lazily(path).close()


def check_temp_space(minimum: int = MIN_TEMP_FREE) -> None:
    """Refuse to start when the temporary folder ($TMPDIR) has less than ``minimum`` bytes free.

    torch's profiler writes a trace there to measure the memory of one product; on a full $TMPDIR it fails
    after the inversion, with a message about a missing trace.json.

    Raises:
        OSError: Too little space, or no usable temporary folder (one line, naming the folder and the fix).
    """
    try:
        folder = tempfile.gettempdir()
        free = shutil.disk_usage(folder).free
    except (OSError, FileNotFoundError) as exc:
        raise OSError(f"no usable temporary folder ({one_line(exc)}): set TMPDIR to a writable folder") from None
    if free < minimum:
        raise OSError(f"the temporary folder {display_path(folder)} has {free // 1024} KiB free, less than the "
                      f"{minimum >> 20} MiB a run needs there: free some space or set TMPDIR to another folder")
