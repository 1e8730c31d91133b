"""Checks of input files that need no numerical library (so that a missing input is reported at once)."""

from __future__ import annotations

from pathlib import Path

__all__ = ["ImageError", "check_file", "check_input"]


class ImageError(ValueError):
    """An input or output file is missing, unreadable or holds invalid data (one-line message)."""


def check_file(path: Path, what: str) -> None:
    """Refuse a path that is not a non-empty regular file, with a one-line :class:`ImageError` naming ``what`` was expected."""
    if path.is_dir():
        raise ImageError(f"{path} is a directory: expected {what} file")
    if not path.exists():
        raise ImageError(f"{path} not found: expected {what} file")
    if not path.is_file():
        raise ImageError(f"{path} is not a regular file: expected {what} file")
    if path.stat().st_size == 0:
        raise ImageError(f"{path} is empty (0 bytes): expected {what} file")


def check_input(path: Path | str) -> None:
    """The checks :func:`~hvp_explore.problems.load_observation` makes first: an image file, or a ``.npy`` of measurements."""
    path = Path(path)
    check_file(path, "a measurements (.npy)" if path.suffix.lower() == ".npy" else "an image (PNG or JPEG)")
