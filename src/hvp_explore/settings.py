"""One source of truth for every default and choice list, and the per-stage settings built from them.

The library's functions take their keyword defaults from the constants here; the command line
generates its options (names, defaults, choices, help) from the frozen dataclasses below
(:mod:`hvp_explore.cli._options`), so no default or choice list is written twice. This module
imports nothing heavy (no torch), so ``hvp-explore --help`` and every usage error answer at once.

A field's ``metadata`` holds its command-line help (``help``), an option name when it differs from
``--field-name`` (``flag``), and its choices (``choices``); ``cli`` names the library function the
values are passed to, for the reader.
"""

from __future__ import annotations

import math
import re
from dataclasses import MISSING, asdict, dataclass, field, fields

# --- problems ----------------------------------------------------------------------------------------
#: Feasibility threshold on the measurement MSE ([0, 1] pixel scale): PULSE's epsilon.
DEFAULT_TAU = 2e-3
PROBLEM_KINDS = ("sr", "inpaint", "cs")
DEFAULT_PROBLEM = "sr"
SR_KERNELS = ("area", "bicubic")
DEFAULT_KERNEL = "area"
DEFAULT_FACTOR = 4

# --- inversion ---------------------------------------------------------------------------------------
PRIORS = ("normal", "truncated", "sphere")
DEFAULT_PRIOR = "normal"
#: Truncation threshold of the "truncated" latent prior (|z_i| <= truncation).
DEFAULT_TRUNCATION = 1.0
#: CSGM restarts, optimised together (compared on held-out observations: docs/inversion.md).
DEFAULT_RESTARTS = 8
DEFAULT_STEPS = 300
DEFAULT_LR = 0.1
#: The inversion stops once the measurement MSE is below ``tau * DEFAULT_STOP_FACTOR``.
DEFAULT_STOP_FACTOR = 0.25
DEFAULT_GAUSS_NEWTON_TRIALS = 10
#: With the Gauss-Newton finish, CSGM hands over at its first feasible iterate or after this many steps.
DEFAULT_HANDOVER = 50
#: Successive halving of CSGM's restarts: every this many steps the worse half is dropped (0: never), down to
#: :data:`HALVING_SURVIVORS`. Chosen on tuning faces (docs/inversion.md): the restart best after 50 steps was
#: among the best 4 of 8 after 10 steps on all ten.
DEFAULT_HALVING = 10
HALVING_SURVIVORS = 2
#: Levenberg-Marquardt forms the exact Jacobian (min(m, n) batched products) when min(m, n) is at most
#: this: every problem of the 100-d face generator, super-resolution on the default one. Otherwise it
#: solves each damped step by conjugate gradients on Gauss-Newton products (at most
#: :data:`GAUSS_NEWTON_CG_ITERATIONS` per trial step): BigGAN-deep-128's 256 Jacobian-vector products
#: took 287 s against its 23 s CSGM budget in benchmarks/solutions.py.
GAUSS_NEWTON_EXACT_MAX = 128
#: Conjugate-gradient products per trial step of the matrix-free Levenberg-Marquardt.
GAUSS_NEWTON_CG_ITERATIONS = 20
#: Most CSGM restarts (and PULSE runs optimised together): each holds a latent and a generator pass in one batch,
#: so a typo of 200000000 would ask for terabytes at the first step.
MAX_RESTARTS = 1024
DEFAULT_IAGAN_STEPS = 300
DEFAULT_IAGAN_LR_Z = 1e-4
#: IAGAN's learning rate of the generator's parameters (Abu Hussein et al. 2020), for generators that declare none.
DEFAULT_IAGAN_LR_G = 1e-3
#: Values of the three-way switches (``--iagan``, ``--gauss-newton``) and what the library receives.
SWITCHES = {"auto": "auto", "on": True, "off": False}
#: ``--gauss-newton`` and ``--iagan``: decide from the problem (docs/inversion.md).
DEFAULT_SWITCH = "auto"

# --- PULSE -------------------------------------------------------------------------------------------
PULSE_SCHEDULES = ("fixed", "linear1cycle", "linear1cycledrop")
DEFAULT_PULSE_STEPS = 100
DEFAULT_PULSE_LR = 0.4
DEFAULT_PULSE_SCHEDULE = "linear1cycledrop"

# --- eigensolvers ------------------------------------------------------------------------------------
SOLVERS = ("auto", "dense", "jacobian", "arpack", "lanczos", "lobpcg", "block-krylov")
#: ``auto``: the cheapest solver by a cost model (docs/operators.md).
DEFAULT_SOLVER = "auto"
GENERALIZED_SOLVERS = ("auto", "whitened", "lobpcg", "dense")
#: The ends of a spectrum :func:`~hvp_explore.eigen.top_eigenpairs` finds (scipy's LA, SA, LM, BE are accepted too).
WHICH = ("largest", "smallest", "magnitude", "both")
DEFAULT_WHICH = "largest"
#: Relative eigensolver tolerance of :func:`~hvp_explore.eigen.top_eigenpairs` and of the pencil solver.
DEFAULT_EIGEN_TOL = 1e-4
#: Relative tolerance of an exploration: a direction needs its eigenvector to about three digits
#: (1e-3 saves a fifth of the H_X eigensolve against 1e-4 with the same solutions; docs/exploration.md).
DEFAULT_TOL = 1e-3
#: Memory budget of one batched product: "auto" (half the device's free memory), "none", or a size.
DEFAULT_MAX_MEMORY = "auto"
#: What ``--max-memory`` accepts (case-insensitive): auto, none, or a number with an optional unit (powers of 1024).
MEMORY_PATTERN = r"auto|none|[0-9]*\.?[0-9]+\s*([KMGT](iB|B)?|B)?"
#: The largest ``--max-memory`` size, 1 EiB: beyond it a number is a typo (``none`` means no limit).
MAX_MEMORY_BYTES = 1 << 60

# --- exploration -------------------------------------------------------------------------------------
#: H_Y eigenpairs whose eigenvalue is below this fraction of the largest are dropped before Algorithm 1: a unit step
#: along them changes the measurements less than a thousandth as much as along the top one, and below it the
#: eigenvectors are an arbitrary basis of H_Y's (numerical) null space (docs/exploration.md).
H_Y_RANK_RTOL = 1e-6
#: ``unobserved``: the pencil of H_U (the perceptual metric of the part of the image A cannot see) against H_Y.
MODES = ("eglass", "generalized", "unobserved", "raw")
#: The modes whose directions are top eigenvectors of a pencil against H_Y (they need the operators).
PENCIL_MODES = ("generalized", "unobserved")
DEFAULT_MODE = "unobserved"
#: 1-based index of the first H_X eigenvector (e-GLASS, raw), or the number of pencil eigenvectors.
DEFAULT_K = 10
DEFAULT_NUM_SOLUTIONS = 10
#: Cosine above which a coupling with a top H_Y eigenvector is removed (Algorithm 1).
DEFAULT_THRESHOLD = 0.05
#: Regularisation of the pencil H_X d = mu (H_Y + eps lambda_1(H_Y) I) d.
DEFAULT_EPS = 1e-3
#: Walkers of a feasible walk (``--walkers``); each takes ``--walk-steps`` feasible steps.
DEFAULT_WALKERS = 4
#: The step searches aim at ``tau * (1 - DELIVERY_MARGIN)`` so that the 8-bit PNG still meets tau.
DELIVERY_MARGIN = 0.01
#: Frames on each explored direction's even grid from -eta_max to +eta_max, for report.html's sliders (0 and the
#: delivered steps are inserted): 25 of the face generator's 64x64 images cost about 0.2 s per direction on 2 CPU cores.
DEFAULT_FRAMES = 25
#: Directions with a slider in report.html, at most (the first ones, in the order of the solutions): keeps the page
#: a few MB whatever N (each 64x64 frame is about 8 kB of base64 PNG).
FRAME_DIRECTIONS_MAX = 12

# --- latent geometry (hvp-explore geometry) ----------------------------------------------------------
DEFAULT_GEOMETRY_LATENTS = 16
DEFAULT_GEOMETRY_K = 20
#: Average axes drawn as image strips, the latents each starts from, and the images per strip.
DEFAULT_GEOMETRY_AXES = 6
DEFAULT_GEOMETRY_STRIP_LATENTS = 3
DEFAULT_GEOMETRY_STRIP_STEPS = 7
#: A strip's ends change the image by this fraction of the perceptual distance between two random images.
DEFAULT_GEOMETRY_SPAN = 0.5

# --- metrics and generators --------------------------------------------------------------------------
DEFAULT_GENERATOR = "default"
#: ``auto``: the generator's own default metric (fmnist for ``default``, effnet otherwise).
DEFAULT_METRIC = "auto"
DEFAULT_DEVICE = "cpu"
#: Devices a run can use: the CPU, a CUDA GPU (``cuda`` or ``cuda:N``), Apple's Metal (``mps``); checked for presence at start.
DEVICE_PATTERN = r"cpu|cuda(:\d+)?|mps"
DEFAULT_SEED = 0
#: Seeds are 0 <= seed < 2**63, so that seed + offset still fits torch's 64-bit generators.
MAX_SEED = 2**63 - 1

# --- inputs and the command line ---------------------------------------------------------------------
#: Largest input image, in pixels, checked from the file's header before decoding (a 12k x 12k PNG is refused at once;
#: an 8192 x 8192 photograph still loads, for --resize).
MAX_IMAGE_PIXELS = 1 << 26
#: Free space a run needs in $TMPDIR (torch's profiler writes its trace there to measure the memory of a product).
MIN_TEMP_FREE = 16 << 20
#: Largest magnitude of a floating option: its square must stay finite in float32, the working precision.
MAX_FLOAT = 1.8e19
#: The demo's generators and problems, and its output folder.
DEMO_GENERATORS = ("faces", "default")
DEMO_PROBLEMS = ("sr", "inpaint")
DEFAULT_DEMO_OUT = "hvp-explore-demo"
#: What ``hvp-explore train`` trains.
TRAIN_KINDS = ("gan", "classifier")


def option(help: str, *, choices=None, flag: str | None = None, **extra) -> dict:  # noqa: A002 - Click's word
    """Field metadata: the command-line help text, choices and option name of a settings field."""
    return {"help": help, "choices": choices, "flag": flag, **extra}


def memory_size(text: str) -> float:
    """The bytes of a ``--max-memory`` size (``MEMORY_PATTERN``; powers of 1024), as a float (inf when it overflows); 0 for auto/none."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([KMGT]?)", str(text).strip().upper().removesuffix("IB").removesuffix("B"))
    if not match:
        return 0.0
    return float(match.group(1)) * 1024.0 ** " KMGT".index(match.group(2) or " ")


def flag_of(cls, name: str) -> str:
    """The command-line option of field ``name`` of a settings class (``--field-name`` unless the field says otherwise)."""
    f = next(f for f in fields(cls) if f.name == name)
    return f.metadata.get("flag") or "--" + name.replace("_", "-")


class _Settings:
    """Shared behaviour of the settings dataclasses: checks on construction, keyword arguments, defaults.

    Subclasses list in ``_positive`` the fields that must be positive (None allowed for optional ones),
    in ``_integers`` those that must be whole numbers and in ``_counts`` the whole numbers that may be 0;
    a bad value is a one-line ``ValueError`` naming the command-line option, raised before any work.
    """

    _positive: tuple[str, ...] = ()
    _integers: tuple[str, ...] = ()
    _counts: tuple[str, ...] = ()
    #: field -> (largest value, why): values above are refused before any work (they would exhaust the memory).
    _caps: dict[str, tuple[int, str]] = {}

    def __post_init__(self) -> None:
        for name, (cap, why) in self._caps.items():
            value = getattr(self, name)
            if isinstance(value, int) and not isinstance(value, bool) and value > cap:
                raise ValueError(f"{flag_of(type(self), name)} must be at most {cap} ({why}), got {value}")
        for name in self._positive:
            value = getattr(self, name)
            if value is None:
                continue
            integral = name in self._integers
            bad_type = isinstance(value, bool) or not isinstance(value, int if integral else (int, float))
            if bad_type or not math.isfinite(value) or value <= 0:
                what = "a positive integer" if integral else "a positive finite number"
                raise ValueError(f"{flag_of(type(self), name)} must be {what}, got {value!r}")
        for name in self._counts:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{flag_of(type(self), name)} must be a non-negative integer, got {value!r}")
        for f in fields(self):
            value = getattr(self, f.name)
            # values whose square overflows float32 (the working precision) would fail minutes later, or write NaN
            if isinstance(value, float) and not (math.isfinite(value) and abs(value) <= MAX_FLOAT):
                raise ValueError(f"{flag_of(type(self), f.name)} must be a finite number of magnitude at most {MAX_FLOAT:g} "
                                 f"(its square must fit float32, the working precision), got {value!r}")

    def kwargs(self) -> dict:
        """The fields as keyword arguments."""
        return asdict(self)

    @classmethod
    def defaults(cls) -> dict:
        """Field name -> default."""
        return {f.name: f.default for f in fields(cls) if f.default is not MISSING}

    @classmethod
    def pick(cls, values: dict):
        """An instance from the entries of ``values`` named like the fields (the others are ignored)."""
        return cls(**{f.name: values[f.name] for f in fields(cls) if f.name in values})


@dataclass(frozen=True)
class ProblemSettings(_Settings):
    """How INPUT becomes an observation (:func:`~hvp_explore.problems.load_observation`)."""

    problem: str = field(default=DEFAULT_PROBLEM, metadata=option("Super-resolution, inpainting or compressed sensing.", choices=PROBLEM_KINDS))
    factor: int = field(default=DEFAULT_FACTOR, metadata=option("Super-resolution factor."))
    kernel: str = field(default=DEFAULT_KERNEL, metadata=option("Super-resolution downsampling kernel.", choices=SR_KERNELS))
    mask: str | None = field(default=None, metadata=option("Inpainting mask PNG (white = missing).", path=True))
    box: str | None = field(default=None, metadata=option("Inpainting: missing rectangle x,y,w,h."))
    m: int | None = field(default=None, metadata=option("Compressed sensing: number of measurements m.", flag="--measurements"))
    from_clean: bool = field(default=False, metadata=option("INPUT is a clean image: synthesise the observation from it."))
    noise: float = field(default=0.0, metadata=option("With --from-clean: noise std on the [0, 1] scale."))
    resize: bool = field(default=False, metadata=option(
        "Fit an INPUT (and a --mask) of another size: centre crop to the aspect ratio, then Lanczos to the size expected "
        "(stated in the output)."))
    face: bool = field(default=False, metadata=option(
        "INPUT is a photograph: find the largest face, crop it with the framing of the face generator's training faces "
        "and resize it (the box is stated in report.json and on the sheet; exit 2 when no face is found)."))

    _positive = ("factor", "m")
    _integers = ("factor", "m")

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.noise, bool) or not isinstance(self.noise, (int, float)) or not self.noise >= 0:
            raise ValueError(f"--noise must be a standard deviation >= 0 on the [0, 1] scale, got {self.noise!r}")


@dataclass(frozen=True)
class InversionSettings(_Settings):
    """The first solution (:func:`~hvp_explore.inversion.invert`)."""

    _positive = ("restarts", "steps", "lr")
    _integers = ("restarts", "steps")
    _counts = ("halving",)
    _caps = {"restarts": (MAX_RESTARTS, "the restarts are optimised together, one batch")}

    restarts: int = field(default=DEFAULT_RESTARTS, metadata=option("CSGM restarts optimised together."))
    halving: int = field(default=DEFAULT_HALVING, metadata=option(
        f"Every this many CSGM steps the worse half of the restarts is dropped, down to {HALVING_SURVIVORS} (0: keep every restart)."))
    steps: int = field(default=DEFAULT_STEPS, metadata=option("Largest number of CSGM Adam steps (IAGAN's steps are bounded by it too)."))
    lr: float = field(default=DEFAULT_LR, metadata=option("CSGM Adam learning rate."))
    prior: str = field(default=DEFAULT_PRIOR, metadata=option("Latent prior of the starts and of the projection after each step.",
                                                         choices=PRIORS))
    gauss_newton: str = field(default=DEFAULT_SWITCH, metadata=option(
        "Finish CSGM with Gauss-Newton steps from its first feasible iterate: 'auto' when min(m, n) <= "
        f"{GAUSS_NEWTON_EXACT_MAX} or the matrix-free steps cost at most CSGM's budget (docs/inversion.md).", choices=tuple(SWITCHES)))
    iagan: str = field(default=DEFAULT_SWITCH, metadata=option(
        "Fine-tune the generator jointly with the latent after CSGM (IAGAN): 'auto' only when CSGM stays above --tau.",
        choices=tuple(SWITCHES)))
    back_projection: bool = field(default=False, metadata=option("Back-project the final image onto the measurements (IAGAN)."))


@dataclass(frozen=True)
class EigenSettings(_Settings):
    """The top eigenpairs of H_Y and H_X at the first solution (:func:`~hvp_explore.eigen.top_eigenpairs`).

    ``k`` and ``k_y`` must also be below the latent dimension n, checked once the generator is known
    (:meth:`~hvp_explore.exploration.Explorer.check`).
    """

    _positive = ("k", "k_y", "tol")
    _integers = ("k", "k_y")

    metric: str = field(default=DEFAULT_METRIC, metadata=option(
        "Perceptual metric (see 'hvp-explore generators'); auto = fmnist for the default generator, effnet otherwise."))
    k: int = field(default=DEFAULT_K, metadata=option(
        "H_X eigenpairs; e-GLASS starts at v^k (beyond 2k solutions the directions are combinations)."))
    k_y: int | None = field(default=None, metadata=option("H_Y eigenpairs (default: its whole range m when m < n, else n/16)."))
    solver: str = field(default=DEFAULT_SOLVER, metadata=option("Eigensolver.", choices=SOLVERS))
    tol: float = field(default=DEFAULT_TOL, metadata=option("Relative eigensolver tolerance."))
    max_memory: str = field(default=DEFAULT_MAX_MEMORY, metadata=option(
        "Memory budget of one batched product, e.g. 2GB; 'auto' = half the device's free memory; 'none' = no limit "
        "(see docs/reliability.md)."))

    def __post_init__(self) -> None:
        super().__post_init__()
        # the syntax only: the size is parsed (and checked against one product) by hvp_explore.operators.memory
        if not isinstance(self.max_memory, str) or not re.fullmatch(MEMORY_PATTERN, self.max_memory.strip(), flags=re.I):
            raise ValueError(f"--max-memory must be auto, none or a size like 512MB, 4GB or 1.5GiB, got {self.max_memory!r}")
        if memory_size(self.max_memory) > MAX_MEMORY_BYTES:
            raise ValueError(f"--max-memory must be at most 1 EiB (use none for no limit), got {self.max_memory[:40]!r}"
                             + ("..." if len(self.max_memory) > 40 else ""))


@dataclass(frozen=True)
class DirectionSettings(_Settings):
    """The exploration directions (:func:`~hvp_explore.exploration.make_directions`)."""

    _positive = ("solutions", "eps")
    _integers = ("solutions",)

    mode: str = field(default=DEFAULT_MODE, metadata=option(
        "e-GLASS projections, generalized (pencil) directions, unobserved-part directions (the pencil of the metric of what A cannot see), or raw H_X eigenvectors.", choices=MODES))
    solutions: int = field(default=DEFAULT_NUM_SOLUTIONS, metadata=option("Number of explored solutions N."))
    threshold: float = field(default=DEFAULT_THRESHOLD, metadata=option("e-GLASS cosine threshold."))
    eps: float = field(default=DEFAULT_EPS, metadata=option("Pencil regularisation (relative to lambda_1(H_Y))."))

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.threshold, bool) or not isinstance(self.threshold, (int, float)) or not 0 <= self.threshold < 1:
            raise ValueError(f"--threshold must be a cosine in [0, 1), got {self.threshold!r}")


@dataclass(frozen=True)
class ProjectSettings(DirectionSettings):
    """The directions of the ``project`` stage, from the eigenpairs an ``eig`` stage computed."""

    _positive = (*DirectionSettings._positive, "k")
    _integers = (*DirectionSettings._integers, "k")

    k: int | None = field(default=None, metadata=option("Start at v^k (default: the number of H_X eigenpairs computed)."))


@dataclass(frozen=True)
class StepSettings(_Settings):
    """Feasible steps along the directions (:func:`~hvp_explore.exploration.render_solutions`)."""

    _positive = ("tau", "eta_max", "noise_sigma")

    tau: float = field(default=DEFAULT_TAU, metadata=option(
        "Feasibility threshold on the measurement MSE ([0, 1] pixel scale): 2e-3 allows an RMS error of 0.045 per "
        "measurement, about 11 grey levels."))
    noise_sigma: float | None = field(default=None, metadata=option(
        "Known noise standard deviation of the measurements ([0, 1] scale): sets tau = sigma^2 (1 + 2 sqrt(2/m)), which "
        "the truth meets about 98% of the time, never below the first solution's own MSE (instead of --tau)."))
    eta_max: float | None = field(default=None, metadata=option(
        "Largest step along a direction (default: each direction's geometric cap, where its perceptual change "
        "reaches that of a random image of the generator)."))

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.noise_sigma is not None and self.tau != DEFAULT_TAU:
            raise ValueError("give --tau or --noise-sigma, not both: --noise-sigma sets tau from the noise level")


@dataclass(frozen=True)
class WalkSettings(_Settings):
    """Feasible walks after the e-GLASS solutions (:func:`~hvp_explore.exploration.walks.feasible_walks`)."""

    _positive = ("walkers",)
    _integers = ("walkers",)
    _counts = ("walk_steps",)

    walk_steps: int = field(default=0, metadata=option(
        "Feasible walk steps per walker after the e-GLASS solutions (0: no walks); the N solutions are then the most "
        "diverse of all the solutions found."))
    walkers: int = field(default=DEFAULT_WALKERS, metadata=option("Walkers, each starting at one of the e-GLASS solutions farthest apart."))


@dataclass(frozen=True)
class RenderSettings(StepSettings):
    """The ``render`` stage: feasible steps along the directions a ``project`` stage wrote."""

    _positive = (*StepSettings._positive, "solutions")
    _integers = ("solutions",)

    solutions: int | None = field(default=None, metadata=option("Number of solutions (default: two per direction)."))


@dataclass(frozen=True)
class PulseSettings(_Settings):
    """The PULSE baseline (:func:`~hvp_explore.inversion.pulse`)."""

    _positive = ("solutions", "batch", "steps", "lr")
    _integers = ("solutions", "batch", "steps")
    _caps = {"batch": (MAX_RESTARTS, "the runs of a batch are optimised together")}

    solutions: int = field(default=DEFAULT_NUM_SOLUTIONS, metadata=option("Number of PULSE runs N."))
    batch: int = field(default=1, metadata=option("Runs optimised together (1 = one after another, as PULSE)."))
    steps: int = field(default=DEFAULT_PULSE_STEPS, metadata=option("Adam steps per run."))
    lr: float = field(default=DEFAULT_PULSE_LR, metadata=option("Peak Adam learning rate (PULSE's schedule)."))


@dataclass(frozen=True)
class RunSettings(_Settings):
    """What every command that loads a generator shares."""

    generator: str = field(default=DEFAULT_GENERATOR, metadata=option(
        "Registered name (see 'hvp-explore generators'), a .pkl/.pt file, or package.module:function."))
    device: str = field(default=DEFAULT_DEVICE, metadata=option("Torch device: cpu, cuda, cuda:N or mps (checked for presence "
                                                                "before any work)."))
    seed: int = field(default=DEFAULT_SEED, metadata=option(
        f"Seeds every random choice (same seed, same outputs); 0 to {MAX_SEED}."))

    def __post_init__(self) -> None:
        super().__post_init__()
        check_device(self.device)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed <= MAX_SEED:
            raise ValueError(f"--seed must be an integer from 0 to 2**63 - 1 = {MAX_SEED}, got {self.seed!r}")


def check_device(device: str) -> str:
    """``device`` if it names a device kind hvp-explore runs on (cpu, cuda, cuda:N, mps), else a one-line ValueError.

    Whether the device is present is checked once torch is loaded (:func:`hvp_explore.generators.check_device_available`).
    """
    if not isinstance(device, str) or not re.fullmatch(DEVICE_PATTERN, device):
        raise ValueError(f"--device must be cpu, cuda, cuda:N or mps, got {device!r}")
    return device


@dataclass(frozen=True)
class StageSettings(_Settings):
    """How a stage command (eig, project, render) may load the generator its input folder names.

    A folder is data: a generator named there by a file path (a pickle, a TorchScript file) or a factory
    ``package.module:function`` runs code when loaded, so it is loaded only when the user names it on the
    command line too. Registered names (:func:`~hvp_explore.generators.available_generators`) load as they are.
    """

    generator: str | None = field(default=None, metadata=option(
        "The generator the input folder was made with, repeated: required when that folder names a file or a factory "
        "(which run code when loaded); a registered name loads without it."))
    trust_generator: bool = field(default=False, metadata=option(
        "Load the generator file or factory the input folder names without repeating it (only for folders you trust)."))


@dataclass(frozen=True)
class DemoSettings(_Settings):
    """``hvp-explore demo``: the main job on a shipped sample."""

    _integers = ("sample",)

    generator: str = field(default=DEMO_GENERATORS[0], metadata=option(
        "faces: a shipped face (generated from a fixed seed), x4 from 16x16; default: a Fashion-MNIST sample.",
        choices=DEMO_GENERATORS))
    problem: str = field(default=DEMO_PROBLEMS[0], metadata=option(
        "Super-resolution x4, or inpainting of a band (the eyes of a face, the centre of a garment).", choices=DEMO_PROBLEMS))
    sample: int = field(default=0, metadata=option("Which shipped sample (0-based)."))
    out: str = field(default=DEFAULT_DEMO_OUT, metadata=option("Output folder of the demo (written atomically).", path=True))


@dataclass(frozen=True)
class TrainSettings(_Settings):
    """``hvp-explore train``: the embedded default's training."""

    _positive = ("epochs",)
    _integers = ("epochs",)

    epochs: int | None = field(default=None, metadata=option(
        "Training epochs (default: those of the shipped weights, 15 for the GAN, 4 for the classifier)."))
    seed: int = field(default=DEFAULT_SEED, metadata=option("Seeds the initialisation and the data order."))


@dataclass(frozen=True)
class GeometrySettings(_Settings):
    """``hvp-explore geometry``: the perceptual metric at many latents (:func:`~hvp_explore.geometry.latent_geometry`)."""

    _positive = ("latents", "k", "strip_latents", "strip_steps", "span", "tol")
    _integers = ("latents", "k", "axes", "strip_latents", "strip_steps")

    metric: str = field(default=DEFAULT_METRIC, metadata=option(
        "Perceptual metric (see 'hvp-explore generators'); auto = fmnist for the default generator, effnet otherwise."))
    latents: int = field(default=DEFAULT_GEOMETRY_LATENTS, metadata=option("Latents drawn from the prior (seeded)."))
    k: int = field(default=DEFAULT_GEOMETRY_K, metadata=option("Eigenpairs of the metric at each latent and of the average metric."))
    axes: int = field(default=DEFAULT_GEOMETRY_AXES, metadata=option("Top axes of the average metric drawn as image strips (0: none)."))
    strip_latents: int = field(default=DEFAULT_GEOMETRY_STRIP_LATENTS, metadata=option("Latents each strip starts from."))
    strip_steps: int = field(default=DEFAULT_GEOMETRY_STRIP_STEPS, metadata=option("Images per strip."))
    span: float = field(default=DEFAULT_GEOMETRY_SPAN, metadata=option(
        "Perceptual change at a strip's ends, as a fraction of that between two random images of the generator."))
    tol: float = field(default=DEFAULT_TOL, metadata=option("Relative eigensolver tolerance (matrix-free route)."))

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.axes, bool) or not isinstance(self.axes, int) or self.axes < 0:
            raise ValueError(f"--axes must be a non-negative integer, got {self.axes!r}")
        if self.axes > self.k:
            raise ValueError(f"--axes must be at most --k = {self.k}, got {self.axes}")


@dataclass(frozen=True)
class ReportSettings(_Settings):
    """``report.html``, the interactive page of a run folder (:mod:`hvp_explore.io.html`), and its sliders' frames."""

    _integers = ("frames",)

    no_html: bool = field(default=False, metadata=option(
        "Do not write report.html (nor render its sliders' frames), nor a batch's index.html."))
    frames: int = field(default=DEFAULT_FRAMES, metadata=option(
        "Frames per explored direction in report.html's sliders, from -eta_max to +eta_max (at least 2)."))

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.frames, bool) or not isinstance(self.frames, int) or self.frames < 2:
            raise ValueError(f"--frames must be an integer of at least 2, got {self.frames!r}")


@dataclass(frozen=True)
class BatchSettings(_Settings):
    """``hvp-explore batch``: which share of the inputs this process takes."""

    shard: str | None = field(default=None, metadata=option(
        "Process shard i of n (i/n); default from torchrun or a Slurm array, else all."))

    def __post_init__(self) -> None:
        if self.shard is not None and not re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(self.shard)):
            raise ValueError(f"--shard must look like i/n with 0 <= i < n, got {self.shard}")
