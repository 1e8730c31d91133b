"""The schema of ``state.pt``, the file a stage folder passes to the next stage, and its check.

A stage folder may come from someone else, or have been edited: :func:`check_state` checks every
entry of a loaded ``state.pt`` (its names, types and shapes, and that the shapes agree with each other:
the latent's length n with the eigenvectors' and directions' rows, the image with the problem's
image shape, the measurements with the problem) before anything uses it. A file that does not match
is refused with one line naming the entry and what was expected; nothing in it is ever run (it is
read with ``torch.load(weights_only=True)``, and a generator it names by a file or a factory is loaded
only when the user names it too, see :func:`hvp_explore.io.stages.generator_to_load`).

A small file must not take gigabytes of memory: :func:`check_state_archive` refuses, before torch reads
it, an archive with a compressed record (torch.save never compresses; a deflated record of zeros hides
gigabytes in a few megabytes), and :func:`check_state` checks every tensor's size against the bytes
that back it before it reads a value (an expanded, stride-0 tensor of 10^12 values is stored as one).
"""

from __future__ import annotations

import math
import os
import zipfile
from collections.abc import Mapping
from pathlib import Path

import torch

from hvp_explore.settings import MAX_IMAGE_PIXELS, MODES, PROBLEM_KINDS, SR_KERNELS

__all__ = ["REQUIRED", "OPTIONAL", "StateError", "check_state", "check_state_archive"]

#: Entries every state.pt has (written by ``invert``).
REQUIRED = ("generator", "generator_state", "problem", "y", "display", "clean", "source", "latent", "image", "inversion")
#: Entries added by later stages (``eig``: metric and eigen; ``project``: directions), and the writer's version.
OPTIONAL = ("version", "metric", "eigen", "directions")
_EIGEN = ("values", "vectors", "residuals", "converged")
_DIRECTIONS = ("vectors", "labels", "indices", "combinations", "mode")
_PROBLEM = {"sr": ("factor", "kernel"), "inpaint": ("box", "mask"), "cs": ("m", "seed")}
#: The floating dtypes hvp-explore writes (a float16 latent would fail later, deep in the generator).
_FLOATS = (torch.float32, torch.float64)
#: Eigenvectors and directions are unit vectors; a column further from norm 1 than this was edited.
_UNIT_TOLERANCE = 1e-3


class StateError(ValueError):
    """A ``state.pt`` that does not match the schema (one-line message naming the entry)."""


class _Checker:
    def __init__(self, path: Path | str):
        self.path = path

    def fail(self, what: str) -> None:
        raise StateError(f"{self.path} does not match the stage-file schema: {what}; rerun the stage that wrote it")

    def kind(self, value, types, name: str, expected: str):
        if isinstance(value, bool) and bool not in (types if isinstance(types, tuple) else (types,)):
            self.fail(f"{name} must be {expected}, got a bool")
        if not isinstance(value, types):
            self.fail(f"{name} must be {expected}, got {type(value).__name__}")
        return value

    def integer(self, value, name: str, *, positive: bool = True) -> int:
        self.kind(value, int, name, "an integer")
        if positive and value < 1:
            self.fail(f"{name} must be a positive integer, got {value}")
        return value

    def backed(self, value: torch.Tensor, name: str) -> None:
        """Refuse a tensor that claims more values than the bytes stored for it (read before any value is)."""
        if value.layout != torch.strided or value.is_quantized:
            self.fail(f"{name} must be a dense tensor, got layout {value.layout}")
        if not value.numel():
            return
        stored = value.untyped_storage().nbytes()
        last = value.storage_offset() + sum((size - 1) * abs(stride) for size, stride in zip(value.shape, value.stride()))
        # an expanded (stride-0) view of 10**12 values is saved as one value: reading it would materialise them all.
        # A view of a larger tensor (a slice) is fine: it holds at most the values stored.
        if value.numel() * value.element_size() > stored or (last + 1) * value.element_size() > stored:
            self.fail(f"{name} claims {value.numel()} values of shape {tuple(value.shape)} but stores {stored} bytes "
                      "(an expanded, stride-0 view): hvp-explore writes every value it reads")

    def tensor(self, value, name: str, *, shape: tuple | None = None, ndim: int | None = None, boolean: bool = False,
               finite: bool = True) -> torch.Tensor:
        """``value`` as a tensor of floats (or bools) with ``shape`` (None entries match any size) or ``ndim`` dimensions."""
        self.kind(value, torch.Tensor, name, "a tensor")
        if boolean != (value.dtype == torch.bool) or not (boolean or value.is_floating_point()):
            self.fail(f"{name} must be a {'bool' if boolean else 'floating-point'} tensor, got dtype {value.dtype}")
        if not boolean and value.dtype not in _FLOATS:
            self.fail(f"{name} must be float32 or float64 (as hvp-explore writes it), got {value.dtype}")
        self.backed(value, name)
        if ndim is not None and value.dim() != ndim:
            self.fail(f"{name} must have {ndim} dimension(s), got shape {tuple(value.shape)}")
        if shape is not None and (value.dim() != len(shape) or any(s is not None and s != v for s, v in zip(shape, value.shape))):
            wanted = "(" + ", ".join("any" if s is None else str(s) for s in shape) + ")"
            self.fail(f"{name} must have shape {wanted}, got {tuple(value.shape)}")
        if finite and not boolean and not bool(torch.isfinite(value).all()):
            self.fail(f"{name} holds NaN or infinite values")
        return value


def _check_problem(c: _Checker, problem) -> tuple[int, int, int]:
    c.kind(problem, dict, "'problem'", "a dict")
    kind = problem.get("kind")
    if kind not in PROBLEM_KINDS:
        c.fail(f"'problem' kind must be one of {', '.join(PROBLEM_KINDS)}, got {kind!r}")
    shape = c.kind(problem.get("image_shape"), (list, tuple), "'problem' image_shape", "a list [C, H, W]")
    if len(shape) != 3 or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in shape) or shape[0] not in (1, 3):
        c.fail(f"'problem' image_shape must be [C, H, W] with C = 1 or 3, got {shape!r}")
    if shape[1] * shape[2] > MAX_IMAGE_PIXELS:  # the forward operator is built from it before any tensor is compared
        c.fail(f"'problem' image_shape {list(shape)} has {shape[1] * shape[2]} pixels, more than the {MAX_IMAGE_PIXELS} "
               "hvp-explore reads")
    allowed = {"kind", "image_shape", *_PROBLEM[kind]}
    extra = sorted(set(problem) - allowed)
    if extra:
        c.fail(f"'problem' has unexpected key(s) {', '.join(map(repr, extra))} for {kind!r}")
    if kind == "sr":
        c.integer(problem.get("factor"), "'problem' factor")
        if problem.get("kernel") not in SR_KERNELS:
            c.fail(f"'problem' kernel must be one of {', '.join(SR_KERNELS)}, got {problem.get('kernel')!r}")
    elif kind == "inpaint":
        if ("box" in problem) == ("mask" in problem):
            c.fail("'problem' of inpainting needs exactly one of box and mask")
        if "box" in problem:
            c.kind(problem["box"], str, "'problem' box", "a string x,y,w,h")
        else:
            c.tensor(problem["mask"], "'problem' mask", shape=tuple(shape[1:]), boolean=True)
    else:
        c.integer(problem.get("m"), "'problem' m")
        c.integer(problem.get("seed"), "'problem' seed", positive=False)
    return tuple(shape)


def _check_eigen(c: _Checker, eigen, n: int) -> None:
    c.kind(eigen, dict, "'eigen'", "a dict")
    if not eigen:
        return
    expected = {f"{key}_{side}" for key in _EIGEN for side in ("y", "x")}
    if set(eigen) != expected:
        c.fail(f"'eigen' must hold exactly {', '.join(sorted(expected))}, got {', '.join(sorted(map(str, eigen)))}")
    for side in ("y", "x"):
        values = c.tensor(eigen[f"values_{side}"], f"'eigen' values_{side}", ndim=1)
        k = values.numel()
        _check_unit_columns(c, c.tensor(eigen[f"vectors_{side}"], f"'eigen' vectors_{side}", shape=(n, k)),
                            f"'eigen' vectors_{side}")
        c.tensor(eigen[f"residuals_{side}"], f"'eigen' residuals_{side}", shape=(k,))
        c.tensor(eigen[f"converged_{side}"], f"'eigen' converged_{side}", shape=(k,), boolean=True)


def _check_directions(c: _Checker, directions, n: int) -> None:
    c.kind(directions, dict, "'directions'", "a dict")
    if not directions:
        return
    if set(directions) != set(_DIRECTIONS):
        c.fail(f"'directions' must hold exactly {', '.join(_DIRECTIONS)}, got {', '.join(sorted(map(str, directions)))}")
    vectors = c.tensor(directions["vectors"], "'directions' vectors", ndim=2)
    q = vectors.shape[1]
    c.tensor(vectors, "'directions' vectors", shape=(n, q))
    if q < 1:
        c.fail("'directions' holds no direction")
    _check_unit_columns(c, vectors, "'directions' vectors")
    if directions["mode"] not in MODES:
        c.fail(f"'directions' mode must be one of {', '.join(MODES)}, got {directions['mode']!r}")
    for key in ("labels", "indices", "combinations"):
        if not isinstance(directions[key], list) or len(directions[key]) != q:
            c.fail(f"'directions' {key} must be a list of {q} entries (one per vector)")
    if not all(isinstance(label, str) for label in directions["labels"]):
        c.fail("'directions' labels must be strings")
    if not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in directions["indices"]):
        c.fail("'directions' indices must be non-negative integers")
    for combo in directions["combinations"]:
        if combo is not None and not (isinstance(combo, (list, tuple)) and all(isinstance(v, (int, float)) for v in combo)):
            c.fail("'directions' combinations must be None or lists of numbers")
    # the eigenvector directions (None) come first, then combinations of all of them (render rebuilds them so)
    base = next((i for i, combo in enumerate(directions["combinations"]) if combo is not None), q)
    for combo in directions["combinations"][base:]:
        if combo is None or base == 0 or len(combo) != base:
            c.fail(f"'directions' combinations must follow the {base} eigenvector direction(s), each with {base} coefficient(s)")
        if not all(math.isfinite(v) for v in combo):
            c.fail("'directions' combinations hold NaN or infinite coefficients")


def _check_unit_columns(c: _Checker, vectors: torch.Tensor, name: str) -> None:
    """Eigenvectors and directions are unit vectors: a zero (or rescaled) column was edited."""
    if vectors.numel():
        norms = torch.linalg.vector_norm(vectors.double(), dim=0)
        bad = int(((norms - 1).abs() > _UNIT_TOLERANCE).sum())
        if bad:
            c.fail(f"{name} must be unit vectors, but {bad} of {vectors.shape[1]} column(s) have norms "
                   f"from {float(norms.min()):.3g} to {float(norms.max()):.3g}")


def check_state_archive(path: Path | str) -> Path:
    """Check the archive of a ``state.pt`` before torch reads it: a zip written by ``torch.save``, nothing compressed.

    ``torch.save`` stores its records uncompressed, so the memory torch allocates while loading stays within
    the file's size; a record that was deflated (a few megabytes of zip holding gigabytes of zeros) or an
    archive of another kind is refused here, before anything is decompressed.

    Raises:
        StateError: Not a zip archive, a compressed record, or records larger than the file.
    """
    c = _Checker(path)
    try:
        with zipfile.ZipFile(path) as archive:
            records = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        c.fail(f"it is not an archive written by torch.save ({' '.join(str(exc).split()) or type(exc).__name__})")
    size = os.path.getsize(path)
    for record in records:
        if record.compress_type != zipfile.ZIP_STORED:
            c.fail(f"its record {record.filename!r} is compressed ({record.file_size} bytes in {record.compress_size}); "
                   "torch.save never compresses")
    if sum(record.file_size for record in records) > size:
        c.fail(f"its records claim {sum(record.file_size for record in records)} bytes in a file of {size}")
    return Path(path)


def check_state(data: object, path: Path | str) -> dict:
    """Check a loaded ``state.pt`` against the schema and return it.

    Raises:
        StateError: A missing or unexpected entry, a wrong type, a shape that does not fit the others,
            or a NaN (one line each).
    """
    c = _Checker(path)
    c.kind(data, dict, "the file", "a dict of named entries")
    names = {str(k) for k in data}
    missing = [k for k in REQUIRED if k not in data]
    extra = sorted(names - set(REQUIRED) - set(OPTIONAL))
    if missing:
        c.fail(f"missing entr{'y' if len(missing) == 1 else 'ies'} {', '.join(map(repr, missing))}")
    if extra:
        c.fail(f"unexpected entr{'y' if len(extra) == 1 else 'ies'} {', '.join(map(repr, extra))}")
    for key in ("generator", "source"):
        if not c.kind(data[key], str, repr(key), "a string"):
            c.fail(f"{key!r} is empty")
    if data["generator_state"] is not None:
        state = c.kind(data["generator_state"], dict, "'generator_state'", "None or a dict of tensors")
        if not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
            c.fail("'generator_state' must map parameter names to tensors")
        for key, value in state.items():
            c.backed(value, f"'generator_state' {key!r}")
    image_shape = _check_problem(c, data["problem"])
    latent = c.tensor(data["latent"], "'latent'", ndim=1)
    n = latent.numel()
    if n < 2:
        c.fail(f"'latent' must hold at least 2 values, got {n}")
    c.tensor(data["image"], "'image'", shape=(1, *image_shape))
    if data["clean"] is not None:
        c.tensor(data["clean"], "'clean'", shape=image_shape)
    display = c.tensor(data["display"], "'display'", ndim=3)
    # the observation as shown: the image's channels, at most its size (low-resolution for super-resolution)
    if display.shape[0] != image_shape[0] or display.shape[1] > image_shape[1] or display.shape[2] > image_shape[2]:
        c.fail(f"'display' must have {image_shape[0]} channel(s) and at most {image_shape[1]}x{image_shape[2]} pixels "
               f"(the problem's image), got shape {tuple(display.shape)}")
    y = c.tensor(data["y"], "'y'")
    if y.dim() < 2 or y.shape[0] != 1:
        c.fail(f"'y' must be a batch of one measurement vector (1, ...), got shape {tuple(y.shape)}")
    inversion = c.kind(data["inversion"], Mapping, "'inversion'", "a dict")
    mse = inversion.get("measurement_mse")
    if isinstance(mse, bool) or not isinstance(mse, (int, float)):
        c.fail(f"'inversion' measurement_mse must be a number, got {type(mse).__name__}")
    if data.get("metric") is not None:
        from hvp_explore.metrics import available_metrics

        if data["metric"] not in available_metrics():
            c.fail(f"'metric' must be one of {', '.join(available_metrics())}, got {data['metric']!r}")
    _check_eigen(c, data.get("eigen", {}), n)
    _check_directions(c, data.get("directions", {}), n)
    return data
