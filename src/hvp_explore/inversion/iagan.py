"""IAGAN (Abu Hussein, Tirer, Giryes, AAAI 2020): fine-tune a copy of the generator jointly with the latent."""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

from hvp_explore.io._progress import progress_bar
from hvp_explore.problems import measurement_mse

__all__ = ["iagan_finetune"]


def iagan_finetune(generator: nn.Module, forward, y, latent, *, steps, lr_z, lr_g, stop_mse, quiet):
    """IAGAN: Adam on (z, all parameters of a deep copy of G); returns (copy, z, history) at the best iterate.

    Adam at lr 1e-3 on every parameter can raise the loss before lowering it, so the lowest-MSE
    iterate seen (and the final one) is kept, never a worse one. The fine-tuning stops at the first
    iterate below ``stop_mse`` (``tau * stop_factor``): fitting the measurements further only bends the
    generator towards them (a 64x64 face generator driven to MSE 1e-7 on a photograph's 16x16 copy
    paints blocky high frequencies the measurements cannot see; docs/inversion.md).
    """
    tuned = copy.deepcopy(generator)
    flags = [p.requires_grad for p in tuned.parameters()]
    modes = [m.training for m in tuned.modules()]
    # Batch norm stays in eval mode: a batch of one would make its batch statistics degenerate, and the
    # running statistics are part of what the generator learnt.
    tuned.eval()
    params = list(tuned.parameters())
    for p in params:
        p.requires_grad_(True)
        p.grad = None
    z = latent.detach().clone().unsqueeze(0).requires_grad_(True)
    opt = torch.optim.Adam([{"params": [z], "lr": lr_z}, {"params": params, "lr": lr_g}])
    history: list[float] = []
    best = (math.inf, None, None)
    with progress_bar("IAGAN fine-tuning", steps, quiet=quiet) as bar:
        for _ in range(steps):
            mse = measurement_mse(forward, tuned(z), y)
            history.append(float(mse.detach()[0]))
            if history[-1] < best[0]:
                best = (history[-1], z.detach().clone(), {k: v.detach().clone() for k, v in tuned.state_dict().items()})
            if history[-1] < stop_mse:
                break
            opt.zero_grad(set_to_none=True)
            mse.sum().backward()
            opt.step()
            bar.advance(status=f"MSE {history[-1]:.2e}")
    with torch.no_grad():
        final = float(measurement_mse(forward, tuned(z), y)[0])
    if best[1] is not None and best[0] < final:
        z = best[1].requires_grad_(True)
        tuned.load_state_dict(best[2])
    for p, flag in zip(params, flags):
        p.grad = None
        p.requires_grad_(flag)
    for m, training in zip(tuned.modules(), modes):
        m.train(training)
    return tuned, z.detach()[0], history
