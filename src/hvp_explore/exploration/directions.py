r"""Exploration directions: coupling, e-GLASS's Algorithm 1, generalized directions and combinations.

Algorithm 1 of Montanaro, Valsesia & Magli (ICIP 2022) removes from :math:`v^K` (an H_X eigenvector)
its components along the top H_Y eigenvectors :math:`u^j` it is coupled with; generalized directions are
the top eigenvectors of the pencil :math:`H_X d = \mu (H_Y + \epsilon I) d`; beyond K directions, random
combinations of them (:func:`combine_directions`) keep the eigensolve from growing with N.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from hvp_explore.eigen.generalized import top_generalized_eigenpairs
from hvp_explore.eigen.solvers import EigenResult
from hvp_explore.settings import DEFAULT_EPS, DEFAULT_K, DEFAULT_THRESHOLD, DEFAULT_TOL, MODES, PENCIL_MODES

__all__ = ["coupling_matrix", "significant_couplings", "Projection", "eglass_projection", "Direction", "combine_directions",
           "make_directions", "default_k_y", "num_directions"]


def coupling_matrix(U: torch.Tensor, V: torch.Tensor) -> torch.Tensor:
    r"""The coupling :math:`C = U^T V` (k_Y x k_X) of two orthonormal eigenbases: cosines between eigenvectors."""
    if U.ndim != 2 or V.ndim != 2 or U.shape[0] != V.shape[0]:
        raise ValueError(f"U and V must be (n, k) matrices with the same n, got {tuple(U.shape)} and {tuple(V.shape)}")
    return U.T.to(torch.float64) @ V.to(torch.float64)


def significant_couplings(C: torch.Tensor, threshold: float) -> torch.Tensor:
    """Boolean mask of the entries of ``C`` with ``|C| > threshold``."""
    if not 0 <= threshold < 1:
        raise ValueError(f"the cosine threshold must be in [0, 1), got {threshold}")
    return C.abs() > threshold


@dataclass(frozen=True)
class Projection:
    """The outcome of Algorithm 1 on one starting vector.

    Attributes:
        direction: The final unit direction d, shape (n,).
        cosines_before: :math:`U^T v` of the starting vector, shape (k_Y,).
        cosines_after: :math:`U^T d`, shape (k_Y,); every entry is at most the threshold in size.
        removed: 1-based indices j of the :math:`u^j` removed, in the order they were removed.
        passes: Sweeps over U until no cosine exceeded the threshold.
    """

    direction: torch.Tensor
    cosines_before: torch.Tensor
    cosines_after: torch.Tensor
    removed: tuple[int, ...]
    passes: int


def eglass_projection(v: torch.Tensor, U: torch.Tensor, *, threshold: float, max_passes: int = 10) -> Projection:
    r"""Algorithm 1 of e-GLASS: remove from ``v`` its components along the :math:`u^j` it is coupled with.

    For each column :math:`u^j` of U with :math:`|\langle d, u^j\rangle|` above the threshold:
    :math:`d \leftarrow d - \langle d, u^j\rangle u^j`, then :math:`d \leftarrow d / \|d\|`; sweeps repeat
    until no cosine exceeds the threshold (one sweep suffices in exact arithmetic, since the
    :math:`u^j` are orthonormal; rounding may need a second).

    Raises:
        ValueError: When the projection removes the whole vector (v inside the span of U).
    """
    significant_couplings(U.new_zeros(1), threshold)  # validates the threshold
    U = U.to(torch.float64)
    cutoff = max(threshold, 1e-12)  # cosines below 1e-12 are rounding, not coupling
    d = v.to(torch.float64) / v.norm()
    before = U.T @ d
    removed: list[int] = []
    passes = 0
    while passes < max_passes:
        cos = U.T @ d
        if not bool((cos.abs() > cutoff).any()):
            break
        passes += 1
        for j in range(U.shape[1]):
            c = torch.dot(d, U[:, j])
            if abs(float(c)) > cutoff:
                d = d - c * U[:, j]
                norm = d.norm()
                if float(norm) < 1e-12:
                    raise ValueError("the e-GLASS projection removed the whole direction: it lies in the span of the H_Y eigenvectors")
                d = d / norm
                removed.append(j + 1)
    return Projection(direction=d, cosines_before=before, cosines_after=U.T @ d, removed=tuple(removed), passes=passes)


@dataclass(frozen=True)
class Direction:
    """A unit direction in latent space and where it came from.

    Attributes:
        vector: (n,) unit vector, float64.
        mode: ``"eglass"``, ``"generalized"``, ``"unobserved"`` or ``"raw"``.
        label: Short name: ``"v10"`` (from the 10th H_X eigenvector), ``"g3"`` (3rd pencil eigenvector), ``"u3"``
            (3rd eigenvector of the unobserved part's pencil).
        index: 1-based eigenvector index it started from (0 for a combination).
        projection: The Algorithm 1 record (e-GLASS mode only).
        combination: For a combination ``"c3"`` of the eigenvector directions (see
            :func:`combine_directions`): its coefficients over them, scaled so that their weighted sum
            has unit norm; ``None`` for an eigenvector direction.
    """

    vector: torch.Tensor
    mode: str
    label: str
    index: int
    projection: Projection | None = None
    combination: tuple[float, ...] | None = None


def default_k_y(m: int, n: int) -> int:
    """Default number of H_Y eigenpairs: its whole range when m < n, else n / 16.

    When m >= n (inpainting: m = 768, n = 512) H_Y has full rank and Algorithm 1 can only remove its
    most measurement-sensitive directions. In a paired sweep over 20 inpainting observations
    (``python benchmarks/exploration.py``, docs/results.md) perceptual change and diversity fall as
    k_y grows: n/4 gives about a fifth less of both than n/16 and moves more of the change out of the
    hole on 4-5 of the 20; n/32 gains 1-2% but moves it out on 2. Every solution is feasible either way.
    """
    return m if m < n else max(1, n // 16)


def num_directions(num_solutions: int) -> int:
    """Directions needed for N solutions: two per direction (both signs)."""
    return math.ceil(num_solutions / 2)


def combine_directions(base: list[Direction], count: int, *, U: torch.Tensor | None = None, threshold: float = DEFAULT_THRESHOLD,
                       seed: int = 0) -> list[Direction]:
    r"""``count`` random unit combinations of the directions ``base``: more directions at no eigensolver cost.

    :math:`c \sim \mathcal N(0, I_b)` from a generator seeded with ``seed``; the direction is
    :math:`\sum_i c_i d_i` normalised and, when ``U`` (the top :math:`H_Y` eigenvectors) is given,
    passed through Algorithm 1 again, since a combination of directions that each have cosines under
    the threshold can add up to one above it. The combinations span the same perceptual subspace as
    ``base``, so their feasible steps can be predicted from those of ``base`` (:func:`ellipsoid_steps`).

    Returns:
        Directions labelled ``c1, c2, ...`` in the mode of ``base[0]``, with index 0 and their
        ``combination`` coefficients (scaled so that :math:`\|\sum_i c_i d_i\| = 1`).
    """
    if count < 0 or not base:
        raise ValueError(f"combinations need at least one base direction and a count >= 0, got {len(base)} and {count}")
    B = torch.stack([d.vector.to(torch.float64) for d in base], dim=1)
    C = torch.randn(len(base), count, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    out = []
    for j in range(count):
        v = B @ C[:, j]
        c = C[:, j] / v.norm()
        proj = eglass_projection(v, U, threshold=threshold) if U is not None else None
        vector = proj.direction if proj is not None else v / v.norm()
        out.append(Direction(vector, base[0].mode, f"c{j + 1}", 0, proj, combination=tuple(float(x) for x in c)))
    return out


def make_directions(mode: str, eig_y: EigenResult, eig_x: EigenResult | None, *, count: int, K: int | None = None,
                    threshold: float = DEFAULT_THRESHOLD, H_X=None, H_Y=None, eps: float = DEFAULT_EPS, tol: float = DEFAULT_TOL,
                    seed: int = 0) -> tuple[list[Direction], EigenResult | None]:
    r"""The exploration directions of one mode: up to K from eigenvectors, the rest combinations of them.

    The first ``min(count, K)`` directions come from eigenvectors; when ``count > K`` the others are
    random combinations of those (:func:`combine_directions`), so that N solutions cost K eigenpairs,
    not N / 2 (the eigensolve would otherwise grow with N; see docs/exploration.md).

    Args:
        mode: ``"eglass"``: Algorithm 1 on :math:`v^K, v^{K-1}, \dots`; ``"raw"``: those :math:`v^i`
            unprojected; ``"generalized"``: the top eigenvectors of
            :math:`H_X d = \mu (H_Y + \epsilon \lambda_1(H_Y) I) d` (needs the operators); ``"unobserved"``: the same
            pencil with ``H_X`` the metric of the unobserved part, :math:`H_U`
            (:func:`~hvp_explore.operators.unobserved_hessian`), passed as ``H_X``.
        eig_y, eig_x: Top eigenpairs of H_Y and H_X (``eig_x`` needs at least K pairs).
        count: Number of directions.
        K: 1-based index of the first H_X eigenvector (default ``eig_x.k``); in generalized mode, the
            number of pencil eigenvectors (default :data:`DEFAULT_K`).
        threshold: Cosine threshold of Algorithm 1.
        H_X, H_Y: The operators of the pencil (generalized and unobserved modes; ``H_U`` as ``H_X`` for the latter).
        eps: Pencil regularisation relative to the top eigenvalue of H_Y.
        tol: Pencil eigensolver tolerance.
        seed: Seeds the pencil solver and the combinations.

    Returns:
        ``(directions, pencil)``; ``pencil`` is the pencil's :class:`EigenResult` in generalized mode.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    if not isinstance(count, int) or count < 1:
        raise ValueError(f"the number of directions must be a positive integer, got {count!r}")
    pencil = None
    if mode in PENCIL_MODES:
        if H_X is None or H_Y is None:
            raise ValueError(f"{mode} directions need the operators of the pencil (H_X or H_U, and H_Y)")
        K = K if K is not None else DEFAULT_K
        pencil = top_generalized_eigenpairs(H_X, H_Y, min(count, K), eps=eps * max(float(eig_y.values[0]), 1e-30), tol=tol,
                                            seed=seed, probe=False)
        prefix = "g" if mode == "generalized" else "u"
        directions = [Direction(pencil.vectors[:, i], mode, f"{prefix}{i + 1}", i + 1) for i in range(pencil.k)]
    else:
        K = K if K is not None else eig_x.k
        if not 1 <= K <= eig_x.k:
            raise ValueError(f"K must be between 1 and the {eig_x.k} computed H_X eigenpairs, got {K}")
        directions = []
        for index in range(K, max(K - count, 0), -1):
            v = eig_x.vectors[:, index - 1]
            if mode == "raw":
                directions.append(Direction(v / v.norm(), mode, f"v{index}", index))
            else:
                proj = eglass_projection(v, eig_y.vectors, threshold=threshold)
                directions.append(Direction(proj.direction, mode, f"v{index}", index, proj))
    if count > len(directions):
        directions += combine_directions(directions, count - len(directions), U=eig_y.vectors if mode == "eglass" else None,
                                         threshold=threshold, seed=seed)
    return directions, pencil
