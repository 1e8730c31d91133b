"""Bad input through the command line: one line, exit status 2, no traceback, no output folder."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from hvp_explore.cli import cli
from hvp_explore.data import sample_paths
from hvp_explore.io.images import save_image

SAMPLE = sample_paths()[0]


@pytest.fixture
def files(tmp_path):
    f = {}
    f["empty"] = tmp_path / "empty.png"
    f["empty"].write_bytes(b"")
    data = SAMPLE.read_bytes()
    f["truncated"] = tmp_path / "truncated.png"
    f["truncated"].write_bytes(data[: len(data) // 2])
    f["text"] = tmp_path / "notes.png"
    f["text"].write_text("this is not an image\n")
    f["big"] = tmp_path / "big.png"
    save_image(torch.zeros(1, 40, 40), f["big"])
    f["lr_wrong"] = tmp_path / "lr.png"
    save_image(torch.zeros(1, 10, 10), f["lr_wrong"])
    f["rgb"] = tmp_path / "rgb.png"
    Image.open(SAMPLE).convert("RGB").save(f["rgb"])
    f["mask_small"] = tmp_path / "mask_small.png"
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(f["mask_small"])
    f["mask_zero"] = tmp_path / "mask_zero.png"
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(f["mask_zero"])
    f["mask_one"] = tmp_path / "mask_one.png"
    Image.fromarray(np.full((32, 32), 255, np.uint8)).save(f["mask_one"])
    f["nan"] = tmp_path / "y.npy"
    y = np.zeros(100)
    y[3] = np.nan
    np.save(f["nan"], y)
    f["inf"] = tmp_path / "yinf.npy"
    y[3] = np.inf
    np.save(f["inf"], y)
    f["file"] = tmp_path / "a_file"
    f["file"].write_text("x")
    f["foreign"] = tmp_path / "foreign"
    f["foreign"].mkdir()
    (f["foreign"] / "thesis.tex").write_text("precious")
    return f


CASES = {
    "missing file": (lambda f: ["invert", f["empty"].parent / "nope.png"], "not found"),
    "directory": (lambda f: ["invert", f["empty"].parent], "directory"),
    "empty png": (lambda f: ["invert", f["empty"]], "empty"),
    "truncated png": (lambda f: ["invert", f["truncated"]], "truncated"),
    "not an image": (lambda f: ["invert", f["text"]], "not an image"),
    "wrong size clean": (lambda f: ["invert", f["big"], "--from-clean"], "32x32"),
    "wrong size LR": (lambda f: ["invert", f["lr_wrong"]], "8x8"),
    "mask wrong size": (lambda f: ["invert", SAMPLE, "--from-clean", "--problem", "inpaint", "--mask", f["mask_small"]], "32"),
    "mask all kept": (lambda f: ["invert", SAMPLE, "--from-clean", "--problem", "inpaint", "--mask", f["mask_zero"]], "mask"),
    "mask all missing": (lambda f: ["invert", SAMPLE, "--from-clean", "--problem", "inpaint", "--mask", f["mask_one"]], "mask"),
    "box outside": (lambda f: ["invert", SAMPLE, "--from-clean", "--problem", "inpaint", "--box", "30,30,8,8"], "box"),
    "box malformed": (lambda f: ["invert", SAMPLE, "--from-clean", "--problem", "inpaint", "--box", "1,2,3"], "box"),
    "factor 0": (lambda f: ["invert", SAMPLE, "--from-clean", "--factor", "0"], "factor"),
    "factor negative": (lambda f: ["invert", SAMPLE, "--from-clean", "--factor", "-2"], "factor"),
    "factor not dividing": (lambda f: ["invert", SAMPLE, "--from-clean", "--factor", "5"], "factor"),
    "k zero": (lambda f: ["explore", SAMPLE, "--from-clean", "--k", "0"], "--k"),
    "k too large": (lambda f: ["explore", SAMPLE, "--from-clean", "--k", "512"], "--k"),
    "k_y too large": (lambda f: ["explore", SAMPLE, "--from-clean", "--k-y", "600"], "--k-y"),
    "tau zero": (lambda f: ["explore", SAMPLE, "--from-clean", "--tau", "0"], "--tau"),
    "tau negative": (lambda f: ["invert", SAMPLE, "--from-clean", "--tau", "-1"], "--tau"),
    "nan measurements": (lambda f: ["invert", f["nan"], "--problem", "cs"], "NaN"),
    "inf measurements": (lambda f: ["invert", f["inf"], "--problem", "cs"], "infinite"),
    "unknown generator": (lambda f: ["invert", SAMPLE, "--from-clean", "--generator", "stylegan9"], "stylegan9"),
    "unknown metric": (lambda f: ["explore", SAMPLE, "--from-clean", "--metric", "ssim"], "ssim"),
    "solutions zero": (lambda f: ["explore", SAMPLE, "--from-clean", "--solutions", "0"], "--solutions"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_gives_one_line_and_status_2(case, files, tmp_path):
    make_args, needle = CASES[case]
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, [str(a) for a in make_args(files)] + ["--out", str(out), "--quiet"])
    assert result.exit_code == 2, (case, result.output, result.exception)
    lines = [line for line in result.output.strip().splitlines() if line.strip()]
    assert lines[-1].startswith("Error: ") and needle.lower() in lines[-1].lower(), (case, result.output)
    assert "Traceback" not in result.output
    assert not out.exists(), "no output folder on failure"
    assert not any(p.name.startswith(".out.hvp") for p in tmp_path.iterdir()), "no temporary folder left behind"


def test_rgb_input_to_grayscale_model_is_converted_with_a_notice(files, tmp_path):
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["invert", str(files["rgb"]), "--from-clean", "--out", str(out), "--restarts", "1", "--steps", "20"])
    assert result.exit_code == 0, result.output
    assert "converted RGB to grayscale" in result.output


def test_output_folder_not_from_this_tool_is_never_replaced_and_reruns_need_overwrite(files, tmp_path):
    args = ["invert", str(SAMPLE), "--from-clean", "--restarts", "1", "--steps", "5", "--quiet", "--iagan", "off"]
    for extra in ([], ["--overwrite"]):  # a folder hvp-explore did not write: refused, --overwrite or not
        result = CliRunner().invoke(cli, args + ["--out", str(files["foreign"]), *extra])
        assert result.exit_code == 2 and "was not written by hvp-explore" in result.output, result.output
        assert (files["foreign"] / "thesis.tex").read_text() == "precious"
    # a folder hvp-explore wrote: a rerun needs --overwrite, and then replaces it
    ours = tmp_path / "ours"
    assert CliRunner().invoke(cli, args + ["--out", str(ours)]).exit_code == 0
    first = (ours / ".hvp-explore.json").read_text()
    result = CliRunner().invoke(cli, args + ["--out", str(ours)])
    assert result.exit_code == 2 and "pass --overwrite" in result.output
    assert (ours / ".hvp-explore.json").read_text() == first
    assert CliRunner().invoke(cli, args + ["--out", str(ours), "--overwrite"]).exit_code == 0
    assert (ours / "report.json").is_file()


def test_output_path_that_is_a_file_or_cannot_be_created(files):
    for out in (files["file"], files["file"] / "sub"):
        result = CliRunner().invoke(cli, ["invert", str(SAMPLE), "--from-clean", "--quiet", "--out", str(out)])
        assert result.exit_code == 2 and result.output.startswith("Error: "), result.output
    assert files["file"].read_text() == "x"


def test_tampered_default_weights_are_refused(tmp_path, monkeypatch):
    import hvp_explore.generators._default as default

    bad = tmp_path / "dcgan-fmnist.pt"
    shutil.copy(default.asset_path(default.DEFAULT_WEIGHTS_FILE), bad)
    data = bytearray(bad.read_bytes())
    data[len(data) // 2] ^= 0xFF
    bad.write_bytes(bytes(data))
    monkeypatch.setattr(default, "asset_path", lambda name: bad)
    result = CliRunner().invoke(cli, ["invert", str(SAMPLE), "--from-clean", "--quiet", "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "corrupted or modified" in result.output
    assert not (tmp_path / "o").exists()
