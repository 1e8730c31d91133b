"""Faces in photographs (--face), EXIF orientation on every load, the size advice, and IAGAN's announcement.

The photograph is matplotlib's ``grace_hopper.jpg`` (:func:`hvp_explore.data.photo_path`). The command-line
tests use the embedded 32x32 default generator with a handful of steps: they check what is recorded, not
how good the solution is (docs/generators.md has the measured run on the face generator).
"""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from hvp_explore.cli import cli
from hvp_explore.data import photo_path, sample_paths
from hvp_explore.io.faces import FACE_CENTRE, FACE_SCALE, crop_face, detect_faces, face_crop_box
from hvp_explore.io.images import load_image, load_mask
from hvp_explore.problems import load_observation

#: The face in grace_hopper.jpg (512x600), checked by hand on the picture: x from her right ear (155) to her left
#: ear (378), y from the forehead under the cap's brim (105) to the chin (330).
HAND_BOX = (155, 105, 223, 225)
#: Every edge of the detector's box within this fraction of the hand box's side.
EDGE_TOLERANCE = 0.1


def _edges(box):
    x, y, w, h = box
    return np.array([x, y, x + w, y + h], dtype=float)


def test_the_detector_finds_the_face_of_the_shipped_portrait_within_tolerance():
    faces = detect_faces(load_image(photo_path()))
    assert len(faces) == 1, faces
    err = np.abs(_edges(faces[0]) - _edges(HAND_BOX))
    assert err.max() <= EDGE_TOLERANCE * HAND_BOX[2], (faces[0], err)


def test_the_crop_has_the_training_framing_and_is_deterministic():
    img = load_image(photo_path())
    face, crop = crop_face(img, (64, 64), path=photo_path())
    again, crop2 = crop_face(img, (64, 64), path=photo_path())
    assert torch.equal(face, again) and crop == crop2
    assert face.shape == (3, 64, 64) and float(face.min()) >= -1 and float(face.max()) <= 1
    x, y, w, h = crop.face
    cx, cy, side, side_h = crop.crop
    assert side == side_h == round(FACE_SCALE * w)
    # the detector's box centre sits where it sits in the generator's own faces
    assert abs((x + w / 2 - cx) / side - FACE_CENTRE[0]) < 0.01 and abs((y + h / 2 - cy) / side - FACE_CENTRE[1]) < 0.01
    info = crop.describe()
    assert info["crop_box"] == list(crop.crop) and info["image_size"] == [512, 600] and info["faces_found"] == 1
    assert "haarcascade_frontalface_default.xml" in info["detector"]


def test_shipped_generated_faces_are_cropped_to_about_themselves():
    """The framing was measured on the generator's faces: cropping one of them gives back nearly the whole image."""
    checked = 0
    for path in sample_paths("faces"):
        img = load_image(path)
        faces = detect_faces(img)
        if not faces:
            continue  # the cascade misses a few generated faces (2 of 8); --face then says so
        x, y, w, h = face_crop_box(faces[0])
        assert abs(w - 64) <= 6 and abs(x) <= 6 and abs(y) <= 6, (path.name, (x, y, w, h))  # 10% of the side
        checked += 1
    assert checked >= 5


def test_a_crop_beyond_the_edge_is_shifted_inside_or_padded():
    img = load_image(photo_path())[:, 60:400, 100:400]  # the face near the top edge: the square is shifted down
    _, crop = crop_face(img, (64, 64))
    assert crop.crop[1] == 0 and not crop.padded
    tight = load_image(photo_path())[:, 90:345, 140:390]  # the square is larger than the picture: edge pixels repeat
    out, crop = crop_face(tight, (32, 32))
    assert crop.padded and out.shape == (3, 32, 32)


def test_face_with_a_grayscale_generator_converts_the_crop():
    obs = load_observation(photo_path(), image_shape=(1, 32, 32), problem="inpaint", box="0,8,32,8", from_clean=True, face=True)
    assert obs.clean.shape == (1, 32, 32) and obs.face["resized_to"] == [32, 32]
    assert obs.describe()["face"]["crop_box"] == obs.face["crop_box"]
    assert any("face found" in n for n in obs.notices)


@pytest.fixture
def no_face(tmp_path):
    path = tmp_path / "gradient.png"
    Image.fromarray(np.tile(np.linspace(0, 255, 200).astype(np.uint8), (150, 1))).save(path)
    return path


def test_no_face_is_one_line_and_exit_2(no_face, tmp_path):
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["invert", str(no_face), "--from-clean", "--face", "--out", str(out), "--quiet"])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: ") and "no face found" in lines[0], result.output
    assert "gradient.png" in lines[0] and "Traceback" not in result.output and not out.exists()


def test_face_is_recorded_in_report_json_of_invert_and_pulse(tmp_path):
    common = ["--from-clean", "--face", "--problem", "inpaint", "--box", "0,8,32,8", "--quiet"]
    inv = CliRunner().invoke(cli, ["invert", str(photo_path()), *common, "--restarts", "1", "--steps", "3", "--iagan", "off",
                                   "--out", str(tmp_path / "inv")])
    assert inv.exit_code == 0, inv.output
    report = json.loads((tmp_path / "inv" / "report.json").read_text())
    face = report["problem"]["face"]
    assert face["crop_box"][2] == face["crop_box"][3] > 0 and face["image_size"] == [512, 600]
    assert (tmp_path / "inv" / "ground_truth.png").is_file()
    pul = CliRunner().invoke(cli, ["pulse", str(photo_path()), *common, "--solutions", "2", "--steps", "2",
                                   "--out", str(tmp_path / "pulse")])
    assert pul.exit_code == 0, pul.output
    assert json.loads((tmp_path / "pulse" / "report.json").read_text())["problem"]["face"] == face


def test_the_sheet_title_states_the_face_crop():
    from hvp_explore.io.stages import _sheet_title

    obs = load_observation(photo_path(), image_shape=(1, 32, 32), problem="inpaint", box="0,8,32,8", from_clean=True, face=True)
    title = _sheet_title({"mode": "eglass", "num_solutions": 10, "tau": 2e-3}, obs, "default")
    assert "grace_hopper.jpg: face crop x,y,w,h = {},{},{},{} of 512x600".format(*obs.face["crop_box"]) in title


# --- EXIF orientation ------------------------------------------------------------------------------------------

def _rotated_jpeg(path, orientation: int):
    """A 30x20 JPEG whose top 5 rows are red, stored as is with EXIF orientation ``orientation``."""
    pixels = np.zeros((20, 30, 3), np.uint8)
    pixels[:5, :, 0] = 255
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(pixels).save(path, exif=exif, quality=95)
    return path


def test_exif_rotate_180_is_applied_on_load(tmp_path):
    img = load_image(_rotated_jpeg(tmp_path / "phone.jpg", 3))
    assert img.shape == (3, 20, 30)
    red = img[0]
    assert float(red[-5:].mean()) > 0.5 and float(red[:5].mean()) < -0.9  # the red band is at the bottom, as viewers show it
    assert load_mask(tmp_path / "phone.jpg").shape == (20, 30)


def test_exif_rotate_90_swaps_the_size_and_upright_files_are_unchanged(tmp_path):
    assert load_image(_rotated_jpeg(tmp_path / "side.jpg", 6)).shape == (3, 30, 20)
    upright = load_image(_rotated_jpeg(tmp_path / "up.jpg", 1))
    assert upright.shape == (3, 20, 30) and float(upright[0, :5].mean()) > 0.5


# --- the likely fix first -------------------------------------------------------------------------------------

def test_a_clean_image_without_from_clean_is_advised_from_clean(tmp_path):
    path = sample_paths()[0]  # 32x32: the default generator's size, given as a x4 super-resolution observation
    with pytest.raises(ValueError, match="pass --from-clean") as info:
        load_observation(path, image_shape=(1, 32, 32), problem="sr")
    assert "32x32" in str(info.value) and "8x8" in str(info.value)
    with pytest.raises(ValueError, match="--from-clean") as info:
        load_observation(photo_path(), image_shape=(1, 32, 32), problem="sr")
    assert "--face" in str(info.value)


# --- IAGAN is announced, with its reason ----------------------------------------------------------------------

def test_iagan_is_announced_and_recorded_with_its_reason(tmp_path, caplog):
    from hvp_explore.generators import load_generator
    from hvp_explore.inversion import invert
    from hvp_explore.problems import SuperResolution, observe

    G = load_generator("default")
    forward = SuperResolution((1, 32, 32), 4)
    y = observe(forward, load_image(sample_paths()[0]))[None]
    with caplog.at_level(logging.INFO, logger="hvp_explore.inversion.first_solution"):
        result = invert(G, forward, y, restarts=1, steps=2, iagan=True, iagan_steps=1, tau=1e-12, quiet=True)
    assert result.fine_tuned and result.fine_tune_reason == "asked for (iagan on)"
    assert any("IAGAN: fine-tuning" in r.getMessage() for r in caplog.records)
    auto = invert(G, forward, y, restarts=1, steps=2, iagan="auto", iagan_steps=1, tau=1e-12, gauss_newton=False, quiet=True)
    assert auto.fine_tuned and auto.fine_tune_reason.startswith("CSGM stayed above tau")

    out = tmp_path / "inv"
    res = CliRunner().invoke(cli, ["invert", str(sample_paths()[0]), "--from-clean", "--restarts", "1", "--steps", "2",
                                   "--iagan", "on", "--out", str(out)])
    assert res.exit_code == 0, res.output
    report = json.loads((out / "report.json").read_text())
    assert report["fine_tune_reason"] == "asked for (iagan on)"
    assert any(w.startswith("IAGAN fine-tuned a copy of the generator (asked for") for w in report["warnings"])
