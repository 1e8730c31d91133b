"""Levenberg-Marquardt on the measurement residual: the Gauss-Newton finish of an inversion."""

from __future__ import annotations

import torch

from hvp_explore.inversion.priors import project_latents
from hvp_explore.operators.curvature import measurement_hessian
from hvp_explore.problems import measurement_mse
from hvp_explore.settings import GAUSS_NEWTON_CG_ITERATIONS

__all__ = ["levenberg_marquardt", "conjugate_gradient", "measurement_residual", "measurement_jacobian"]


def _gradient(generator, forward, y, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """:math:`g = J^T r` and :math:`r = A G(z) - y` at ``z`` (one backward pass), float64."""
    zg = z.detach().clone().requires_grad_(True)
    r = (forward(generator(zg[None])) - y).reshape(-1)
    (g,) = torch.autograd.grad(0.5 * r.pow(2).sum(), zg)
    return g.detach().to(torch.float64), r.detach().to(torch.float64)


def measurement_residual(generator, forward, y, z: torch.Tensor) -> torch.Tensor:
    """:math:`r = A G(z) - y` at one latent ``z``, flattened, float64 (no graph)."""
    with torch.no_grad():
        return _residual(forward, generator(z[None]), y)


def _residual(forward, image: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """:math:`r = A x - y` of an image already generated, flattened, float64 (no graph)."""
    with torch.no_grad():
        return (forward(image) - y).reshape(-1).to(torch.float64)


def measurement_jacobian(generator, forward, z: torch.Tensor) -> torch.Tensor:
    r"""The exact Jacobian :math:`J = \partial (A G(z)) / \partial z` (m, n), float64, from min(m, n) batched products."""
    return measurement_hessian(generator, forward, z).jacobian().to(torch.float64)


def conjugate_gradient(matvec, b: torch.Tensor, *, shift: float, iterations: int, rtol: float = 0.1) -> tuple[torch.Tensor, int]:
    r"""Solve :math:`(H + \text{shift} \, I) x = b` by conjugate gradients with products ``matvec(v) = H v`` (float64).

    An inexact Newton solve: it stops once the residual is below ``rtol`` times :math:`\lVert b \rVert`
    (the forcing term; a Gauss-Newton step needs no more), or after ``iterations`` products.

    Returns:
        ``(x, products)``.
    """
    x = torch.zeros_like(b)
    res = b.clone()
    p = res.clone()
    rr = float(res @ res)
    stop = (rtol * float(b.norm())) ** 2
    used = 0
    while used < iterations and rr > stop:
        Ap = matvec(p) + shift * p
        used += 1
        alpha = rr / float(p @ Ap)
        x = x + alpha * p
        res = res - alpha * Ap
        rr_new = float(res @ res)
        p = res + (rr_new / rr) * p
        rr = rr_new
    return x, used


class _ExactStep:
    r"""The damped step from an explicit Jacobian, in whichever of its two forms is smaller (see :func:`levenberg_marquardt`).

    ``fresh`` says whether J is the exact Jacobian at the current point or a Broyden update of one.
    """

    def __init__(self, J: torch.Tensor, r: torch.Tensor):
        self.J, self.r, self.fresh = J, r, True

    def __call__(self, mu: float) -> torch.Tensor:
        J, r = self.J, self.r
        tall = J.shape[0] > J.shape[1]
        gram = J.T @ J if tall else J @ J.T
        scale = float(gram.diagonal().mean())
        shifted = gram + mu * scale * torch.eye(gram.shape[0], dtype=gram.dtype, device=gram.device)
        if tall:
            return -torch.linalg.solve(shifted, J.T @ r)
        return -(J.T @ torch.linalg.solve(shifted, r))

    def update(self, delta: torch.Tensor, r_new: torch.Tensor) -> None:
        r"""Broyden's rank-one secant update after a step ``delta`` that changed the residual to ``r_new``.

        :math:`J \leftarrow J + (\Delta r - J \delta) \delta^T / \delta^T \delta`, the smallest change of J
        (in the Frobenius norm) that makes :math:`J \delta = \Delta r`; it costs no product.
        """
        delta = delta.to(self.J.dtype)
        self.J = self.J + torch.outer(r_new - self.r - self.J @ delta, delta) / float(delta @ delta)
        self.r, self.fresh = r_new, False


def _exact(generator, forward, y, z: torch.Tensor) -> _ExactStep:
    """The damped step from the exact Jacobian at ``z`` (min(m, n) batched products)."""
    return _ExactStep(measurement_jacobian(generator, forward, z), measurement_residual(generator, forward, y, z))


def _matrix_free(generator, forward, y, z: torch.Tensor, *, cg_iterations: int):
    """The damped step by conjugate gradients on Gauss-Newton products, never forming J."""
    H = measurement_hessian(generator, forward, z)
    g, _ = _gradient(generator, forward, y, z)

    def matvec(v: torch.Tensor) -> torch.Tensor:
        return H.matvec(v.to(H.dtype)).to(torch.float64)

    scale = float(g @ matvec(g)) / max(float(g @ g), 1e-300)  # the curvature along the gradient

    def step(mu: float) -> torch.Tensor:
        return conjugate_gradient(matvec, -g, shift=mu * scale, iterations=cg_iterations)[0]

    return step


def levenberg_marquardt(generator, forward, y, latent, *, target, trials, prior, truncation, solve: str = "exact",
                        cg_iterations: int = GAUSS_NEWTON_CG_ITERATIONS, broyden: bool = True):
    r"""Levenberg-Marquardt on the measurement residual from ``latent``, until MSE < ``target``.

    With :math:`r(z) = A G(z) - y` and its Jacobian J (m, n) the step is the damped Gauss-Newton step
    :math:`\delta = -(J^T J + \mu s I)^{-1} J^T r = -J^T (J J^T + \mu s I)^{-1} r`. A step that lowers the
    MSE is kept (then :math:`\mu \leftarrow \mu / 10` and the problem is linearised again at the new
    point); otherwise :math:`\mu \leftarrow 10 \mu` and the step is retried with the same linearisation.

    ``solve="exact"`` forms J (min(m, n) batched products) and solves in whichever form is smaller
    (n x n when the measurements outnumber the latent dimensions, m x m otherwise), with
    :math:`s = \lVert J \rVert_F^2 / \min(m, n)`: every step lies in the row space of J, so on a generator
    that is affine in z the iterates converge to the closest point to ``latent`` with :math:`A G(z) = y`
    when m <= n, and to the least-squares point when m > n. ``solve="cg"`` never forms J: conjugate
    gradients on Gauss-Newton products :math:`J^T J v` (one jvp and one vjp each), with the gradient
    :math:`J^T r` from one backward pass and :math:`s = g^T J^T J g / g^T g`, an inexact Newton step for
    latents too long for the exact Jacobian (at most ``cg_iterations`` products per step).

    With ``broyden=True`` (``solve="exact"`` only) an accepted step does not recompute J: Broyden's
    rank-one secant update (Madsen, Nielsen and Tingleff, *Methods for non-linear least squares
    problems*, 2004, section 3.4) corrects it from the residual the trial already computed, so a step costs
    one generator pass instead of min(m, n) products. When a step from an updated J fails, J is computed
    exactly at the current point before the damping grows, and that step does not count as one of the
    ``trials`` (so at most ``trials`` Jacobians and ``2 * trials`` generator passes). On a generator affine in z the update is zero
    and the iterates are those of the exact method.

    Returns:
        ``(latent, mse, history, accepted)`` with the MSE of every accepted step in ``history``.
    """
    if solve not in ("exact", "cg"):
        raise ValueError(f"solve must be 'exact' or 'cg', got {solve!r}")
    z = latent.detach().clone()
    with torch.no_grad():
        mse = float(measurement_mse(forward, generator(z[None]), y)[0])
    history, accepted, mu, step, used = [], 0, 1e-3, None, 0
    while used < trials and mse >= target:
        if step is None:
            step = (_exact(generator, forward, y, z) if solve == "exact"
                    else _matrix_free(generator, forward, y, z, cg_iterations=cg_iterations))
        trial = z + step(mu).to(z.dtype)
        if prior != "normal":
            trial = project_latents(prior, trial[None], truncation=truncation)[0]
        with torch.no_grad():
            image = generator(trial[None])
            trial_mse = float(measurement_mse(forward, image, y)[0])
        secant = solve == "exact" and not step.fresh  # J is a Broyden update, not a Jacobian
        if trial_mse < mse:
            if solve == "exact" and broyden:  # the next step from a secant update of J: no new Jacobian
                step.update(trial - z, _residual(forward, image, y))
            else:
                step = None
            z, mse, mu = trial, trial_mse, mu / 10
            history.append(mse)
            accepted += 1
            used += 1
        elif secant:
            # a secant J that no longer predicts: linearise again before damping more; this cost one
            # generator pass, not a trial
            step = None
        else:
            mu *= 10
            used += 1
    return z, mse, history, accepted
