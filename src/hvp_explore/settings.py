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
#: ``gauss_newton="auto"`` also refines when m > n if the latent has at most this many dimensions.
GAUSS_NEWTON_MAX_LATENT = 256
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
#: Relative eigensolver tolerance of :func:`~hvp_explore.eigen.top_eigenpairs` and of the pencil solver.
DEFAULT_EIGEN_TOL = 1e-4
#: Relative tolerance of an exploration: a direction needs its eigenvector to about three digits
#: (1e-3 saves a fifth of the H_X eigensolve against 1e-4 with the same solutions; docs/exploration.md).
DEFAULT_TOL = 1e-3
#: Memory budget of one batched product: "auto" (half the device's free memory), "none", or a size.
DEFAULT_MAX_MEMORY = "auto"

# --- exploration -------------------------------------------------------------------------------------
MODES = ("eglass", "generalized", "raw")
DEFAULT_MODE = "eglass"
#: 1-based index of the first H_X eigenvector (e-GLASS, raw), or the number of pencil eigenvectors.
DEFAULT_K = 10
DEFAULT_NUM_SOLUTIONS = 10
#: Cosine above which a coupling with a top H_Y eigenvector is removed (Algorithm 1).
DEFAULT_THRESHOLD = 0.05
#: Regularisation of the pencil H_X d = mu (H_Y + eps lambda_1(H_Y) I) d.
DEFAULT_EPS = 1e-3
#: The step searches aim at ``tau * (1 - DELIVERY_MARGIN)`` so that the 8-bit PNG still meets tau.
DELIVERY_MARGIN = 0.01

# --- metrics and generators --------------------------------------------------------------------------
DEFAULT_GENERATOR = "default"
#: ``auto``: the generator's own default metric (fmnist for ``default``, effnet otherwise).
DEFAULT_METRIC = "auto"
DEFAULT_DEVICE = "cpu"
DEFAULT_SEED = 0


def option(help: str, *, choices=None, flag: str | None = None, **extra) -> dict:  # noqa: A002 - Click's word
    """Field metadata: the command-line help text, choices and option name of a settings field."""
    return {"help": help, "choices": choices, "flag": flag, **extra}


def flag_of(cls, name: str) -> str:
    """The command-line option of field ``name`` of a settings class (``--field-name`` unless the field says otherwise)."""
    f = next(f for f in fields(cls) if f.name == name)
    return f.metadata.get("flag") or "--" + name.replace("_", "-")


class _Settings:
    """Shared behaviour of the settings dataclasses: checks on construction, keyword arguments, defaults.

    Subclasses list in ``_positive`` the fields that must be positive (None allowed for optional ones)
    and in ``_integers`` those that must be whole numbers; a bad value is a one-line ``ValueError``
    naming the command-line option, raised before any work.
    """

    _positive: tuple[str, ...] = ()
    _integers: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name in self._positive:
            value = getattr(self, name)
            if value is None:
                continue
            integral = name in self._integers
            bad_type = isinstance(value, bool) or not isinstance(value, int if integral else (int, float))
            if bad_type or not math.isfinite(value) or value <= 0:
                what = "a positive integer" if integral else "a positive finite number"
                raise ValueError(f"{flag_of(type(self), name)} must be {what}, got {value!r}")

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


@dataclass(frozen=True)
class InversionSettings(_Settings):
    """The first solution (:func:`~hvp_explore.inversion.invert`)."""

    _positive = ("restarts", "steps", "lr")
    _integers = ("restarts", "steps")

    restarts: int = field(default=DEFAULT_RESTARTS, metadata=option("CSGM restarts optimised together."))
    steps: int = field(default=DEFAULT_STEPS, metadata=option("Largest number of CSGM Adam steps (IAGAN's steps are bounded by it too)."))
    lr: float = field(default=DEFAULT_LR, metadata=option("CSGM Adam learning rate."))
    prior: str = field(default=DEFAULT_PRIOR, metadata=option("Latent prior of the starts and of the projection after each step.",
                                                         choices=PRIORS))
    gauss_newton: str = field(default=DEFAULT_SWITCH, metadata=option(
        "Finish CSGM with Gauss-Newton steps from its first feasible iterate: 'auto' when m <= n or n <= "
        f"{GAUSS_NEWTON_MAX_LATENT} (docs/inversion.md).", choices=tuple(SWITCHES)))
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


@dataclass(frozen=True)
class DirectionSettings(_Settings):
    """The exploration directions (:func:`~hvp_explore.exploration.make_directions`)."""

    _positive = ("solutions", "eps")
    _integers = ("solutions",)

    mode: str = field(default=DEFAULT_MODE, metadata=option(
        "e-GLASS projections, generalized (pencil) directions, or raw H_X eigenvectors.", choices=MODES))
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

    _positive = ("tau", "eta_max")

    tau: float = field(default=DEFAULT_TAU, metadata=option("Feasibility threshold on the measurement MSE ([0, 1] pixel scale)."))
    eta_max: float | None = field(default=None, metadata=option("Largest step along a direction (default sqrt(n))."))


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

    solutions: int = field(default=DEFAULT_NUM_SOLUTIONS, metadata=option("Number of PULSE runs N."))
    batch: int = field(default=1, metadata=option("Runs optimised together (1 = one after another, as PULSE)."))
    steps: int = field(default=DEFAULT_PULSE_STEPS, metadata=option("Adam steps per run."))
    lr: float = field(default=DEFAULT_PULSE_LR, metadata=option("Peak Adam learning rate (PULSE's schedule)."))


@dataclass(frozen=True)
class RunSettings(_Settings):
    """What every command that loads a generator shares."""

    generator: str = field(default=DEFAULT_GENERATOR, metadata=option(
        "Registered name (see 'hvp-explore generators'), a .pkl/.pt file, or package.module:function."))
    device: str = field(default=DEFAULT_DEVICE, metadata=option("Torch device, e.g. cpu or cuda."))
    seed: int = field(default=DEFAULT_SEED, metadata=option("Seeds every random choice (same seed, same outputs)."))
