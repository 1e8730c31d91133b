"""Figures, contact sheets and the summary table of an exploration run.

Every writer here takes arrays (torch tensors, numpy arrays or sequences), checks them, draws one
PNG and writes it atomically (temporary file in the same folder, then ``os.replace``), returning
the path. Nothing here computes the method's numbers: the functions only draw what they are given.

Drawing is deterministic: the same inputs give byte-identical PNGs. Plots use matplotlib's object
API (``Figure`` + the Agg canvas, never ``pyplot``) under matplotlib's default style, set only for
the duration of the call, so neither the caller's ``matplotlibrc`` nor its backend matters and no
global state is changed; PNG metadata is left out. Plots have fixed pixel sizes (stated in each
docstring) whatever the data. The contact sheet is composed pixel by pixel with Pillow: each image
is enlarged by an integer nearest-neighbour factor, so every generator pixel is a sharp square block.
"""

from __future__ import annotations

import contextlib
import functools
import io
import math
import numbers
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from hvp_explore.io.atomic import write_bytes_atomic
from hvp_explore.io.images import to_uint8, upscale_nearest
from hvp_explore.problems import DEFAULT_TAU

# Contact-sheet geometry, in pixels (see contact_sheet's docstring for the layout formula).
_MIN_TILE = 128  # smallest tile side chosen automatically: 32x32 images are shown at 4x
_MARGIN = 12  # around the whole sheet
_GAP = 10  # between cells, horizontally and vertically
_LABEL_PAD = 4  # above and below a tile's label
_MAX_COLUMNS = 8  # default number of columns before wrapping to balanced rows
_BACKGROUND = 255  # white, as the paper's figures
_FRAME = 170  # 1-px grey frame around each tile, so white image borders stay visible
_INK = 20

_DPI = 100
_FIGSIZE_PLOT = (8.0, 5.0)  # 800 x 500 px: spectra, time to solutions, diversity
_FIGSIZE_COUPLING = (7.0, 6.0)  # 700 x 600 px
_FIGSIZE_CORRELATION = (12.0, 4.5)  # 1200 x 450 px, two panels


# --------------------------------------------------------------------------------------------------
# input checks


def _array(values: Any, name: str, *, ndim: int) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().to(torch.float64).numpy()
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a {ndim}-D array of real numbers, got {type(values).__name__}") from None
    if arr.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name} is empty: expected at least one value")
    return arr


def _finite(arr: np.ndarray, name: str) -> np.ndarray:
    bad = ~np.isfinite(arr)
    if bad.any():
        raise ValueError(f"{name} contains {int(bad.sum())} NaN or infinite value(s): expected finite numbers")
    return arr


def _same_length(a: np.ndarray, b: np.ndarray, name_a: str, name_b: str, what: str) -> None:
    if a.shape != b.shape:
        raise ValueError(f"{name_a} and {name_b} must have the same length ({what}), got {a.size} and {b.size}")


def _check_png_path(path: Path | str) -> Path:
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ValueError(f"cannot write {path}: figures are written as PNG, expected a path ending in .png")
    return path


def _check_title(title: str | None) -> None:
    if title is not None and not isinstance(title, str):
        raise ValueError(f"title must be a string or None, got {type(title).__name__}")


def _check_series(series: Any, name: str) -> Mapping[str, Any]:
    if not isinstance(series, Mapping) or not series:
        raise ValueError(f"{name} must be a non-empty mapping method -> (x values, y values)")
    for method, pair in series.items():
        if not isinstance(method, str):
            raise ValueError(f"{name}: method names must be strings, got {method!r}")
        if not isinstance(pair, (Sequence, np.ndarray, torch.Tensor)) or isinstance(pair, str) or len(pair) != 2:
            raise ValueError(f"{name}[{method!r}] must be a pair (x values, y values)")
    return series


# --------------------------------------------------------------------------------------------------
# matplotlib plumbing


@contextlib.contextmanager
def _style() -> Iterator[None]:
    """matplotlib's default style for the duration of the block; the caller's rcParams come back after."""
    import matplotlib.style

    with matplotlib.style.context(["default", {"font.size": 10, "axes.titlesize": 11}]):
        yield


def _figure(size: tuple[float, float]):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, dpi=_DPI, layout="constrained", facecolor="white")
    FigureCanvasAgg(fig)  # attaches itself as fig.canvas: no pyplot, no global backend
    return fig


def _save(fig, path: Path) -> Path:
    buffer = io.BytesIO()
    # "Software" is the only metadata matplotlib writes to PNG; without it the bytes depend on the data only.
    fig.savefig(buffer, format="png", dpi=_DPI, metadata={"Software": None})
    return write_bytes_atomic(path, buffer.getvalue())


_MARKERS = "osD^v<>ph*"


def _marker(i: int) -> str:
    """Marker of the i-th series (cycled)."""
    return _MARKERS[i % len(_MARKERS)]


def _series_label(method: str, kept: np.ndarray, dropped_what: str) -> str:
    """Legend label of a series, saying how many of its values are not drawn."""
    dropped = int(kept.size - kept.sum())
    return method if not dropped else f"{method}: {dropped} {dropped_what}"


def _finish(fig, ax, path: Path, *, xlabel: str, ylabel: str, title: str, minor_grid: bool = True) -> Path:
    """Labels, grid and legend of a line or scatter plot, then the atomic save."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, which="major", alpha=0.5)
    if minor_grid:
        ax.grid(True, which="minor", alpha=0.15)
    ax.legend()
    return _save(fig, path)


def _integer_ticks(axis) -> None:
    from matplotlib.ticker import MaxNLocator

    axis.set_major_locator(MaxNLocator(integer=True))


def _math_label(text: str) -> str:
    """``text`` as mathtext (``v^K`` -> $v^K$) when it parses as such, else as plain text."""
    if "$" in text:
        return text
    from matplotlib.mathtext import MathTextParser

    try:
        MathTextParser("path").parse(f"${text}$")
    except ValueError:
        return text
    return f"${text}$"


# --------------------------------------------------------------------------------------------------
# contact sheet


@functools.lru_cache(maxsize=8)
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    # DejaVu Sans ships with matplotlib (a dependency), so the rendering is the same everywhere and
    # Greek letters (eta, tau) are available; Pillow's default font is the fallback.
    import matplotlib

    path = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
    try:
        return ImageFont.truetype(str(path), size)
    except OSError:
        try:
            return ImageFont.load_default(size=size)
        except TypeError:  # Pillow < 10.1: a fixed-size bitmap font
            return ImageFont.load_default()


def _sheet_image(img: Any, index: int) -> torch.Tensor:
    if isinstance(img, np.ndarray):
        img = torch.from_numpy(img)
    if not isinstance(img, torch.Tensor):
        raise ValueError(f"images[{index}] must be a tensor (C, H, W), got {type(img).__name__}")
    if img.dim() == 4 and img.shape[0] == 1:
        img = img[0]
    if img.dim() == 2:
        img = img.unsqueeze(0)
    if img.dim() != 3 or img.shape[0] not in (1, 3) or img.shape[1] == 0 or img.shape[2] == 0:
        raise ValueError(f"images[{index}] must have shape (C, H, W) with C = 1 or 3, got shape {tuple(img.shape)}")
    if img.is_complex() or not (img.is_floating_point() or img.dtype == torch.uint8):
        raise ValueError(f"images[{index}] must hold real values in [-1, 1], got dtype {img.dtype}")
    img = img.detach().cpu()
    if img.dtype == torch.uint8:
        return img  # already 8-bit pixels
    if torch.isnan(img).any():
        raise ValueError(f"images[{index}] contains NaN values: cannot draw it")
    return to_uint8(img)  # 8-bit first: enlarging bytes is cheaper than enlarging floats


def spread_image(images: Sequence[torch.Tensor] | torch.Tensor) -> tuple[torch.Tensor, float]:
    """A heat map of the per-pixel spread of a set of images, to show on a contact sheet where they differ.

    The spread at a pixel is the standard deviation over the images on the [0, 1] pixel scale,
    root-mean-squared over the channels. It is drawn with matplotlib's ``magma`` colour map from 0
    (black) to its largest value (white-yellow).

    Args:
        images: At least two images (C, H, W) of one size, in [-1, 1].

    Returns:
        ``(tile, largest)``: an RGB uint8 tensor (3, H, W) for :func:`contact_sheet`, and the largest spread.

    Raises:
        ValueError: Fewer than two images, or images of different shapes.
    """
    import matplotlib

    # Welford's running mean and squared deviations, not a stack of every image: the memory of one image whatever
    # the number of solutions, and exactly 0 where all images agree
    count, mean, deviations, shapes = 0, None, None, set()
    for i, img in enumerate(images):
        pixels = _sheet_image(img, i).to(torch.float64) / 255.0
        shapes.add(tuple(pixels.shape))
        if len(shapes) > 1:
            break
        count += 1
        if mean is None:
            mean, deviations = pixels, torch.zeros_like(pixels)
            continue
        delta = pixels - mean
        mean = mean + delta / count
        deviations = deviations + delta * (pixels - mean)
    if count < 2 or len(shapes) != 1:
        raise ValueError(f"a spread map needs at least two images of one shape, got {count} image(s) of shapes {sorted(shapes)}")
    spread = (deviations / count).mean(0).sqrt()  # (H, W): the channels' RMS of the standard deviation
    largest = float(spread.max())
    rgba = matplotlib.colormaps["magma"]((spread / largest).numpy() if largest > 0 else spread.numpy())
    tile = torch.from_numpy(np.round(rgba[..., :3] * 255).astype(np.uint8)).permute(2, 0, 1).contiguous()
    return tile, largest


def _default_columns(n: int) -> int:
    if n <= _MAX_COLUMNS:
        return n
    rows = math.ceil(n / _MAX_COLUMNS)
    return math.ceil(n / rows)  # balanced rows: 12 tiles -> 2 rows of 6, not 8 + 4


def _text_width(font, text: str) -> int:
    return math.ceil(font.getlength(text)) if text else 0


def contact_sheet(
    images: Sequence[torch.Tensor],
    labels: Sequence[str],
    path: Path | str,
    *,
    columns: int | None = None,
    scale: int | None = None,
    title: str | None = None,
) -> Path:
    """Draw labelled images side by side on a light background, like the e-GLASS paper's figures.

    Typical use: observation | first solution | explored solutions, each labelled with its
    measurement MSE. Images may differ in size and channels (an 8x8 observation next to 32x32
    solutions); all tiles share one size ``(max H * scale, max W * scale)``, and each image is
    enlarged by the largest integer nearest-neighbour factor that fits its tile (an 8x8 image in a
    128-px tile: 16x) and centred in it. A grayscale image on a sheet with colour images is drawn
    in grey on RGB. Labels may hold several lines (``"\\n"``) and are centred under their tiles.

    Layout, in pixels: with ``tile = (th, tw)``, ``L`` the largest number of label lines,
    ``f = clamp(round(tw / 10), 12, 22)`` the font size and ``lh = ceil(1.4 f)`` the line height,
    a cell is ``cw = max(tw, widest label line)`` wide and ``th + (L lh + 8 if L else 0)`` high; cells
    are separated by 10 px, with a 12-px margin around the sheet, and an optional title band of
    ``ceil(1.68 f)`` px per title line plus 10 px on top. The sheet is at least as wide as the title.

    Args:
        images: Tensors (C, H, W) with C in {1, 3} and values in [-1, 1] (also accepted: (H, W),
            (1, C, H, W), and uint8 pixels).
        labels: One label per image (may be empty strings).
        path: Destination ``.png``; its folder is created if needed.
        columns: Tiles per row; default all in one row up to 8, else balanced rows of at most 8.
        scale: Integer display factor for the largest image size; default the smallest one giving
            tiles of at least 128 px (4 for 32x32 images, 1 for 128x128 and larger).
        title: Optional title above the tiles.

    Returns:
        The path written. The PNG is grayscale ("L") when every image is, RGB otherwise, and
        byte-identical for identical inputs.

    Raises:
        ValueError: No images; a label count that differs from the image count; a malformed image
            (wrong shape, NaN); ``columns`` or ``scale`` not a positive integer.
    """
    path = _check_png_path(path)
    images = list(images)
    labels = list(labels)
    if not images:
        raise ValueError("images is empty: expected at least one image for the contact sheet")
    if len(labels) != len(images):
        raise ValueError(f"expected one label per image, got {len(labels)} labels for {len(images)} images")
    for i, label in enumerate(labels):
        if not isinstance(label, str):
            raise ValueError(f"labels[{i}] must be a string, got {type(label).__name__}")
    _check_title(title)
    for name, value in (("columns", columns), ("scale", scale)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1):
            raise ValueError(f"{name} must be a positive integer or None, got {value!r}")
    pixels = [_sheet_image(img, i) for i, img in enumerate(images)]

    n = len(pixels)
    max_h = max(p.shape[1] for p in pixels)
    max_w = max(p.shape[2] for p in pixels)
    if scale is None:
        scale = max(1, math.ceil(_MIN_TILE / max(max_h, max_w)))
    tile_h, tile_w = max_h * int(scale), max_w * int(scale)
    columns = _default_columns(n) if columns is None else min(int(columns), n)
    rows = math.ceil(n / columns)

    font_size = min(22, max(12, round(tile_w / 10)))
    font = _font(font_size)
    line_h = math.ceil(1.4 * font_size)
    label_lines = [label.split("\n") if label else [] for label in labels]
    n_lines = max(len(lines) for lines in label_lines)
    label_h = n_lines * line_h + 2 * _LABEL_PAD if n_lines else 0
    text_w = max((_text_width(font, line) for lines in label_lines for line in lines), default=0)
    cell_w, cell_h = max(tile_w, text_w), tile_h + label_h

    title_lines = title.split("\n") if title else []
    title_font = _font(round(1.2 * font_size))
    title_line_h = math.ceil(1.4 * round(1.2 * font_size))
    title_h = len(title_lines) * title_line_h + _GAP if title_lines else 0
    title_w = max((_text_width(title_font, line) for line in title_lines), default=0)

    width = max(2 * _MARGIN + columns * cell_w + (columns - 1) * _GAP, 2 * _MARGIN + title_w)
    height = 2 * _MARGIN + title_h + rows * cell_h + (rows - 1) * _GAP
    rgb = any(p.shape[0] == 3 for p in pixels)
    mode = "RGB" if rgb else "L"

    def colour(level: int):
        return (level, level, level) if rgb else level

    sheet = Image.new(mode, (width, height), colour(_BACKGROUND))
    draw = ImageDraw.Draw(sheet)
    grid_w = columns * cell_w + (columns - 1) * _GAP
    grid_x = (width - grid_w) // 2  # = _MARGIN unless a wide title widened the sheet
    # Text is placed by its left edge (x = centre - width / 2) rather than with anchors, which
    # Pillow's bitmap fallback font does not support.
    for j, line in enumerate(title_lines):
        x = width // 2 - _text_width(title_font, line) // 2
        draw.text((x, _MARGIN + j * title_line_h), line, font=title_font, fill=colour(_INK))
    for k, (pix, lines) in enumerate(zip(pixels, label_lines)):
        row, col = divmod(k, columns)
        cell_x = grid_x + col * (cell_w + _GAP)
        cell_y = _MARGIN + title_h + row * (cell_h + _GAP)
        tile_x = cell_x + (cell_w - tile_w) // 2
        _, h, w = pix.shape
        factor = min(tile_h // h, tile_w // w)
        big = upscale_nearest(pix, factor)
        if rgb and big.shape[0] == 1:
            big = big.expand(3, -1, -1)
        arr = np.ascontiguousarray(big.permute(1, 2, 0).numpy())
        tile = Image.fromarray(arr if rgb else arr[:, :, 0], mode=mode)
        sheet.paste(tile, (tile_x + (tile_w - w * factor) // 2, cell_y + (tile_h - h * factor) // 2))
        draw.rectangle((tile_x - 1, cell_y - 1, tile_x + tile_w, cell_y + tile_h), outline=colour(_FRAME))
        for j, line in enumerate(lines):
            y = cell_y + tile_h + _LABEL_PAD + j * line_h
            x = cell_x + cell_w // 2 - _text_width(font, line) // 2
            draw.text((x, y), line, font=font, fill=colour(_INK))

    buffer = io.BytesIO()
    sheet.save(buffer, format="PNG", optimize=False, compress_level=6)  # no metadata chunks: deterministic
    return write_bytes_atomic(path, buffer.getvalue())


# --------------------------------------------------------------------------------------------------
# plots


def _log_points(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """1-based indices and values of the positive entries (those a log axis can show), and how many were left out."""
    positive = values > 0
    return np.flatnonzero(positive) + 1, values[positive], int(values.size - positive.sum())


def plot_spectra(
    values_y: Any,
    values_x: Any,
    path: Path | str,
    *,
    labels: tuple[str, str] = ("H_Y (measurements)", "H_X (perceptual)"),
    title: str | None = None,
) -> Path:
    """Plot the top eigenvalues of H_Y and H_X on a log scale against their 1-based index.

    Values are drawn in the order given (the eigensolvers return them descending). Zero or negative
    values cannot be shown on a log axis and are left out (H_Y has exact zeros beyond its rank m,
    which Lanczos returns as tiny values of either sign); the legend says how many per operator.

    Args:
        values_y: Eigenvalues of H_Y, 1-D.
        values_x: Eigenvalues of H_X, 1-D (may differ in length from ``values_y``).
        path: Destination ``.png`` (800 x 500 px).
        labels: Legend labels of the two series.
        title: Title; default "Top eigenvalues".

    Raises:
        ValueError: A series that is not 1-D, empty, or holds NaN or infinities; labels that are not
            two strings.
    """
    path = _check_png_path(path)
    _check_title(title)
    if isinstance(labels, str) or len(labels) != 2 or not all(isinstance(s, str) for s in labels):
        raise ValueError(f"labels must be two strings (H_Y series, H_X series), got {labels!r}")
    series = [
        (_finite(_array(values_y, "values_y", ndim=1), "values_y"), labels[0], "o", "C0"),
        (_finite(_array(values_x, "values_x", ndim=1), "values_x"), labels[1], "s", "C1"),
    ]
    with _style():
        fig = _figure(_FIGSIZE_PLOT)
        ax = fig.add_subplot()
        any_positive = False
        for values, label, marker, color in series:
            index, shown, skipped = _log_points(values)
            if not shown.size:
                text = f"{label}: no positive values to show"
            elif skipped:
                text = f"{label}: {skipped} value(s) <= 0 not shown"
            else:
                text = label
            any_positive |= bool(shown.size)
            ax.plot(index, shown, marker=marker, markersize=4, linewidth=1, color=color, label=text)
        if any_positive:
            ax.set_yscale("log")
        _integer_ticks(ax.xaxis)
        return _finish(fig, ax, path, xlabel="eigenvalue index i", ylabel="eigenvalue",
                       title="Top eigenvalues (log scale)" if title is None else title)


def plot_coupling(C: Any, path: Path | str, *, threshold: float | None = None, title: str | None = None) -> Path:
    """Heat map of |C|, the coupling matrix ``C = U_k^T V_k`` of the eigenvectors of H_Y and H_X.

    Row i is the i-th top eigenvector u^i of H_Y, column j the j-th top eigenvector v^j of H_X (ticks
    1-based), so entry (i, j) is ``|<u^i, v^j>|``, the absolute cosine between them. The colour bar
    spans [0, 1]; a value above 1 (rounding) is drawn as 1. With ``threshold``, entries with
    ``|C_ij| > threshold`` are circled and counted in the title.

    Args:
        C: Matrix (k_Y, k_X).
        path: Destination ``.png`` (700 x 600 px).
        threshold: Optional cosine threshold in [0, 1].
        title: Title; default "|C| = |U^T V|".

    Raises:
        ValueError: ``C`` not 2-D, empty or not finite; ``threshold`` outside [0, 1].
    """
    path = _check_png_path(path)
    _check_title(title)
    A = np.abs(_finite(_array(C, "C", ndim=2), "C"))
    if threshold is not None:
        if isinstance(threshold, bool) or not isinstance(threshold, numbers.Real) or not 0 <= threshold <= 1:
            raise ValueError(f"threshold must be a cosine in [0, 1], got {threshold!r}")
    k_y, k_x = A.shape
    with _style():
        fig = _figure(_FIGSIZE_COUPLING)
        ax = fig.add_subplot()
        # extent puts pixel (i, j) at centre (j + 1, i + 1): the ticks read as 1-based indices.
        image = ax.imshow(
            A, vmin=0.0, vmax=1.0, cmap="viridis", interpolation="nearest", aspect="auto",
            extent=(0.5, k_x + 0.5, k_y + 0.5, 0.5),
        )
        fig.colorbar(image, ax=ax, label=r"$|C_{ij}| = |\langle u^i, v^j \rangle|$")
        _integer_ticks(ax.xaxis)
        _integer_ticks(ax.yaxis)
        ax.set_xlabel(r"$H_X$ eigenvector index j (perceptual)")
        ax.set_ylabel(r"$H_Y$ eigenvector index i (measurements)")
        text = r"$|C| = |U^T V|$" if title is None else title
        if threshold is not None:
            rows, cols = np.nonzero(A > threshold)
            # Circles about 0.7 cell wide, in points (the axes span about 4.8 inches = 345 points).
            size = float(np.clip(0.7 * 345.0 / max(k_y, k_x), 3.0, 12.0))
            ax.plot(cols + 1, rows + 1, linestyle="none", marker="o", markersize=size,
                    markerfacecolor="none", markeredgecolor="red", markeredgewidth=1.2)
            text += f"\ncircled: {rows.size} entries above {threshold:g}"
        ax.set_title(text)
        return _save(fig, path)


def plot_correlation(
    cos_start_Y: Any,
    cos_final_Y: Any,
    cos_start_X: Any,
    cos_final_X: Any,
    path: Path | str,
    *,
    start_label: str = "v^K",
    final_label: str = "d",
    threshold: float | None = None,
    title: str | None = None,
) -> Path:
    """The e-GLASS paper's Fig. 1: cosines of the start and final directions with top eigenvectors.

    Left panel: ``|<v^K, u^i>|`` and ``|<d, u^i>|`` against the index i of the top eigenvectors u^i
    of H_Y (the measurement metric): after the projection, d should be orthogonal to them. Right
    panel: the same with the top eigenvectors v^j of H_X (the perceptual metric): d should stay
    correlated with them. Labels are typeset as math when they parse as such (``v^K``).

    Args:
        cos_start_Y, cos_final_Y: Cosines of the start / final direction with the top H_Y
            eigenvectors (equal lengths; signs are dropped).
        cos_start_X, cos_final_X: The same with the top H_X eigenvectors (equal lengths).
        path: Destination ``.png`` (1200 x 450 px).
        start_label, final_label: Names of the two directions.
        threshold: Optional projection threshold, drawn as a dashed line in the H_Y panel.
        title: Optional overall title.

    Raises:
        ValueError: Arrays that are not 1-D, empty or not finite; mismatched lengths within a
            panel; ``threshold`` outside [0, 1].
    """
    path = _check_png_path(path)
    _check_title(title)
    sy = np.abs(_finite(_array(cos_start_Y, "cos_start_Y", ndim=1), "cos_start_Y"))
    fy = np.abs(_finite(_array(cos_final_Y, "cos_final_Y", ndim=1), "cos_final_Y"))
    sx = np.abs(_finite(_array(cos_start_X, "cos_start_X", ndim=1), "cos_start_X"))
    fx = np.abs(_finite(_array(cos_final_X, "cos_final_X", ndim=1), "cos_final_X"))
    _same_length(sy, fy, "cos_start_Y", "cos_final_Y", "one cosine per top H_Y eigenvector")
    _same_length(sx, fx, "cos_start_X", "cos_final_X", "one cosine per top H_X eigenvector")
    if threshold is not None:
        if isinstance(threshold, bool) or not isinstance(threshold, numbers.Real) or not 0 <= threshold <= 1:
            raise ValueError(f"threshold must be a cosine in [0, 1], got {threshold!r}")
    for name, label in (("start_label", start_label), ("final_label", final_label)):
        if not isinstance(label, str) or not label:
            raise ValueError(f"{name} must be a non-empty string, got {label!r}")
    start, final = _math_label(start_label), _math_label(final_label)
    top = max(1.05, float(max(sy.max(), fy.max(), sx.max(), fx.max())) * 1.02)
    with _style():
        fig = _figure(_FIGSIZE_CORRELATION)
        axes = fig.subplots(1, 2, sharey=True)
        panels = (
            (axes[0], sy, fy, r"$H_Y$ (measurements)", "u", "i"),
            (axes[1], sx, fx, r"$H_X$ (perceptual)", "v", "j"),
        )
        for ax, s, f, name, vec, idx in panels:
            index = np.arange(1, s.size + 1)
            ax.plot(index, s, marker="o", markersize=4, linewidth=1, color="C0", label=f"start {start}")
            ax.plot(index, f, marker="s", markersize=4, linewidth=1, color="C3", label=f"final {final}")
            ax.set_xlabel(f"index {idx} of the top eigenvector ${vec}^{idx}$ of {name}")
            ax.set_title(f"cosines with the top eigenvectors of {name}")
            ax.set_ylim(0.0, top)
            _integer_ticks(ax.xaxis)
            ax.grid(True, alpha=0.5)
        if threshold is not None:
            axes[0].axhline(threshold, linestyle="--", color="0.3", linewidth=1, label=f"threshold {threshold:g}")
        axes[0].set_ylabel(r"$|\cos|$")
        axes[0].legend()
        axes[1].legend()
        if title is not None:
            fig.suptitle(title)
        return _save(fig, path)


def plot_time_to_solutions(curves: Mapping[str, Any], path: Path | str, *, title: str | None = None) -> Path:
    """Wall-clock time to obtain N solutions, one line with markers per method, on log-log axes.

    Args:
        curves: Mapping method -> (N values, seconds), two 1-D arrays of equal length. N must be
            positive; seconds positive, or NaN / infinite for runs that did not finish, which are
            left out and counted in the legend.
        path: Destination ``.png`` (800 x 500 px).
        title: Title; default "Time to N solutions".

    Raises:
        ValueError: Not a non-empty mapping of pairs; arrays not 1-D, empty or of different lengths;
            N not finite and positive; seconds zero or negative.
    """
    path = _check_png_path(path)
    _check_title(title)
    _check_series(curves, "curves")
    data = []
    for method, (n_values, seconds) in curves.items():
        n_arr = _finite(_array(n_values, f"curves[{method!r}] N values", ndim=1), f"curves[{method!r}] N values")
        t_arr = _array(seconds, f"curves[{method!r}] seconds", ndim=1)
        _same_length(n_arr, t_arr, f"curves[{method!r}] N values", "seconds", "one time per N")
        if (n_arr <= 0).any():
            raise ValueError(f"curves[{method!r}]: N values must be positive for a log axis, got {n_arr.min():g}")
        if (t_arr[np.isfinite(t_arr)] <= 0).any():
            raise ValueError(f"curves[{method!r}]: seconds must be positive, got {np.nanmin(t_arr):g}")
        data.append((method, n_arr, t_arr))
    with _style():
        fig = _figure(_FIGSIZE_PLOT)
        ax = fig.add_subplot()
        for i, (method, n_arr, t_arr) in enumerate(data):
            done = np.isfinite(t_arr)
            ax.plot(n_arr[done], t_arr[done], marker=_marker(i), markersize=5, linewidth=1.2,
                    label=_series_label(method, done, "run(s) did not finish"))
        ax.set_xscale("log")
        ax.set_yscale("log")
        from matplotlib.ticker import LogFormatter, NullFormatter

        n_all = np.unique(np.concatenate([n_arr for _, n_arr, _ in data]))
        if n_all.size <= 12:  # few N values (the usual 1, 2, 5, 10...): tick exactly those
            ax.set_xticks(n_all, labels=[f"{v:g}" for v in n_all])
            ax.xaxis.set_minor_formatter(NullFormatter())
        # Plain numbers ("30", "40") instead of the default "3 x 10^1" on short log ranges.
        ax.yaxis.set_major_formatter(LogFormatter())
        ax.yaxis.set_minor_formatter(LogFormatter(labelOnlyBase=False))
        return _finish(fig, ax, path, xlabel="number of solutions N", ylabel="wall-clock time (s)",
                       title="Time to N solutions" if title is None else title)


def plot_diversity(
    points: Mapping[str, Any],
    path: Path | str,
    *,
    tau: float = DEFAULT_TAU,
    distance_label: str = "perceptual distance",
    title: str | None = None,
) -> Path:
    """Scatter of perceptual distance against measurement MSE, one colour per method.

    The MSE axis is logarithmic; the feasibility threshold tau is a vertical dashed line, so the
    feasible solutions are the points left of it. Points with MSE <= 0 cannot be placed on the log
    axis and are counted in the legend.

    Args:
        points: Mapping method -> (measurement MSE values, perceptual distances), two 1-D arrays of
            equal length and finite values.
        path: Destination ``.png`` (800 x 500 px).
        tau: Feasibility threshold (positive).
        distance_label: Label of the vertical axis.
        title: Title; default "Diversity and feasibility".

    Raises:
        ValueError: Not a non-empty mapping of pairs; arrays not 1-D, empty, not finite or of
            different lengths; ``tau`` not finite and positive.
    """
    path = _check_png_path(path)
    _check_title(title)
    _check_series(points, "points")
    if isinstance(tau, bool) or not isinstance(tau, numbers.Real) or not (math.isfinite(tau) and tau > 0):
        raise ValueError(f"tau must be a positive finite number, got {tau!r}")
    data = []
    for method, (mse, dist) in points.items():
        mse_arr = _finite(_array(mse, f"points[{method!r}] MSE", ndim=1), f"points[{method!r}] MSE")
        dist_arr = _finite(_array(dist, f"points[{method!r}] distances", ndim=1), f"points[{method!r}] distances")
        _same_length(mse_arr, dist_arr, f"points[{method!r}] MSE", "distances", "one distance per solution")
        data.append((method, mse_arr, dist_arr))
    with _style():
        fig = _figure(_FIGSIZE_PLOT)
        ax = fig.add_subplot()
        for i, (method, mse_arr, dist_arr) in enumerate(data):
            shown = mse_arr > 0
            ax.scatter(mse_arr[shown], dist_arr[shown], marker=_marker(i), s=28, alpha=0.8,
                       label=_series_label(method, shown, "point(s) with MSE <= 0 not shown"))
        ax.axvline(float(tau), linestyle="--", color="0.2", linewidth=1.2, label=rf"$\tau$ = {float(tau):.3g}")
        ax.set_xscale("log")
        return _finish(fig, ax, path, xlabel="measurement MSE ([0, 1] pixel scale)", ylabel=distance_label,
                       title="Diversity and feasibility" if title is None else title, minor_grid=False)


def plot_latent_spectra(values: Any, average: Any, path: Path | str, *, title: str | None = None) -> Path:
    """The top eigenvalues of the perceptual metric at many latents (one thin line each), their median and the average metric's.

    Log scale against the 1-based index; values <= 0 are left out (a log axis cannot show them).

    Args:
        values: (L, k) eigenvalues, one row per latent, descending.
        average: (k,) eigenvalues of the average metric.
        path: Destination ``.png`` (800 x 500 px).
        title: Title; default "Perceptual metric at L latents".

    Raises:
        ValueError: ``values`` not 2-D, ``average`` not 1-D, either empty or not finite.
    """
    path = _check_png_path(path)
    _check_title(title)
    V = _finite(_array(values, "values", ndim=2), "values")
    avg = _finite(_array(average, "average", ndim=1), "average")
    with _style():
        fig = _figure(_FIGSIZE_PLOT)
        ax = fig.add_subplot()
        for i, row in enumerate(V):
            index, shown, _ = _log_points(row)
            ax.plot(index, shown, color="C0", alpha=0.25, linewidth=0.8, label="each latent" if i == 0 else None)
        index, shown, _ = _log_points(np.median(V, axis=0))
        ax.plot(index, shown, color="C0", linewidth=2.0, marker="o", markersize=3, label="median over latents")
        index, shown, _ = _log_points(avg)
        ax.plot(index, shown, color="C1", linewidth=2.0, marker="s", markersize=3, label="average metric")
        ax.set_yscale("log")
        _integer_ticks(ax.xaxis)
        return _finish(fig, ax, path, xlabel="eigenvalue index i", ylabel="eigenvalue",
                       title=f"Perceptual metric at {V.shape[0]} latents (log scale)" if title is None else title)


def plot_overlaps(O: Any, path: Path | str, *, baseline: float | None = None, title: str | None = None) -> Path:
    """Heat map of the overlaps ``||U_i^T U_j||_F^2 / k`` of the top-k eigenspaces at latents i and j (in [0, 1]).

    Args:
        O: (L, L) overlaps.
        path: Destination ``.png`` (700 x 600 px).
        baseline: The overlap of random spaces (k / n), named in the colour bar's label.
        title: Title; default "Consistency of the top eigenspaces".

    Raises:
        ValueError: ``O`` not 2-D, empty or not finite.
    """
    path = _check_png_path(path)
    _check_title(title)
    A = _finite(_array(O, "O", ndim=2), "O")
    L = A.shape[0]
    off = A[~np.eye(L, dtype=bool)] if L > 1 else A.reshape(-1)
    with _style():
        fig = _figure(_FIGSIZE_COUPLING)
        ax = fig.add_subplot()
        image = ax.imshow(A, vmin=0.0, vmax=1.0, cmap="viridis", interpolation="nearest", extent=(0.5, L + 0.5, L + 0.5, 0.5))
        label = r"overlap $\|U_i^T U_j\|_F^2 / k$" + (f" (random spaces: {baseline:.3g})" if baseline is not None else "")
        fig.colorbar(image, ax=ax, label=label)
        _integer_ticks(ax.xaxis)
        _integer_ticks(ax.yaxis)
        ax.set_xlabel("latent j")
        ax.set_ylabel("latent i")
        text = "Consistency of the top eigenspaces" if title is None else title
        ax.set_title(f"{text}\nmean off-diagonal overlap {float(off.mean()):.3f}")
        return _save(fig, path)


def plot_spectral_density(grid: Any, density: Any, path: Path | str, *, log: bool = True, nodes: Any = None,
                          title: str | None = None) -> Path:
    """A spectral density (stochastic Lanczos quadrature), on a log density axis by default (curvature spectra are
    a bulk near zero and a few outliers, which a linear axis would hide).

    Args:
        grid: (G,) points.
        density: (G,) the density at them.
        path: Destination ``.png`` (800 x 500 px).
        log: Log scale for the density (values below 1e-12 of the peak are clipped there).
        nodes: Optional quadrature nodes (any shape), drawn as ticks along the bottom.
        title: Title; default "Spectral density".

    Raises:
        ValueError: ``grid`` and ``density`` not 1-D of one length, or not finite.
    """
    path = _check_png_path(path)
    _check_title(title)
    t = _finite(_array(grid, "grid", ndim=1), "grid")
    d = _finite(_array(density, "density", ndim=1), "density")
    _same_length(t, d, "grid", "density", "one density value per grid point")
    with _style():
        fig = _figure(_FIGSIZE_PLOT)
        ax = fig.add_subplot()
        shown = np.maximum(d, 1e-12 * max(float(d.max()), 1e-300)) if log else d
        ax.plot(t, shown, color="C0", linewidth=1.2, label="smoothed density")
        if nodes is not None:
            x = np.asarray(torch.as_tensor(nodes, dtype=torch.float64).reshape(-1))
            x = x[np.isfinite(x)]
            ax.plot(x, np.full_like(x, float(shown.min())), linestyle="none", marker="|", color="C1", markersize=8,
                    label=f"quadrature nodes ({x.size})")
        if log:
            ax.set_yscale("log")
        return _finish(fig, ax, path, xlabel="eigenvalue", ylabel="density", title="Spectral density" if title is None else title)
