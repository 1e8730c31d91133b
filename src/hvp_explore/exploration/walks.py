r"""Feasible walks: far-away solutions reached by steps that each stay feasible.

Every e-GLASS solution is one step from the first solution :math:`z_0`, so all of them lie in a small
neighbourhood of it. A walk keeps going. Each of W walkers (started at distinct feasible points,
typically the e-GLASS solutions) repeats, for ``steps`` steps:

1. **Direction.** The walker wants to move *away from every solution found so far* in the perceptual
   metric. With the metric's residual form :math:`d(x, x_s) = \lVert R(x) - R(x_s) \rVert^2`, the
   soft-min repulsion :math:`f(z) = -\sigma \log \sum_s e^{-d(G(z), x_s)/\sigma}` has the gradient
   :math:`g = 2 J_R^T \sum_s w_s (R(G(z)) - R(x_s))`, :math:`w = \mathrm{softmax}(-d/\sigma)`, one
   vector-Jacobian product. The step direction is the one that buys the most of it per unit of
   measurement change to second order, :math:`\delta = (J^T J + \epsilon I)^{-1} g` with J the
   Jacobian of the measurements at the walker (exact, min(m, n) batched products) and
   :math:`\epsilon` a fraction of :math:`\lambda_{max}(J^T J)`: the generalized direction of
   e-GLASS's pencil, driven by diversity. With m < n it moves (almost) in the null space of J.
2. **Step.** The step length makes the predicted measurement error of the move
   :math:`\lVert \eta J \delta \rVert^2 / 4m` equal to ``overshoot`` times tau: the walk deliberately
   leaves the feasible set, to be pulled back.
3. **Pull back.** Gauss-Newton (Levenberg-Marquardt) steps on the measurement residual with the
   Jacobian of step 1 (a chord method: no new Jacobian), until the measurement MSE is below
   :math:`\tau (1 - \text{margin})`; if three corrections do not get there, the step is halved and retried.
4. **Record.** The accepted point is rounded to 8 bits and checked against tau (a point whose PNG
   would not meet it is not recorded), then joins the solutions found, so later steps of every walker
   are pushed away from it too.

The repulsion gradients of all walkers are one batched vector-Jacobian product per step; the
Jacobian, the step and its pull-back are per walker. Every loop has a bound:
``steps`` steps, at most 3 step halvings of at most ``pull_back`` corrections each.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.func import vjp

from hvp_explore.inversion.gauss_newton import measurement_jacobian, measurement_residual
from hvp_explore.io._progress import progress_bar
from hvp_explore.io.images import quantize
from hvp_explore.operators.base import frozen_modules
from hvp_explore.problems import measurement_mse
from hvp_explore.settings import DEFAULT_TAU, DELIVERY_MARGIN

__all__ = ["WalkPoint", "WalkResult", "feasible_walks"]


@dataclass(frozen=True)
class WalkPoint:
    """One feasible point of a walk.

    Attributes:
        walker: Index of the walker (0-based).
        step: Step number (1-based; 0 is the start).
        latent: (n,) latent.
        image: (C, H, W) image as saved (8 bits), in [-1, 1].
        measurement_mse: MSE of ``image``'s measurements ([0, 1] scale).
        feasible: ``measurement_mse <= tau``.
        eta: Length of the step that reached it, in latent units (0 at the start).
        halvings: How many times the step was halved before the pull-back succeeded.
    """

    walker: int
    step: int
    latent: torch.Tensor
    image: torch.Tensor
    measurement_mse: float
    feasible: bool
    eta: float
    halvings: int


@dataclass(frozen=True)
class WalkResult:
    """What :func:`feasible_walks` produced.

    Attributes:
        points: Every feasible point visited after the starts, in the order they were found.
        paths: (W, steps + 1, n) latents of each walker after each step (a stuck walker repeats its point).
        images: (W, steps + 1, C, H, W) their images as saved (8 bits), for the path figure.
        stuck: Steps at which a walker could not move (no halving of the step was pulled back).
        products: Jacobian products (rows or columns) spent, forward passes, and repulsion gradients.
        seconds: Wall time.
    """

    points: tuple[WalkPoint, ...]
    paths: torch.Tensor
    images: torch.Tensor
    stuck: int
    products: dict
    seconds: float


def _repulsion_gradients(generator: Callable, metric, Z: torch.Tensor, features: torch.Tensor,
                         reference: torch.Tensor) -> torch.Tensor:
    """:math:`\\nabla_z` of the soft-min perceptual distance of each walker to the solutions found, (W, n), float64.

    ``features`` (S, M) are the residuals :math:`R(x_s) = r(x_s, x_{ref})` of the solutions found; the
    residual of every image is taken against the same reference image, so differences of residuals are
    differences of features.
    """
    def residuals(z):
        return metric.residual(generator(z), reference)

    R, pull = vjp(residuals, Z)
    diff = R[:, None, :] - features[None, :, :]  # (W, S, M)
    d = diff.pow(2).sum(-1)  # (W, S) squared perceptual distances
    sigma = d.median().clamp_min(1e-12)
    w = torch.softmax(-d / sigma, dim=1)
    (g,) = pull(2 * (w[:, :, None] * diff).sum(1))
    return g.to(torch.float64)


def feasible_walks(generator: Callable, forward: Callable, y: torch.Tensor, starts: torch.Tensor, *, metric,
                   found: torch.Tensor, steps: int, tau: float = DEFAULT_TAU, overshoot: float = 2.0, eps_rel: float = 1e-2,
                   pull_back: int = 3, max_step: float | None = None, quiet: bool | None = None) -> WalkResult:
    r"""Walk W walkers from the feasible ``starts`` for ``steps`` feasible steps each (see the module docstring).

    Args:
        generator: Latents (B, n) -> images (B, C, H, W) in [-1, 1].
        forward: The linear forward operator.
        y: The observation (1, ...) or (...).
        starts: (W, n) feasible latents, one per walker.
        metric: A perceptual metric with a residual form (``metric.residual(x, x0)``).
        found: (S, C, H, W) images of the solutions found before the walk (the first solution at least);
            the walkers are pushed away from them and from every point they record.
        steps: Steps per walker.
        tau: Feasibility threshold; the pull-back aims at ``tau * (1 - DELIVERY_MARGIN)``.
        overshoot: The step's predicted measurement error, in units of tau, before the pull-back.
        eps_rel: :math:`\epsilon / \lambda_{max}(J^T J)` of the direction (see the module docstring).
        pull_back: Gauss-Newton corrections per trial step.
        max_step: Cap on a step's length in latent units (default :math:`\sqrt{n} / 4`).
        quiet: Hide the progress bar.

    Returns:
        A :class:`WalkResult`; its points are solutions (8-bit images meeting tau).

    Raises:
        ValueError: Bad shapes or options, or a metric without a residual form.
    """
    if not callable(getattr(metric, "residual", None)):
        raise ValueError("feasible walks need a metric with a residual form (metric.residual(x, x0))")
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 0:
        raise ValueError(f"steps must be a non-negative integer, got {steps!r}")
    if starts.dim() != 2 or starts.shape[0] < 1:
        raise ValueError(f"starts must be (W, n) latents, got shape {tuple(starts.shape)}")
    t_start = time.perf_counter()
    W, n = starts.shape
    dtype = starts.dtype
    max_step = math.sqrt(n) / 4 if max_step is None else max_step
    target = tau * (1 - DELIVERY_MARGIN)
    m = int(forward(generator(starts[:1])).numel()) if steps else 0
    Z = starts.detach().clone()
    paths = [Z.clone()]
    points: list[WalkPoint] = []
    products = {"jacobian": 0, "forward": 0, "gradients": 0}
    stuck = 0
    with frozen_modules(generator, forward, metric), progress_bar("feasible walks", steps * W, quiet=quiet) as bar:
        with torch.no_grad():
            images = quantize(generator(starts))
            reference = images[:1].clone()  # images changes as the walkers move
            features = metric.residual(found.to(dtype), reference)
        frames = [images.clone()]
        for step in range(1, steps + 1):
            G = _repulsion_gradients(generator, metric, Z, features, reference)
            products["gradients"] += W
            moved = []
            for w in range(W):
                J = measurement_jacobian(generator, forward, Z[w])
                products["jacobian"] += min(J.shape)
                point = _step(generator, forward, y, Z[w], J, G[w], m=m, tau=tau, target=target, overshoot=overshoot,
                              eps_rel=eps_rel, pull_back=pull_back, max_step=max_step, products=products)
                if point is None:
                    stuck += 1
                else:
                    z_new, eta, halvings = point
                    with torch.no_grad():
                        image = quantize(generator(z_new[None]))  # as saved: the PNG must meet tau itself
                        mse = float(measurement_mse(forward, image, y)[0])
                    if mse <= tau:
                        Z[w], images[w] = z_new, image[0]
                        moved.append(image[0])
                        points.append(WalkPoint(w, step, z_new.detach().clone(), image[0], mse, True, eta, halvings))
                    else:
                        stuck += 1
                bar.advance(status=f"step {step}, {len(points)} points")
            if moved:
                with torch.no_grad():
                    features = torch.cat([features, metric.residual(torch.stack(moved), reference)])
            paths.append(Z.clone())
            frames.append(images.clone())
    return WalkResult(points=tuple(points), paths=torch.stack(paths, dim=1), images=torch.stack(frames, dim=1), stuck=stuck, products=products,
                      seconds=time.perf_counter() - t_start)


def _step(generator, forward, y, z, J, g, *, m, tau, target, overshoot, eps_rel, pull_back, max_step, products):
    """One walker's step: direction, overshoot, Gauss-Newton pull-back with the chord Jacobian; None when stuck."""
    gram = J.T @ J
    lam = float(torch.linalg.eigvalsh(gram)[-1]) if gram.numel() else 0.0
    eye = torch.eye(gram.shape[0], dtype=torch.float64, device=gram.device)
    delta = torch.linalg.solve(gram + max(eps_rel * lam, 1e-12) * eye, g)
    if not bool(torch.isfinite(delta).all()) or float(delta.norm()) == 0.0:
        return None
    delta = delta / delta.norm()
    # predicted MSE of the move alone: ||eta J delta||^2 / (4 m) = overshoot * tau
    slope = float((J @ delta).norm())
    eta = min(max_step, math.sqrt(4 * m * overshoot * tau) / slope if slope > 0 else max_step)
    for halvings in range(4):
        trial = z.to(torch.float64) + eta * delta
        for _ in range(pull_back + 1):
            r = measurement_residual(generator, forward, y, trial.to(z.dtype))
            products["forward"] += 1
            mse = float(r.pow(2).mean() / 4)
            if mse <= target:
                return trial.to(z.dtype), eta, halvings
            # Levenberg-Marquardt correction with the chord Jacobian (damping as in the inversion's)
            trial = trial - torch.linalg.solve(gram + 1e-3 * lam * eye, J.T @ r)
        eta /= 2
    return None
