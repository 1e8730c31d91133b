"""report.html and its sliders' frames: the frames' numbers against the generator, the page's data against report.json,
the options, and the page itself in a real headless Chromium (skipped, saying why, only where none is installed)."""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest
import torch
from conftest import skip_or_fail
from click.testing import CliRunner

from hvp_explore import SuperResolution, load_image, measurement_mse
from hvp_explore.cli import cli
from hvp_explore.data import sample_paths
from hvp_explore.exploration import Direction, Solution, exploration_frames
from hvp_explore.io.html import json_for_script, png_data_uri, write_batch_index
from hvp_explore.io.images import quantize

SAMPLE = str(sample_paths()[0])
FRAMES = 7


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def page_data(folder) -> dict:
    """The sliders' data embedded in report.html, read as the page's script reads it."""
    text = (folder / "report.html").read_text(encoding="utf-8")
    match = re.search(r'<script type="application/json" id="hvp-data">(.*?)</script>', text, flags=re.S)
    assert match is not None
    return json.loads(match.group(1))


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    """A demo-like run, as small as still gives sliders: 4 solutions (2 directions), a 1-step walk of 2 walkers, 7 frames."""
    out = tmp_path_factory.mktemp("html") / "run"
    result = run("explore", SAMPLE, "--from-clean", "--solutions", "4", "--restarts", "2", "--steps", "150", "--walk-steps", "1",
                 "--walkers", "2", "--frames", FRAMES, "--out", out, "--quiet")
    assert result.exit_code == 0, result.output
    return out


# --- the frames ---------------------------------------------------------------------------------------


@torch.no_grad()
def test_frames_are_the_generators_8bit_images_with_their_measurements(mlp_generator):
    G = mlp_generator
    forward = SuperResolution((1, 4, 4), 2)
    g = torch.Generator().manual_seed(0)
    z0 = torch.randn(8, generator=g, dtype=torch.float64)
    y = forward(G(torch.randn(1, 8, generator=g, dtype=torch.float64)))
    first = quantize(G(z0[None]))[0]
    d1, d2 = (torch.nn.functional.normalize(torch.randn(8, generator=g, dtype=torch.float64), dim=0) for _ in range(2))
    directions = [Direction(d1, "raw", "v2", 2), Direction(d2, "raw", "v1", 1)]

    def solution(d, label, eta):
        img = quantize(G((z0 + eta * d.vector)[None]))[0]
        mse = float(measurement_mse(forward, img[None], y)[0])
        return Solution(latent=z0 + eta * d.vector, image=img, direction=label, eta=eta, measurement_mse=mse, feasible=True,
                        perceptual_distance=0.1, status="ok")

    solutions = [solution(directions[0], "+v2", 0.37), solution(directions[0], "-v2", -0.21), solution(directions[1], "+v1", 0.5)]
    caps = [1.0, 2.0]
    frames = exploration_frames(G, forward, y, z0, first, directions, solutions, eta_max=caps, tau=1e-2, frames=5)
    assert [s.label for s in frames.strips] == ["v2", "v1"] and frames.omitted == 0
    grid_frames = 0
    for strip, cap, delivered in zip(frames.strips, caps, ([0.37, -0.21], [0.5])):
        etas = strip.etas
        assert float(etas[0]) == -cap and float(etas[-1]) == cap and bool((etas[1:] > etas[:-1]).all())
        assert float(etas[strip.start]) == 0.0  # the slider starts at the first solution
        assert torch.equal(strip.images[strip.start], first)
        # the delivered steps are frames, marked with their labels, with the solution's own image and MSE
        marked = {strip.etas[j].item(): label for j, label in strip.marks}
        assert sorted(marked) == sorted(delivered)
        for j, label in strip.marks:
            s = next(s for s in solutions if s.direction == label)
            assert torch.equal(strip.images[j], s.image) and strip.measurement_mse[j].item() == s.measurement_mse
        # every frame is G(z0 + eta d) rounded to 8 bits, and its MSE that of those 8 bits
        d = directions[[s.label for s in frames.strips].index(strip.label)].vector
        expected = quantize(G(z0[None] + etas[:, None] * d[None]))
        torch.testing.assert_close(strip.images, expected, atol=1e-12, rtol=0)
        torch.testing.assert_close(strip.measurement_mse, measurement_mse(forward, expected, y).double(), rtol=1e-12, atol=1e-15)
        assert bool(((strip.images + 1) * 127.5 - ((strip.images + 1) * 127.5).round()).abs().max() < 1e-9)
        grid_frames += 5 - int((torch.linspace(-cap, cap, 5, dtype=torch.float64) == 0).sum())
    # only the grid is rendered: 0 and the delivered steps reuse images already made
    assert frames.forward_passes == grid_frames == 8
    summary = frames.summary()
    assert summary["frames"] == sum(int(s.etas.numel()) for s in frames.strips) == (4 + 3) + (4 + 2)  # grid, then 0 and steps
    assert summary["forward_passes"] == 8 and summary["directions"] == 2 and summary["walkers"] == 0
    # at most max_directions sliders, the first directions in the order of the solutions
    capped = exploration_frames(G, forward, y, z0, first, directions, solutions, eta_max=caps, tau=1e-2, frames=5, max_directions=1)
    assert [s.label for s in capped.strips] == ["v2"] and capped.omitted == 1 and capped.forward_passes == 4


@pytest.mark.parametrize("kwargs, message", [({"frames": 1}, "at least 2"), ({"eta_max": [1.0]}, "1 step caps for 2 directions"),
                                             ({"max_directions": -1}, "non-negative")])
def test_frames_refuse_bad_arguments(mlp_generator, kwargs, message):
    z0 = torch.zeros(8, dtype=torch.float64)
    directions = [Direction(torch.eye(8, dtype=torch.float64)[i], "raw", f"v{i}", i) for i in range(2)]
    forward = SuperResolution((1, 4, 4), 2)
    with pytest.raises(ValueError, match=message):
        exploration_frames(mlp_generator, forward, forward(mlp_generator(z0[None])), z0, mlp_generator(z0[None])[0], directions, [],
                           **{"eta_max": [1.0, 1.0], **kwargs})


# --- the page's data and the options ------------------------------------------------------------------


def test_data_in_the_page_cannot_close_its_script_element():
    hostile = {"label": "</script><script>alert(1)</script><!--", "amp": "a & b > c"}
    text = json_for_script(hostile)
    assert "<" not in text and ">" not in text and "&" not in text
    assert json.loads(text) == hostile  # JSON.parse reads back the very same strings


def test_png_data_uri_round_trips_8bit_pixels():
    import base64
    import io

    from PIL import Image

    img = torch.linspace(-1, 1, 3 * 4 * 5).reshape(3, 4, 5)
    uri = png_data_uri(img)
    assert uri.startswith("data:image/png;base64,")
    pixels = torch.from_numpy(np.array(Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))))
    assert tuple(pixels.shape) == (4, 5, 3)
    assert torch.equal(pixels.permute(2, 0, 1).double() / 127.5 - 1, quantize(img.double()))


def test_report_html_data_matches_report_json(small_run):
    rep = json.loads((small_run / "report.json").read_text())
    data = page_data(small_run)
    tau = rep["tau"]
    assert data["tau"] == tau
    directions = [s for s in data["strips"] if s["kind"] == "direction"]
    walks = [s for s in data["strips"] if s["kind"] == "walk"]
    egl = [s for s in rep["solutions"] if s["step_status"] != "walk"]
    assert [s["label"] for s in directions] == list(dict.fromkeys(s["direction"].lstrip("+-") for s in egl))
    assert [s["label"] for s in walks] == ["walker 1", "walker 2"] and all(len(s["frames"]) == 2 for s in walks)
    by_label = {s["direction"]: s for s in rep["solutions"]}
    caps = dict(zip([d["label"] for d in rep["directions"]], rep["settings"]["eta_caps"]))
    for strip in directions:
        assert len(strip["frames"]) == len(strip["etas"]) == len(strip["mse"]) == len(strip["xs"])
        assert strip["etas"][0] == pytest.approx(-caps[strip["label"]]) and strip["etas"][-1] == pytest.approx(caps[strip["label"]])
        assert len(strip["etas"]) >= FRAMES and strip["etas"] == sorted(strip["etas"]) and strip["etas"][strip["start"]] == 0
        assert strip["mse"][strip["start"]] == pytest.approx(rep["first_solution"]["measurement_mse"], rel=1e-9)
        for j, label in strip["marks"]:  # the marked frames are the delivered solutions, with the MSE of their PNGs
            assert strip["etas"][j] == pytest.approx(by_label[label]["eta"], rel=1e-12)
            assert strip["mse"][j] == pytest.approx(by_label[label]["measurement_mse"], rel=1e-9) and strip["mse"][j] <= tau
    # a frame's readout means what it says: the MSE of its 8-bit image, recomputed from the PNG in the page
    import base64
    import io

    from PIL import Image

    forward = SuperResolution((1, 32, 32), 4)
    y = forward(load_image(SAMPLE)[None])
    strip = directions[0]
    for j in (0, len(strip["frames"]) - 1):
        pixels = np.array(Image.open(io.BytesIO(base64.b64decode(strip["frames"][j].split(",", 1)[1]))))
        img = torch.from_numpy(pixels).double()[None, None] / 127.5 - 1
        assert float(measurement_mse(forward, img, y)) == pytest.approx(strip["mse"][j], rel=1e-5)
    # their cost is in report.json: frames rendered, forward passes and seconds, counted in the total
    frames = rep["frames"]
    assert frames["per_direction"] == FRAMES and frames["directions"] == len(directions) and frames["walkers"] == 2
    assert frames["frames"] == sum(len(s["frames"]) for s in data["strips"])
    assert 0 < frames["forward_passes"] <= FRAMES * len(directions)
    assert rep["timings"]["frames"] > 0 and "seconds" not in frames
    assert list(rep["timings"])[-1] == "total" and rep["timings"]["total"] > rep["timings"]["frames"]
    # one file, nothing fetched: every src is inline, no http(s) anywhere in a src or href
    text = (small_run / "report.html").read_text(encoding="utf-8")
    assert re.findall(r'src="(?!data:)', text) == [] and "http://" not in text and "https://" not in text
    assert len(re.findall(r"<img ", text)) == 4 + len(data["strips"]) + len(rep["solutions"]) + 4  # tiles, sliders, gallery, figures


def test_no_html_writes_no_page_and_renders_no_frames(tmp_path):
    out = tmp_path / "plain"
    result = run("explore", SAMPLE, "--from-clean", "--solutions", "2", "--restarts", "2", "--steps", "150", "--no-html",
                 "--out", out, "--quiet")
    assert result.exit_code == 0, result.output
    rep = json.loads((out / "report.json").read_text())
    assert not (out / "report.html").exists() and "frames" not in rep and "frames" not in rep["timings"]


@pytest.mark.parametrize("value", ["1", "0", "x"])
def test_bad_frames_is_a_one_line_error(tmp_path, value):
    result = run("explore", SAMPLE, "--from-clean", "--frames", value, "--out", tmp_path / "x", "--quiet")
    assert result.exit_code == 2 and "--frames" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "x").exists()


def test_pulse_writes_the_same_gallery(tmp_path):
    out = tmp_path / "pulse"
    result = run("pulse", SAMPLE, "--from-clean", "--solutions", "2", "--steps", "20", "--out", out, "--quiet")
    assert result.exit_code == 0, result.output
    text = (out / "report.html").read_text(encoding="utf-8")
    rep = json.loads((out / "report.json").read_text())
    assert text.count('alt="Solution run') == rep["runs"] == 2
    assert 'id="hvp-data"' not in text and 'type="range"' not in text  # no directions, no sliders
    assert 'alt="The observation"' in text and 'alt="The ground truth (clean image)"' in text


def test_batch_index_links_every_run(tmp_path):
    for name in ("a b", "c"):
        folder = tmp_path / name
        (folder / "solutions").mkdir(parents=True)
        for file in ("observation.png", "first_solution.png", "solutions/001.png"):
            from hvp_explore.io.images import save_image

            save_image(torch.zeros(1, 4, 4), folder / file)
        (folder / "report.json").write_text(json.dumps({"solutions": [{"file": "solutions/001.png"}]}))
        (folder / "report.html").write_text("<!DOCTYPE html>")
    records = [{"input": "a b.png", "output": "a b", "status": "ok", "summary": {"feasible": 1}, "message": None},
               {"input": "c.png", "output": "c", "status": "ok", "summary": {"feasible": 2}, "message": None},
               {"input": "d.png", "output": "d", "status": "error", "summary": {}, "message": "d.png <is> bad"}]
    text = write_batch_index(tmp_path, records).read_text(encoding="utf-8")
    assert '<a href="a%20b/report.html">a b</a>' in text and '<a href="c/report.html">c</a>' in text
    assert text.count("<img ") == 6 and 'src="a%20b/solutions/001.png"' in text
    assert "d.png &lt;is&gt; bad" in text and "<is>" not in text


# --- in a real browser --------------------------------------------------------------------------------


def _browser():
    """Headless Chromium driven by Selenium, or a skip that says what is missing."""
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        skip_or_fail("selenium is not installed (pip install '.[test]')")

    binary = next((shutil.which(name) for name in ("chromium", "chromium-browser", "google-chrome") if shutil.which(name)), None)
    driver = shutil.which("chromedriver")
    if binary is None or driver is None:
        skip_or_fail("no Chromium and chromedriver installed (Debian: apt-get install chromium chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1200,900",
                "--disable-extensions", "--no-first-run"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(driver), options=options)


def test_report_in_headless_chromium(small_run):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    data = page_data(small_run)
    browser = _browser()
    try:
        browser.get((small_run / "report.html").as_uri())
        # every image loaded and has alt text
        loaded = browser.execute_script(
            "return Array.from(document.images).map(function (i) { return [i.complete, i.naturalWidth, i.alt]; });")
        assert len(loaded) >= 10 and all(ok and width > 0 and alt for ok, width, alt in loaded), loaded

        slider, frame = browser.find_element(By.ID, "slider-0"), browser.find_element(By.ID, "frame-0")
        readout, cursor = browser.find_element(By.ID, "readout-0"), browser.find_element(By.ID, "cursor-0")
        strip = data["strips"][0]
        start = strip["start"]
        assert int(slider.get_attribute("value")) == start and frame.get_attribute("src") == strip["frames"][start]
        assert "(first solution)" in readout.text and "a solution" in readout.text
        # the arrow key on the focused slider moves it one frame: the frame, the readout and the cursor follow
        before = readout.text
        slider.send_keys(Keys.ARROW_RIGHT)
        assert int(slider.get_attribute("value")) == start + 1
        assert frame.get_attribute("src") == strip["frames"][start + 1] != strip["frames"][start]
        assert readout.text != before and float(cursor.get_attribute("x1")) == pytest.approx(strip["xs"][start + 1])
        # dragged to the end (value set, input event): the MSE shown is that frame's, and the verdict follows tau
        last = len(strip["frames"]) - 1
        browser.execute_script("var s = arguments[0]; s.value = arguments[1]; s.dispatchEvent(new Event('input'));", slider, last)
        mse_shown = float(re.search(r"MSE ([0-9.]+e[-+][0-9]+)", readout.text).group(1))
        assert mse_shown == pytest.approx(strip["mse"][last], rel=5e-3)
        assert mse_shown != pytest.approx(strip["mse"][start], rel=5e-3)  # the readout changed with the frame
        assert ("not a solution" in readout.text) == (strip["mse"][last] > data["tau"])
        assert frame.get_attribute("src") == strip["frames"][last] and frame.get_attribute("alt").startswith(f"Frame {last + 1} of")
        # the arrow keys move the slider used last wherever the focus is; a delivered-step button jumps to its frame
        browser.find_element(By.TAG_NAME, "h1").click()
        browser.switch_to.active_element.send_keys(Keys.ARROW_LEFT)
        assert int(slider.get_attribute("value")) == last - 1
        j, label = strip["marks"][0]
        browser.find_element(By.CSS_SELECTOR, f'button.jump[data-strip="0"][data-frame="{j}"]').click()
        assert int(slider.get_attribute("value")) == j and f"(delivered {label})" in readout.text
        # a walker's slider moves along its path
        walk = next(k for k, s in enumerate(data["strips"]) if s["kind"] == "walk")
        browser.find_element(By.ID, f"slider-{walk}").send_keys(Keys.ARROW_RIGHT)
        assert browser.find_element(By.ID, f"readout-{walk}").text.startswith("step 1 ")
        # a narrow screen: nothing wider than the window
        browser.set_window_size(360, 800)
        assert browser.execute_script("return document.documentElement.scrollWidth <= window.innerWidth;")
        errors = [entry for entry in browser.get_log("browser") if entry["level"] in ("SEVERE", "ERROR")]
        assert errors == []
    finally:
        browser.quit()
