"""Contact sheets, figures and the summary table: exact sheet geometry and pixels, fixed figure sizes,
byte-for-byte determinism, and one-line errors for malformed inputs."""

from __future__ import annotations

import io
import warnings

import matplotlib
import numpy as np
import pytest
import torch
from PIL import Image
from rich.console import Console

from hvp_explore.io import figures as report
from hvp_explore.io.images import to_uint8
from hvp_explore.io.tables import summary_table

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _grid_image(shape, seed):
    """Random image whose values lie on the 8-bit grid u / 127.5 - 1, so pixels are known exactly."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, shape, generator=g).double() / 127.5 - 1


def _open(path):
    data = path.read_bytes()
    assert data.startswith(_PNG_SIGNATURE)
    img = Image.open(io.BytesIO(data))
    img.load()
    return img


def _pixels(path):
    return np.asarray(_open(path))


# --------------------------------------------------------------------------------------------------
# contact sheet: geometry and content
#
# Geometry (report's docstring): margin 12, gap 10, tile = max size * scale, font size
# clamp(round(tile_w / 10), 12, 22), line height ceil(1.4 * font size), label band
# lines * line height + 8.
# For 128-px tiles: font 13, line height 19, so one label line -> 27 px, two lines -> 46 px.


def test_sheet_geometry_and_tile_pixels_mixed_sizes(tmp_path):
    obs = _grid_image((1, 8, 8), 0)
    sols = [_grid_image((1, 32, 32), s) for s in (1, 2, 3)]
    labels = ["observation", "first solution\nMSE 3.1e-05", "+v10  η 8.2\nMSE 1.9e-03", "-v10"]
    path = report.contact_sheet([obs, *sols], labels, tmp_path / "sheet.png")
    img = _open(path)
    # scale = ceil(128 / 32) = 4 -> 128-px tiles; 4 columns: 2*12 + 4*128 + 3*10 = 566 wide;
    # 2 label lines: 2*12 + 128 + 46 = 198 high.
    assert img.size == (566, 198) and img.mode == "L"
    px = np.asarray(img)
    for k, image in enumerate([obs, *sols]):
        x0 = 12 + k * (128 + 10)
        tile = px[12 : 12 + 128, x0 : x0 + 128]
        factor = 128 // image.shape[-1]  # 16 for the 8x8 observation, 4 for the 32x32 solutions
        expected = to_uint8(image)[0].repeat_interleave(factor, 0).repeat_interleave(factor, 1).numpy()
        np.testing.assert_array_equal(tile, expected)
        # 1-px grey frame just outside the tile, white background beyond it.
        assert px[11, x0 + 5] == report._FRAME and px[12 + 5, x0 - 1] == report._FRAME
        assert px[10, x0 + 5] == 255
    # Every label band holds dark text, centred under its tile.
    for k in range(4):
        x0 = 12 + k * (128 + 10)
        band = px[12 + 128 + 1 : 198 - 12, x0 : x0 + 128]
        assert band.min() < 100
        dark = np.nonzero(band.min(axis=0) < 100)[0]
        assert abs((dark.min() + dark.max()) / 2 - 63.5) <= 3
    assert px[:11].min() == 255 and px[:, :11].min() == 255  # margins stay background (the frame is at 11)


def test_sheet_rgb_and_grayscale_mix(tmp_path):
    gray = _grid_image((1, 16, 16), 4)
    rgb = _grid_image((3, 16, 16), 5)
    path = report.contact_sheet([gray, rgb], ["gray", "rgb"], tmp_path / "sheet.png")
    img = _open(path)
    # scale = ceil(128 / 16) = 8 -> 128-px tiles, one label line: 2*12 + 2*128 + 10 = 290 by 2*12 + 128 + 27 = 179.
    assert img.mode == "RGB" and img.size == (290, 179)
    px = np.asarray(img)
    up = lambda t: t.repeat_interleave(8, -2).repeat_interleave(8, -1)  # noqa: E731
    gray_tile = px[12:140, 12:140]
    np.testing.assert_array_equal(gray_tile, np.repeat(up(to_uint8(gray))[0].numpy()[:, :, None], 3, axis=2))
    np.testing.assert_array_equal(px[12:140, 150:278], up(to_uint8(rgb)).permute(1, 2, 0).numpy())


def test_sheet_non_integer_size_ratio_is_centred(tmp_path):
    small, big = _grid_image((1, 24, 24), 6), _grid_image((1, 32, 32), 7)
    path = report.contact_sheet([small, big], ["", ""], tmp_path / "sheet.png", scale=4)
    px = _pixels(path)
    # No labels -> no label band: 2*12 + 128 = 152 high. The 24x24 image fits 128 // 24 = 5 times
    # (120 px) and is centred with 4 background pixels on each side.
    assert px.shape == (152, 2 * 12 + 2 * 128 + 10)
    tile = px[12:140, 12:140]
    expected = to_uint8(small)[0].repeat_interleave(5, 0).repeat_interleave(5, 1).numpy()
    np.testing.assert_array_equal(tile[4:124, 4:124], expected)
    assert tile[:4].min() == 255 and tile[124:].min() == 255 and tile[:, :4].min() == 255


def test_sheet_columns_and_wrapping(tmp_path):
    images = [_grid_image((1, 32, 32), s) for s in range(12)]
    labels = [f"s{i}" for i in range(12)]
    default = _open(report.contact_sheet(images, labels, tmp_path / "a.png"))
    # 12 tiles -> balanced rows of 6: 2*12 + 6*128 + 5*10 = 842 wide, 2*12 + 2*(128 + 27) + 10 = 344 high.
    assert default.size == (842, 344)
    three = _open(report.contact_sheet(images[:5], labels[:5], tmp_path / "b.png", columns=3))
    assert three.size == (2 * 12 + 3 * 128 + 2 * 10, 2 * 12 + 2 * (128 + 27) + 10)
    # An explicit scale sets the tile size: 32 * 2 = 64 px, font 12, line height 17, band 25.
    small = _open(report.contact_sheet(images[:2], labels[:2], tmp_path / "c.png", scale=2))
    assert small.size == (2 * 12 + 2 * 64 + 10, 2 * 12 + 64 + 25)


def test_sheet_title_and_long_labels_widen_the_layout(tmp_path):
    images = [_grid_image((1, 32, 32), s) for s in range(2)]
    plain = _open(report.contact_sheet(images, ["a", "b"], tmp_path / "a.png"))
    titled = _open(report.contact_sheet(images, ["a", "b"], tmp_path / "b.png", title="SR x4"))
    # Title font 16 (1.2 * 13), line height ceil(1.4 * 16) = 23, plus a 10-px gap.
    assert titled.size == (plain.size[0], plain.size[1] + 23 + 10)
    long = _open(report.contact_sheet(images, ["a" * 60, "b"], tmp_path / "c.png"))
    assert long.size[0] > plain.size[0] and long.size[1] == plain.size[1]


def test_sheet_labels_are_drawn(tmp_path):
    images = [_grid_image((1, 32, 32), s) for s in range(3)]
    a = _pixels(report.contact_sheet(images, ["observation", "first", "MSE 1e-3"], tmp_path / "a.png"))
    b = _pixels(report.contact_sheet(images, ["observation", "first", "MSE 2e-3"], tmp_path / "b.png"))
    assert a.shape == b.shape
    np.testing.assert_array_equal(a[:140], b[:140])  # the tiles are the same
    x0 = 12 + 2 * 138
    assert not np.array_equal(a[140:, x0 : x0 + 128], b[140:, x0 : x0 + 128])  # only the changed label differs
    np.testing.assert_array_equal(a[140:, : x0 - 5], b[140:, : x0 - 5])


def test_sheet_is_deterministic_without_metadata(tmp_path):
    images = [_grid_image((1, 8, 8), 0), _grid_image((3, 32, 32), 1)]
    labels = ["observation", "first solution\nMSE 3.1e-05"]
    a = report.contact_sheet(images, labels, tmp_path / "a.png", title="t").read_bytes()
    b = report.contact_sheet(images, labels, tmp_path / "b.png", title="t").read_bytes()
    assert a == b
    assert b"tEXt" not in a and b"tIME" not in a and b"iTXt" not in a


def test_sheet_accepts_uint8_batched_and_grad_tensors(tmp_path):
    img = _grid_image((1, 32, 32), 3)
    ref = report.contact_sheet([img], ["x"], tmp_path / "ref.png").read_bytes()
    for variant in (to_uint8(img), img[None], img[0], img.float().requires_grad_()):
        assert report.contact_sheet([variant], ["x"], tmp_path / "v.png").read_bytes() == ref


@pytest.mark.parametrize(
    ("images", "labels", "kwargs", "match"),
    [
        ([], [], {}, "images is empty"),
        ([torch.zeros(1, 8, 8)], ["a", "b"], {}, "one label per image, got 2 labels for 1 images"),
        ([torch.zeros(2, 8, 8)], ["a"], {}, r"images\[0\] must have shape \(C, H, W\) with C = 1 or 3, got shape \(2, 8, 8\)"),
        ([torch.zeros(1, 1, 1, 8, 8)], ["a"], {}, r"images\[0\] must have shape"),
        ([torch.full((1, 8, 8), float("nan"))], ["a"], {}, r"images\[0\] contains NaN"),
        ([[1, 2]], ["a"], {}, r"images\[0\] must be a tensor"),
        ([torch.zeros(1, 8, 8)], [3], {}, r"labels\[0\] must be a string"),
        ([torch.zeros(1, 8, 8)], ["a"], {"columns": 0}, "columns must be a positive integer"),
        ([torch.zeros(1, 8, 8)], ["a"], {"scale": 1.5}, "scale must be a positive integer"),
    ],
)
def test_sheet_rejects_malformed_input(tmp_path, images, labels, kwargs, match):
    with pytest.raises(ValueError, match=match):
        report.contact_sheet(images, labels, tmp_path / "sheet.png", **kwargs)
    assert list(tmp_path.iterdir()) == []


def test_sheet_falls_back_to_pillows_font(tmp_path, monkeypatch):
    images = [_grid_image((1, 32, 32), 0)]
    report._font.cache_clear()
    monkeypatch.setattr(matplotlib, "get_data_path", lambda: str(tmp_path / "no-fonts"))
    try:
        px = _pixels(report.contact_sheet(images, ["MSE 1e-3"], tmp_path / "sheet.png", title="t"))
    finally:
        report._font.cache_clear()  # the next sheet loads DejaVu Sans again
    assert px[12 + 128 + 1 :].min() < 100  # the label is drawn


def test_sheet_rejects_non_png_path(tmp_path):
    with pytest.raises(ValueError, match="expected a path ending in .png"):
        report.contact_sheet([torch.zeros(1, 8, 8)], ["a"], tmp_path / "sheet.jpg")


# --------------------------------------------------------------------------------------------------
# plots


def _coupling():
    g = torch.Generator().manual_seed(0)
    U, _ = torch.linalg.qr(torch.randn(20, 6, generator=g, dtype=torch.float64))
    V, _ = torch.linalg.qr(torch.randn(20, 4, generator=g, dtype=torch.float64))
    return U.T @ V


_PLOTS = {
    # name: (call writing to a path, expected (width, height) in pixels)
    "spectra": (lambda p: report.plot_spectra(np.logspace(2, -3, 12), torch.logspace(1, -2, 8), p), (800, 500)),
    "coupling": (lambda p: report.plot_coupling(_coupling(), p, threshold=0.5), (700, 600)),
    "correlation": (
        lambda p: report.plot_correlation(np.full(6, 0.4), np.zeros(6), np.linspace(0, 1, 4), np.linspace(1, 0, 4), p),
        (1200, 450),
    ),
    "time": (lambda p: report.plot_time_to_solutions({"e-GLASS": ([1, 2, 5, 10], [3.0, 3.1, 3.3, 4.0])}, p), (800, 500)),
    "diversity": (lambda p: report.plot_diversity({"e-GLASS": (np.array([1e-4, 1e-3]), np.array([0.2, 0.5]))}, p), (800, 500)),
}


@pytest.mark.parametrize("name", list(_PLOTS))
def test_plot_size_and_determinism(tmp_path, name):
    draw, size = _PLOTS[name]
    first = draw(tmp_path / "a.png")
    assert first == tmp_path / "a.png"
    assert _open(first).size == size
    second = draw(tmp_path / "b.png")
    data = first.read_bytes()
    assert data == second.read_bytes()
    assert b"tEXt" not in data  # no "Software: matplotlib x.y" chunk
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "b.png"]  # no temporary files left


def test_plots_ignore_and_keep_the_callers_matplotlib_settings(tmp_path):
    draw, _ = _PLOTS["spectra"]
    reference = draw(tmp_path / "a.png").read_bytes()
    with matplotlib.rc_context({"lines.linewidth": 7.0, "axes.facecolor": "red", "font.size": 30}):
        styled = draw(tmp_path / "b.png").read_bytes()
        assert matplotlib.rcParams["lines.linewidth"] == 7.0  # the caller's settings are back after the call
        assert matplotlib.rcParams["font.size"] == 30
    assert styled == reference


def test_spectra_skips_nonpositive_values_without_warnings(tmp_path):
    values_y = np.r_[np.logspace(2, -3, 10), 0.0, -1e-12]  # H_Y beyond its rank: exact zeros, rounding
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        report.plot_spectra(values_y, np.logspace(1, -2, 12), tmp_path / "a.png")
        report.plot_spectra(np.zeros(4), -np.ones(3), tmp_path / "b.png")  # nothing to show on a log axis
    assert _open(tmp_path / "a.png").size == (800, 500) and _open(tmp_path / "b.png").size == (800, 500)


def test_log_points_keep_their_one_based_index():
    index, values, skipped = report._log_points(np.array([5.0, 1.0, 0.0, -1e-12, 0.5]))
    np.testing.assert_array_equal(index, [1, 2, 5])  # the value after the zeros keeps index 5
    np.testing.assert_array_equal(values, [5.0, 1.0, 0.5])
    assert skipped == 2


def _colour_count(path, value: float) -> int:
    """Number of pixels with exactly the viridis colour of ``value`` (8-bit RGB)."""
    rgba = np.array(matplotlib.colormaps["viridis"](float(value), bytes=True))  # as imshow quantises it
    px = _pixels(path)[:, :, :3]
    return int((px == rgba[:3]).all(axis=2).sum())


def test_coupling_draws_absolute_values_on_a_fixed_scale(tmp_path):
    C = np.array([[1.0, 0.0], [0.0, -0.5]])
    a = report.plot_coupling(C, tmp_path / "a.png")
    # Each of the four cells is about 250 x 250 px: the cells' colours are viridis(1), viridis(0)
    # (twice) and viridis(0.5) for |-0.5|. The colour bar adds thin strips of the same colours.
    assert _colour_count(a, 1.0) > 20_000 and _colour_count(a, 0.5) > 20_000 and _colour_count(a, 0.0) > 40_000
    # Signs are dropped, and the scale is fixed to [0, 1] (not to the data's range): 0.5 in a matrix
    # whose largest entry is 0.5 keeps the colour of 0.5.
    assert report.plot_coupling(-C, tmp_path / "b.png").read_bytes() == a.read_bytes()
    half = report.plot_coupling(np.array([[0.5]]), tmp_path / "c.png")
    assert _colour_count(half, 0.5) > 100_000 and _colour_count(half, 1.0) < 5_000


def test_correlation_drops_signs(tmp_path):
    g = np.random.default_rng(0)
    cosines = [g.uniform(-1, 1, 6), g.uniform(-1, 1, 6), g.uniform(-1, 1, 4), g.uniform(-1, 1, 4)]
    a = report.plot_correlation(*cosines, tmp_path / "a.png", threshold=0.1)
    b = report.plot_correlation(*[-c for c in cosines], tmp_path / "b.png", threshold=0.1)
    assert a.read_bytes() == b.read_bytes()


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda p: report.plot_spectra(np.ones((2, 2)), np.ones(3), p), r"values_y must be 1-D, got shape \(2, 2\)"),
        (lambda p: report.plot_spectra(np.ones(3), [], p), "values_x is empty"),
        (lambda p: report.plot_spectra([1.0, float("nan")], np.ones(3), p), "values_y contains 1 NaN or infinite"),
        (lambda p: report.plot_spectra(np.ones(3), np.ones(3), p, labels=("only one",)), "labels must be two strings"),
        (lambda p: report.plot_coupling(np.ones(3), p), r"C must be 2-D, got shape \(3,\)"),
        (lambda p: report.plot_coupling(torch.ones(2, 2, 2), p), r"C must be 2-D, got shape \(2, 2, 2\)"),
        (lambda p: report.plot_coupling(np.ones((0, 3)), p), "C is empty"),
        (lambda p: report.plot_coupling(np.full((2, 2), np.inf), p), "C contains 4 NaN or infinite"),
        (lambda p: report.plot_coupling(np.eye(2), p, threshold=1.5), r"threshold must be a cosine in \[0, 1\]"),
        (
            lambda p: report.plot_correlation(np.ones(5), np.ones(4), np.ones(3), np.ones(3), p),
            r"cos_start_Y and cos_final_Y must have the same length \(one cosine per top H_Y eigenvector\), got 5 and 4",
        ),
        (
            lambda p: report.plot_correlation(np.ones(5), np.ones(5), np.ones(3), np.ones(2), p),
            "cos_start_X and cos_final_X must have the same length",
        ),
        (lambda p: report.plot_correlation(np.ones(2), np.ones(2), np.ones(2), np.ones(2), p, start_label=""), "start_label"),
        (lambda p: report.plot_time_to_solutions({}, p), "non-empty mapping"),
        (lambda p: report.plot_time_to_solutions({"a": ([1, 2], [1.0])}, p), "same length"),
        (lambda p: report.plot_time_to_solutions({"a": ([0, 2], [1.0, 2.0])}, p), "N values must be positive"),
        (lambda p: report.plot_time_to_solutions({"a": ([1, 2], [-1.0, 2.0])}, p), "seconds must be positive"),
        (lambda p: report.plot_time_to_solutions({"a": [1, 2, 3]}, p), r"curves\['a'\] must be a pair"),
        (lambda p: report.plot_diversity({"a": ([1e-3], [0.1])}, p, tau=0.0), "tau must be a positive finite number"),
        (lambda p: report.plot_diversity({"a": ([1e-3, np.nan], [0.1, 0.2])}, p), "MSE contains 1 NaN"),
        (lambda p: report.plot_diversity({"a": ([1e-3, 1e-4], [0.1])}, p), "same length"),
        (lambda p: report.plot_spectra(np.ones(3), np.ones(3), p.with_suffix(".pdf")), "expected a path ending in .png"),
    ],
)
def test_plots_reject_malformed_input(tmp_path, call, match):
    with pytest.raises(ValueError, match=match):
        call(tmp_path / "plot.png")
    assert list(tmp_path.iterdir()) == []


def test_time_to_solutions_leaves_out_unfinished_runs(tmp_path):
    curves = {"e-GLASS": ([1, 2, 5], [3.0, 3.1, 3.3]), "PULSE": ([1, 2, 5], [10.0, 20.0, float("nan")])}
    assert _open(report.plot_time_to_solutions(curves, tmp_path / "t.png")).size == (800, 500)


def test_math_labels():
    assert report._math_label("v^K") == "$v^K$"
    assert report._math_label("$x$") == "$x$"
    assert report._math_label("a^^b") == "a^^b"  # not valid mathtext: shown as plain text


# --------------------------------------------------------------------------------------------------
# summary table


def _render(table) -> str:
    console = Console(width=120, record=True, file=io.StringIO(), color_system=None)
    console.print(table)
    return console.export_text()


def test_summary_table_formats_cells():
    rows = [
        {"file": "solutions/[01].png", "eta": 8.2, "mse": 3.1e-5, "feasible": True, "matvecs": np.int64(120)},
        {"file": "b.png", "eta": None, "mse": torch.tensor(1.9e-3), "feasible": False},
    ]
    table = summary_table(rows, {"file": "file", "eta": "η", "mse": "MSE", "feasible": "ok", "matvecs": "matvecs"}, title="run")
    assert [c.justify for c in table.columns] == ["left", "right", "right", "left", "right"]
    text = _render(table)
    lines = [line for line in text.splitlines() if "png" in line]
    cells = [[c.strip() for c in line.strip("│ ").split("│")] for line in lines]
    assert cells == [["solutions/[01].png", "8.2", "3.1e-05", "yes", "120"], ["b.png", "-", "0.0019", "no", "-"]]
    assert "run" in text and "η" in text


def test_summary_table_rejects_bad_columns():
    with pytest.raises(ValueError, match="columns is empty"):
        summary_table([{"a": 1}], [])
    with pytest.raises(ValueError, match="not a single string"):
        summary_table([{"a": 1}], "a")
    with pytest.raises(ValueError, match=r"rows\[0\] must be a mapping"):
        summary_table([[1]], ["a"])
