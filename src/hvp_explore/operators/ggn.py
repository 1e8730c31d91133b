"""Gauss-Newton products :math:`J^T J v` of a vector residual, by one jvp and one vjp."""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable

import numpy as np
import torch
from torch.func import jvp, vjp, vmap

from hvp_explore.operators._autograd import retained_vjp
from hvp_explore.operators.base import CurvatureOperator, NonFiniteError, modules_of, as_latent, frozen_modules, seconds_since
from hvp_explore.operators.memory import default_budget, saved_tensor_bytes

__all__ = ["GaussNewtonOperator", "gauss_newton_operator", "JVP_MODES"]

#: How a single vector's Jacobian product is taken (see :class:`GaussNewtonOperator`).
JVP_MODES = ("auto", "forward", "reverse")

# torch loads its forward-mode decompositions on the first jvp, through the deprecated
# torch.jit.script; load them here once, quietly, so users do not see torch's own FutureWarning.
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.*", category=FutureWarning)
    try:
        from torch._decomp import decompositions_for_jvp  # noqa: F401
    except ImportError:  # a future torch without it: nothing to silence
        pass


class GaussNewtonOperator(CurvatureOperator):
    r"""The Gauss-Newton matrix :math:`G = J_r(z_0)^T J_r(z_0)` of a residual :math:`r: R^n \to R^m`.

    For :math:`f(z) = \tfrac12 \|r(z)\|^2`,
    :math:`\nabla^2 f = J^T J + \sum_i r_i \nabla^2 r_i`; where the residual vanishes (``r(z0) = 0``,
    as for a distance to the image at ``z0``) the second term drops and ``G`` *is* the Hessian.

    A product needs one product :math:`u = J v` and one reverse-mode product :math:`J^T u`; the
    reverse pass is linearised once at construction (``torch.func.vjp``) and reused. Blocks are
    batched with ``torch.func.vmap`` and take :math:`J V` by forward mode (``torch.func.jvp``). A
    single vector may take :math:`J v` by forward mode too, or by the *double vjp*
    :math:`J v = \nabla_u \langle J^T u, v \rangle` through a first-order graph built once, which
    reuses the forward pass at :math:`z_0` instead of recomputing it: 3.4x cheaper on the embedded
    DCGAN, 4x dearer through EfficientNet's depthwise convolutions. ``jvp_mode="auto"`` times both on
    the first single-vector product and keeps the faster (``single_jvp_seconds`` records the probe; the
    choice depends on timings, and the two routes differ by rounding only).

    Attributes:
        residual_dim: m, the length of the residual (the rank of ``G`` is at most ``min(m, n)``).
        residual_norm: :math:`\|r(z_0)\|`, zero when ``G`` equals the Hessian of ``f``.
        saved_bytes: Bytes autograd saves for the backward pass of one residual evaluation (the activations
            at ``z0``; measured by one forward pass on first use): the scale of the memory one more vector
            in a block needs (see :meth:`memory_block`).
        memory_budget: Bytes a batch may use when ``block_size`` is unset; ``None`` = half the
            device's free memory when the operator first needs it.
        jvp_mode: ``"auto"``, ``"forward"`` or ``"reverse"``: how a single vector's :math:`J v` is taken.
        single_jvp_seconds: ``{"forward": s, "reverse": s}`` of the auto probe, once it ran.
    """

    name = "Gauss-Newton (jvp + vjp)"

    def __init__(self, residual: Callable[[torch.Tensor], torch.Tensor], z0: torch.Tensor, *, block_size: int | None = None,
                 modules: tuple[object, ...] = (), jvp_mode: str = "auto"):
        if jvp_mode not in JVP_MODES:
            raise ValueError(f"jvp_mode must be one of {', '.join(JVP_MODES)}, got {jvp_mode!r}")
        z0 = as_latent(z0)
        super().__init__(z0.numel(), dtype=z0.dtype, device=z0.device, block_size=block_size, modules=(residual, *modules))
        self._z0 = z0
        self._residual = lambda z: residual(z).reshape(-1)
        t0 = time.perf_counter()
        with frozen_modules(*self._modules):
            r0, self._vjp_fn = vjp(self._residual, z0)
        self.build_seconds = seconds_since(t0, self._device)
        if not torch.isfinite(r0).all():
            raise NonFiniteError(f"{self.name}: the residual at z0 contains NaN or inf")
        self.residual_dim = r0.numel()
        self.residual_norm = float(r0.detach().norm())
        self._saved_bytes: int | None = None
        self.memory_budget: int | None = None
        self._auto_budget: int | None = None
        self.jvp_mode = jvp_mode
        self.single_jvp_seconds: dict[str, float] | None = None
        self._reverse_graph: tuple[torch.Tensor | None, torch.Tensor] | None = None
        self._gram: torch.Tensor | None = None
        self._batched_jvp = vmap(self._jvp)
        self._batched_vjp = vmap(self._vjp)

    def _jvp(self, v: torch.Tensor) -> torch.Tensor:
        return jvp(self._residual, (self._z0,), (v,))[1]

    def _vjp(self, u: torch.Tensor) -> torch.Tensor:
        return self._vjp_fn(u)[0]

    def _reverse_jvp(self, v: torch.Tensor) -> torch.Tensor:
        r""":math:`J v` as the vjp of the linear map :math:`u \mapsto J^T u` (a backward pass through a backward pass)."""
        if self._reverse_graph is None:
            z = self._z0.detach().clone().requires_grad_(True)
            with torch.enable_grad():
                r = self._residual(z)
                u = torch.zeros_like(r, requires_grad=True)
                g = torch.autograd.grad(r, z, u, create_graph=True)[0] if r.requires_grad else None
            self._reverse_graph = (g, u)
        g, u = self._reverse_graph
        if g is None or not g.requires_grad:  # the residual is constant in z: J = 0
            return v.new_zeros(self.residual_dim)
        jv = retained_vjp(g, u, v)
        return v.new_zeros(self.residual_dim) if jv is None else jv

    def _single_jvp(self, v: torch.Tensor) -> torch.Tensor:
        if self.jvp_mode == "auto" and self.single_jvp_seconds is None:
            return self._probe_single_jvp(v)
        if self.jvp_mode == "forward" or (self.jvp_mode == "auto" and self._reverse_graph is None):
            return self._jvp(v)
        return self._reverse_jvp(v)

    def _probe_single_jvp(self, v: torch.Tensor) -> torch.Tensor:
        """Time both single-vector routes warm and keep the faster (``single_jvp_seconds``).

        The reverse route's first-order graph is built before its timing (once, reused by every later
        product), and the route that lost runs once more: the first call of either in a process pays
        one-off costs (torch's forward-mode helpers compile in about a second), and a cold loser would
        be judged by them. Timed with the graph inside, the reverse route lost on the embedded DCGAN at
        2.5x the cost per product it has warm (15-25 ms of forward mode against 9 ms).
        """
        self._reverse_jvp(torch.zeros_like(v))  # builds the graph, untimed
        routes = {"reverse": self._reverse_jvp, "forward": self._jvp}
        seconds: dict[str, float] = {}

        def timed(route: str) -> torch.Tensor:
            t0 = time.perf_counter()
            out = routes[route](v)
            seconds[route] = min(seconds.get(route, float("inf")), seconds_since(t0, self._device))
            return out

        out = timed("reverse")
        timed("forward")
        timed(max(seconds, key=seconds.get))  # the loser, once more
        self.single_jvp_seconds = seconds
        if seconds["forward"] <= seconds["reverse"]:
            self._reverse_graph = None  # forward mode won: free the first-order graph
        return out

    def _matvec(self, v: torch.Tensor) -> torch.Tensor:
        return self._vjp(self._single_jvp(v))

    def _matmat(self, V: torch.Tensor) -> torch.Tensor:
        if V.shape[1] == 1:
            return self._matvec(V[:, 0]).reshape(-1, 1)
        return self._batched_vjp(self._batched_jvp(V.T.contiguous())).T

    def _quadratic(self, V: torch.Tensor) -> torch.Tensor:
        # v^T J^T J v = ||J v||^2: the forward-mode half of a product
        if V.shape[1] == 1:
            return self._single_jvp(V[:, 0]).pow(2).sum().reshape(1)
        return self._batched_jvp(V.T.contiguous()).pow(2).sum(dim=1)

    def _projected(self, Q: torch.Tensor) -> torch.Tensor:
        # Q^T J^T J Q = (J Q)^T (J Q): the forward-mode halves of the products, then a Gram matrix (symmetric as computed)
        JQ = self._blockwise(Q, apply=lambda V: self._batched_jvp(V.T.contiguous()).T)  # (m, b)
        return JQ.T @ JQ

    @property
    def saved_bytes(self) -> int:
        if self._saved_bytes is None:
            z = self._z0.detach().clone().requires_grad_(True)
            modules = tuple(m for fn in self._modules for m in modules_of(fn))
            with frozen_modules(*self._modules), torch.enable_grad(), saved_tensor_bytes(modules) as saved:
                self._residual(z)
            self._saved_bytes = saved.total
        return self._saved_bytes

    def per_vector_bytes(self) -> int:
        """Estimated extra memory of one more vector in a batched product: a tangent (or cotangent) of every
        saved activation, and the vector's residual-length product."""
        return self.saved_bytes + (self.residual_dim + self._n) * self._z0.element_size()

    def memory_block(self) -> int:
        """Largest batch that :attr:`memory_budget` (or half the free memory) allows by :meth:`per_vector_bytes`."""
        if self.memory_budget is None and self._auto_budget is None:
            self._auto_budget = default_budget(self._device)  # read once: /proc/meminfo costs 0.2 ms a product
        budget = self.memory_budget if self.memory_budget is not None else self._auto_budget
        return max(1, budget // self.per_vector_bytes())

    def gram(self) -> torch.Tensor:
        r"""The dense matrix :math:`G = J^T J` (n, n) in float64, from :meth:`jacobian`, kept for later calls.

        What the exact routes need when the latent is short (the face generator's n = 100): the Jacobian
        solver's ``eigh`` and the dense generalized pencil share one Jacobian, taken once (n x n floats are kept,
        not the m x n Jacobian). Later calls take no products.
        """
        if self._gram is None:
            J = self.jacobian().to(torch.float64)
            self._gram = J.T @ J
        return self._gram

    def jacobian(self, *, block_size: int | None = None) -> torch.Tensor:
        r"""The full Jacobian :math:`J_r(z_0)` (m, n), by whichever of its sides is shorter.

        When the residual is short (super-resolution x4 of a 32x32 image: m = 64) its m rows are
        m batched vector-Jacobian products; when the latent is shorter (the 100-d face generator
        under a 768-number observation) its n columns are n batched Jacobian-vector products.
        Either way this is the cheapest exact route to the whole spectrum: :math:`G = J^T J`, whose
        eigenpairs are the squared singular values and right singular vectors of ``J``. Counts
        ``min(m, n)`` toward ``num_matvecs`` (a vjp or a jvp is half a Gauss-Newton product).

        Batches hold at most ``block_size`` rows or columns (default: the operator's ``block_size``,
        else what the memory budget allows, :meth:`memory_block`): all 512 columns of H_X of the
        embedded default in one batch would take about 24 GB.
        """
        m, n = self.residual_dim, self.shape[0]
        size = min(m, n)
        step = block_size or self.block_size or self.memory_block()
        by_rows = m <= n
        parts = []
        with frozen_modules(*self._modules):
            for start in range(0, size, step):
                eye = torch.zeros(min(step, size - start), size, dtype=self._dtype, device=self._device)
                eye[:, start : start + eye.shape[0]].fill_diagonal_(1.0)
                parts.append((self._batched_vjp(eye) if by_rows else self._batched_jvp(eye)).detach())
                self.num_calls += 1
        self.num_matvecs += size
        J = torch.cat(parts, dim=0) if by_rows else torch.cat(parts, dim=0).T
        if not torch.isfinite(J).all():
            raise NonFiniteError(f"{self.name}: the Jacobian contains NaN or inf")
        return J


def gauss_newton_operator(residual: Callable[[torch.Tensor], torch.Tensor], z0: torch.Tensor | np.ndarray, *,
                          block_size: int | None = None, modules: tuple[object, ...] = (), jvp_mode: str = "auto"
                          ) -> GaussNewtonOperator:
    r"""Gauss-Newton matrix :math:`J^T J` of ``residual`` at ``z0``, as a matrix-free operator.

    Args:
        residual: Function of a latent of shape (n,) returning a tensor of any shape (flattened to m).
            It must be composable with ``torch.func`` (no in-place updates of captured tensors).
        z0: The point, shape (n,) or (1, n).
        block_size: Largest number of vectors per batched product (memory budget); ``None`` = all.
        modules: Extra ``nn.Module`` objects the residual uses, put in eval mode without parameter
            gradients while the operator works.
        jvp_mode: How a single vector's :math:`J v` is taken: ``"auto"`` (the faster of the two, timed
            once), ``"forward"`` (forward mode) or ``"reverse"`` (double vjp).

    Example:
        >>> J = torch.tensor([[1.0, 2.0], [0.0, 1.0], [1.0, 0.0]], dtype=torch.float64)
        >>> G = gauss_newton_operator(lambda z: J @ z, torch.zeros(2, dtype=torch.float64))
        >>> torch.allclose(G.dense(), J.T @ J)
        True
    """
    return GaussNewtonOperator(residual, z0, block_size=block_size, modules=modules, jvp_mode=jvp_mode)
