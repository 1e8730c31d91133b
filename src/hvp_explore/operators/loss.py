r"""Curvature of a data set's loss with respect to a model's parameters: the Hessian and the generalized Gauss-Newton.

The operators of PyHessian, curvlinops and hessian-eigenthings, on this project's contract. For a model
:math:`f_\theta`, a loss :math:`\ell` and batches :math:`(X_b, Y_b)` of sizes :math:`N_b`
(:math:`N = \sum_b N_b`), the loss of the data set is

.. math::

    L(\theta) = \sum_b w_b\, \ell(f_\theta(X_b), Y_b), \qquad
    w_b = N_b / N \text{ (reduction "mean")}, \quad w_b = 1 \text{ (reduction "sum")},

so with a mean-reduced loss (``nn.CrossEntropyLoss()``) :math:`L` is the mean loss over every example,
each batch weighted by its size, and with a sum-reduced one the summed loss. Products are accumulated
batch by batch:

- :func:`loss_hessian`: :math:`\nabla^2 L\, v = \sum_b w_b \nabla^2_\theta \ell_b\, v`, by reverse-over-reverse
  differentiation (the vjp of ``torch.func.grad`` of each batch's loss, linearised once at :math:`\theta`
  and kept while memory allows), a block of vectors in one ``vmap``'d backward pass per batch;
- :func:`loss_ggn`: :math:`G v = \sum_b w_b J_b^T (\nabla^2_f \ell_b) J_b v`, :math:`J_b` the Jacobian of the
  outputs :math:`f_\theta(X_b)` and :math:`\nabla^2_f \ell_b` the Hessian of the loss with respect to them
  (one ``jvp``, one product with the loss's Hessian, one ``vjp`` per vector, batched by ``vmap``). For a
  loss convex in the outputs (cross-entropy, MSE) :math:`G` is positive semi-definite; it equals the
  Hessian when the model is linear in :math:`\theta`, and where the residual term
  :math:`\sum (\partial \ell / \partial f) \nabla^2 f` vanishes.

Vectors are flat, of length :math:`n = \sum_i \mathrm{numel}(p_i)`, in the order of ``params``:
:meth:`LossCurvatureOperator.to_params` and :meth:`~LossCurvatureOperator.from_params` convert to and from
lists of parameter-shaped tensors. Both operators are :class:`~hvp_explore.operators.base.CurvatureOperator`
objects: ``matmat``, ``to_scipy()``, the algebra, product counters, the memory budget (batches of vectors
sized by the activations one batch saves), ``check_deterministic()`` and the NaN guard all hold, and
every eigensolver, trace and density estimator takes them.

**Train and eval behaviour.** While an operator works the model (and a loss that is a module) is in
eval mode, as PyHessian puts it: batch norm applies its running statistics (an affine map, the same for
every batch) and dropout is off, so the operator is one fixed symmetric matrix; the user's modes and
``requires_grad`` flags are restored after every product. (curvlinops instead uses the mode the model is
in and checks that products are deterministic; a model in train mode with dropout fails its check.)
The model's parameters are never modified: products differentiate ``torch.func.functional_call`` with
copies of the chosen parameters taken when the operator is built (the operator is the curvature at that
point); the other parameters, and the buffers, are read from the model.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, grad, jvp, vjp, vmap

from hvp_explore.operators.base import CurvatureOperator, NonFiniteError, frozen_modules
from hvp_explore.operators.memory import default_budget, saved_tensor_bytes

__all__ = ["LossCurvatureOperator", "LossHessianOperator", "LossGGNOperator", "loss_hessian", "loss_ggn"]

Batch = tuple[object, object]


def _batch_size(inputs: object) -> int:
    """Examples in a batch: the first dimension of the inputs (a tensor, or the first tensor of a mapping or sequence)."""
    if isinstance(inputs, torch.Tensor):
        return int(inputs.shape[0]) if inputs.ndim else 1
    values = list(inputs.values()) if isinstance(inputs, Mapping) else list(inputs) if isinstance(inputs, Sequence) else []
    for value in values:
        if isinstance(value, torch.Tensor) and value.ndim:
            return int(value.shape[0])
    raise ValueError(f"cannot tell the batch size of inputs of type {type(inputs).__name__}: use a tensor whose first "
                     "dimension is the batch (or a mapping or sequence of such tensors)")


def _to(obj: object, device: torch.device) -> object:
    """Tensors of a batch (a tensor, a mapping or a sequence of them) on ``device``."""
    if isinstance(obj, torch.Tensor):
        return obj.to(device)
    if isinstance(obj, Mapping):
        return {k: _to(v, device) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to(v, device) for v in obj)
    return obj


class LossCurvatureOperator(CurvatureOperator):
    r"""Shared plumbing of :class:`LossHessianOperator` and :class:`LossGGNOperator`: parameters, batches, weights.

    Subclasses implement ``_linearize(inputs, targets)`` (what one batch's products need, computed once at
    :math:`\theta`) and ``_apply(linear, V)`` (that batch's curvature times a block ``V`` of shape (n, b));
    this class weights and sums them over the batches. The linearisations are kept after the first product
    (``cache=None``: when all of them fit in half the memory budget; ``True``/``False`` to decide), so later
    products skip the forward and backward passes at :math:`\theta`.

    Attributes:
        params: The parameters, in the order of the flat vectors.
        names: Their names in the model (``model.named_parameters()``).
        num_examples: N, the examples of the data set.
        batch_weights: :math:`w_b` of every batch (``N_b / N`` for a mean-reduced loss, 1 for a summed one).
        memory_budget: Bytes a block may use when ``block_size`` is unset (``None``: half the free memory).
        cache: Whether the batches' linearisations are kept between products (``None``: by memory).
    """

    def __init__(self, model: nn.Module, loss_function: Callable, data: Iterable[Batch], params: Sequence[torch.Tensor] | None = None,
                 *, block_size: int | None = None, cache: bool | None = None):
        if not isinstance(model, nn.Module):
            raise ValueError(f"model must be a torch.nn.Module (its parameters are what the curvature is taken of), "
                             f"got {type(model).__name__}")
        if not callable(loss_function):
            raise ValueError(f"loss_function must be callable as loss_function(outputs, targets), got {type(loss_function).__name__}")
        named = dict(model.named_parameters())
        by_id = {id(p): name for name, p in named.items()}
        if params is None:
            params = [p for p in named.values() if p.requires_grad]
        params = list(params)
        if not params:
            raise ValueError("no parameters: the model has none that require grad, and params was not given")
        names = []
        for i, p in enumerate(params):
            if id(p) not in by_id:
                raise ValueError(f"params[{i}] (shape {tuple(getattr(p, 'shape', ()))}) is not a parameter of the model")
            names.append(by_id[id(p)])
        if len(set(names)) != len(names):
            raise ValueError("params lists a parameter twice")
        dtypes, devices = {p.dtype for p in params}, {p.device for p in params}
        if len(dtypes) > 1 or len(devices) > 1:
            raise ValueError(f"params must share one dtype and device, got {sorted(map(str, dtypes))} on {sorted(map(str, devices))}")
        if not params[0].is_floating_point():
            raise ValueError(f"params must be floating point, got {params[0].dtype}")
        reduction = getattr(loss_function, "reduction", "mean")
        if reduction not in ("mean", "sum"):
            raise ValueError(f"loss_function's reduction must be 'mean' or 'sum' (a scalar per batch), got {reduction!r}")
        batches = data if isinstance(data, Sequence) else list(data)  # an iterator is read once, kept
        sizes = []
        for i, batch in enumerate(batches):
            if not (isinstance(batch, (tuple, list)) and len(batch) == 2):
                raise ValueError(f"data[{i}] must be an (inputs, targets) pair, got {type(batch).__name__}")
            sizes.append(_batch_size(batch[0]))
        if not sizes or sum(sizes) == 0:
            raise ValueError("data holds no examples")
        n = sum(p.numel() for p in params)
        super().__init__(n, dtype=params[0].dtype, device=params[0].device, block_size=block_size,
                         modules=(model, loss_function))
        self.model, self.loss_function = model, loss_function
        self.params, self.names = params, names
        self._shapes = [p.shape for p in params]
        self._sizes = [p.numel() for p in params]
        self._theta = torch.cat([p.detach().reshape(-1) for p in params])
        self._data = batches
        self.num_examples = sum(sizes)
        self.reduction = reduction
        self.batch_weights = [s / self.num_examples if reduction == "mean" else 1.0 for s in sizes]
        self.memory_budget: int | None = None
        self._auto_budget: int | None = None
        self._saved_bytes: int | None = None
        self.cache = cache
        self._cached: list | None = None

    # --- flat vectors and parameter-shaped lists -----------------------------------------------
    def to_params(self, v: torch.Tensor | np.ndarray) -> list[torch.Tensor]:
        """A flat vector (n,), or a block (n, b), as tensors shaped like ``params`` (with a trailing b for a block)."""
        v = torch.as_tensor(v)
        if v.shape[0] != self.shape[0] or v.ndim not in (1, 2):
            raise ValueError(f"to_params expects shape ({self.shape[0]},) or ({self.shape[0]}, b), got {tuple(v.shape)}")
        tail = tuple(v.shape[1:])
        return [part.reshape(*shape, *tail) for part, shape in zip(v.split(self._sizes), self._shapes)]

    def from_params(self, tensors: Sequence[torch.Tensor]) -> torch.Tensor:
        """Parameter-shaped tensors (as ``params``) as one flat vector, in the order of ``params``."""
        tensors = list(tensors)
        if [tuple(t.shape) for t in tensors] != [tuple(s) for s in self._shapes]:
            raise ValueError(f"from_params expects tensors shaped {[tuple(s) for s in self._shapes]}, "
                             f"got {[tuple(t.shape) for t in tensors]}")
        return torch.cat([t.reshape(-1) for t in tensors])

    def _unflatten(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        # reshape, not view: the slices of a batched tangent are not always viewable under vmap
        return {name: part.reshape(shape) for name, part, shape in zip(self.names, flat.split(self._sizes), self._shapes)}

    def _outputs(self, flat: torch.Tensor, inputs: object) -> torch.Tensor:
        return functional_call(self.model, self._unflatten(flat), (inputs,))

    def _batch_loss(self, flat: torch.Tensor, inputs: object, targets: object) -> torch.Tensor:
        loss = self.loss_function(self._outputs(flat, inputs), targets)
        if loss.numel() != 1:
            raise ValueError(f"loss_function must return a scalar per batch, got shape {tuple(loss.shape)}")
        return loss.reshape(())

    def _batches(self):
        for (inputs, targets), weight in zip(self._data, self.batch_weights):
            yield _to(inputs, self.device), _to(targets, self.device), weight

    # --- products ------------------------------------------------------------------------------
    @abstractmethod
    def _linearize(self, inputs: object, targets: object):
        r"""What one batch's products need, computed once at :math:`\theta` (a linearised pass)."""

    @abstractmethod
    def _apply(self, linear, V: torch.Tensor) -> torch.Tensor:
        """One batch's curvature times a block ``V`` (n, b), from its linearisation."""

    def _linearizations(self):
        """Every batch's linearisation with its weight: kept after the first product when :attr:`cache` allows."""
        if self._cached is not None:
            yield from self._cached
            return
        keep = self._cache_decision()
        kept = []
        for inputs, targets, weight in self._batches():
            linear = self._linearize(inputs, targets)
            if keep:
                kept.append((linear, weight))
            yield linear, weight
        if keep:
            self._cached = kept

    def _cache_decision(self) -> bool:
        if self.cache is not None:
            return bool(self.cache)
        # auto: keep the linearisations when all of them fit in half the memory budget
        return self.saved_bytes * len(self._data) <= self._budget() // 2

    def _over_batches(self, apply: Callable, V: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """The batch-weighted sum of ``apply(linearisation, V)`` over the data set, accumulated into ``out``."""
        for linear, weight in self._linearizations():
            out.add_(apply(linear, V), alpha=weight)
        return out

    def _matmat(self, V: torch.Tensor) -> torch.Tensor:
        return self._over_batches(self._apply, V, torch.zeros_like(V))

    def _apply_quadratic(self, linear, V: torch.Tensor) -> torch.Tensor:
        """One batch's forms :math:`v_i^T A_b v_i`; default from its products."""
        return (V * self._apply(linear, V)).sum(dim=0)

    def _quadratic(self, V: torch.Tensor) -> torch.Tensor:
        return self._over_batches(self._apply_quadratic, V, V.new_zeros(V.shape[1]))

    def clear_cache(self) -> None:
        """Free the kept linearisations (the next product computes them again)."""
        self._cached = None

    def loss(self) -> float:
        r"""The data set's loss :math:`L(\theta)` (one forward pass over the data; eval mode)."""
        total = 0.0
        with frozen_modules(*self._modules), torch.no_grad():
            for inputs, targets, weight in self._batches():
                total += weight * float(self._batch_loss(self._theta, inputs, targets))
        if not np.isfinite(total):
            raise NonFiniteError(f"{self.name}: the loss is NaN or inf")
        return total

    @property
    def saved_bytes(self) -> int:
        """Bytes autograd saves for the first-order graph of the largest batch: the memory of one kept
        linearisation, and the scale of one more vector in a block."""
        if self._saved_bytes is None:
            largest = max(range(len(self._data)), key=lambda i: _batch_size(self._data[i][0]))
            inputs, targets = (_to(x, self.device) for x in self._data[largest])
            flat = self._theta.clone().requires_grad_(True)
            with frozen_modules(*self._modules), torch.enable_grad(), saved_tensor_bytes((self.model,)) as saved:
                loss = self._batch_loss(flat, inputs, targets)
                torch.autograd.grad(loss, flat, create_graph=True)
            self._saved_bytes = saved.total
        return self._saved_bytes

    def _budget(self) -> int:
        if self.memory_budget is None and self._auto_budget is None:
            self._auto_budget = default_budget(self._device)
        return self.memory_budget if self.memory_budget is not None else self._auto_budget

    def memory_block(self) -> int:
        """Largest block the memory budget allows (what kept linearisations leave of it): a cotangent of every
        activation of the first-order graph per vector."""
        kept = self.saved_bytes * len(self._cached) if self._cached is not None else 0
        budget = max(self._budget() - kept, 0)
        return max(1, budget // (self.saved_bytes + 4 * self._n * self._theta.element_size()))


class LossHessianOperator(LossCurvatureOperator):
    r"""The Hessian :math:`\nabla^2_\theta L` of a data set's loss, by reverse-over-reverse products batch by batch.

    A batch's linearisation is the vjp of its gradient at :math:`\theta` (``torch.func.vjp`` of
    ``torch.func.grad``: one forward and one backward pass that keep their graph); a product is then one
    more backward pass through it, a block one ``vmap``'d pass. Kept across products when memory allows,
    it halves the cost of a single-vector product (measured on a 2,202-parameter CNN, 500 images: 56 ms
    against 113 ms recomputed; 26 ms against 32 ms per vector in blocks of 8). Reverse-over-reverse, not
    forward-over-reverse: torch's forward mode through ``mse_loss``'s backward fails on immutable zero tensors.
    """

    name = "loss Hessian"

    def _linearize(self, inputs: object, targets: object):
        return vjp(grad(lambda flat: self._batch_loss(flat, inputs, targets)), self._theta)[1]

    def _apply(self, linear, V: torch.Tensor) -> torch.Tensor:
        if V.shape[1] == 1:
            return linear(V[:, 0])[0].reshape(-1, 1)
        return vmap(lambda v: linear(v)[0])(V.T.contiguous()).T


class LossGGNOperator(LossCurvatureOperator):
    r"""The generalized Gauss-Newton :math:`\sum_b w_b J_b^T (\nabla^2_f \ell_b) J_b` of a data set's loss.

    A batch's linearisation is the vjp of its outputs at :math:`\theta` (the reverse pass through the
    model, kept when memory allows); a product takes :math:`J_b v` by forward mode, multiplies by the loss's
    Hessian in output space (small: the outputs of one batch) and applies :math:`J_b^T` by the kept vjp.

    Its diagonal and trace are exact and cheap (:meth:`diagonal`), as BackPACK's ``DiagGGNExact``: for a loss
    that is a mean (or sum) of per-example losses,
    :math:`\mathrm{diag}\,G = \sum_b \frac{w_b}{N_b} \sum_{i \in b} \sum_{c, d} (H_i)_{cd}\, (J_i)_{c\cdot} \odot (J_i)_{d\cdot}`,
    from every example's Jacobian :math:`J_i` (its outputs by the parameters, one reverse pass per output,
    batched over examples) and the Hessian :math:`H_i` of its loss in output space.
    """

    name = "loss GGN"
    _diagonal: torch.Tensor | None = None  # the exact diagonal, once computed

    def diagonal(self) -> torch.Tensor:
        r"""The exact diagonal of :math:`G` (float64, kept after the first call): per-example Jacobians, no probes.

        For the 2,202-parameter CNN of ``benchmarks/curvature.py`` on 500 images it costs about three products
        (0.17 s). Its sum is :meth:`trace`; with :func:`~hvp_explore.eigen.estimate_trace`'s ``control`` it is the
        control variate of the Hessian's trace (for piecewise-linear networks, ReLU and max-pool, the Hessian's
        diagonal *equals* the GGN's: each parameter enters the outputs linearly).

        Raises:
            ValueError: Inputs that are not a tensor (examples are sliced from them), or a loss that is not a mean
                or sum of per-example losses ``loss_function(outputs[i:i+1], targets[i:i+1])``.
        """
        if self._diagonal is None:
            diag = torch.zeros(self._n, dtype=torch.float64, device=self._device)
            with frozen_modules(*self._modules):
                for inputs, targets, weight in self._batches():
                    diag += self._batch_diagonal(inputs, targets, weight)
            if not torch.isfinite(diag).all():
                raise NonFiniteError(f"{self.name}: the diagonal contains NaN or inf")
            self._diagonal = diag
        return self._diagonal

    def trace(self) -> float:
        """The exact trace of :math:`G`, the sum of :meth:`diagonal`."""
        return float(self.diagonal().sum())

    def _batch_diagonal(self, inputs: object, targets: object, weight: float) -> torch.Tensor:
        if not isinstance(inputs, torch.Tensor) or not isinstance(targets, torch.Tensor):
            raise ValueError("the exact GGN diagonal slices examples from the batch: inputs and targets must be tensors")
        size = _batch_size(inputs)
        f0 = self._outputs(self._theta, inputs).detach()

        def example_loss(f: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return self.loss_function(f[None], y[None]).reshape(())

        per_example = vmap(example_loss)(f0, targets)
        scale = weight / size if self.reduction == "mean" else weight
        whole = self.loss_function(f0, targets).reshape(())
        total = per_example.sum() / (size if self.reduction == "mean" else 1)
        if not torch.allclose(whole, total, rtol=1e-5, atol=1e-6 * float(per_example.abs().max().clamp_min(1e-30))):
            raise ValueError("the exact GGN diagonal needs a loss that is the mean (or sum) of per-example losses "
                             f"loss_function(outputs[i:i+1], targets[i:i+1]); this one gives {float(whole):.6g} on the batch "
                             f"against {float(total):.6g} from its examples")
        H = vmap(torch.func.hessian(example_loss))(f0, targets).reshape(size, -1, f0[0].numel())  # (N, d, d)

        def example_outputs(flat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
            return self._outputs(flat, x[None]).reshape(-1)

        jacobian = vmap(torch.func.jacrev(example_outputs), in_dims=(None, 0))
        d = H.shape[1]
        # per-example Jacobians (chunk, d, n) in float32 take chunk * d * n numbers: chunk by the memory budget
        chunk = max(1, min(size, self._budget() // max(1, 4 * d * self._n * self._theta.element_size())))
        out = torch.zeros(self._n, dtype=torch.float64, device=self._device)
        for start in range(0, size, chunk):
            J = jacobian(self._theta, inputs[start:start + chunk])  # (c, d, n), in the model's dtype
            # sum_{c,d} H_cd J_c (.) J_d as (H J) (.) J: a batched d x d product, no (c, d, d, n) intermediate;
            # the terms in the model's dtype (as its products are), their sum in float64
            out += (torch.bmm(H[start:start + chunk].to(J.dtype), J) * J).sum(dim=(0, 1), dtype=torch.float64)
        return scale * out

    def _linearize(self, inputs: object, targets: object):
        def outputs(flat: torch.Tensor) -> torch.Tensor:
            return self._outputs(flat, inputs)

        def loss_of_outputs(f: torch.Tensor) -> torch.Tensor:
            return self.loss_function(f, targets).reshape(())

        f0, vjp_fn = vjp(outputs, self._theta)
        # the loss's Hessian in output space (small: one batch's outputs), as the vjp of its gradient
        loss_hvp = vjp(grad(loss_of_outputs), f0.detach())[1]
        return outputs, loss_hvp, vjp_fn

    def _apply(self, linear, V: torch.Tensor) -> torch.Tensor:
        outputs, loss_hvp, vjp_fn = linear

        def ggn_vector(v: torch.Tensor) -> torch.Tensor:
            jv = jvp(outputs, (self._theta,), (v,))[1]
            return vjp_fn(loss_hvp(jv)[0])[0]

        if V.shape[1] == 1:
            return ggn_vector(V[:, 0]).reshape(-1, 1)
        return vmap(ggn_vector)(V.T.contiguous()).T

    def _apply_quadratic(self, linear, V: torch.Tensor) -> torch.Tensor:
        # v^T J^T H_f J v: the forward-mode product and the small output-space form, no reverse pass
        outputs, loss_hvp, _ = linear

        def form(v: torch.Tensor) -> torch.Tensor:
            jv = jvp(outputs, (self._theta,), (v,))[1]
            return (jv * loss_hvp(jv)[0]).sum()

        if V.shape[1] == 1:
            return form(V[:, 0]).reshape(1)
        return vmap(form)(V.T.contiguous())


def loss_hessian(model: nn.Module, loss_function: Callable, data: Iterable[Batch], params: Sequence[torch.Tensor] | None = None, *,
                 block_size: int | None = None, cache: bool | None = None) -> LossHessianOperator:
    r"""The Hessian of a data set's loss with respect to a model's parameters, as a matrix-free operator.

    Args:
        model: The network :math:`f_\theta`, called as ``model(inputs)``.
        loss_function: ``loss_function(outputs, targets) -> scalar`` (``nn.CrossEntropyLoss()``, ``nn.MSELoss()``...);
            its ``reduction`` attribute, when it has one, must be ``"mean"`` (batches weighted by their
            sizes: the mean loss of the data set) or ``"sum"`` (the summed loss). A plain function is taken
            to return the batch's mean.
        data: ``(inputs, targets)`` batches: a list, or any iterable (a ``DataLoader``), whose batches are
            drawn once and kept, so the operator is one fixed matrix (a shuffling loader would otherwise change
            it from product to product).
        params: The parameters (a list of the model's own), in the order of the flat vectors; default:
            every parameter that requires grad.
        block_size: Largest number of vectors per batched product; default: what the memory budget allows.
        cache: Keep every batch's linearisation between products (``None``: when they fit in half the
            memory budget): later products skip the forward and backward passes at :math:`\theta`.

    Returns:
        A :class:`LossHessianOperator` (n x n, n the number of entries of ``params``).

    Example:
        >>> model = nn.Linear(3, 2).double()
        >>> X, y = torch.randn(8, 3, dtype=torch.float64), torch.randint(0, 2, (8,))
        >>> H = loss_hessian(model, nn.CrossEntropyLoss(), [(X[:5], y[:5]), (X[5:], y[5:])])
        >>> H.shape
        (8, 8)
    """
    return LossHessianOperator(model, loss_function, data, params, block_size=block_size, cache=cache)


def loss_ggn(model: nn.Module, loss_function: Callable, data: Iterable[Batch], params: Sequence[torch.Tensor] | None = None, *,
             block_size: int | None = None, cache: bool | None = None) -> LossGGNOperator:
    r"""The generalized Gauss-Newton matrix of a data set's loss with respect to a model's parameters.

    :math:`G = \sum_b w_b J_b^T (\nabla^2_f \ell_b) J_b`: positive semi-definite when the loss is convex in
    the model's outputs (cross-entropy, MSE). Arguments as :func:`loss_hessian`.
    """
    return LossGGNOperator(model, loss_function, data, params, block_size=block_size, cache=cache)
