r"""Eval-mode batch norm as the affine map it is, in the operators' own copy of a module.

In eval mode a batch norm layer is the per-channel affine map

.. math::

    \operatorname{BN}(x)_c = s_c x_c + t_c, \qquad s_c = \frac{\gamma_c}{\sqrt{\sigma^2_c + \epsilon}},
    \quad t_c = \beta_c - \mu_c s_c,

but torch's forward-mode AD differentiates ``batch_norm`` through a decomposition written in Python
(about 40% of a Jacobian-vector product of the face generator with the effnet metric), and its
double backward is slow too. :func:`folded_callable` gives the operators a *copy* of the module in
which every eval-mode batch norm is replaced by that affine map, folded into the weights of the
convolution or linear layer right before it when the two are consecutive in an ``nn.Sequential``
(:math:`W'_c = s_c W_c`, :math:`b'_c = s_c b_c + t_c`), or when a module declares the pair, and otherwise applied
as a channel affine. A module declares pairs its ``forward`` wires by hand (EfficientNet's blocks call a
convolution, then its batch norm) in a class attribute ``batch_norm_follows``, a mapping from a batch norm's
path to a layer's path (dotted, relative to the module): the batch norm reads that layer's output and nothing
else does; a layer with k times the batch norm's channels feeds it through a view, channel c being its
outputs c k to c k + k - 1 (the DCGAN's linear layer reshaped to 4 x 4 maps).

Folding also matters beyond the batch norm itself: in forward mode, every elementwise operation between a
dual tensor and a constant tensor (a channel affine's ``scale`` and ``shift``) costs a Python meta
computation in torch (the constant's tangent is an efficient zero tensor, whose output shape torch computes
with its Python reference kernels): 0.3-0.5 ms a call, whatever the tensors' sizes. The 49 channel affines of
EfficientNet-Lite0 made a third of a batched Jacobian-vector product of the faces' ``H_X``.
The copy shares every other parameter and buffer with the user's module, which is never modified.
The folded map equals the original exactly in exact arithmetic; in floating point they differ by
rounding only (tested to 1e-6 relative in float32 and 1e-12 in float64).
"""

from __future__ import annotations

import copy
import weakref

import torch
from torch import nn

__all__ = ["ChannelAffine", "batch_norm_affine", "folded_module", "folded_callable"]

_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_TRANSPOSED = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)


class ChannelAffine(nn.Module):
    """``x * scale[c] + shift[c]`` over dimension 1 (the channels), an eval-mode batch norm."""

    def __init__(self, scale: torch.Tensor, shift: torch.Tensor):
        super().__init__()
        self.register_buffer("scale", scale)
        self.register_buffer("shift", shift)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = (1, -1) + (1,) * (x.dim() - 2)
        return torch.addcmul(self.shift.view(shape), x, self.scale.view(shape))


def batch_norm_affine(bn: nn.modules.batchnorm._BatchNorm) -> tuple[torch.Tensor, torch.Tensor]:
    """The eval-mode map of ``bn`` as ``(scale, shift)``, computed in float64 and returned in the layer's dtype."""
    var, mean = bn.running_var.double(), bn.running_mean.double()
    scale = torch.rsqrt(var + bn.eps)
    shift = -mean * scale
    if bn.weight is not None:
        scale = scale * bn.weight.double()
        shift = shift * bn.weight.double()
    if bn.bias is not None:
        shift = shift + bn.bias.double()
    dtype = bn.running_var.dtype
    return scale.to(dtype).detach(), shift.to(dtype).detach()


def _foldable(layer: nn.Module | None) -> bool:
    """A plain linear or (transposed) convolution whose output channels a batch norm can scale into its weights.

    A grouped convolution (a depthwise one) stores its output channels along dimension 0 as an ungrouped one does;
    a grouped transposed convolution stores them split across groups, and is left alone.
    """
    if not isinstance(layer, (nn.Linear, *_CONVS, *_TRANSPOSED)):
        return False
    plain = not getattr(layer, "parametrizations", None) and isinstance(layer.weight, nn.Parameter)
    grouping = isinstance(layer, _TRANSPOSED) and layer.groups != 1
    return plain and not grouping and not layer._forward_hooks and not layer._forward_pre_hooks


def _fold(layer: nn.Module, scale: torch.Tensor, shift: torch.Tensor) -> None:
    """Fold the channel affine ``(scale, shift)`` that follows ``layer`` (the copy's own) into its weight and bias.

    A layer with k times as many outputs as the batch norm has channels feeds it through a view (a linear layer
    reshaped to (C, H, W) maps; declared by ``batch_norm_follows``): channel c is outputs c k to c k + k - 1.
    """
    repeat = _channels_out(layer) // scale.numel()
    shape = [1] * layer.weight.dim()
    shape[_channel_dim(layer)] = -1
    with torch.no_grad():
        scale, shift = scale.double().repeat_interleave(repeat), shift.double().repeat_interleave(repeat)
        weight = layer.weight.double() * scale.view(shape)
        bias = shift + (0.0 if layer.bias is None else layer.bias.double() * scale)
    # New parameters in the copy's own parameter dict: the user's layer keeps its weight.
    layer.weight = nn.Parameter(weight.to(layer.weight.dtype), requires_grad=False)
    layer.bias = nn.Parameter(bias.to(layer.weight.dtype), requires_grad=False)


def _channel_dim(layer: nn.Module) -> int:
    """The weight's output-channel dimension: a transposed convolution stores its weight (in, out, ...)."""
    return 1 if isinstance(layer, _TRANSPOSED) else 0


def _channels_out(layer: nn.Module) -> int:
    return layer.weight.shape[_channel_dim(layer)]


def _is_eval_batch_norm(module: nn.Module) -> bool:
    return (isinstance(module, nn.modules.batchnorm._BatchNorm) and module.track_running_stats
            and module.running_mean is not None and module.running_var is not None)


# module -> (state signature, folded copy): inversion and walks build an operator per iterate.
_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _signature(module: nn.Module) -> tuple:
    """Identity and in-place version of every tensor: a changed weight or statistic invalidates the copy."""
    return tuple((id(t), t._version) for t in (*module.parameters(), *module.buffers()))


def folded_module(module: nn.Module) -> nn.Module:
    """A copy of ``module`` with every batch norm as its eval-mode affine map (``module`` itself when it has none).

    The copy shares all other parameters and buffers with ``module`` (no memory is duplicated but the
    folded layers'), and is in eval mode. It is cached until a parameter or buffer of ``module``
    changes. A module that cannot be copied (a TorchScript module) is returned unchanged.
    """
    if not any(_is_eval_batch_norm(m) for m in module.modules()):
        return module
    signature = _signature(module)
    cached = _CACHE.get(module)
    if cached is not None and cached[0] == signature:
        return cached[1]
    clone = _folded_copy(module)
    _CACHE[module] = (signature, clone)
    return clone


def _folded_copy(module: nn.Module) -> nn.Module:
    """Deep copy of the module tree that shares its tensors, then every batch norm folded or made a channel affine."""
    shared = {id(t): t for t in (*module.parameters(), *module.buffers())}
    try:
        clone = copy.deepcopy(module, shared)
    except Exception:  # noqa: BLE001 - any module that refuses to be copied keeps its own batch norm
        return module
    # Pairs a module declares (batch norm path -> layer path, relative to it; see the module docstring) first.
    for owner in list(clone.modules()):
        for bn_path, layer_path in getattr(owner, "batch_norm_follows", {}).items():
            try:
                bn, layer = owner.get_submodule(bn_path), owner.get_submodule(layer_path)
            except AttributeError:  # a block built without that pair (an MBConv without expansion)
                continue
            if _is_eval_batch_norm(bn) and _foldable(layer) and _channels_out(layer) % bn.num_features == 0:
                _fold(layer, *batch_norm_affine(bn))
                owner.set_submodule(bn_path, nn.Identity())
    for parent in clone.modules():
        names = list(parent._modules)
        for i, name in enumerate(names):
            child = parent._modules[name]
            if child is None or not _is_eval_batch_norm(child):
                continue
            scale, shift = batch_norm_affine(child)
            previous = parent._modules[names[i - 1]] if i > 0 else None
            if isinstance(parent, nn.Sequential) and _foldable(previous) and _channels_out(previous) == child.num_features:
                _fold(previous, scale, shift)
                parent._modules[name] = nn.Identity()
            else:
                parent._modules[name] = ChannelAffine(scale, shift)
    return clone.eval()


def folded_callable(fn):
    """``fn`` with the module behind it folded: a module, or a bound method of a module (``metric.residual``).

    Plain callables come back unchanged.
    """
    owner = getattr(fn, "__self__", None)
    if isinstance(fn, nn.Module):
        return folded_module(fn)
    if isinstance(owner, nn.Module):
        clone = folded_module(owner)
        return fn if clone is owner else getattr(clone, fn.__name__)
    return fn
