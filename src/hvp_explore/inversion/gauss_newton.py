"""Levenberg-Marquardt on the measurement residual: the Gauss-Newton finish of an inversion."""

from __future__ import annotations

import torch

from hvp_explore.inversion.priors import project_latents
from hvp_explore.operators.curvature import measurement_hessian
from hvp_explore.problems import measurement_mse

__all__ = ["levenberg_marquardt"]


def levenberg_marquardt(generator, forward, y, latent, *, target, trials, prior, truncation):
    r"""Levenberg-Marquardt on the measurement residual from ``latent``, until MSE < ``target``.

    With :math:`r(z) = A G(z) - y` and its exact Jacobian J (m, n) the step is the damped
    Gauss-Newton step :math:`\delta = -(J^T J + \mu s I)^{-1} J^T r = -J^T (J J^T + \mu s I)^{-1} r`,
    :math:`s = \lVert J \rVert_F^2 / \min(m, n)`, solved in whichever form is smaller (n x n when the
    measurements outnumber the latent dimensions, m x m otherwise). A step that lowers the MSE is kept
    (then :math:`\mu \leftarrow \mu / 10` and J is recomputed at the new point); otherwise
    :math:`\mu \leftarrow 10 \mu` and the step is retried with the same J. Every step lies in the row
    space of J, so on a generator that is affine in z the iterates converge to the closest point to
    ``latent`` with :math:`A G(z) = y` when m <= n, and to the least-squares point when m > n.

    Returns:
        ``(latent, mse, history, accepted)`` with the MSE of every accepted step in ``history``.
    """
    z = latent.detach().clone()
    with torch.no_grad():
        mse = float(measurement_mse(forward, generator(z[None]), y)[0])
    history, accepted, mu, J = [], 0, 1e-3, None
    for _ in range(trials):
        if mse < target:
            break
        if J is None:
            J = measurement_hessian(generator, forward, z).jacobian().to(torch.float64)
            with torch.no_grad():
                r = (forward(generator(z[None])) - y).reshape(-1).to(torch.float64)
            tall = J.shape[0] > J.shape[1]
            gram = J.T @ J if tall else J @ J.T
            scale = float(gram.diagonal().mean())
            eye = torch.eye(gram.shape[0], dtype=torch.float64, device=gram.device)
        if tall:
            step = -torch.linalg.solve(gram + mu * scale * eye, J.T @ r)
        else:
            step = -(J.T @ torch.linalg.solve(gram + mu * scale * eye, r))
        trial = z + step.to(z.dtype)
        if prior != "normal":
            trial = project_latents(prior, trial[None], truncation=truncation)[0]
        with torch.no_grad():
            trial_mse = float(measurement_mse(forward, generator(trial[None]), y)[0])
        if trial_mse < mse:
            z, mse, mu, J = trial, trial_mse, mu / 10, None
            history.append(mse)
            accepted += 1
        else:
            mu *= 10
    return z, mse, history, accepted
