"""The authors' published AdaGrad-BMA update ("lu2018"), docs/METHODS.md section 3, as a flat-vector
preconditioner (``variant="lu2018"`` of the registered method ``adagrad_bma``).

State: a = sum_t g_t * g_t and U = sum_t e_t e_t^T with e_t = E^T g_t (block sums of the raw gradient).
One step with gradient g (the ``power`` step rule with p = -1/2; its ``eps`` is eps0, default 1e-10):

    v = E^T sqrt(a + eps0);  B = (U - diag(U)) / (v v^T);  F = I_k + B;
    P = F^{-1/2} - I_k (eigenvalues of F clamped below at 1e-10);
    c = S^{-1/2} P S^{-1/2} E^T g;  r = (a + eps0)^{-1/4};  x <- x - lr * r * (r * g + E c).

With U's off-diagonal zero it is diagonal AdaGrad with eps0 inside the root. It is a heuristic and not
invariant to a rescaling of the gradients (the correction uses raw block sums against v built from
sqrt(a)); the ``scaled`` variant of ``preconditioners.AdaGradBMA`` is the scale-invariant alternative.
The step direction is a linear map of g, M g = R^2 g + R E S^{-1/2} P S^{-1/2} E^T g (R = diag(r)), which
``Lu2018Operator.power(g, -0.5, eps0)`` applies; ``mv``/``solve`` are not defined for it (it is not the
power of a matrix D), so only the ``power`` step rule with p = -1/2 runs it.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from . import operators as ops
from .preconditioners import Preconditioner, resolve_blocks

EIG_CLAMP = 1e-10


class Lu2018Operator(ops.Operator):
    """The lu2018 step map for one state (a, U); ``power(g, -0.5, eps0)`` is the step direction."""

    def __init__(self, a: torch.Tensor, U: torch.Tensor, sizes: tuple, index: torch.Tensor | None = None,
                 buf: torch.Tensor | None = None):
        self.a, self.U, self.sizes, self.index, self.buf = a, U, sizes, index, buf
        self.n, self.dtype, self.device = a.shape[0], a.dtype, a.device
        self._cache = None

    def _factors(self, eps0: float):
        if self._cache is not None and self._cache[0] == eps0:
            return self._cache[1], self._cache[2]
        w = torch.add(self.a, eps0, out=self.buf) if self.buf is not None else self.a + eps0
        v = ops.block_sums(w.sqrt_(), self.sizes, self.index)
        B = (self.U - torch.diag(torch.diagonal(self.U))) / torch.outer(v, v)
        F = torch.eye(len(self.sizes), dtype=self.dtype, device=self.device) + B
        t, W = torch.linalg.eigh(F)
        P = (W * t.clamp(min=EIG_CLAMP).rsqrt()) @ W.T - torch.eye(len(self.sizes), dtype=self.dtype,
                                                                   device=self.device)
        rs = torch.tensor(self.sizes, dtype=self.dtype, device=self.device).rsqrt()
        Pn = rs[:, None] * P * rs[None, :]
        r = w.rsqrt_()                      # (a + eps0)^(-1/4), in the same buffer
        self._cache = (eps0, Pn, r)
        return Pn, r

    def power(self, v, p, shift=0.0, out: torch.Tensor | None = None):
        """The step direction for p = -1/2 (shift = eps0); ``out`` (n,) receives it for a 1-D v."""
        if float(p) != -0.5:
            raise ValueError(f"p must be -0.5 for the lu2018 update, got {p!r}")
        v = self._check_v(v)
        eps0 = float(self._shift(shift))
        Pn, r = self._factors(eps0)
        c = Pn @ ops.block_sums(v, self.sizes, self.index)
        if v.ndim == 1:                      # r * (r * v + E c): two n-vectors (r and the result), in place
            out = torch.mul(r, v, out=out)
            return ops.add_expanded_(out, c, self.sizes).mul_(r)
        return ops._col(r, v) * (ops._col(r, v) * v + ops.expand(c, self.sizes, self.index))

    def mv(self, v):
        raise NotImplementedError("the lu2018 update is a step map, not a matrix D: use power(g, -0.5, eps0)")

    def solve(self, v, shift=0.0):
        raise NotImplementedError("the lu2018 update is a step map, not a matrix D: use power(g, -0.5, eps0)")

    def to_dense_step(self, eps0: float = 1e-10) -> torch.Tensor:
        """The n x n matrix M of the step map (tests only)."""
        return self.power(torch.eye(self.n, dtype=self.dtype, device=self.device), -0.5, eps0)


@dataclass
class _Lu2018State:
    sizes: tuple
    index: torch.Tensor | None   # kept for state_dicts of earlier versions; block sums need no index
    a: torch.Tensor
    U: torch.Tensor
    t: int = 0
    buf: torch.Tensor | None = None   # (a + eps0)^(-1/4) of the last step, rewritten in place


class AdaGradBMALu2018(Preconditioner):
    """The authors' AdaGrad-BMA update (module docstring). ``update_every`` is accepted for the
    registry's common signature and must be 1 or None, the default (the published update rebuilds F every
    step)."""
    name = "adagrad_bma"

    def __init__(self, k: int | None = None, blocks=None, update_every: int | None = 1):
        if update_every not in (None, 1):
            raise ValueError(f"update_every must be 1 for variant='lu2018', got {update_every!r}")
        self.k, self.blocks, self.variant, self.update_every = k, blocks, "lu2018", 1

    def init(self, problem, x, generator):
        sizes = resolve_blocks(problem.n, self.k, self.blocks, getattr(problem, "blocks", None))
        k = len(sizes)
        return _Lu2018State(sizes, None, torch.zeros_like(x), torch.zeros(k, k, dtype=x.dtype, device=x.device))

    def update(self, s, x, g, oracle):
        s.a.addcmul_(g, g)
        e = ops.block_sums(g, s.sizes, s.index)
        s.U.addr_(e, e)
        s.t += 1
        if s.buf is None:
            s.buf = torch.empty_like(s.a)
        return Lu2018Operator(s.a, s.U, s.sizes, s.index, s.buf), s


def dense_lu2018_step(a: torch.Tensor, U: torch.Tensor, g: torch.Tensor, sizes, eps0: float = 1e-10):
    """Dense transcription of the lu2018 direction for state (a, U) already updated with g (tests)."""
    n, k = g.shape[0], len(sizes)
    E = torch.zeros(n, k, dtype=g.dtype)
    o = 0
    for i, s in enumerate(sizes):
        E[o:o + s, i] = 1
        o += s
    S = torch.diag(torch.tensor(sizes, dtype=g.dtype))
    v = E.T @ torch.sqrt(a + eps0)
    B = (U - torch.diag(torch.diag(U))) / torch.outer(v, v)
    F = torch.eye(k, dtype=g.dtype) + B
    t, W = torch.linalg.eigh(F)
    P = W @ torch.diag(t.clamp(min=1e-10) ** -0.5) @ W.T - torch.eye(k, dtype=g.dtype)
    Sm = torch.linalg.inv(torch.sqrt(S))
    c = Sm @ P @ Sm @ (E.T @ g)
    r = (a + eps0) ** -0.25
    return r * (r * g + E @ c)
