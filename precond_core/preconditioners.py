"""Curvature estimates D_k (docs/METHODS.md section 2 and 3), each a small object with explicit state.

``init(problem, x, generator) -> state`` and ``update(state, x, g, oracle) -> (operator, state)``; the
operator is a structured matrix from ``operators`` that the step rule applies, inverts or raises to a
power. Memory of the state is stated per class; ``tensor_bytes(state)`` measures it. Randomness comes
only from the ``torch.Generator`` passed to ``init`` (stored in the state), so a run is reproducible.

Classes (state memory):
- ``IdentityP``: D = I (gradient descent). O(1).
- ``AdamP``: D = diag(v_hat), v = EMA of g*g with bias correction (the step rule takes D^{-1/2}). O(n).
- ``AdaGradDiag``: D = diag(sum_t g_t * g_t). O(n).
- ``AdaGradFull``: D = sum_t g_t g_t^T (dense, small n only). O(n^2).
- ``Hutchinson``: D = |mean_j z_j * (H z_j)|, z Rademacher, m probes (m HVPs), optional EMA. O(n).
- ``ExactHessian``: D = H (Newton, dense, small n). O(n^2).
- ``FisherEmpirical``: D = fisher_scale sum_s g_s g_s^T + lam I over all S samples (low rank when S < n,
  else dense). O(n min(n, S)).
- ``FisherSampled``: D = fisher_scale (S / b) sum_{s in batch} g_s g_s^T + lam I, b samples drawn without
  replacement (rank b; b = 1 is the talk's rank-one Fisher); ``model=True`` draws labels from the model
  (the "model" / "true" Fisher). Woodbury solve, O(n b).
- ``UniformDirection``: u uniform on the unit sphere, v = H u (one HVP); ``form="raw"`` D = n v u^T
  (Sherman-Morrison), ``"symmetrized"`` S = (n/2)(v u^T + u v^T) = U C U^T, U = [u, v],
  C = (n/2)[[0, 1], [1, 0]], ``"regularized"`` D = S + delta I. O(n).
- ``HessianBMA``: Frobenius-optimal block mean of the exact Hessian (for study; builds H). O(k^2) state.
- ``AdaGradBMA``: ``variant="exact"``: the optimal block mean of H_t = sum_t g_t g_t^T from block
  statistics (U += e e^T, Q += q with e = E^T g, q = E^T (g*g)), O(n + k^2) per step, no n x n matrix;
  ``variant="scaled"``: H_t ~= Z F Z with Z = diag(H_t)^{1/2} and F the block mean of the normalized
  statistics (g / z accumulated with the running z, a heuristic as in the talk's public code), applied as
  Z^{-1/2} F^{-1/2} Z^{-1/2} g (exact when F = I: diagonal AdaGrad). O(n + k^2).
- ``BlockDiagHessian``: the k diagonal blocks of H (dense blocks). O(sum s_i^2).
- ``LowRankHessian``: top-r eigenpairs of H by Lanczos on HVPs (2r + 10 HVPs), refreshed every
  ``update_every`` steps. O(n r).
- ``KFAC``: Fisher ~= A kron G per linear layer (``problem.kfac_factors``), + lam I. O(sum p^2 + q^2).
- ``LBFGS``: inverse-Hessian approximation by the two-loop recursion over the last ``memory`` pairs. O(n m).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any

import numpy as np
import torch

from . import operators as ops
from .linalg import lanczos, power_iteration
from .oracle import Oracle
from .problems.base import check_partition, partition


# --------------------------------------------------------------------------------------------------
# helpers
def tensor_bytes(*objs: Any) -> int:
    """Bytes held by the tensors reachable from ``objs`` (dataclasses, dicts, sequences, operators),
    each storage counted once."""
    seen: set = set()
    total = 0

    def visit(o):
        nonlocal total
        if o is None or isinstance(o, (int, float, str, bool, torch.Generator)):
            return
        if isinstance(o, torch.Tensor):
            key = (o.untyped_storage().data_ptr(), o.device)
            if key not in seen:
                seen.add(key)
                total += o.untyped_storage().nbytes()
            return
        if is_dataclass(o):
            for f in fields(o):
                visit(getattr(o, f.name))
        elif isinstance(o, dict):
            for v in o.values():
                visit(v)
        elif isinstance(o, (list, tuple)):
            for v in o:
                visit(v)
        elif hasattr(o, "__dict__"):
            for v in vars(o).values():
                visit(v)

    for o in objs:
        visit(o)
    return total


def _hvp_into(oracle, x: torch.Tensor, v: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """H(x) v written into ``out``: through ``Oracle.hvp(out=)`` (no n-sized temporary where the problem
    has ``hvp_into``), else copied from any oracle-like object whose ``hvp`` takes (x, v) only."""
    if isinstance(oracle, Oracle):
        return oracle.hvp(x, v, out=out)
    return out.copy_(oracle.hvp(x, v))


class Shifted(ops.Operator):
    """D + c I for an operator D and a fixed c >= 0 (e.g. the ridge term lam I added to a Fisher)."""

    def __init__(self, op: ops.Operator, c: float):
        self.op, self.c = op, float(c)
        self.n, self.dtype, self.device = op.n, op.dtype, op.device

    def mv(self, v):
        return self.op.mv(v) + self.c * v

    def solve(self, v, shift=0.0):
        return self.op.solve(v, shift + self.c)

    def solve_add_(self, x, v, alpha, shift=0.0):
        return self.op.solve_add_(x, v, alpha, shift + self.c)

    def power(self, v, p, shift=0.0):
        return self.op.power(v, p, shift + self.c)

    @property
    def nbytes(self):
        return self.op.nbytes

    def to_dense(self):
        return self.op.to_dense() + self.c * torch.eye(self.n, dtype=self.dtype, device=self.device)


def _with_lam(op: ops.Operator, lam: float) -> ops.Operator:
    return Shifted(op, lam) if lam else op


def resolve_blocks(n: int, k: int | None, blocks, default_blocks) -> tuple[int, ...]:
    """The partition a block method uses: explicit ``blocks`` sizes, else ``k`` equal blocks, else the
    problem's natural partition, else 8 equal blocks (fewer when n < 8)."""
    if blocks is not None:
        return check_partition(blocks, n, "blocks")
    if k is not None:
        if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= n:
            raise ValueError(f"k (number of blocks) must be an integer in [1, n={n}], got {k!r}")
        return partition(n, k)
    if default_blocks is not None:
        return check_partition(default_blocks, n, "problem.blocks")
    return partition(n, min(8, n))


class Preconditioner:
    name = "preconditioner"

    def init(self, problem, x, generator):
        return None

    def update(self, state, x, g, oracle):
        raise NotImplementedError

    def sigma(self, oracle, x) -> float | None:
        """Bound on E||D - H|| used by the regularized step, or ``None`` when unknown."""
        return None

    def has_sigma(self, problem) -> bool:
        """Whether ``sigma`` gives a bound on ``problem`` (checked when a regularized step is built)."""
        return type(self).sigma is not Preconditioner.sigma


# --------------------------------------------------------------------------------------------------
class IdentityP(Preconditioner):
    name = "identity"

    def init(self, problem, x, generator):
        return ops.Scalar(problem.n, 1.0, dtype=x.dtype, device=x.device)

    def update(self, op, x, g, oracle):
        return op, op


@dataclass
class _DiagState:
    acc: torch.Tensor
    t: int = 0
    out: torch.Tensor | None = None   # Adam: the bias-corrected second moment, written in place
    extra: dict | None = None         # fused steps (``_FusedPower``): the bound on max(acc), its limit, the step counter


_CHUNK = 1 << 16   # entries per chunk of the diagonal accumulators on CPU (a slice that stays in cache)


def _accumulate_squares(acc: torch.Tensor, g: torch.Tensor, decay: float, weight: float,
                        out: torch.Tensor | None = None, scale: float = 1.0) -> ops.Diagonal:
    """acc <- decay * acc + weight * g * g in place (``decay = 1``: a plain sum), and, with ``out``,
    out <- scale * acc; returns the diagonal operator of ``out`` (else ``acc``) with its extremes attached
    (``Diagonal.extremes``, Python floats on CPU), taken chunk by chunk while each slice is in cache, so the
    power step needs no separate min/max pass. Elementwise the same arithmetic as the unchunked expressions."""
    d = acc if out is None else out
    n = acc.shape[0]
    if acc.device.type != "cpu" or acc.ndim != 1:
        if decay != 1.0:
            acc.mul_(decay)
        acc.addcmul_(g, g, value=weight)
        if out is not None:
            torch.mul(acc, scale, out=out)
        return ops.Diagonal(d)
    lo, hi = math.inf, -math.inf
    whole = n <= _CHUNK
    for o in range(0, n, _CHUNK):
        e = min(n, o + _CHUNK)
        a, gc, dc = (acc, g, d) if whole else (acc[o:e], g[o:e], d[o:e])
        if decay != 1.0:
            a.mul_(decay)
        a.addcmul_(gc, gc, value=weight)
        if out is not None:
            torch.mul(a, scale, out=dc)
        mn, mx = torch.aminmax(dc)
        lo, hi = min(lo, mn.item()), max(hi, mx.item())   # host reads of a CPU tensor: no device sync
    op = ops.Diagonal(d)
    op.extremes = (lo, hi)
    return op


class AdamP(Preconditioner):
    name = "adam"

    def __init__(self, beta2: float = 0.999):
        if not 0 <= beta2 < 1:
            raise ValueError(f"beta2 must be in [0, 1), got {beta2!r}")
        self.beta2 = beta2

    def init(self, problem, x, generator):
        return _DiagState(torch.zeros_like(x))

    def update(self, s, x, g, oracle):
        s.t += 1
        if s.out is None:
            s.out = torch.empty_like(s.acc)
        return _accumulate_squares(s.acc, g, self.beta2, 1 - self.beta2, s.out, 1.0 / (1 - self.beta2 ** s.t)), s

    def fused_step(self, rule, x):
        """The update and ``rule``'s step in one pass (``_FusedPower``) where it applies, else None."""
        ok = type(self) is AdamP and self.beta2 > 0 and _FusedPower.applies(rule, x, True)
        return _FusedPower(rule, self.beta2) if ok else None


class AdaGradDiag(Preconditioner):
    name = "adagrad"

    def init(self, problem, x, generator):
        return _DiagState(torch.zeros_like(x))

    def update(self, s, x, g, oracle):
        s.t += 1
        return _accumulate_squares(s.acc, g, 1.0, 1.0), s

    def fused_step(self, rule, x):
        """The update and ``rule``'s step in one pass (``_FusedPower``) where it applies, else None."""
        return _FusedPower(rule, None) if type(self) is AdaGradDiag and _FusedPower.applies(rule, x, False) else None


class _AffineDiagonal(ops.Operator):
    """D = a diag(d) + b I for a stored vector d (the fused steps keep d = D + eps I, scaled): an
    ``ops.Diagonal`` of a d + b is formed only when the operator is used (the fused step does not use it)."""

    def __init__(self, d: torch.Tensor, a: float, b: float):
        self.d_stored, self.a, self.b = d, float(a), float(b)
        self.n, self.dtype, self.device = d.shape[0], d.dtype, d.device
        self._op = None

    def diagonal(self) -> ops.Diagonal:
        if self._op is None:
            self._op = ops.Diagonal(torch.add(torch.mul(self.d_stored, self.a), self.b))
        return self._op

    @property
    def d(self) -> torch.Tensor:
        """The diagonal of D (formed on first use), as ``ops.Diagonal.d``."""
        return self.diagonal().d

    def mv(self, v):
        return self.diagonal().mv(v)

    def solve(self, v, shift=0.0):
        return self.diagonal().solve(v, shift)

    def solve_add_(self, x, v, alpha, shift=0.0):
        return self.diagonal().solve_add_(x, v, alpha, shift)

    def power(self, v, p, shift=0.0):
        return self.diagonal().power(v, p, shift)

    @property
    def nbytes(self):
        return tensor_bytes(self.d_stored)

    def to_dense(self):
        return self.diagonal().to_dense()


class _FusedPower:
    """A diagonal preconditioner's update and the power step x+ = x - lr (D + eps I)^{-1/2} m in one pass
    over memory, through torch's fused CPU kernels with their own eps set to 0, on an accumulator that
    holds D + eps I (scaled), so the kernel's square root is that of D + eps I as in the unfused rule
    (results agree to roundoff; tests/test_floor.py):

    - AdaGrad (``torch._fused_adagrad_``: acc += g * g; x -= lr g / sqrt(acc)): acc = eps + sum g * g.
    - Adam (``torch._fused_adam_``: m lerp, v = beta2 v + (1 - beta2) g * g, x -= lr / bc1 m / sqrt(v / bc2),
      bc_i = 1 - beta_i^t): v = EMA + eps bc2, kept so by adding (1 - beta2) eps / beta2 before each call
      (the kernel then decays it with v; beta2 > 0). m is the step rule's momentum buffer.

    The unfused rule clamps D + eps I at ``eig_floor(max)`` before the power; the kernel runs only when no
    entry can lie below that floor: every entry is >= eps (up to roundoff; a factor 2 of margin), and an
    upper bound U >= max(acc) (grown by g^T g each step, refreshed by an exact max when it nears the limit)
    gives eig_floor(U) <= eps / 2. Otherwise the step is the unfused rule on the same accumulator, so the
    floor rule is kept exactly. CPU only (torch has no fused AdaGrad kernel elsewhere)."""

    def __init__(self, rule, beta2: float | None):
        self.lr, self.eps, self.beta1, self.beta2 = float(rule.lr), float(rule.eps), float(rule.beta1), beta2

    @staticmethod
    def applies(rule, x, adam: bool) -> bool:
        kernel = "_fused_adam_" if adam else "_fused_adagrad_"
        return (getattr(torch, kernel, None) is not None and getattr(rule, "name", None) == "power"
                and rule.p == -0.5 and rule.eps > 0 and (rule.beta1 > 0 if adam else rule.beta1 == 0)
                and x.device.type == "cpu" and x.ndim == 1 and x.dtype in (torch.float32, torch.float64))

    def init(self, s: _DiagState) -> _DiagState:
        s.acc.fill_(0.0 if self.beta2 is not None else self.eps)
        fi = torch.finfo(s.acc.dtype)
        # eig_floor(U') = max(U' eps(dtype), sqrt(tiny)) <= eps / 2 for U' >= max(D + eps I): nothing can be clamped
        limit = 0.5 * self.eps / fi.eps if math.sqrt(fi.tiny) <= 0.5 * self.eps else -math.inf
        s.extra = {"bound": float(s.acc.max()) if s.acc.numel() else 0.0, "limit": limit,
                   "step": torch.zeros((), dtype=torch.float32)}
        return s

    def step(self, s: _DiagState, rs, x: torch.Tensor, g: torch.Tensor, owns_x: bool):
        """(x+, D, s) for the preconditioner state ``s`` and the power rule's state ``rs``; x+ is written into
        x when ``owns_x``."""
        s.t += 1
        rs.t += 1
        ex, t, b2 = s.extra, s.t, self.beta2
        gg = float(torch.dot(g, g))
        x_new = x if owns_x else x.clone()
        fusable = g.dtype == x.dtype and g.is_contiguous() and x_new.is_contiguous()
        if b2 is None:                                       # AdaGrad: U >= max(eps + sum g * g)
            bound = ex["bound"] + gg
            if bound > ex["limit"]:
                bound = float(s.acc.max()) + gg
            ex["bound"], scale = bound, 1.0
        else:                                                # Adam: U >= max(v), v / bc2 = D + eps I
            bc2 = 1.0 - b2 ** t
            off = (1.0 - b2) * self.eps
            bound = b2 * ex["bound"] + off + (1.0 - b2) * gg
            if bound / bc2 > ex["limit"]:
                bound = b2 * float(s.acc.max()) + off + (1.0 - b2) * gg
            ex["bound"], scale = bound, 1.0 / bc2
            s.acc.add_(off / b2)                             # the kernel decays it with v
        ex["step"].fill_(t)
        if fusable and bound * scale <= ex["limit"]:
            if b2 is None:
                torch._fused_adagrad_([x_new], [g], [s.acc], [ex["step"]], lr=self.lr, lr_decay=0.0,
                                      weight_decay=0.0, eps=0.0, maximize=False)
            else:
                torch._fused_adam_([x_new], [g], [rs.m], [s.acc], [], [ex["step"]], lr=self.lr,
                                   beta1=self.beta1, beta2=b2, weight_decay=0.0, eps=0.0, amsgrad=False,
                                   maximize=False)
            # the kernels write x without bumping its version counter: bump it, so no forward pass cached
            # at the old x (``problems._common.XCache``) is reused for the new one
            torch.autograd.graph.increment_version(x_new)
        elif b2 is None:                 # unfused, with the floor rule on the extremes of eps + sum g * g
            _accumulate_squares(s.acc, g, 1.0, 1.0).power_add(x_new, g, -0.5, 0.0, -self.lr, x_new)
        else:                            # unfused Adam on the same accumulator (and its extremes)
            if s.out is None:
                s.out = torch.empty_like(s.acc)
            rs.m.lerp_(g, 1 - self.beta1)
            _accumulate_squares(s.acc, g, b2, 1 - b2, s.out, scale).power_add(x_new, rs.m, -0.5, 0.0, -self.lr / (1 - self.beta1 ** t), x_new)
        return x_new, _AffineDiagonal(s.acc, scale, -self.eps), s


class AdaGradFull(Preconditioner):
    name = "adagrad_full"

    def init(self, problem, x, generator):
        return _DiagState(torch.zeros(problem.n, problem.n, dtype=x.dtype, device=x.device))

    def update(self, s, x, g, oracle):
        s.t += 1
        s.acc.add_(torch.outer(g, g))
        return ops.Dense(s.acc), s


@dataclass
class _GenState:
    generator: torch.Generator
    acc: torch.Tensor | None = None
    extra: dict = field(default_factory=dict)


_SIGN_TABLES: dict = {}   # (dtype, device) -> Hutchinson.sign_table


class Hutchinson(Preconditioner):
    name = "hutchinson"

    def __init__(self, probes: int = 1, beta: float = 0.0):
        if not isinstance(probes, int) or probes < 1:
            raise ValueError(f"probes must be a positive integer, got {probes!r}")
        if not 0 <= beta < 1:
            raise ValueError(f"beta must be in [0, 1), got {beta!r}")
        self.probes, self.beta = probes, beta

    def init(self, problem, x, generator):
        return _GenState(generator)

    @staticmethod
    def sign_table(dtype: torch.dtype, device) -> torch.Tensor:
        """The (256, 8) table of +-1 in ``dtype``: row b, column j is +1 when bit j of b is set, else -1
        (built once per dtype and device)."""
        key = (dtype, torch.device(device))
        t = _SIGN_TABLES.get(key)
        if t is None:
            bits = (torch.arange(256).unsqueeze(1) >> torch.arange(8)) & 1
            t = _SIGN_TABLES[key] = (2 * bits - 1).to(dtype=dtype, device=device)
        return t

    @staticmethod
    def rademacher_(z: torch.Tensor, generator: torch.Generator, idx: torch.Tensor | None = None) -> torch.Tensor:
        """Fill ``z`` (contiguous, 1-D) in place with independent +-1 entries, each +1 with probability 1/2,
        in its own dtype.

        One uniform byte per 8 entries (``random_(0, 256)``, one generator draw per byte, exactly uniform
        since 256 divides 2^32), its 8 bits mapped to 8 signs by one ``index_select`` of ``sign_table``
        written straight into z viewed as (n / 8, 8): the bits of a uniform byte are independent fair coins.
        At n = 10^6 (float64, 1 thread) 0.84 ms against 4.3 ms for ``random_(0, 2).mul_(2).sub_(1)``
        (one draw per entry and two more passes). ``idx``: an int64 work buffer of at least ceil(n / 8)
        entries (kept by the caller: no allocation per call). The last n mod 8 entries come from one
        more byte."""
        n = z.shape[0]
        nb, rem = divmod(n, 8)
        nbytes = nb + (rem > 0)
        if idx is None or idx.shape[0] < nbytes:
            idx = torch.empty(nbytes, dtype=torch.int64, device=z.device)
        idx = idx[:nbytes].random_(0, 256, generator=generator)
        table = Hutchinson.sign_table(z.dtype, z.device)
        if nb:
            torch.index_select(table, 0, idx[:nb] if rem else idx, out=z[:8 * nb].view(nb, 8))
        if rem:
            z[8 * nb:].copy_(table[idx[nb], :rem])
        return z

    def update(self, s, x, g, oracle):
        # buffers kept in the state and reused every step: the probe z, the byte draws behind it and the
        # estimate d (the operator returned last step is no longer used when update runs again)
        ex = s.extra
        z = ex.get("z")
        if z is None or z.shape != x.shape or z.dtype != x.dtype or z.device != x.device:
            n = x.shape[0]
            # z is the first n entries of a buffer of 8 ceil(n / 8): the probe is drawn without a tail
            ex["zpad"] = torch.empty(-(-n // 8) * 8, dtype=x.dtype, device=x.device)
            z = ex["z"] = ex["zpad"][:n]
            ex["bytes"] = torch.empty(-(-n // 8), dtype=torch.int64, device=x.device)
        ema = self.beta and s.acc is not None
        d = ex.get("d") if ema else s.acc
        if d is None or d.shape != x.shape or d.dtype != x.dtype:
            d = torch.empty_like(x)
        for j in range(self.probes):
            self.rademacher_(ex["zpad"], s.generator, ex["bytes"])
            if j == 0:                     # the first product is written into d itself
                _hvp_into(oracle, x, z, d)
                if self.probes > 1:        # one probe: |z * Hz| = |Hz| exactly (z = +-1), no multiply
                    d.mul_(z)
            else:
                hz = ex.get("hz")
                if hz is None or hz.shape != x.shape or hz.dtype != x.dtype:
                    hz = ex["hz"] = torch.empty_like(x)
                d.addcmul_(z, _hvp_into(oracle, x, z, hz))
        if self.probes > 1:
            d.div_(self.probes)
        d.abs_()
        if ema:
            ex["d"] = d
            s.acc.mul_(self.beta).add_(d, alpha=1 - self.beta)
        else:
            s.acc = d
        return ops.Diagonal(s.acc), s


class ExactHessian(Preconditioner):
    """D = H (Newton). ``inner_dtype=None``: the dense Hessian in the problem's dtype, solved by
    ``torch.linalg.solve``. ``inner_dtype="float32"`` on a float64 problem: the Hessian formed (one
    elementwise scaling and one matrix product on a float32 copy of the data) and Cholesky-factored in
    float32, the solve refined once with an exact float64 HVP (``newton_cg.RefinedHessian``), while the
    gradient, the line search and the stopping test stay in float64: the answer is the float64 one (the
    refined direction is within about (cond(H) eps32)^2 of the exact Newton direction). Logistic
    regression only; any other problem refuses it with a ``ValueError`` naming ``inner_dtype``."""
    name = "exact_hessian"

    def __init__(self, inner_dtype: str | None = None):
        from .newton_cg import INNER_DTYPES
        if inner_dtype not in INNER_DTYPES:
            raise ValueError(f"inner_dtype must be one of {INNER_DTYPES}, got {inner_dtype!r}")
        self.inner_dtype = inner_dtype

    def init(self, problem, x, generator):
        from .newton_cg import _lowp_hessian_factory, lowp_oracle
        at, _ = lowp_oracle(self.inner_dtype, problem, x, _lowp_hessian_factory,
                            f"builds its Hessian only in {x.dtype} (a {self.inner_dtype} Hessian is available for "
                            "logistic regression)")
        return None if at is None else {"lowp": at}

    def update(self, state, x, g, oracle):
        if state is not None:
            from .newton_cg import RefinedHessian
            oracle.hvps += oracle.problem.n          # forming H costs the n products it replaces
            return RefinedHessian(state["lowp"](x), lambda v: oracle.hvp(x, v), x.dtype), state
        return ops.Dense(oracle.hessian(x)), state

    def sigma(self, oracle, x):
        return 0.0

    def sigma_source(self, problem) -> str:
        return "exact(D = H, sigma = 0)"


class _FisherSigma(Preconditioner):
    """sigma for the regularized step with a Fisher estimate D.

    The talk's bounds sigma(x) (``problem.fisher_sigma``: L sum_s |phi - b_s| for least squares, 2 f(x)
    for softmax, recomputed at every step) bound ||H - F|| for F the Fisher as an expectation over the
    model's labels (docs/METHODS.md section 2). They are used only by a preconditioner whose D is that
    matrix (``exact_model = True``). An empirical Fisher (observed labels) or a rank-b sampled estimate
    is a different matrix that those formulas do not bound: for it, sigma is the documented estimate
    ||H(x0) - D(x0)||_2 of the first draw at the first iterate (power iteration, 30 HVPs, computed
    once; a measured error, not a bound), unless the step is given ``sigma``. ``sigma_source`` names
    which one a run used (recorded in the run row).
    """
    exact_model = False

    @property
    def sigma_per_step(self):
        return self.exact_model

    def sigma_source(self, problem) -> str:
        if self.exact_model and hasattr(problem, "fisher_sigma"):
            return "talk_bound(fisher_sigma(x), model Fisher as expectation)"
        return "estimate(||H(x0) - D(x0)||_2, power iteration at x0)"

    def sigma(self, oracle, x, op=None):
        f = getattr(oracle.problem, "fisher_sigma", None)
        if self.exact_model and f is not None:
            return f(x)
        if op is None:
            return None
        gen = torch.Generator(device=x.device).manual_seed(0)
        return abs(power_iteration(lambda v: oracle.hvp(x, v) - op.mv(v), x.shape[0], iters=30, generator=gen,
                                   dtype=x.dtype, device=x.device))

    def has_sigma(self, problem):
        return True


class FisherEmpirical(_FisherSigma):
    name = "fisher_empirical"

    def update(self, state, x, g, oracle):
        p = oracle.problem
        G = oracle.per_sample_grads(x)              # (S, n)
        if G.shape[0] < p.n:
            C = p.fisher_scale * torch.eye(G.shape[0], dtype=x.dtype, device=x.device)
            op = ops.LowRank(G.T, C)
        else:
            op = ops.Dense(p.fisher_scale * (G.T @ G))
        return _with_lam(op, p.lam), state



def _sample_without_replacement(S: int, b: int, generator: torch.Generator) -> torch.Tensor:
    """b distinct indices in [0, S), uniform over ordered b-tuples of distinct indices (the law of
    ``randperm(S)[:b]``), on the generator's device. b = 1: one ``randint`` draw, O(1) instead of O(S);
    on a CPU generator with b (b - 1) <= S: b ``randint`` draws, redrawn until distinct (rejection keeps the
    law exact; each try succeeds with probability >= about 0.6); otherwise ``randperm(S)[:b]``."""
    dev = generator.device
    if b == 1 or (dev.type == "cpu" and b * (b - 1) <= S):
        while True:
            idx = torch.randint(S, (b,), generator=generator, device=dev)
            if b == 1 or torch.unique(idx).numel() == b:
                return idx
    return torch.randperm(S, generator=generator, device=dev)[:b]


class FisherSampled(_FisherSigma):
    name = "fisher_sampled"

    def __init__(self, b: int = 1, model: bool = False):
        if not isinstance(b, int) or isinstance(b, bool) or b < 1:
            raise ValueError(f"b (number of sampled per-sample gradients) must be a positive integer, got {b!r}")
        self.b, self.model = b, model

    def init(self, problem, x, generator):
        if self.b > problem.n_samples:
            raise ValueError(f"b={self.b} exceeds the number of samples ({problem.n_samples}) of {problem.name!r}")
        return _GenState(generator)

    def update(self, s, x, g, oracle):
        p = oracle.problem
        idx = _sample_without_replacement(p.n_samples, self.b, s.generator)
        scale = p.fisher_scale * p.n_samples / self.b
        sparse = None
        if not self.model and x.device.type == "cpu" and idx.device.type == "cpu":
            # sparse per-sample gradients: O(nnz of the rows) per step (b = 1: the index as a host number)
            rows = getattr(p, "sparse_per_sample_grads", None)
            sparse = rows(x, idx.item() if self.b == 1 else idx) if rows is not None else None
        if sparse is not None:
            oracle.sample_grads += self.b
            J, Uc = sparse
            C = s.extra.get("C")
            if C is None or C.dtype != x.dtype:       # scale I_b, the same every step: built once
                C = s.extra["C"] = scale * torch.eye(self.b, dtype=x.dtype, device=x.device)
            return _with_lam(ops.SparseLowRank(J, Uc, C, p.n), p.lam), s
        idx = idx.to(x.device)
        G = oracle.model_sample_grads(x, idx, s.generator) if self.model else oracle.per_sample_grads(x, idx)
        C = scale * torch.eye(self.b, dtype=x.dtype, device=x.device)
        return _with_lam(ops.LowRank(G.T, C), p.lam), s



class LowRankPQ(ops.Operator):
    """D = base I + P Q^T with P, Q (n x r), not symmetric: the raw averaged uniform-direction estimate
    (n/m) V U^T (P = (n/m) V, Q = U, r = m). ``solve(v, shift)``: Woodbury with c = base + shift,
    (c I + P Q^T)^{-1} v = (v - P (c I_r + Q^T P)^{-1} Q^T v) / c: one r x r solve, O(n r) per call after
    Q^T P (O(n r^2), cached). Only p in {0, 1, -1} (non-symmetric). Memory O(n r)."""

    def __init__(self, P: torch.Tensor, Q: torch.Tensor, base=0.0):
        if P.ndim != 2 or P.shape != Q.shape:
            raise ValueError(f"P and Q must be (n, r) matrices of one shape, got {tuple(P.shape)} and {tuple(Q.shape)}")
        self.P, self.Q, self.base = P, Q, float(base)
        self.n, self.r, self.dtype, self.device = P.shape[0], P.shape[1], P.dtype, P.device
        self._inner = None

    def mv(self, v):
        v = self._check_v(v)
        return self.base * v + self.P @ (self.Q.T @ v)

    def solve(self, v, shift=0.0):
        v = self._check_v(v)
        c = self.base + self._shift(shift)
        if not isinstance(c, torch.Tensor) and c == 0 and self.r >= self.n:
            # no identity part: D = P Q^T itself, generically invertible when r >= n (n x n, n <= r)
            return torch.linalg.solve(self.P @ self.Q.T, v)
        if self._inner is None:
            self._inner = self.Q.T @ self.P
        X = self._inner + c * torch.eye(self.r, dtype=self.dtype, device=self.device)
        return (v - self.P @ torch.linalg.solve(X, self.Q.T @ v)) / c

    def _power(self, v, p, shift):
        raise NotImplementedError(f"LowRankPQ.power supports only p in {{0, 1, -1}}, got p={p}: D = base I + P Q^T "
                                  "is non-symmetric; use form='symmetrized'")

    def to_dense(self):
        return self.base * torch.eye(self.n, dtype=self.dtype, device=self.device) + self.P @ self.Q.T


def _check_samples(samples) -> int:
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
        raise ValueError(f"samples (number of uniform directions averaged) must be a positive integer, got {samples!r}")
    return samples


class UniformDirection(Preconditioner):
    """D_m = (1/m) sum_i n H u_i u_i^T, u_i independent and uniform on the unit sphere (m = ``samples``;
    m = 1 is the talk's rank-one estimate; docs/METHODS.md section 2).

    ``form="raw"``: D_m = (n/m) V U^T (U = [u_1..u_m], V = H U), unbiased, rank <= m; m = 1 is
    ``operators.RankOne`` (Sherman-Morrison), m > 1 (and n = 1, where D = H is solved without a shift)
    ``LowRankPQ`` (Woodbury, m x m inner matrix).
    ``"symmetrized"``: S_m = (n/(2m)) (V U^T + U V^T) = W C W^T, W = [U, V], C = (n/(2m)) [[0, I], [I, 0]]
    (``operators.LowRank``, 2m x 2m inner matrix); ``"regularized"``: S_m + delta I. Solves cost
    O(n m^2 + m^3), never an n x n matrix. The m HVPs are m calls of ``oracle.hvp`` (the problems'
    ``hvp`` takes one vector). Probes are drawn (``draw``) directly into the (2m, n) buffer W whose
    transpose is the column-major n x 2m factor; W is kept in the state and reused, and each HVP is
    written into its row (``Oracle.hvp(out=)``; peak: W and the HVP's own temporaries).

    ``sigma`` (the regularized step's bound on E||D - H||_F): ``sigma_form="local"`` uses lambda_max of
    the Hessian at the first iterate x0 (by power iteration on HVPs, or ``lambda_max`` when given), the
    talk's sqrt(lambda_max^2 n (n - 1) / m + n delta^2) (every form is an average of m independent
    unbiased estimates, so the variance term divides by m); ``sigma_form="sup"`` uses lambda_max <= L, the problem's
    gradient Lipschitz constant, a bound valid at every x as the talk's theory needs.
    """
    name = "uniform_direction"
    FORMS = ("raw", "symmetrized", "regularized")
    SIGMA_FORMS = ("local", "sup")

    def __init__(self, form: str = "regularized", delta: float = 0.01, lambda_max: float | None = None,
                 samples: int = 1, sigma_form: str = "local"):
        if form not in self.FORMS:
            raise ValueError(f"form must be one of {self.FORMS}, got {form!r}")
        if not isinstance(delta, (int, float)) or isinstance(delta, bool) or not math.isfinite(delta) or delta < 0:
            raise ValueError(f"delta must be a finite number >= 0, got {delta!r}")
        if sigma_form not in self.SIGMA_FORMS:
            raise ValueError(f"sigma_form must be one of {self.SIGMA_FORMS}, got {sigma_form!r}")
        if form != "regularized" and delta != 0:
            delta = 0.0  # only the regularized form carries delta I
        self.form, self.delta, self.lambda_max = form, float(delta), lambda_max
        self.samples, self.sigma_form = _check_samples(samples), sigma_form

    def init(self, problem, x, generator):
        return _GenState(generator)

    def update(self, s, x, g, oracle):
        n, m = x.shape[0], self.samples
        # rows: u_1..u_m, v_1..v_m; the buffer is kept in the state and refilled every step (the operator
        # returned last step is no longer used when update runs again), each HVP written into its row
        W = s.extra.get("W")
        if W is None or W.shape != (2 * m, n) or W.dtype != x.dtype or W.device != x.device:
            W = s.extra["W"] = torch.empty(2 * m, n, dtype=x.dtype, device=x.device)
        U, V = W[:m], W[m:]
        buf = s.extra.get("draw_buf")
        if buf is None and x.dtype == torch.float64 and x.device.type == "cpu":
            buf = s.extra["draw_buf"] = torch.empty(min(n, self.DRAW_CHUNK), dtype=torch.float32)
        self.draw(U, s.generator, buf)
        for i in range(m):
            _hvp_into(oracle, x, U[i], V[i])
        if self.form == "raw":
            if m == 1 and n > 1:
                return ops.RankOne(V[0].mul_(n), U[0]), s
            return LowRankPQ(V.mul_(n / m).T, U.T), s
        C = s.extra.get("C")
        if C is None or C.shape != (2 * m, 2 * m) or C.dtype != x.dtype or C.device != x.device:
            c = n / (2 * m)                   # the same every step: built once
            C = s.extra["C"] = torch.zeros(2 * m, 2 * m, dtype=x.dtype, device=x.device)
            idx = torch.arange(m, device=x.device)
            C[idx, idx + m] = c
            C[idx + m, idx] = c
        gram = None
        if m == 1:
            # W W^T from one pass over W: [u.v, v.v] = W v, and u.u = 1 (u unit, to roundoff): the solve needs
            # no (2 x n)(n x 2) product (1.3 ms at n = 10^6 against 0.4 ms for the matrix-vector product)
            gram = s.extra.get("gram")
            if gram is None or gram.dtype != x.dtype or gram.device != x.device:
                gram = s.extra["gram"] = torch.ones(2, 2, dtype=x.dtype, device=x.device)
            uv = torch.mv(W, V[0])
            if x.device.type == "cpu":      # three entries written through NumPy views (no torch dispatch)
                gn, un = gram.numpy(), uv.numpy()
                gn[0, 1] = gn[1, 0] = un[0]
                gn[1, 1] = un[1]
            else:
                gram[:, 1] = uv
                gram[1, 0] = uv[0]
        op = s.extra.get("op")
        if op is not None and op.U._base is W and op.C is C and op._gram is gram and gram is not None:
            op._eig = None          # the same buffers refilled: the operator of this step, its caches cleared
            return op, s
        op = ops.LowRank(W.T, C, base=self.delta if self.form == "regularized" else 0.0, gram=gram)
        s.extra["op"] = op
        return op, s

    DRAW_CHUNK = 1 << 16

    @classmethod
    def draw(cls, U: torch.Tensor, generator: torch.Generator, buf: torch.Tensor | None = None) -> torch.Tensor:
        """Fill the rows of ``U`` (m, n) in place with independent directions uniform on the unit sphere.

        Gaussian rows normalized. On CPU in float64 the Gaussians are drawn in float32 chunks of
        ``DRAW_CHUNK`` entries and copied into ``U`` (measured at n = 10^6, 1 thread: float64 ``normal_``
        48 ms, float32 11 ms; a gradient of the scalable problem 32-48 ms): no n-sized temporary, and the
        direction is uniform up to float32 rounding of its entries. ``buf``: a float32 CPU buffer of at
        least ``min(n, DRAW_CHUNK)`` entries to draw into (kept by the caller across steps), else one is
        allocated. Other dtypes and devices draw directly in ``U``'s dtype.
        """
        if U.dtype == torch.float64 and U.device.type == "cpu":
            n = U.shape[1]
            c0 = min(n, cls.DRAW_CHUNK)
            if buf is None or buf.dtype != torch.float32 or buf.device.type != "cpu" or buf.shape[0] < c0:
                buf = torch.empty(c0, dtype=torch.float32)
            for row in U:
                sq = 0.0                  # on the host: a CPU scalar read costs less than a 0-d tensor update
                for off in range(0, n, cls.DRAW_CHUNK):
                    c = min(cls.DRAW_CHUNK, n - off)
                    dst = row if c == n else row[off:off + c]
                    dst.copy_(buf[:c].normal_(generator=generator))
                    sq += float(torch.dot(dst, dst))     # the squared norm from the chunk while it is in cache
                row.mul_(1.0 / math.sqrt(sq))
            return U
        U.normal_(generator=generator)
        return U.div_(torch.linalg.vector_norm(U, dim=1, keepdim=True))

    def sigma_source(self, problem) -> str:
        if self.lambda_max is not None:
            return "uniform_direction(lambda_max given)"
        return "uniform_direction(lambda_max = L, sup)" if self.sigma_form == "sup" else \
            "uniform_direction(lambda_max at x0, local)"

    def has_sigma(self, problem):
        return self.sigma_form == "local" or self.lambda_max is not None or problem.L is not None

    def sigma(self, oracle, x):
        """The talk's bound sqrt(lambda_max^2 n (n - 1) / m + n delta^2); lambda_max as ``sigma_form``
        says (power iteration at ``x``, the first iterate, for "local", whose HVPs are counted in the oracle; the problem's L for "sup"), or as given."""
        n = x.shape[0]
        lmax = self.lambda_max
        if lmax is None and self.sigma_form == "sup":
            lmax = oracle.problem.L
            if lmax is None:
                return None
        if lmax is None:
            gen = torch.Generator(device=x.device).manual_seed(0)
            lmax = abs(power_iteration(lambda v: oracle.hvp(x, v), n, iters=30, generator=gen,
                                       dtype=x.dtype, device=x.device))
        return math.sqrt(lmax ** 2 * n * (n - 1) / self.samples + n * self.delta ** 2)


class HessianBMA(Preconditioner):
    name = "hessian_bma"

    def __init__(self, k: int | None = None, blocks=None):
        self.k, self.blocks = k, blocks

    def init(self, problem, x, generator):
        return {"sizes": resolve_blocks(problem.n, self.k, self.blocks, problem.blocks)}

    def update(self, s, x, g, oracle):
        return ops.block_mean_approximation(oracle.hessian(x), s["sizes"]), s


@dataclass
class _BMAState:
    sizes: tuple
    U: torch.Tensor          # (k, k) accumulated outer products of block sums, E^T H_t E
    Q: torch.Tensor          # (k,) accumulated block sums of squares, E^T diag(H_t)
    z2: torch.Tensor | None  # (n,) diag(H_t) for the scaled variant
    F: ops.BlockMean | None = None  # the block-mean factor, refreshed every ``update_every`` steps
    t: int = 0
    every: int = 1                  # the refresh period in use
    zbuf: torch.Tensor | None = None  # (n,) scaled variant: sqrt(z2 + delta) of this step, rewritten in place
    host: tuple | None = None       # (U, Q as NumPy views, their data pointers) on CPU (``host_views``)
    growth: float = 0.0             # adaptive refresh: ||P||_F^2 of the growth P since the refresh (``_outgrown``)
    P: torch.Tensor | None = None   # (k, k) adaptive refresh: sum of z z^T since the refresh, in K's eigenbasis
    E: torch.Tensor | None = None   # (k, k) adaptive refresh, first k - 1 steps: the block sums e_j as columns
    refreshes: int = 0              # factors built so far

    def host_views(self) -> tuple | None:
        """NumPy views (U, Q) for ``block_mean_from_stats(host=)`` on CPU, else None. Made once and kept
        while U and Q keep their memory (a copied or loaded state gets views of its own tensors)."""
        if self.U.device.type != "cpu":
            return None
        key = (self.U.data_ptr(), self.Q.data_ptr())
        if self.host is None or self.host[2] != key:
            self.host = (self.U.numpy(), self.Q.numpy(), key)
        return self.host[:2]


class AdaGradBMA(Preconditioner):
    """AdaGrad with the block-mean approximation of H_t = sum_t g_t g_t^T (seed 002), in two variants.

    ``exact``: D = the Frobenius-optimal block mean of H_t, from U = E^T H_t E and Q = E^T diag(H_t)
    (``operators.block_mean_from_stats``); O(n + k^2) per step, no n x n matrix. Singleton blocks (k = n)
    give H_t itself, i.e. full-matrix AdaGrad.

    ``scaled``: H_t ~= Z F Z with Z = diag(diag(H_t) + delta)^{1/2} and F the exact block mean normalized by
    ratios of sums, F = M^{-1/2} BMA(H_t) M^{-1/2} with M the block means of diag(H_t) + delta. Z F Z equals
    BMA(H_t) when diag(H_t) is constant on each block, and H_t itself for singleton blocks. The step applies
    Z^{-1/2} F^{-1/2} Z^{-1/2} g (``operators.Scaled``), which is (Z F Z)^{-1/2} g only when Z and F
    commute: exact for F = I (diagonal AdaGrad), a heuristic otherwise, as in the talk's public code.
    ``delta`` (1e-10) keeps Z invertible on coordinates whose gradient has been zero. ``damping`` adds
    damping * I to F before its power: F has a unit mean diagonal on every block, so the damping is
    unit-free; without it the rank-deficient early F (rank t after t steps) amplifies components of
    Z^{-1/2} g outside its range by up to eps^{-1/2} and the method stalls (measured: no progress on
    mushrooms at damping 0, 353-378 iterations to 1e-4 at 0.1 for k in {1, 4, 13}). With damping = 0,
    F = I is exactly diagonal AdaGrad.

    ``update_every``: the statistics are accumulated every step; the factor F (whose powers cost one
    k x k eigendecomposition) is rebuilt when due and its powered operator cached in between (applied in
    O(n + k^2)). An integer: every ``update_every`` steps (as distributed Shampoo does). ``"auto"``
    (exact variant): when the statistics have outgrown the factor. The exact D_t only grows (D_t >= D_r in
    the PSD order, r the last refresh), so a factor kept too long takes steps longer than the method's;
    a refresh is due when D_t <= (1 + tol) D_r can no longer be certified, tol = ``REFRESH_TOL``: on
    block-constant vectors D acts as K = S^{-1/2} U S^{-1/2} (the k x k matrix of ``BlockMean.k_eigh``),
    K_t = K_r + sum_j w_j w_j^T for the new block sums w_j = S^{-1/2} e_j, and K_t <= (1 + ||P||_F) K_r
    with P = sum_j z_j z_j^T, z = K_r^{-1/2} w (eigenvalues clamped at the power's floor), whose
    Frobenius norm is updated in O(k^2) per step; on vectors of zero block mean D is diag(lam), compared
    entry by entry. Each stale step is then at most sqrt(1 + tol) times the exact method's, in every
    direction (t^(-1/2) is operator monotone). In the first k - 1 steps K has rank t < k and a stale
    factor would meet new directions, so the factor is rebuilt every step, from the t stored block sums by
    a t x t eigenproblem (``BlockMean.set_thin_k``: O(k t^2 + t^3), measured 5.7 against 40.5 ms per
    step at k = 512, n = 10^4 over the first 60 steps, iterates equal to 1e-11); from step k on, by the
    test above: every step while the factor stays rank-deficient, then ever more rarely (the intervals
    grow with t). Cost: O(k^2) and one host read per step. ``None`` (default): every step for k <= 64 and "auto" above (scaled
    variant: every ceil(k / 32) steps above), where a refresh (block mean, k x k eigh, k^3
    reconstruction) costs about 0.05 s at k = 512 on one CPU thread, more than a gradient of the
    scalable problem at n = 10^6 (``benchmarks/bench_floor.py small``). A fixed period can diverge: on the
    scalable problem at n = 10^4, k = 512, every 16 steps the gradient norm grew 10^12-fold in 20 steps,
    and every 4 steps it stalled at k = 8, 64 and 512.
    """
    name = "adagrad_bma"
    VARIANTS = ("exact", "scaled")

    AUTO_EVERY_ABOVE_K = 64
    REFRESH_TOL = 0.25        # "auto": refresh before the statistics may exceed (1 + tol) times the factor's

    def __init__(self, k: int | None = None, blocks=None, variant: str = "exact", update_every: int | None = None,
                 damping: float = 0.1, delta: float = 1e-10):
        if not isinstance(damping, (int, float)) or isinstance(damping, bool) or not damping >= 0:
            raise ValueError(f"damping must be a number >= 0, got {damping!r}")
        if variant not in self.VARIANTS:
            raise ValueError(f"variant must be one of {self.VARIANTS}, got {variant!r}")
        if update_every == "auto":
            if variant != "exact":
                raise ValueError(f"update_every='auto' needs variant='exact' (its refresh test bounds the exact "
                                 f"block mean), got variant={variant!r}")
        elif update_every is not None and (not isinstance(update_every, int) or isinstance(update_every, bool)
                                           or update_every < 1):
            raise ValueError(f"update_every must be a positive integer, 'auto' or None, got {update_every!r}")
        self.k, self.blocks, self.variant, self.update_every = k, blocks, variant, update_every
        self.damping, self.delta = float(damping), delta

    def init(self, problem, x, generator):
        sizes = resolve_blocks(problem.n, self.k, self.blocks, problem.blocks)
        k = len(sizes)
        z2 = torch.zeros_like(x) if self.variant == "scaled" else None
        st = _BMAState(sizes, torch.zeros(k, k, dtype=x.dtype, device=x.device),
                       torch.zeros(k, dtype=x.dtype, device=x.device), z2)
        st.every = self.every(k)
        return st

    def every(self, k: int) -> int | None:
        """The refresh period for k blocks (``update_every``, or its default); None: the adaptive refresh."""
        if self.update_every is not None:
            return None if self.update_every == "auto" else self.update_every
        if k <= self.AUTO_EVERY_ABOVE_K:
            return 1
        return None if self.variant == "exact" else -(-k // 32)

    def _outgrown(self, s, e: torch.Tensor) -> bool:
        """Whether the statistics, with this step's block sums e added, may exceed (1 + ``REFRESH_TOL``) times
        the factor's (the class docstring's test): ||P||_F of the growth P in the factor's whitened
        coordinates, and the within-block diagonal lam_t against the factor's lam."""
        F, tol = s.F, self.REFRESH_TOL
        c = F._consts()
        mu, W = F.k_eigh()
        z = (W.T @ (e / F.s.sqrt())).mul_(torch.clamp(mu, min=ops.eig_floor(mu.abs().max())).rsqrt())
        if s.P is None or s.P.shape != (F.k, F.k) or s.P.dtype != z.dtype:
            s.P = torch.zeros(F.k, F.k, dtype=z.dtype, device=z.device)
        zz = torch.dot(z, z)
        fro2 = torch.dot(z, s.P @ z).mul_(2).add_(zz * zz)          # ||P + z z^T||_F^2 - ||P||_F^2
        s.P.addr_(z, z)
        lam_t = s.Q / F.s - (s.U.diagonal() - s.Q).div_(c["pairs"]).mul_(c["multi_f"])
        grown = (c["multi"] & (lam_t > (1 + tol) * F.lam)).any()
        s.growth += float(torch.where(grown, math.inf, fro2))      # the step's one host read
        return s.growth > tol * tol

    def update(self, s, x, g, oracle):
        k = len(s.sizes)
        if len(groups := ops.strided_groups(s.sizes)) <= ops.GROUPED_MAX and g.is_contiguous():
            # a few regular families of blocks (equal blocks: one (k, s) view): one pass each, no gathers
            e = ops.grouped_block_sums(g, groups, k, squares=s.Q)
        else:                                          # one segment reduction per statistic
            lengths = torch.tensor(s.sizes, device=g.device)
            e = torch.segment_reduce(g, "sum", lengths=lengths, axis=0)
            s.Q.add_(torch.segment_reduce(g * g, "sum", lengths=lengths, axis=0))
        s.U.addr_(e, e)
        if s.z2 is not None:
            s.z2.addcmul_(g, g)
        # adaptive refresh, steps 1 .. k - 1: K = S^{-1/2} U S^{-1/2} has rank <= t < k, so a stale factor would
        # meet new directions; it is rebuilt every step from the t block sums (a t x t eigenproblem, ``set_thin_k``)
        thin = s.every is None and s.t < k - 1 and (s.t == 0 or s.E is not None)   # E holds every e since t = 0
        if thin:
            if s.E is None or s.E.shape != (k, k) or s.E.dtype != e.dtype:
                s.E = torch.zeros(k, k, dtype=e.dtype, device=e.device)
            s.E[:, s.t] = e
        elif s.E is not None:
            s.E = None
        if (s.F is None or thin or (s.every is None and self._outgrown(s, e))
                or (s.every is not None and s.t % s.every == 0)):
            F = ops.block_mean_from_stats(s.U, s.Q, s.sizes, like=s.F, host=s.host_views())   # the block structure reused
            if thin:
                F.set_thin_k(s.E[:, :s.t + 1] / F.s.sqrt().unsqueeze(1))
            if self.variant == "scaled":
                sz = torch.tensor(s.sizes, dtype=x.dtype, device=x.device)
                r = (s.Q / sz + self.delta).rsqrt()
                F = ops.BlockMean(F.lam * r * r, F.B * torch.outer(r, r), s.sizes)
            s.F, s.growth = F, 0.0
            s.refreshes += 1
            if s.P is not None:
                s.P.zero_()
        s.t += 1
        if self.variant == "exact":
            s.F.remember_sums(g, e)                    # the step's E^T g (a power step whose m is this g)
            return s.F, s
        # Z of this step in a kept buffer (the operator is valid until the next update, like every step's)
        s.zbuf = torch.add(s.z2, self.delta, out=s.zbuf if s.zbuf is not None else torch.empty_like(s.z2))
        return ops.Scaled(_with_lam(s.F, self.damping), s.zbuf.sqrt_()), s


class BlockDiagHessian(Preconditioner):
    name = "block_diag_hessian"

    def __init__(self, k: int | None = None, blocks=None):
        self.k, self.blocks = k, blocks

    def init(self, problem, x, generator):
        return {"sizes": resolve_blocks(problem.n, self.k, self.blocks, problem.blocks)}

    def update(self, s, x, g, oracle):
        return ops.BlockDiagonal([ops.Dense(B) for B in oracle.hessian_blocks(x, s["sizes"])]), s


class LowRankHessian(Preconditioner):
    name = "lowrank_hessian"

    def __init__(self, rank: int = 10, update_every: int = 1, iters: int | None = None):
        if not isinstance(rank, int) or rank < 1:
            raise ValueError(f"rank must be a positive integer, got {rank!r}")
        if not isinstance(update_every, int) or update_every < 1:
            raise ValueError(f"update_every must be a positive integer, got {update_every!r}")
        self.rank, self.update_every, self.iters = rank, update_every, iters

    def init(self, problem, x, generator):
        return _GenState(generator, extra={"t": 0, "op": None})

    def update(self, s, x, g, oracle):
        if s.extra["t"] % self.update_every == 0 or s.extra["op"] is None:
            evals, V = lanczos(lambda v: oracle.hvp(x, v), x.shape[0], self.rank, iters=self.iters,
                               generator=s.generator, dtype=x.dtype, device=x.device)
            s.extra["op"] = ops.LowRank(V, torch.diag(evals.clamp_min(0)))
        s.extra["t"] += 1
        return s.extra["op"], s


class KFAC(Preconditioner):
    name = "kfac"

    def init(self, problem, x, generator):
        return _GenState(generator)

    def update(self, s, x, g, oracle):
        p = oracle.problem
        factors = p.kfac_factors(x, s.generator)
        blocks = [ops.Kronecker(A, G) for A, G in factors]
        op = blocks[0] if len(blocks) == 1 else ops.BlockDiagonal(blocks)
        return _with_lam(op, p.lam), s


_LBFGS_CHUNK = 1 << 17   # entries per chunk of the L-BFGS passes on CPU (the vectors' slices stay in cache)


class LBFGSState:
    """The L-BFGS memory in preallocated buffers (nothing n-sized is allocated after ``__init__``).

    Pairs live in ``memory + 1`` slots of one row-major (2 (memory + 1), n) buffer ``W`` (slot j: s in row
    2j, y in row 2j + 1): ``memory`` active slots (``active``, oldest first) and a spare that receives the
    next pair; an accepted pair makes the spare active and the dropped oldest slot the next spare, a refused
    one leaves the spare as it is. ``xp``, ``gp`` are copies of the previous x and g (the caller's x is never
    held, so a step rule may overwrite it in place).

    The inverse is applied in the compact form of Byrd, Nocedal and Schnabel (1994, eq. 3.1):
    H = gamma I + [S, gamma Y] M [S, gamma Y]^T with M = [[R^-T (D + gamma Y^T Y) R^-1, -R^-T], [-R^-1, 0]],
    R the upper triangle of S^T Y (s_i^T y_j, i no newer than j), D its diagonal, gamma = s^T y / y^T y of
    the newest pair: H v = gamma v + W^T c with c from the 2 (memory + 1) products p = W v and a small
    system, i.e. two passes over ``W`` (the two-loop recursion takes four). The small matrices are kept in
    slot coordinates, with the rows and columns of inactive slots of ``Rinv`` zero: ``Rinv`` = R^-1 (appending
    the newest pair adds a column, dropping the oldest zeroes its row and column: the trailing block of an
    upper-triangular inverse is the inverse of the trailing block), ``YY`` = Y^T Y and ``D``; entries of
    inactive slots in ``YY``, ``D`` and p only ever meet zero coefficients. The new column of R and row
    of Y^T Y come from p of this update and of the previous one: S^T y = S^T g - S^T g_prev (no pass over
    ``W``). On CPU the small algebra runs on NumPy views of the same buffers (no per-operation dispatch
    cost); elsewhere in torch on the device. The only host read per update is the new pair's
    (s^T s, s^T y, y^T y), which the curvature test needs.
    """

    def __init__(self, memory: int, n: int, dtype, device):
        self.memory, self.n, self.dtype, self.device = memory, n, dtype, torch.device(device)
        slots = memory + 1
        kw = {"dtype": dtype, "device": device}
        self.W = torch.zeros(2 * slots, n, **kw)
        self.xp, self.gp, self.q = torch.zeros(n, **kw), torch.zeros(n, **kw), torch.zeros(n, **kw)
        self.P, self.cw = torch.zeros(2, 2 * slots, **kw), torch.zeros(2 * slots, **kw)   # P[cur]: W g of this update
        self.cur = 0
        self.Rinv, self.YY = torch.zeros(slots, slots, **kw), torch.zeros(slots, slots, **kw)
        self.D, self.stats = torch.zeros(slots, **kw), torch.zeros(2, 2, **kw)
        self.host = self.device.type == "cpu"
        # CPU and n above one chunk: the passes run chunk by chunk (each slice of x, g read from memory once)
        self.chunked = self.host and n > _LBFGS_CHUNK
        self.used = 0                      # slots written so far (rows [0, 2 used) of W)
        self._cache: dict = {}
        self.active: list[int] = []        # chronological, oldest first
        self.spare = 0
        self.gamma = 1.0                   # s^T y / y^T y of the newest pair (a Python float)
        self.started = False               # xp, gp hold a previous point
        self.version = 0                   # updates so far (an operator checks it is still current)
        self.refused = 0
        self._pair_blocks = self._solve_blocks = ()
        self._small()

    def _small(self):
        """The small buffers as the small algebra sees them: NumPy views on CPU, the tensors elsewhere."""
        names = ("P", "cw", "Rinv", "YY", "D")
        self.a = {k: getattr(self, k).numpy() if self.host else getattr(self, k) for k in names}

    @property
    def p(self):
        """W g of the last update (entries of the slots it covered)."""
        return self.P[self.cur]

    # -- pairs, oldest first (views of ``W``) ----------------------------------------------------------
    @property
    def S(self) -> list:
        return [self.W[2 * j] for j in self.active]

    @property
    def Y(self) -> list:
        return [self.W[2 * j + 1] for j in self.active]

    @property
    def rho(self) -> list:
        return [1.0 / float(self.D[j]) for j in self.active]

    def _blocks(self, slots) -> tuple:
        """Row ranges of ``W`` that cover ``slots``: in one chunk all written rows (one gemv; on CPU the
        written rows come from cache and leaving one slot out saves nothing), else the maximal runs of
        consecutive slots (the rows that are read from memory are the ones needed)."""
        key = (tuple(slots), self.used)
        out = self._cache.get(key)
        if out is None:
            if not self.chunked:
                runs = [[0, 2 * self.used]] if self.used else []
            else:
                runs = []
                for j in sorted(slots):
                    if runs and runs[-1][1] == 2 * j:
                        runs[-1][1] = 2 * j + 2
                    else:
                        runs.append([2 * j, 2 * j + 2])
            out = tuple(self._views(a, b) for a, b in runs)
            self._cache[key] = out
        return out

    def _views(self, r0: int, r1: int):
        """(r0, r1, W rows, their transpose, P[0] and P[1] entries, cw entries): cached views."""
        key = ("views", r0, r1)
        v = self._cache.get(key)
        if v is None:
            W = self.W[r0:r1]
            v = self._cache[key] = (r0, r1, W, W.T, (self.P[0, r0:r1], self.P[1, r0:r1]), self.cw[r0:r1],
                                    W.numpy() if self.host else None)
        return v

    def _products_of_g(self, g, blocks, cur: int) -> None:
        """P[cur][rows] = W[rows] @ g. On CPU by NumPy's BLAS on the contiguous row blocks (its gemv reads
        W faster than torch's here), else torch."""
        gn = g.numpy() if self.host and g.is_contiguous() and not g.requires_grad else None
        Pn = self.a["P"][cur] if gn is not None else None
        for r0, r1, Wb, _, pb, _, Wn in blocks:
            if gn is not None:
                np.dot(Wn, gn, out=Pn[r0:r1])
            else:
                torch.mv(Wb, g, out=pb[cur])

    # -- the small algebra (NumPy arrays on CPU, tensors elsewhere: operators and slicing only) ---------
    def _append(self, j: int, ys: float, yy: float, r, u) -> None:
        """Make slot j the newest pair (dropping the oldest when full); ``r``, ``u``: s_i^T y_j and y_i^T y_j
        for every slot i (entries of inactive slots are ignored)."""
        a = self.a
        Rinv, YY = a["Rinv"], a["YY"]
        if len(self.active) == self.memory:
            o = self.active.pop(0)
            Rinv[o, :] = 0
            Rinv[:, o] = 0
            self.spare = o
        else:
            self.spare = len(self.active) + 1
        col = Rinv @ r                          # R^-1 r over the old pairs (Rinv's column j is zero)
        Rinv[:, j] = col * (-1.0 / ys)
        Rinv[j, j] = 1.0 / ys
        YY[:, j] = u
        YY[j, :] = u
        YY[j, j] = yy
        a["D"][j] = ys
        self.active.append(j)
        self.gamma = ys / yy

    def coefficients(self, p):
        """c (rows of ``W``, zero on inactive slots) with H v = gamma v + W^T c, from p = W v."""
        a, g = self.a, self.gamma
        Rinv = a["Rinv"]
        alpha = Rinv @ p[0::2]
        b = a["D"] * alpha + g * (a["YY"] @ alpha - p[1::2])
        cw = a["cw"]
        cw[0::2] = Rinv.T @ b
        cw[1::2] = alpha * (-g)
        return self.cw

    # -- n-sized passes ----------------------------------------------------------------------------------
    def _chunks(self):
        n, c = self.n, _LBFGS_CHUNK
        return [(i, min(n, i + c)) for i in range(0, n, c)]

    def products(self, v, blocks, out):
        """out[rows] = W[rows] @ v for the row ranges ``blocks`` (other entries untouched)."""
        for r0, r1, Wb, *_ in blocks:
            torch.mv(Wb, v, out=out[r0:r1])
        return out

    def apply(self, v, cw, alpha: float, x, out):
        """x + alpha (gamma v + W^T cw) over the active rows, into ``out`` (``x`` is ``out``: in place; ``x``
        None: alpha (gamma v + W^T cw)); chunked on CPU so each slice of x and v is read and written once.
        ``cw`` is the state's ``cw`` (its cached row views are used)."""
        blocks, ag = self._solve_blocks, alpha * self.gamma
        if not self.chunked:
            if x is None:
                torch.mul(v, ag, out=out)
            else:
                out.add_(v, alpha=ag)
            for _, _, _, WbT, _, cb, _ in blocks:
                out.addmv_(WbT, cb, alpha=alpha)
            return out
        for c0, c1 in self._chunks():
            o, vc = out[c0:c1], v[c0:c1]
            if x is None:
                torch.mul(vc, ag, out=o)
            else:
                o.add_(vc, alpha=ag)
            for _, _, _, WbT, _, cb, _ in blocks:
                o.addmv_(WbT[c0:c1], cb, alpha=alpha)
        return out

    def update(self, x, g) -> None:
        """Form the pair (x - xp, g - gp) in the spare slot, keep it if y^T s > 1e-12 ||s|| ||y||, store x, g
        as the next xp, gp and p = W g over the slots that stay active (the solve of g reuses it)."""
        self.version += 1
        if not self.started:
            self.xp.copy_(x)
            self.gp.copy_(g)
            self.started = True
            self._solve_blocks = ()
            return
        self.cur = cur = 1 - self.cur          # this update's W g goes into P[cur], the previous one's is P[1 - cur]
        j, W, xp, gp, stats = self.spare, self.W, self.xp, self.gp, self.stats
        self.used = max(self.used, j + 1)
        full = len(self.active) == self.memory
        o = self.active[0] if full else None
        # slots whose products with g the update and the solve need (the oldest is dropped if the pair is kept)
        blocks = self._blocks([i for i in self.active if i != o] + [j])
        s_row, y_row, pair = W[2 * j], W[2 * j + 1], W[2 * j:2 * j + 2]
        if not self.chunked:
            torch.sub(x, xp, out=s_row)
            xp.copy_(x)
            torch.sub(g, gp, out=y_row)
            gp.copy_(g)
            stats.addmm_(pair, pair.T, beta=0.0)
        else:
            for k, (c0, c1) in enumerate(self._chunks()):
                xc, xpc, gc, gpc = x[c0:c1], xp[c0:c1], g[c0:c1], gp[c0:c1]
                torch.sub(xc, xpc, out=s_row[c0:c1])
                xpc.copy_(xc)
                torch.sub(gc, gpc, out=y_row[c0:c1])
                gpc.copy_(gc)
                pc = pair[:, c0:c1]
                beta = 0.0 if k == 0 else 1.0        # beta = 0: the buffers' old contents are ignored
                stats.addmm_(pc, pc.T, beta=beta)
        self._products_of_g(g, blocks, cur)
        (ss, sy), (_, yy) = stats.tolist()
        a = self.a
        if sy > 1e-12 * math.sqrt(ss) * math.sqrt(yy):
            P = a["P"]
            d = P[cur] - P[1 - cur]                # S^T y and Y^T y of the stored pairs, from W g - W g_prev
            self._append(j, sy, yy, d[0::2], d[1::2])
        else:
            self.refused += 1
            if not math.isfinite(ss + sy + yy):
                pair.zero_()                       # a spare's rows only meet zero coefficients: keep them finite
            if o is not None and self.chunked:     # the oldest pair stays: its products with g
                self.products(g, (self._views(2 * o, 2 * o + 2),), self.P[cur])
        self._solve_blocks = self._blocks(self.active)


class LBFGSInverse(ops.Operator):
    """H^{-1} ~= the L-BFGS inverse-Hessian approximation over the pairs of an ``LBFGSState``; ``solve``
    applies it (compact form, equal to the two-loop recursion up to roundoff), ``solve_add_`` writes
    x + alpha H^{-1} g into x without an n-sized temporary.

    The operator is a view of the state: it is valid until the next ``LBFGS.update`` (then it raises). The
    products W g of the update's g are reused by the solve of that g; the first such solve returns the
    state's buffer ``q`` (overwritten by the next update's first solve: the step rules use it within the
    step), any other solve a fresh tensor. ``mv`` is not provided; ``to_dense`` inverts the solve (tests).
    Memory O(n m).
    """

    def __init__(self, state: LBFGSState, g=None):
        import weakref
        self.state, self.n, self.dtype, self.device = state, state.n, state.dtype, state.device
        self._version = state.version
        self._g = None if g is None else weakref.ref(g)
        self._g_version = None if g is None else g._version
        self._q_used = False

    @classmethod
    def from_pairs(cls, S: list, Y: list, memory: int | None = None) -> "LBFGSInverse":
        """The operator of the pairs (s_i, y_i), oldest first, all kept (no curvature test), the last
        ``memory`` (default: all) active; for tests and direct use."""
        n, dtype, device = S[0].shape[0], S[0].dtype, S[0].device
        st = LBFGSState(memory or len(S), n, dtype, device)
        for s, y in zip(S, Y):
            j = st.spare
            st.W[2 * j].copy_(s)
            st.W[2 * j + 1].copy_(y)
            w = st.W @ st.W[2 * j + 1]
            w_ = w.numpy() if st.host else w
            st._append(j, float(torch.dot(s, y)), float(torch.dot(y, y)), w_[0::2], w_[1::2])
        st.used = min(len(S), st.memory + 1)
        st._solve_blocks = st._blocks(st.active)
        st.started, st.version = True, st.version + 1
        return cls(st)

    @property
    def gamma(self) -> float:
        return self.state.gamma

    def _current(self):
        if self.state.version != self._version:
            raise RuntimeError("this L-BFGS operator was superseded by a later update of its state")
        return self.state

    def _coefficients(self, st, v):
        """(c, reused): c with H v = gamma v + W^T c; reused when v is the update's g (its products kept)."""
        g = self._g() if self._g is not None else None
        if v is g and v._version == self._g_version:
            return st.coefficients(st.a["P"][st.cur]), True
        p = torch.zeros(2 * (st.memory + 1), dtype=st.dtype, device=st.device)
        st.products(v, st._solve_blocks, p)
        return st.coefficients(p.numpy() if st.host else p), False

    def _usable(self, v, x=None) -> bool:
        ok = v.ndim == 1 and v.is_contiguous() and v.shape[0] == self.n
        return ok and (x is None or (x.ndim == 1 and x.is_contiguous() and x.shape == v.shape and x.dtype == v.dtype))

    def solve(self, v, shift=0.0):
        if not isinstance(shift, (int, float)) or shift != 0:
            raise ValueError("L-BFGS applies its inverse only without a shift (use step='armijo' or 'fixed')")
        v = self._check_v(v)
        st = self._current()
        if v.ndim == 2:
            return torch.stack([self.solve(v[:, i]) for i in range(v.shape[1])], dim=1)
        if not v.is_contiguous():
            v = v.contiguous()
        if not st.active:
            return v.clone()
        cw, reused = self._coefficients(st, v)
        if reused and not self._q_used:
            self._q_used = True
            out = st.q
        else:
            out = torch.empty_like(v)
        return st.apply(v, cw, 1.0, None, out)

    def solve_add_(self, x, v, alpha, shift=0.0):
        if not isinstance(shift, (int, float)) or shift != 0:
            raise ValueError("L-BFGS applies its inverse only without a shift (use step='armijo' or 'fixed')")
        v = self._check_v(v)
        st = self._current()
        if not self._usable(v, x):
            return super().solve_add_(x, v, alpha, shift)
        if not st.active:
            return x.add_(v, alpha=alpha)
        cw, _ = self._coefficients(st, v)
        return st.apply(v, cw, float(alpha), x, x)

    def mv(self, v):
        raise NotImplementedError("L-BFGS provides the inverse only (solve)")

    def power(self, v, p, shift=0.0):
        if p == -1:
            return self.solve(v, shift)
        raise NotImplementedError("L-BFGS provides the inverse only (p = -1)")

    @property
    def nbytes(self):
        return tensor_bytes(self.state)

    def to_dense(self):
        eye = torch.eye(self.n, dtype=self.dtype, device=self.device)
        Hinv = torch.stack([self.solve(eye[:, i].contiguous()) for i in range(self.n)], dim=1)
        return torch.linalg.inv(Hinv)


class LBFGS(Preconditioner):
    """L-BFGS: the last ``memory`` pairs (s, y) = (x_k - x_{k-1}, g_k - g_{k-1}) with y^T s > 1e-12 ||s|| ||y||
    (others are refused: the memory is kept as it is); state an ``LBFGSState`` (O(n m), preallocated)."""
    name = "lbfgs"

    def __init__(self, memory: int = 10):
        if not isinstance(memory, int) or memory < 1:
            raise ValueError(f"memory must be a positive integer, got {memory!r}")
        self.memory = memory

    def init(self, problem, x, generator):
        return LBFGSState(self.memory, x.shape[0], x.dtype, x.device)

    def update(self, s, x, g, oracle):
        s.update(x, g)
        return LBFGSInverse(s, g), s


__all__ = ["Preconditioner", "IdentityP", "AdamP", "AdaGradDiag", "AdaGradFull", "Hutchinson", "ExactHessian",
           "FisherEmpirical", "FisherSampled", "UniformDirection", "LowRankPQ", "HessianBMA", "AdaGradBMA",
           "BlockDiagHessian", "LowRankHessian", "KFAC", "LBFGS", "LBFGSInverse", "LBFGSState", "Shifted", "tensor_bytes",
           "resolve_blocks"]
