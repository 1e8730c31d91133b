"""CSGM (Bora, Jalal, Price, Dimakis, ICML 2017): Adam on the measurement error from several random starts.

The R restarts are one optimisation: a single Adam over a latent tensor Z of shape (R, n) on the loss
sum_r MSE(Z_r). The gradient of row r depends on Z_r alone (the generator is in eval mode, so batch norm
uses its running statistics and rows never interact) and Adam's update is element-wise, so each row
follows exactly the trajectory it would follow alone, while the generator runs once per step for all.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from hvp_explore.inversion.priors import project_latents
from hvp_explore.io._progress import progress_bar
from hvp_explore.problems import measurement_mse

__all__ = ["CSGMRun", "csgm"]


@dataclass(frozen=True)
class CSGMRun:
    best_latents: torch.Tensor  # (R, n): per restart, the iterate with the lowest MSE
    best_mses: torch.Tensor  # (R,)
    history: tuple[float, ...]
    steps_run: int
    stopped_early: bool


def csgm(generator, forward, y, z0, *, steps, lr, prior, truncation, stop_mse, quiet) -> CSGMRun:
    """Batched CSGM: one Adam over all restarts (rows of ``z0``), loss = sum of per-row MSEs."""
    z = z0.detach().clone().requires_grad_(True)
    opt = torch.optim.Adam([z], lr=lr)
    best_z = z0.detach().clone()
    best_mse = torch.full((z0.shape[0],), float("inf"), dtype=z0.dtype, device=z0.device)
    history: list[float] = []
    stopped = False
    t = 0
    with progress_bar("CSGM inversion", steps, quiet=quiet) as bar:
        while True:
            mse = measurement_mse(forward, generator(z), y)
            m = mse.detach()
            better = m < best_mse
            best_mse = torch.where(better, m, best_mse)
            best_z[better] = z.detach()[better]
            history.append(float(m.min()))
            if float(best_mse.min()) < stop_mse:
                stopped = True
                break
            if t == steps:
                break
            opt.zero_grad(set_to_none=True)
            mse.sum().backward()
            opt.step()
            if prior != "normal":
                with torch.no_grad():
                    z.copy_(project_latents(prior, z, truncation=truncation))
            t += 1
            bar.advance(status=f"best MSE {float(best_mse.min()):.2e}")
    return CSGMRun(best_z, best_mse, tuple(history), t, stopped)
