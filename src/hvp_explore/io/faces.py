"""Faces in photographs: find the largest face and crop it with the framing of the face generator's training data.

``--face`` (:func:`crop_face`) is the alignment step PULSE ships and a photograph needs: centre-cropping a
portrait (``--resize``) leaves a small face among hair, shoulders and background, and the ``faces``
generator (a DCGAN trained on DigiFace1M's tight 64x64 face crops) cannot approach it.

The detector is OpenCV's frontal-face Haar cascade (Viola-Jones, as refined by Lienhart), whose trained
file ships inside the ``opencv-python-headless`` wheel (``cv2.data.haarcascades``): nothing is downloaded,
and the same pixels give the same box on every machine.

Framing. The crop is a square of :data:`FACE_SCALE` times the detector's box, placed so that the box's
centre falls at :data:`FACE_CENTRE` (fractions of the crop's width and height). Both were measured by
running this detector on 68 faces of the generator itself (in its range, so framed as its training data:
the eight shipped samples of ``assets/faces`` and seeds 3001-3060; the cascade finds 48): the box is a median
0.78 of the image's side (1 / 0.78 = 1.28, quartiles 1.23-1.33) and its centre sits at (0.50, 0.56) of the
image (quartiles 0.49-0.52 and 0.54-0.58); docs/problems.md has the details. The eyes then fall in the rows
where the generator's faces have them (the eyes band ``0,18,64,16`` of the demo).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from hvp_explore.io.files import ImageError, display_path

__all__ = ["FACE_CASCADE", "FACE_CENTRE", "FACE_SCALE", "FaceCrop", "crop_face", "detect_faces", "face_crop_box"]

#: The cascade file, read from the installed OpenCV package's own data folder.
FACE_CASCADE = "haarcascade_frontalface_default.xml"
#: Side of the crop over the side of the detector's box (median over the generator's faces: 64 / 50).
FACE_SCALE = 1.28
#: Where the centre of the detector's box falls in the crop, as fractions of its width and height (medians over the
#: generator's faces, 0.555 within half a pixel at 64x64 of the measured 0.559): a little below the middle, as DigiFace1M's crops leave more room above the brows than below the chin.
FACE_CENTRE = (0.50, 0.555)
#: The detector looks at the photograph at most this large (longest side, in pixels): a 24-px face at that size is a
#: face of 2% of the picture, and an 8192-px photograph is searched in under a second instead of a minute.
_DETECT_MAX_SIDE = 1024
#: ... and at least this large (shortest side): the cascade's window is 24 px, so a 64x64 face image is enlarged first.
_DETECT_MIN_SIDE = 256
#: The cascade's own recommended settings (OpenCV's facedetect sample): 10% steps between scales, five overlapping
#: detections to accept a face, which rejects the isolated hits on textures.
_SCALE_FACTOR = 1.1
_MIN_NEIGHBOURS = 5
_MIN_FACE = 24


@dataclass(frozen=True)
class FaceCrop:
    """Where :func:`crop_face` found the face and what it cropped, in the input's pixels (after EXIF orientation).

    Attributes:
        face: The detector's box ``(x, y, w, h)`` of the largest face.
        crop: The square ``(x, y, side, side)`` cut out; it can reach beyond the image when the face is near an edge and
            the square is larger than the image (then the missing pixels repeat the edge, ``padded``).
        image_size: The input's ``(width, height)``.
        faces_found: How many faces the detector found (the largest is used).
        padded: Whether the crop reached beyond the image.
        size: The ``(height, width)`` the crop was resized to.
    """

    face: tuple[int, int, int, int]
    crop: tuple[int, int, int, int]
    image_size: tuple[int, int]
    faces_found: int
    padded: bool
    size: tuple[int, int]

    def describe(self) -> dict:
        """JSON-ready description for reports."""
        return {"detector": f"OpenCV Haar cascade {FACE_CASCADE} (opencv-python-headless {_cv2_version()})",
                "face_box": list(self.face), "crop_box": list(self.crop), "image_size": list(self.image_size),
                "faces_found": self.faces_found, "padded": self.padded, "resized_to": [self.size[1], self.size[0]],
                "framing": {"scale": FACE_SCALE, "centre": list(FACE_CENTRE)}}

    def label(self) -> str:
        """One line for sheets and notices: the crop box as ``x,y,w,h``."""
        return "face crop {},{},{},{} of {}x{}".format(*self.crop, *self.image_size)


def _cv2():
    try:
        import cv2
    except ImportError:
        raise ImageError("--face needs OpenCV's face detector: pip install 'opencv-python-headless>=4.8,<5'") from None
    if not hasattr(cv2, "CascadeClassifier"):  # OpenCV 5 moved the Haar cascades out of the main wheel
        raise ImageError(f"--face needs OpenCV 4's Haar cascades, but OpenCV {cv2.__version__} has none: "
                         "pip install 'opencv-python-headless>=4.8,<5'")
    return cv2


def _cv2_version() -> str:
    return _cv2().__version__


def _cascade():
    cv2 = _cv2()
    path = Path(cv2.data.haarcascades) / FACE_CASCADE
    cascade = cv2.CascadeClassifier(str(path))
    if cascade.empty():
        raise ImageError(f"OpenCV's face cascade {path} is missing or unreadable: reinstall opencv-python-headless")
    return cascade


def _gray_uint8(img: torch.Tensor) -> np.ndarray:
    """An image (C, H, W) in [-1, 1] as 8-bit luma (ITU-R 601-2), what the cascade was trained on."""
    x = img.detach().to("cpu", torch.float64)
    if x.shape[0] == 3:
        x = (x * torch.tensor([0.299, 0.587, 0.114], dtype=torch.float64)[:, None, None]).sum(0, keepdim=True)
    return torch.round((x[0].clamp(-1.0, 1.0) + 1.0) * 127.5).to(torch.uint8).numpy()


def detect_faces(img: torch.Tensor) -> list[tuple[int, int, int, int]]:
    """Frontal faces in an image (C, H, W) in [-1, 1], as boxes ``(x, y, w, h)`` in its pixels, largest first.

    The image is looked at between :data:`_DETECT_MIN_SIDE` and :data:`_DETECT_MAX_SIDE` pixels (area
    averaging to shrink, bicubic to enlarge), with its histogram equalised (as OpenCV's sample does, so dim
    and washed-out photographs are searched at full contrast). Deterministic.

    Raises:
        ValueError: ``img`` is not (C, H, W) with C in {1, 3}.
        ImageError: OpenCV or its cascade file is missing.
    """
    if img.dim() != 3 or img.shape[0] not in (1, 3):
        raise ValueError(f"expected an image (C, H, W) with C = 1 or 3, got shape {tuple(img.shape)}")
    cv2 = _cv2()
    gray = _gray_uint8(img)
    h, w = gray.shape
    scale = min(1.0, _DETECT_MAX_SIDE / max(h, w))
    if min(h, w) * scale < _DETECT_MIN_SIDE:
        scale = min(_DETECT_MIN_SIDE / min(h, w), _DETECT_MAX_SIDE / max(h, w))
    if scale != 1.0:
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        gray = cv2.resize(gray, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC)
    gray = cv2.equalizeHist(gray)
    found = _cascade().detectMultiScale(gray, scaleFactor=_SCALE_FACTOR, minNeighbors=_MIN_NEIGHBOURS,
                                        minSize=(_MIN_FACE, _MIN_FACE))
    boxes = [tuple(int(round(float(v) / scale)) for v in box) for box in np.asarray(found).reshape(-1, 4)]
    # largest first; ties by position, so the order never depends on the detector's internal order
    return sorted(boxes, key=lambda b: (-b[2] * b[3], b[1], b[0]))


def face_crop_box(face: tuple[int, int, int, int], aspect: float = 1.0) -> tuple[int, int, int, int]:
    """The crop ``(x, y, w, h)`` around a detector's box with the training data's framing, ``w / h = aspect``."""
    x, y, w, h = face
    side = max(1, round(FACE_SCALE * max(w, h)))
    # the shorter side of the crop is the square's, so a non-square generator gets the same face size
    if aspect >= 1:
        cw, ch = max(1, round(side * aspect)), side
    else:
        cw, ch = side, max(1, round(side / aspect))
    cx, cy = x + w / 2, y + h / 2
    return round(cx - FACE_CENTRE[0] * cw), round(cy - FACE_CENTRE[1] * ch), cw, ch


def crop_face(img: torch.Tensor, size: tuple[int, int], *, path: Path | str = "the image") -> tuple[torch.Tensor, FaceCrop]:
    """Find the largest face in ``img`` (C, H, W) in [-1, 1], crop it with the generator's framing, resize it to ``size``.

    The crop is :func:`face_crop_box` of the largest detected face. When it reaches beyond the image it is
    shifted inside if it fits there (the face then sits a little off its place rather than beside invented
    pixels); a crop larger than the image repeats the edge pixels. The square is resized with Lanczos
    (:func:`~hvp_explore.io.images.crop_resize`).

    Args:
        img: The photograph.
        size: ``(h, w)`` to resize the crop to (the generator's image size, or an observation's).
        path: The file, for messages.

    Returns:
        ``(image, crop)``: the face image (C, h, w) and where it came from.

    Raises:
        ImageError: No face found (one line naming the file and what to do).
    """
    from hvp_explore.io.images import crop_resize

    faces = detect_faces(img)
    if not faces:
        raise ImageError(f"{display_path(path)}: no face found by OpenCV's frontal-face detector: --face needs an upright, "
                         f"frontal face at least {_MIN_FACE} px wide; crop the face yourself and pass --resize instead")
    H, W = img.shape[-2:]
    x, y, cw, ch = face_crop_box(faces[0], size[1] / size[0])
    # shift a crop that fits into the image rather than pad it
    if cw <= W:
        x = min(max(x, 0), W - cw)
    if ch <= H:
        y = min(max(y, 0), H - ch)
    pad = (max(0, -x), max(0, x + cw - W), max(0, -y), max(0, y + ch - H))  # left, right, top, bottom
    source = img
    if any(pad):
        source = torch.nn.functional.pad(img[None].float(), pad, mode="replicate")[0].to(img.dtype)
    cropped = source[:, y + pad[2] : y + pad[2] + ch, x + pad[0] : x + pad[0] + cw]
    out = crop_resize(cropped, tuple(size))
    return out, FaceCrop(face=faces[0], crop=(x, y, cw, ch), image_size=(int(W), int(H)), faces_found=len(faces),
                         padded=any(pad), size=(int(size[0]), int(size[1])))
