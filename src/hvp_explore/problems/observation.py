"""An observation on disk turned into a forward operator and measurements (the start of every run).

SPEC section 6: INPUT is the observation — a low-resolution image (super-resolution), the image
with its missing region plus a mask or box (inpainting), or a ``.npy`` vector (compressed sensing).
With ``from_clean`` INPUT is a clean image and the observation is synthesised from it (the clean
image is then the ground truth).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from hvp_explore.io.images import ImageError, crop_resize, crop_resize_mask, load_image, load_mask, load_measurements
from hvp_explore.problems.base import ForwardOperator
from hvp_explore.problems.factory import make_problem, observe
from hvp_explore.settings import DEFAULT_FACTOR, DEFAULT_KERNEL, DEFAULT_PROBLEM

__all__ = ["Observation", "load_observation"]


@dataclass(frozen=True)
class Observation:
    """A problem instance.

    Attributes:
        forward: The forward operator A.
        y: Measurements, shape (1, *measurement_shape), float32.
        display: (C, h, w) image in [-1, 1] showing the observation (the LR image, the masked image).
        clean: Ground-truth image (C, H, W) when synthesised from a clean image, else ``None``.
        source: The input path.
        notices: Conversions applied to the input (one line each), for the user.
        face: Where ``--face`` found and cropped the face (:meth:`~hvp_explore.io.faces.FaceCrop.describe`), else ``None``.
    """

    forward: ForwardOperator
    y: torch.Tensor
    display: torch.Tensor
    clean: torch.Tensor | None
    source: str
    notices: tuple[str, ...] = ()
    face: dict | None = None

    def describe(self) -> dict:
        """JSON-ready description for reports (the conversions applied to the input, and the face crop, included)."""
        return {"source": self.source, "forward": self.forward.describe(), "from_clean": self.clean is not None,
                "num_measurements": self.forward.num_measurements, "input_conversions": list(self.notices),
                **({"face": self.face} if self.face is not None else {})}


def _size_advice(got: tuple[int, int], size: tuple[int, int], generator_size: tuple[int, int], from_clean: bool) -> str:
    """What to pass when an input's size is not the one expected: the likely fix first."""
    (gh, gw), (h, w), (Gh, Gw) = got, size, generator_size
    if from_clean or size == generator_size:
        return "pass --resize to centre-crop and resize it, or --face to crop the face of a photograph"
    if got == generator_size:
        # a clean image of the generator's size given as a low-resolution observation: --resize would shrink it
        return (f"it has the generator's image size {Gw}x{Gh}: if it is a clean image, pass --from-clean to synthesise "
                f"the observation from it (--resize would shrink it to {w}x{h} and treat that as the observation)")
    if gh > Gh or gw > Gw:
        return ("if it is a clean image or a photograph, pass --from-clean (with --face for a photograph of a face, else "
                "--resize); to use it as the observation itself, pass --face or --resize")
    return "pass --resize to centre-crop and resize it"


def _image(path: Path, channels: int, size: tuple[int, int], *, resize: bool, what: str, notices: list[str],
           face: bool = False, faces: list | None = None, generator_size: tuple[int, int] | None = None,
           from_clean: bool = False) -> torch.Tensor:
    """The image at ``path`` with ``channels`` channels and size ``size`` = (h, w), converted as allowed.

    With ``face`` the largest face is cropped (:func:`~hvp_explore.io.faces.crop_face`) and its
    :class:`~hvp_explore.io.faces.FaceCrop` appended to ``faces``.
    """
    img = load_image(path)
    if face:
        from hvp_explore.io.faces import crop_face

        # the face is found in the photograph's own colours; the channels are converted on the crop
        img, crop = crop_face(img, size, path=path)
        if faces is not None:
            faces.append(crop)
        x, y, cw, ch = crop.face
        notices.append(f"{path.name}: face found at {x},{y},{cw},{ch} (the largest of {crop.faces_found}); cropped "
                       "{},{},{},{} with the face generator's framing".format(*crop.crop)
                       + (" (edge pixels repeated beyond the photograph)" if crop.padded else "")
                       + f", then Lanczos to {size[1]}x{size[0]}: {what}")
    if img.shape[0] != channels:
        kind = {1: "grayscale", 3: "RGB"}
        notices.append(f"{path.name}: converted {kind.get(img.shape[0], img.shape[0])} to {kind[channels]} for this generator")
        if not face:
            img = None  # frees the first load's pixels before the second (a photograph's are hundreds of MB)
            img = load_image(path, channels=channels)  # converted from the file's pixels, as a plain load converts them
        elif channels == 1:  # the same ITU-R 601-2 luma, on the crop (the weights sum to 1, so it commutes with the scale)
            img = (img.double() * torch.tensor([0.299, 0.587, 0.114], dtype=torch.float64)[:, None, None]).sum(0, keepdim=True).to(img.dtype)
        else:
            img = img.repeat(3, 1, 1)
    got = tuple(img.shape[1:])
    if got != tuple(size):
        (h, w), (gh, gw) = size, got
        if not resize:
            advice = _size_advice(got, tuple(size), tuple(generator_size or size), from_clean)
            raise ValueError(f"{path.name} is {gw}x{gh} pixels, but {what} is {w}x{h}: {advice}")
        img = crop_resize(img, size)
        notices.append(f"{path.name}: resized from {gw}x{gh} to {w}x{h} ({what}; centre crop to the aspect ratio, then Lanczos)")
    return img


def load_observation(path: Path | str, *, image_shape: tuple[int, int, int], problem: str = DEFAULT_PROBLEM,
                     factor: int = DEFAULT_FACTOR, kernel: str = DEFAULT_KERNEL, box: str | None = None,
                     mask: Path | str | None = None, m: int | None = None, from_clean: bool = False, noise: float = 0.0,
                     seed: int = 0, resize: bool = False, face: bool = False) -> Observation:
    """Read an observation (or a clean image with ``from_clean``) for a generator of images ``image_shape``.

    Args:
        path: The input file.
        image_shape: (C, H, W) of the generator's images.
        problem: ``"sr"``, ``"inpaint"`` or ``"cs"``.
        factor, kernel: Super-resolution options.
        box, mask: Inpainting options (exactly one).
        m: Compressed-sensing measurements (inferred from a ``.npy`` observation when omitted).
        from_clean: Treat ``path`` as a clean image and synthesise the observation.
        noise: With ``from_clean``, Gaussian noise standard deviation on the [0, 1] scale.
        seed: Seeds the compressed-sensing matrix and the noise.
        resize: Fit an input image (and a mask) whose size differs from the one expected: centre
            crop to its aspect ratio, then Lanczos (:func:`~hvp_explore.io.images.crop_resize`). Without
            it a size mismatch is an error. Every conversion is listed in ``notices``.
        face: INPUT is a photograph: crop its largest face with the face generator's framing and resize
            it (:func:`~hvp_explore.io.faces.crop_face`); the box is in the observation's ``face``. A
            ``--mask`` then applies to the crop (it is of the generator's size, or fitted with ``resize``).

    Raises:
        ImageError: Unreadable input.
        ValueError: Options that do not fit the generator or the input (one line each).
    """
    path = Path(path)
    notices: list[str] = []
    faces: list = []  # the FaceCrop of --face
    c, h, w = image_shape
    npy = path.suffix.lower() == ".npy"
    if face and npy:
        raise ImageError(f"{path}: --face finds a face in a photograph, not in a .npy array of measurements")
    if problem == "cs" and m is None and npy and not from_clean:
        m = int(load_measurements(path).numel())
    if problem == "inpaint" and mask is not None and resize:
        missing = load_mask(mask)
        if tuple(missing.shape) != (h, w):
            notices.append(f"{Path(mask).name}: resized from {missing.shape[1]}x{missing.shape[0]} to {w}x{h} "
                           "(centre crop, nearest neighbour)")
            mask = crop_resize_mask(missing, (h, w))
    forward = make_problem(problem, image_shape, factor=factor, kernel=kernel, box=box, mask=mask, m=m, seed=seed)
    if from_clean:
        if npy:
            raise ImageError(f"{path}: --from-clean needs a clean image file, not a .npy array")
        clean = _image(path, c, (h, w), resize=resize, what="the generator's image size (--from-clean)", notices=notices,
                       face=face, faces=faces, generator_size=(h, w), from_clean=True)
        y = observe(forward, clean, noise_sigma=noise, seed=seed)[None].float()
        display = forward.observation_image(y)[0]
        return Observation(forward, y, display, clean, str(path), tuple(notices), _face_entry(faces))
    if npy:
        y = load_measurements(path).float()
        if tuple(y.shape) not in (forward.measurement_shape, (1, *forward.measurement_shape)):
            raise ValueError(f"{path.name} holds measurements of shape {tuple(y.shape)}, but this problem expects "
                             f"{forward.measurement_shape}")
        y = y.reshape(1, *forward.measurement_shape)
        return Observation(forward, y, forward.observation_image(y)[0], None, str(path), tuple(notices))
    if problem == "sr":
        size, what = (h // forward.factor, w // forward.factor), f"the low-resolution size of x{forward.factor} super-resolution"
    else:
        size, what = (h, w), "the generator's image size"
    img = _image(path, c, size, resize=resize, what=what, notices=notices, face=face, faces=faces, generator_size=(h, w))
    y = forward.measurements_from_image(img)[None].float()
    return Observation(forward, y, img, None, str(path), tuple(notices), _face_entry(faces))


def _face_entry(faces: list) -> dict | None:
    return faces[0].describe() if faces else None
