"""Structured linear operators: the curvature matrices D of the preconditioned methods.

Every operator is an n x n matrix ``D`` that is never formed. The interface (base class ``Operator``):

- ``n``, ``dtype``, ``device``;
- ``mv(v)`` = D v;
- ``solve(v, shift=0.0)`` = (D + shift I)^{-1} v;
- ``power(v, p, shift=0.0)`` = (D + shift I)^p v for symmetric D. ``p = 1`` is ``mv(v) + shift v`` and
  ``p = -1`` is ``solve(v, shift)`` exactly (no clamping); ``p = 0`` returns a copy of v. For any other
  ``p`` the eigenvalues t of D + shift I are clamped first: at 0 before a positive non-integer power, and
  at the floor ``eig_floor(scale)`` = max(eps(dtype) * scale, sqrt(tiny(dtype))) before a negative power,
  where ``scale`` is the largest |t| of the operator (of the block, for ``BlockDiagonal``). So a PSD
  operator never gives NaN/inf, and a singular one gives large but finite values;
- ``nbytes``: bytes of every tensor the operator holds (cached factorizations included);
- ``to_dense()``: the n x n matrix (tests and tiny problems only), built independently of ``mv``.

``v`` is a vector (n,) or a matrix (n, m) of column vectors. ``shift`` is a Python number or a 0-d tensor
(step rules pass tensors; no operator calls ``.item()`` on it). Validation raises ``ValueError`` naming the
argument; value checks that would need a device-to-host copy (positivity, symmetry) are documented, not run.

Classes and costs (vector right-hand side; a matrix with m columns multiplies the O(n ...) terms by m):

- ``Scalar(n, c)`` / ``Identity(n)``: D = c I. Memory O(1); mv, solve, power O(n).
- ``Diagonal(d)``: D = diag(d). Memory O(n); mv, solve, power O(n).
- ``LowRank(U, C, base)``: D = base I + U C U^T, U n x r. Memory O(n r); mv O(n r); solve O(n r + r^3)
  (+ O(n r^2) once for U^T U); power O(n r) (+ O(n r^2) once for thin QR and an r x r eigh); ``min_eig``.
- ``SparseLowRank(J, Uc, C, n, base)``: ``LowRank`` whose U is nonzero only on the m rows J. Memory O(m r);
  mv O(n + m r); solve O(n + m r + r^3) (solve_add_: one pass over x).
- ``RankOne(a, b, base)``: D = base I + a b^T, non-symmetric. Memory O(n); mv, solve (Sherman-Morrison) O(n);
  power only for p in {0, 1, -1}.
- ``Dense(M)``: D = M. Memory O(n^2); mv O(n^2); solve O(n^3); power O(n^2) (+ O(n^3) once for eigh).
- ``BlockDiagonal(blocks)``: D = diag(D_1, ..., D_k) of any operators. Memory and costs: sums over blocks.
- ``BlockMean(lam, B, sizes)``: D = Lambda_bar + B_bar (k blocks). Memory O(k^2) + an n-long int64 index;
  mv O(n + k^2); solve and power O(n + k^3).
- ``Kronecker(A, B)``: D = A kron B, A p x p, B q x q, n = p q. Memory O(p^2 + q^2); mv O(n (p + q));
  solve, power O(n (p + q)) (+ O(p^3 + q^3) once for the eigh of both factors).
- ``Scaled(op, z)``: D = Z op Z, Z = diag(z). Memory and costs: op's plus O(n); solve only with shift 0;
  power is the scaled power Z^p op^p Z^p (exact only when Z and op commute).

"once" marks a factorization cached on the operator (Gram matrix, thin QR + r x r eigh, eigh of the factors)
and reused by later calls with any shift or power.

Pure functions: ``push_through_solve``, ``woodbury_solve``, ``sherman_morrison_solve`` (the low-rank solves),
``block_sums`` (E^T v), ``expand`` (E w), ``block_index``, ``block_mean_approximation`` (Frobenius-optimal
block mean of a dense matrix), ``block_mean_from_stats`` (the same from AdaGrad block statistics),
``block_mean_inverse_formula`` and ``block_mean_inv_sqrt_formula`` (the two closed forms of docs/METHODS.md
section 3), ``eig_floor``.
"""
from __future__ import annotations

import functools
import math
import weakref
from numbers import Real
from typing import Sequence

import numpy as np
import torch

from .problems.base import check_partition

__all__ = [
    "Operator", "Scalar", "Identity", "Diagonal", "LowRank", "SparseLowRank", "RankOne", "Dense", "BlockDiagonal",
    "BlockMean", "Kronecker", "Scaled",
    "push_through_solve", "woodbury_solve", "sherman_morrison_solve",
    "block_index", "block_sums", "expand", "block_mean_approximation", "block_mean_from_stats",
    "block_mean_inverse_formula", "block_mean_inv_sqrt_formula", "eig_floor",
]


# --------------------------------------------------------------------------------------------------
# validation helpers
# --------------------------------------------------------------------------------------------------
def _same_device(a: torch.device, b: torch.device) -> bool:
    a, b = torch.device(a), torch.device(b)
    return a.type == b.type and (a.index is None or b.index is None or a.index == b.index)


def _check_tensor(t, name: str, *, ndim: int | None = None, shape: tuple | None = None,
                  like: torch.Tensor | None = None, like_name: str | None = None) -> torch.Tensor:
    """Return ``t`` after checking it is a real floating tensor of the given rank/shape, matching ``like``."""
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if not t.is_floating_point():
        raise ValueError(f"{name} must have a real floating dtype (float32/float64), got {t.dtype}")
    if ndim is not None and t.ndim != ndim:
        raise ValueError(f"{name} must be a {ndim}-D tensor, got shape {tuple(t.shape)}")
    if shape is not None and tuple(t.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {tuple(t.shape)}")
    if like is not None:
        other = like_name or "the other factors"
        if t.dtype != like.dtype:
            raise ValueError(f"{name} has dtype {t.dtype} but {other} has {like.dtype}; all factors must share one dtype")
        if not _same_device(t.device, like.device):
            raise ValueError(f"{name} is on {t.device} but {other} is on {like.device}; all factors must share one device")
    return t


def _check_square(t, name: str, like: torch.Tensor | None = None, like_name: str | None = None) -> torch.Tensor:
    t = _check_tensor(t, name, ndim=2, like=like, like_name=like_name)
    if t.shape[0] != t.shape[1]:
        raise ValueError(f"{name} must be square, got shape {tuple(t.shape)}")
    return t


@functools.lru_cache(maxsize=256)
def _valid_sizes(sizes: tuple) -> tuple[int, ...]:
    return check_partition(sizes, sum(int(s) for s in sizes), "sizes")


def _check_sizes(sizes, name: str = "sizes", k: int | None = None) -> tuple[int, ...]:
    """Validate a partition given without n (n = its sum); optionally require k blocks. A tuple already
    validated is answered from a cache (operators are rebuilt every step with the same partition)."""
    if type(sizes) is tuple:
        try:
            valid = _valid_sizes(sizes)
        except (TypeError, ValueError):
            valid = None                      # the path below raises with the caller's name
        if valid is not None and (k is None or len(valid) == k):
            return valid
    if isinstance(sizes, torch.Tensor):
        sizes = sizes.tolist()
    try:
        total = sum(int(s) for s in sizes)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a sequence of positive integer block sizes, got {sizes!r}") from None
    sizes = check_partition(sizes, total, name)
    if k is not None and len(sizes) != k:
        raise ValueError(f"{name} must have {k} blocks (one per entry of lam / row of B), got {len(sizes)}: {sizes!r}")
    return sizes


def _as_scalar(x, name: str, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A Python number or 0-d tensor -> 0-d tensor of dtype on device."""
    if isinstance(x, torch.Tensor):
        if x.ndim != 0:
            raise ValueError(f"{name} must be a Python number or a 0-d tensor, got shape {tuple(x.shape)}")
        return x.to(dtype=dtype, device=device)
    if isinstance(x, bool) or not isinstance(x, Real):
        raise ValueError(f"{name} must be a Python number or a 0-d tensor, got {type(x).__name__}")
    if not math.isfinite(float(x)):
        raise ValueError(f"{name} must be finite, got {x!r}")
    return torch.tensor(float(x), dtype=dtype, device=device)


def _check_p(p) -> float:
    if isinstance(p, bool) or not isinstance(p, Real) or not math.isfinite(float(p)):
        raise ValueError(f"p must be a finite Python number, got {p!r}")
    return float(p)


def _is_zero(shift) -> bool:
    return not isinstance(shift, torch.Tensor) and shift == 0


def _col(d: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Broadcast a length-n vector against v of shape (n,) or (n, m)."""
    return d if v.ndim == 1 else d.unsqueeze(-1)


def _nbytes_of(obj, seen: set) -> int:
    if isinstance(obj, torch.Tensor):
        key = (obj.data_ptr(), obj.numel(), obj.dtype)
        if key in seen:
            return 0
        seen.add(key)
        return obj.numel() * obj.element_size()
    if isinstance(obj, Operator):
        return sum(_nbytes_of(x, seen) for x in vars(obj).values())
    if isinstance(obj, (list, tuple)):
        return sum(_nbytes_of(x, seen) for x in obj)
    return 0


# --------------------------------------------------------------------------------------------------
# eigenvalue powers
# --------------------------------------------------------------------------------------------------
def eig_floor(scale: torch.Tensor) -> torch.Tensor:
    """Floor applied to eigenvalues before a negative power: max(eps(dtype) * scale, sqrt(tiny(dtype))).

    ``scale`` is a 0-d tensor (the largest |eigenvalue|). Eigenvalues below eps * scale are roundoff for
    a symmetric eigensolver; sqrt(tiny) keeps t^p finite for |p| <= 2 when the whole operator is zero.
    """
    fi = torch.finfo(scale.dtype)
    return torch.clamp(scale * fi.eps, min=math.sqrt(fi.tiny))


# r x r (k x k) algebra of at most this size on CPU runs in NumPy (``_host_small``). Block-mean refresh and
# power -1/2, NumPy / torch on 1 thread (``benchmarks/bench_floor.py small``, two runs): k = 8 0.53 / 0.52,
# k = 32 0.85 / 0.76, k = 64 0.90 / 1.04 (parity)
HOST_SMALL_MAX = 32


def _host_small(r: int, *ts: torch.Tensor) -> bool:
    """Whether the r x r algebra on ``ts`` goes through NumPy: CPU tensors, r <= ``HOST_SMALL_MAX``, no
    autograd. NumPy shares their memory (no copy) and dispatches a small product in well under a
    microsecond, a torch call in 2-4 us; the factorizations are LAPACK in both."""
    return r <= HOST_SMALL_MAX and all(t.device.type == "cpu" and not t.requires_grad for t in ts)


def _pow_eigs(t: torch.Tensor, p: float, scale: torch.Tensor | None = None) -> torch.Tensor:
    """t^p elementwise with the clamping rule of the module docstring (scale defaults to max |t|)."""
    if p == 0:
        return torch.ones_like(t)
    if p > 0:
        return t ** int(p) if float(p).is_integer() else t.clamp(min=0) ** p
    if scale is None:
        scale = t.abs().max()
    return torch.maximum(t, eig_floor(scale)) ** p


def _eig_apply(W: torch.Tensor, h: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """W diag(h) W^T v."""
    return W @ (_col(h, v) * (W.T @ v))


# --------------------------------------------------------------------------------------------------
# base class
# --------------------------------------------------------------------------------------------------
class Operator:
    """An n x n linear operator D; see the module docstring for the interface and the power rule."""

    n: int
    dtype: torch.dtype
    device: torch.device

    def _check_v(self, v, name: str = "v") -> torch.Tensor:
        if not isinstance(v, torch.Tensor):
            raise ValueError(f"{name} must be a torch.Tensor of shape ({self.n},) or ({self.n}, m), got {type(v).__name__}")
        if v.ndim not in (1, 2) or v.shape[0] != self.n:
            raise ValueError(f"{name} must have shape ({self.n},) or ({self.n}, m), got {tuple(v.shape)}")
        if v.dtype != self.dtype:
            raise ValueError(f"{name} has dtype {v.dtype}, the operator uses {self.dtype}")
        if not _same_device(v.device, self.device):
            raise ValueError(f"{name} is on {v.device}, the operator is on {self.device}")
        return v

    def _shift(self, shift) -> torch.Tensor | float:
        """Validate ``shift``; Python numbers stay Python floats (no device copy)."""
        if isinstance(shift, torch.Tensor):
            if shift.ndim != 0:
                raise ValueError(f"shift must be a Python number or a 0-d tensor, got shape {tuple(shift.shape)}")
            if not (shift.device.type == "cpu" or _same_device(shift.device, self.device)):
                raise ValueError(f"shift is on {shift.device}, the operator is on {self.device}")
            return shift.to(self.dtype)
        if isinstance(shift, bool) or not isinstance(shift, Real) or not math.isfinite(float(shift)):
            raise ValueError(f"shift must be a finite Python number or a 0-d tensor, got {shift!r}")
        return float(shift)

    def mv(self, v: torch.Tensor) -> torch.Tensor:
        """D v."""
        raise NotImplementedError

    def solve(self, v: torch.Tensor, shift=0.0) -> torch.Tensor:
        """(D + shift I)^{-1} v."""
        raise NotImplementedError

    def power(self, v: torch.Tensor, p: float, shift=0.0) -> torch.Tensor:
        """(D + shift I)^p v: p = 1 -> mv, p = -1 -> solve (exact), p = 0 -> v, else ``_power`` (clamped)."""
        p = _check_p(p)
        shift = self._shift(shift)
        if p == 1:
            out = self.mv(v)
            return out if _is_zero(shift) else out + shift * v
        if p == -1:
            return self.solve(v, shift)
        v = self._check_v(v)
        if p == 0:
            return v.clone()
        return self._power(v, p, shift)

    def _power(self, v: torch.Tensor, p: float, shift) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__} does not implement power p={p}")

    def solve_add_(self, x: torch.Tensor, v: torch.Tensor, alpha: float, shift=0.0) -> torch.Tensor:
        """x += alpha (D + shift I)^{-1} v in place (``x`` of shape (n,)); returns ``x``. The step rules' hot
        path when they own the iterate. Default: ``solve`` then one in-place axpy; operators whose solve has
        an n-vector expansion (``LowRank``, ``Diagonal``) write it into ``x`` without an n-sized temporary."""
        return x.add_(self.solve(v, shift), alpha=alpha)

    @property
    def nbytes(self) -> int:
        """Bytes of all tensors held (shared tensors counted once)."""
        return _nbytes_of(self, set())

    def to_dense(self) -> torch.Tensor:
        """The n x n matrix (tests and tiny problems only)."""
        return self.mv(torch.eye(self.n, dtype=self.dtype, device=self.device))

    def __matmul__(self, v: torch.Tensor) -> torch.Tensor:
        return self.mv(v)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(n={self.n}, dtype={self.dtype}, device={self.device})"


# --------------------------------------------------------------------------------------------------
# scalar, identity, diagonal
# --------------------------------------------------------------------------------------------------
class Scalar(Operator):
    """D = c I. ``c``: Python number or 0-d tensor (converted to dtype/device). Memory O(1), all ops O(n)."""

    def __init__(self, n: int, c=1.0, dtype: torch.dtype | None = None, device=None):
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be a positive integer, got {n!r}")
        if dtype is None:
            dtype = c.dtype if isinstance(c, torch.Tensor) and c.is_floating_point() else torch.float64
        if device is None:
            device = c.device if isinstance(c, torch.Tensor) else torch.device("cpu")
        if not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
            raise ValueError(f"dtype must be a real floating torch.dtype, got {dtype!r}")
        self.n = n
        self.c = _as_scalar(c, "c", dtype, torch.device(device))
        self.dtype, self.device = dtype, self.c.device
        # c as a Python number when given as one: the step rules' hot path divides by it without a device op
        self.py_c = float(c) if isinstance(c, Real) and not isinstance(c, bool) else None

    def mv(self, v):
        return self.c * self._check_v(v)

    def solve(self, v, shift=0.0):
        return self._check_v(v) / (self.c + self._shift(shift))

    def _power(self, v, p, shift):
        t = self.c + shift
        return _pow_eigs(t, p, t.abs()) * v

    def to_dense(self):
        return self.c * torch.eye(self.n, dtype=self.dtype, device=self.device)


class Identity(Scalar):
    """D = I (``Scalar`` with c = 1)."""

    def __init__(self, n: int, dtype: torch.dtype = torch.float64, device="cpu"):
        super().__init__(n, 1.0, dtype, device)


class Diagonal(Operator):
    """D = diag(d), d of shape (n,). Memory O(n); mv, solve, power O(n). ``extremes`` (optional attribute, set
    by the diagonal accumulators): the 0-d (min, max) of d, used by ``power_add`` instead of a min/max pass."""

    def __init__(self, d: torch.Tensor):
        self.d = _check_tensor(d, "d", ndim=1)
        if d.shape[0] < 1:
            raise ValueError("d must have at least one entry, got shape (0,)")
        self.n, self.dtype, self.device = d.shape[0], d.dtype, d.device

    def mv(self, v):
        v = self._check_v(v)
        return _col(self.d, v) * v

    def solve(self, v, shift=0.0):
        v = self._check_v(v)
        return v / _col(self.d + self._shift(shift), v)

    def _power(self, v, p, shift):
        return _col(_pow_eigs(self.d + shift, p), v) * v

    def power_diag(self, p: float, shift, out: torch.Tensor) -> torch.Tensor:
        """The diagonal of (D + shift I)^p written into ``out`` (n,), with ``power``'s rule (p = -1 exact; other
        p < 0 clamped at the floor ``eig_floor(max |d + shift|)``): no allocation of size n, no host read. For the
        step rules' hot path (``power(v, p, shift) == power_diag(p, shift, out) * v`` up to roundoff)."""
        p = _check_p(p)
        torch.add(self.d, self._shift(shift), out=out)
        if p == 0:
            return out.fill_(1.0)
        if p == -1:                      # as ``power``: the exact inverse, no clamping
            return out.reciprocal_()
        if p > 0:
            if float(p).is_integer():
                return out.pow_(int(p))
            return out.clamp_(min=0).pow_(p)
        lo, hi = torch.aminmax(out)          # max |t| in one pass (vector_norm(ord=inf) is ~10x slower on CPU)
        floor = eig_floor(torch.maximum(hi, -lo))
        if out.device.type != "cpu" or bool(lo < floor):   # on CPU the test is free and saves a pass
            torch.maximum(out, floor, out=out)
        return out.pow_(p)   # pow_(-0.5) is 1.3x faster than rsqrt_ and 4x faster than sqrt on CPU (float64)

    def solve_add_(self, x, v, alpha, shift=0.0):
        v = self._check_v(v)
        shift = self._shift(shift)
        if v.ndim == 1 and x.shape == v.shape and _is_zero(shift):
            return x.addcdiv_(v, self.d, value=alpha)          # one pass, no temporary
        return super().solve_add_(x, v, alpha, shift)

    CHUNK = 1 << 16   # elements per chunk of ``power_add`` on CPU (a buffer that stays in cache)

    def power_add(self, x: torch.Tensor, v: torch.Tensor, p: float, shift, alpha: float,
                  out: torch.Tensor) -> torch.Tensor:
        """out = x + alpha (D + shift I)^p v for v, x, out of shape (n,), with ``power_diag``'s rule (p = -1
        exact; other p < 0 clamped at ``eig_floor(max |d + shift|)``); ``out`` may be ``x`` (in place).

        On CPU the diagonal power is formed chunk by chunk in a buffer of ``CHUNK`` entries, so no n-sized
        temporary is allocated and the powered diagonal never travels through memory (AdaGrad, Adam);
        elsewhere one n-sized buffer. Equal to ``x + alpha * power_diag(p, shift, buf) * v`` up to roundoff."""
        p = _check_p(p)
        shift = self._shift(shift)
        n = self.n
        floor, clamp = None, False
        if p < 0 and p != -1:
            ext = getattr(self, "extremes", None)   # (min, max) of d when its producer took them in passing
            if ext is not None and isinstance(ext[0], float) and not isinstance(shift, torch.Tensor):
                # CPU, extremes known as numbers: the floor in Python (no tensor ops for scalars)
                lo, hi = ext[0] + shift, ext[1] + shift
                fi = torch.finfo(self.dtype)
                floor = max(max(hi, -lo) * fi.eps, math.sqrt(fi.tiny))
                clamp = lo < floor
            else:
                lo, hi = torch.aminmax(self.d) if ext is None else ext
                lo, hi = lo + shift, hi + shift
                floor = eig_floor(torch.maximum(hi, -lo))
                clamp = self.device.type != "cpu" or bool(lo < floor)
        c = min(n, self.CHUNK) if self.device.type == "cpu" else n
        buf = torch.empty(c, dtype=self.dtype, device=self.device)
        # p = -1: v / t (exact, one fused pass); other p: t^p, then a multiply. For p = -1/2, t.pow_(-0.5)
        # (within 1 ulp of 1 / sqrt(t)) is ~4x faster than torch.sqrt in float64 on CPU (the sqrt kernel is a
        # correctly rounded software routine there) and ~1.3x faster than rsqrt_
        divide = p == -1.0
        whole = c == n               # one chunk: the tensors themselves, no slicing
        for o in range(0, n, c):
            e = min(n, o + c)
            b = buf if whole else buf[:e - o]
            dc, xc, vc, oc = (self.d, x, v, out) if whole else (self.d[o:e], x[o:e], v[o:e], out[o:e])
            torch.add(dc, shift, out=b)
            if p == 0:
                b.fill_(1.0)
            elif p > 0:
                if float(p).is_integer():
                    b.pow_(int(p))
                else:
                    b.clamp_(min=0).pow_(p)
            elif p != -1:
                if clamp:
                    if isinstance(floor, float):
                        b.clamp_(min=floor)
                    else:
                        torch.maximum(b, floor, out=b)
                b.pow_(p)
            if divide:
                torch.addcdiv(xc, vc, b, value=alpha, out=oc)
            else:
                torch.addcmul(xc, b, vc, value=alpha, out=oc)
        return out

    def to_dense(self):
        return torch.diag(self.d)


# --------------------------------------------------------------------------------------------------
# low rank and rank one
# --------------------------------------------------------------------------------------------------
def push_through_solve(U: torch.Tensor, C: torch.Tensor, c, v: torch.Tensor,
                       gram: torch.Tensor | None = None) -> torch.Tensor:
    """(c I + U C U^T)^{-1} v = (1/c) [v - U (c I_r + C U^T U)^{-1} C U^T v]   (push-through identity).

    Needs no inverse of C (C may be singular or indefinite); one r x r solve. Requires c != 0 and
    c I_r + C U^T U invertible, i.e. c I + U C U^T invertible (else inf/nan). ``gram`` = U^T U if known.
    Cost O(n r) (+ O(n r^2) for the Gram matrix), memory O(r^2) extra.
    """
    r = U.shape[1]
    G = U.T @ U if gram is None else gram
    X = C @ G
    X = X + c * torch.eye(r, dtype=U.dtype, device=U.device)
    y = torch.linalg.solve(X, C @ (U.T @ v))
    return (v - U @ y) / c


def woodbury_solve(U: torch.Tensor, C: torch.Tensor, c, v: torch.Tensor) -> torch.Tensor:
    """(c I + U C U^T)^{-1} v = v/c - U (C^{-1} + U^T U / c)^{-1} U^T v / c^2   (Woodbury; C invertible).

    The textbook form of docs/METHODS.md section 2; ``LowRank`` uses ``push_through_solve`` instead, which
    also covers singular C. Cost O(n r + r^3).
    """
    inner = torch.linalg.inv(C) + (U.T @ U) / c
    return v / c - U @ torch.linalg.solve(inner, U.T @ v) / (c * c)


def sherman_morrison_solve(a: torch.Tensor, b: torch.Tensor, c, v: torch.Tensor) -> torch.Tensor:
    """(c I + a b^T)^{-1} v = (v - a (b^T v) / (c + b^T a)) / c   (Sherman-Morrison). O(n).

    Singular when c = 0 or c + b^T a = 0: the result is then inf/nan (no check, no host sync).
    """
    bv = b @ v
    coef = bv / (c + b @ a)
    a_col = a if v.ndim == 1 else a.unsqueeze(-1)
    return (v - a_col * coef) / c


class _LazyBase:
    """``base`` of an operator with ``dtype`` and ``device``: a finite Python number is kept as a float and
    the 0-d tensor made on first use only (``torch.tensor`` costs several microseconds, and these operators
    are built every step); a 0-d tensor is converted at once."""

    def _set_base(self, base) -> None:
        if isinstance(base, Real) and not isinstance(base, bool) and math.isfinite(base):
            self._base_py, self._base = float(base), None
        else:
            self._base_py, self._base = None, _as_scalar(base, "base", self.dtype, self.device)

    @property
    def base(self) -> torch.Tensor:
        if self._base is None:
            self._base = torch.tensor(self._base_py, dtype=self.dtype, device=self.device)
        return self._base


class LowRank(_LazyBase, Operator):
    """D = base I + U C U^T with U (n x r), C (r x r) symmetric (assumed; only (C + C^T)/2 enters ``power``).

    - ``mv``: O(n r).
    - ``solve(v, shift)``: push-through form of Woodbury with c = base + shift (see ``push_through_solve``);
      C may be singular or indefinite, c must be nonzero. The Gram matrix U^T U is cached (O(n r^2) once).
    - ``power(v, p, shift)``: thin QR U = Q R and eigh of R C R^T = V diag(mu) V^T (cached, O(n r^2) once),
      then D^p v = c^p (v - W W^T v) + W diag((c + mu)^p) W^T v with W = Q V, c = base + shift; O(n r) per call.
    - ``min_eig(shift)``: smallest eigenvalue of D + shift I from the same r x r eigenproblem (and c when r < n).
    Memory O(n r) (U and the cached W), no n x n matrix.
    """

    def __init__(self, U: torch.Tensor, C: torch.Tensor, base=0.0, gram: torch.Tensor | None = None):
        U = _check_tensor(U, "U", ndim=2)
        n, r = U.shape
        if n < 1 or r < 1:
            raise ValueError(f"U must have shape (n, r) with n, r >= 1, got {tuple(U.shape)}")
        self.U = U
        self.C = _check_tensor(C, "C", shape=(r, r), like=U, like_name="U")
        self.n, self.r, self.dtype, self.device = n, r, U.dtype, U.device
        self._set_base(base)
        # a Python base in float64 (the same number as the 0-d tensor): no host read per solve
        self._base_f = self._base_py if U.dtype == torch.float64 else None
        # U^T U when the producer knows it (e.g. from products it formed anyway); else computed on first use
        self._gram = None if gram is None else _check_tensor(gram, "gram", shape=(r, r), like=U, like_name="U")
        self._eig = None  # (W = Q V (n x r'), mu (r',)) eigenpairs of U C U^T restricted to range(Q)

    def gram(self) -> torch.Tensor:
        if self._gram is None:
            self._gram = self.U.T @ self.U
        return self._gram

    def _eigs(self):
        if self._eig is None:
            Q, R = torch.linalg.qr(self.U, mode="reduced")      # Q: n x r', r' = min(n, r)
            Cs = 0.5 * (self.C + self.C.T)
            T = R @ Cs @ R.T
            mu, V = torch.linalg.eigh(0.5 * (T + T.T))
            self._eig = (Q @ V, mu)
        return self._eig

    def mv(self, v):
        v = self._check_v(v)
        return self.base * v + self.U @ (self.C @ (self.U.T @ v))

    def solve(self, v, shift=0.0):
        v = self._check_v(v)
        return push_through_solve(self.U, self.C, self.base + self._shift(shift), v, self.gram())

    def solve_add_(self, x, v, alpha, shift=0.0):
        """x += alpha (c I + U C U^T)^{-1} v = x + (alpha / c) v - (alpha / c) U y (push-through form, as
        ``solve``): two in-place passes over x, no n-sized temporary. One host read of c when it is a tensor."""
        v = self._check_v(v)
        shift = self._shift(shift)
        if v.ndim != 1 or x.shape != v.shape:
            return super().solve_add_(x, v, alpha, shift)
        c = self._base_f + shift if self._base_f is not None and isinstance(shift, float) else float(self.base + shift)
        G = self.gram()
        r = self.r
        if _host_small(r, self.C, G, self.U, v):
            # a few columns on CPU: the r x r algebra in NumPy on views of the same memory (a torch call on
            # an r-vector costs 2-4 us of dispatch, several per step at n = 10^4); the same LAPACK solve
            Cn = self.C.numpy()
            X = Cn @ G.numpy()
            rhs = Cn @ torch.mv(self.U.T, v).numpy()
            if r == 2:
                y = self._solve2(X.tolist(), rhs.tolist(), c)
            else:
                X.flat[::r + 1] += c
                try:
                    y = torch.from_numpy(np.linalg.solve(X, rhs))
                except np.linalg.LinAlgError as exc:   # as the torch path's error (``minimize`` stops on it)
                    raise torch.linalg.LinAlgError(f"LowRank.solve_add_: {exc}") from None
        else:
            X = self.C @ G + c * torch.eye(r, dtype=self.dtype, device=self.device)
            y = torch.linalg.solve(X, self.C @ (self.U.T @ v))
        a = float(alpha) / c
        return x.add_(v, alpha=a).addmv_(self.U, y, alpha=-a)

    def _solve2(self, X: list, rhs: list, c: float) -> torch.Tensor:
        """y = (X + c I)^{-1} rhs for a 2 x 2 X and rhs as Python numbers (Cramer's rule, forward stable for
        2 x 2; a LAPACK call costs about 10 us here), written into a 2-vector kept by the operator."""
        (a, b), (d, e) = X
        a, e = a + c, e + c
        det = a * e - b * d
        if det == 0:      # (nan propagates, as through LAPACK)
            raise torch.linalg.LinAlgError(f"LowRank.solve_add_: c I + U C U^T is singular (c = {c!r})")
        buf = self.__dict__.get("_y2")
        if buf is None:
            t = torch.empty(2, dtype=self.dtype)
            buf = self._y2 = (t, t.numpy())
        buf[1][:] = ((e * rhs[0] - b * rhs[1]) / det, (a * rhs[1] - d * rhs[0]) / det)
        return buf[0]

    def _power(self, v, p, shift):
        W, mu = self._eigs()
        c = self.base + shift
        t = c + mu
        has_complement = W.shape[1] < self.n
        scale = torch.maximum(t.abs().max(), c.abs()) if has_complement else t.abs().max()
        coef = W.T @ v
        out = W @ (_col(_pow_eigs(t, p, scale), v) * coef)
        if has_complement:
            out = out + _pow_eigs(c, p, scale) * (v - W @ coef)
        return out

    def min_eig(self, shift=0.0) -> torch.Tensor:
        """Smallest eigenvalue of D + shift I (0-d tensor); negative means D + shift I is indefinite."""
        W, mu = self._eigs()
        c = self.base + self._shift(shift)
        m = c + mu.min()
        return torch.minimum(m, c) if W.shape[1] < self.n else m

    def to_dense(self):
        return self.base * torch.eye(self.n, dtype=self.dtype, device=self.device) + self.U @ self.C @ self.U.T


class SparseLowRank(_LazyBase, Operator):
    """D = base I + U C U^T where U (n x r) is nonzero only on the rows J (distinct coordinates, m = |J|):
    U = E_J Uc with Uc (m x r) dense and E_J the n x m selection of the coordinates J. The sampled Fisher of
    sparse per-sample gradients (r = b rows of a sparse design, m <= the b rows' nonzeros).

    Same matrix and push-through solve as ``LowRank(to dense U, C, base)``, at O(m r + r^3) per solve instead
    of O(n r): U^T U = Uc^T Uc and U^T v = Uc^T v[J]; ``solve_add_`` is one pass over x (x += (alpha/c) v)
    plus a scatter of m entries. ``power`` (other p) and ``min_eig`` go through the dense ``LowRank``, built on
    first use (O(n r) memory). Memory O(m r).
    """

    def __init__(self, J: torch.Tensor, Uc: torch.Tensor, C: torch.Tensor, n: int, base=0.0):
        Uc = _check_tensor(Uc, "Uc", ndim=2)
        m, r = Uc.shape
        if (not isinstance(J, torch.Tensor) or J.dtype not in (torch.int64, torch.int32) or J.ndim != 1
                or J.shape[0] != m):
            raise ValueError(f"J must be an int64 (or int32) tensor of shape ({m},) (one coordinate per row of Uc)")
        if r < 1 or not isinstance(n, int) or n < 1:
            raise ValueError(f"need r >= 1 columns and n >= 1, got Uc {tuple(Uc.shape)}, n={n!r}")
        self.J, self.Uc = J, Uc
        self.C = _check_tensor(C, "C", shape=(r, r), like=Uc, like_name="Uc")
        self.n, self.r, self.dtype, self.device = n, r, Uc.dtype, Uc.device
        self._set_base(base)
        self._gram = None
        self._dense = None

    def gram(self) -> torch.Tensor:
        """U^T U = Uc^T Uc (r x r, cached)."""
        if self._gram is None:
            self._gram = self.Uc.T @ self.Uc
        return self._gram

    def dense_factor(self) -> torch.Tensor:
        """U (n x r), dense."""
        U = torch.zeros(self.n, self.r, dtype=self.dtype, device=self.device)
        U[self.J] = self.Uc
        return U

    def _lowrank(self) -> LowRank:
        if self._dense is None:
            self._dense = LowRank(self.dense_factor(), self.C, self.base)
        return self._dense

    def _y(self, vJ: torch.Tensor, c) -> torch.Tensor:
        """(c I_r + C U^T U)^{-1} C U^T v from vJ = v[J] (the push-through coefficients); r = 1 by division."""
        X = self.C @ self.gram()
        rhs = self.C @ (self.Uc.T @ vJ)
        if self.r == 1:
            return rhs / (X[0, 0] + c)
        return torch.linalg.solve(X + c * torch.eye(self.r, dtype=self.dtype, device=self.device), rhs)

    def mv(self, v):
        v = self._check_v(v)
        out = self.base * v
        out.index_add_(0, self.J, self.Uc @ (self.C @ (self.Uc.T @ v.index_select(0, self.J))))
        return out

    def solve(self, v, shift=0.0):
        v = self._check_v(v)
        c = self.base + self._shift(shift)
        out = v / c
        out.index_add_(0, self.J, (self.Uc @ self._y(v.index_select(0, self.J), c)) / -c)
        return out

    def solve_add_(self, x, v, alpha, shift=0.0):
        """x += alpha (c I + U C U^T)^{-1} v = x + (alpha / c) v - (alpha / c) U y: one pass over x and a
        scatter of m entries. One host read of c when it is a tensor."""
        v = self._check_v(v)
        if v.ndim != 1 or x.shape != v.shape:
            return super().solve_add_(x, v, alpha, shift)
        shift = self._shift(shift)
        c = self._base_py + shift if self._base_py is not None and isinstance(shift, float) else \
            float(self.base + shift)
        a = float(alpha) / c
        if self.r == 1 and self.device.type == "cpu":
            # rank one on CPU: y = C u^T v / (C u^T u + c) as host numbers (reads of CPU tensors, no sync),
            # so x gets one pass and one scaled scatter of u
            u = self.Uc[:, 0]
            cc = self.C.item()
            y = cc * torch.dot(u, v.index_select(0, self.J)).item() / (cc * torch.dot(u, u).item() + c)
            x.add_(v, alpha=a)
            return x.index_add_(0, self.J, u, alpha=-a * y)
        y = self._y(v.index_select(0, self.J), c)
        x.add_(v, alpha=a)
        return x.index_add_(0, self.J, self.Uc @ y, alpha=-a)

    def _power(self, v, p, shift):
        return self._lowrank()._power(v, p, shift)

    def min_eig(self, shift=0.0) -> torch.Tensor:
        return self._lowrank().min_eig(shift)

    def to_dense(self):
        U = self.dense_factor()
        return self.base * torch.eye(self.n, dtype=self.dtype, device=self.device) + U @ self.C @ U.T


class RankOne(Operator):
    """D = base I + a b^T (NOT symmetric): the raw uniform-direction estimate n (H u) u^T with a = n H u, b = u.

    - ``mv``: O(n); ``solve(v, shift)``: Sherman-Morrison with c = base + shift, O(n)
      (``sherman_morrison_solve``). When c = 0 or c + b^T a = 0 the matrix is singular and the result is
      inf/nan; ``is_singular(shift)`` tests for it without a host sync.
    - ``power``: only p in {0, 1, -1}; other p raise ``NotImplementedError`` (D is non-symmetric, so a
      fractional power is not defined through an orthogonal eigendecomposition).
    Memory O(n).
    """

    def __init__(self, a: torch.Tensor, b: torch.Tensor, base=0.0):
        a = _check_tensor(a, "a", ndim=1)
        if a.shape[0] < 1:
            raise ValueError("a must have at least one entry, got shape (0,)")
        self.a = a
        self.b = _check_tensor(b, "b", shape=a.shape, like=a, like_name="a")
        self.base = _as_scalar(base, "base", a.dtype, a.device)
        self.n, self.dtype, self.device = a.shape[0], a.dtype, a.device

    def mv(self, v):
        v = self._check_v(v)
        bv = self.b @ v
        return self.base * v + (self.a * bv if v.ndim == 1 else self.a.unsqueeze(-1) * bv)

    def solve(self, v, shift=0.0):
        v = self._check_v(v)
        return sherman_morrison_solve(self.a, self.b, self.base + self._shift(shift), v)

    def _power(self, v, p, shift):
        raise NotImplementedError(
            f"RankOne.power supports only p in {{0, 1, -1}}, got p={p}: D = base I + a b^T is non-symmetric, "
            "so fractional powers are not defined by an orthogonal eigendecomposition; symmetrize it "
            "(LowRank with U = [u, v], C = (n/2)[[0, 1], [1, 0]]) first")

    def is_singular(self, shift=0.0, rtol: float | None = None) -> torch.Tensor:
        """0-d bool tensor: |c| or |c + b^T a| below rtol * (|c| + ||a|| ||b||), c = base + shift.

        rtol defaults to 10 eps(dtype). No host sync (the caller decides whether to read it).
        """
        c = self.base + self._shift(shift)
        tol = (10 * torch.finfo(self.dtype).eps if rtol is None else rtol) * (
            c.abs() + torch.linalg.vector_norm(self.a) * torch.linalg.vector_norm(self.b))
        return (c.abs() <= tol) | ((c + self.b @ self.a).abs() <= tol)

    def to_dense(self):
        return self.base * torch.eye(self.n, dtype=self.dtype, device=self.device) + torch.outer(self.a, self.b)


# --------------------------------------------------------------------------------------------------
# dense and block diagonal
# --------------------------------------------------------------------------------------------------
class Dense(Operator):
    """D = M (n x n). mv O(n^2); solve by ``torch.linalg.solve`` on M + shift I, O(n^3);
    power by eigh of (M + M^T)/2 (M assumed symmetric; cached, O(n^3) once, O(n^2) per call). Memory O(n^2).
    """

    def __init__(self, M: torch.Tensor):
        self.M = _check_square(M, "M")
        self.n, self.dtype, self.device = M.shape[0], M.dtype, M.device
        self._eig = None

    def mv(self, v):
        return self.M @ self._check_v(v)

    def solve(self, v, shift=0.0):
        v = self._check_v(v)
        shift = self._shift(shift)
        A = self.M if _is_zero(shift) else self.M + shift * torch.eye(self.n, dtype=self.dtype, device=self.device)
        return torch.linalg.solve(A, v)

    def _power(self, v, p, shift):
        if self._eig is None:
            self._eig = torch.linalg.eigh(0.5 * (self.M + self.M.T))
        lam, W = self._eig
        return _eig_apply(W, _pow_eigs(lam + shift, p), v)

    def to_dense(self):
        return self.M


class BlockDiagonal(Operator):
    """D = diag(D_1, ..., D_k) for a list of operators (any kind) of sizes s_i = D_i.n (``sizes``).

    mv / solve / power act blockwise (``torch.split`` + ``torch.cat``); costs and memory are the sums
    over blocks; the eigenvalue floor of ``power`` is set per block.
    """

    def __init__(self, blocks: Sequence[Operator]):
        if not isinstance(blocks, (list, tuple)) or len(blocks) == 0:
            raise ValueError(f"blocks must be a non-empty list of Operators, got {blocks!r}")
        for i, b in enumerate(blocks):
            if not isinstance(b, Operator):
                raise ValueError(f"blocks[{i}] must be an Operator, got {type(b).__name__}")
            if b.dtype != blocks[0].dtype:
                raise ValueError(f"blocks[{i}] has dtype {b.dtype} but blocks[0] has {blocks[0].dtype}")
            if not _same_device(b.device, blocks[0].device):
                raise ValueError(f"blocks[{i}] is on {b.device} but blocks[0] is on {blocks[0].device}")
        self.blocks = list(blocks)
        self.sizes = tuple(b.n for b in blocks)
        self.n, self.dtype, self.device = sum(self.sizes), blocks[0].dtype, blocks[0].device

    def _map(self, fn, v):
        parts = torch.split(v, self.sizes, dim=0)
        return torch.cat([fn(b, x) for b, x in zip(self.blocks, parts)], dim=0)

    def mv(self, v):
        return self._map(lambda b, x: b.mv(x), self._check_v(v))

    def solve(self, v, shift=0.0):
        shift = self._shift(shift)
        return self._map(lambda b, x: b.solve(x, shift), self._check_v(v))

    def _power(self, v, p, shift):
        return self._map(lambda b, x: b.power(x, p, shift), v)

    def to_dense(self):
        return torch.block_diag(*[b.to_dense() for b in self.blocks])


# --------------------------------------------------------------------------------------------------
# block mean
# --------------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=16)
def _block_lengths(sizes: tuple[int, ...], device: torch.device) -> torch.Tensor:
    """The (k,) int64 block sizes on ``device``, memoized (no host-to-device copy per step)."""
    return torch.tensor(sizes, dtype=torch.int64, device=device)


@functools.lru_cache(maxsize=16)
def _block_consts(sizes: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> dict:
    """Per-block constants of the k x k algebra, memoized per (sizes, dtype, device): s s^T, sqrt(s) sqrt(s)^T,
    1/sqrt(s) 1/sqrt(s)^T, the mask of blocks with more than one coordinate (bool and 0/1), s (s - 1) (1 for
    singletons). Read-only: the block means' refresh reuses them instead of rebuilding them every step."""
    s = torch.tensor(sizes, dtype=dtype, device=device)
    sq, multi = s.sqrt(), s > 1
    return {"ss": torch.outer(s, s), "sqsq": torch.outer(sq, sq), "rsrs": torch.outer(sq.reciprocal(), sq.reciprocal()),
            "multi": multi, "multi_f": multi.to(dtype), "pairs": torch.where(multi, s * (s - 1), torch.ones_like(s))}


@functools.lru_cache(maxsize=16)
def _host_block_consts(sizes: tuple[int, ...], dtype: torch.dtype) -> dict:
    """``_block_consts`` on the CPU as read-only NumPy arrays (plus ``s``), for the host path of the k x k
    algebra (``_host_small``)."""
    c = _block_consts(sizes, dtype, torch.device("cpu"))
    out = {key: t.numpy().copy() for key, t in c.items()}
    out["s"] = torch.tensor(sizes, dtype=dtype).numpy()
    for a in out.values():
        a.setflags(write=False)
    fi = torch.finfo(dtype)
    # Python numbers of the clamping rule (``eig_floor``) and whether every block has two or more coordinates
    out["eps"], out["sqrt_tiny"], out["all_multi"] = float(fi.eps), math.sqrt(float(fi.tiny)), min(sizes) > 1
    return out


def _host_pow_eigs(t: np.ndarray, p: float, scale: float) -> np.ndarray:
    """``_pow_eigs`` on a NumPy array (the same clamping rule, ``eig_floor`` of ``scale``)."""
    if p == 0:
        return np.ones_like(t)
    if p > 0:
        return t ** int(p) if float(p).is_integer() else np.maximum(t, 0) ** p
    fi = np.finfo(t.dtype)
    return np.maximum(t, max(scale * float(fi.eps), math.sqrt(float(fi.tiny)))).astype(t.dtype, copy=False) ** p


def _block_structure(sizes: tuple[int, ...], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(length-n block index, (k,) lengths); the index is built on each call, never cached (8 n bytes)."""
    s = _block_lengths(sizes, device)
    idx = torch.repeat_interleave(torch.arange(len(sizes), device=device), s, output_size=sum(sizes))
    return idx, s


@functools.lru_cache(maxsize=64)
def strided_groups(sizes: tuple[int, ...]) -> tuple[tuple[int, int, int, int, int, int], ...]:
    """The blocks as few regular families as possible: (first block j0, count c, block step dj, size s,
    first offset o0, offset step do), so that blocks j0, j0 + dj, ..., j0 + (c - 1) dj all have size s and
    start at o0, o0 + do, ...: ``v.as_strided((c, s), (do, 1), o0)`` holds them as rows of a matrix with
    no copy. Equal blocks are one family; a network's parameter tensors (weight, bias, weight, bias, ...
    of repeated layers) are a handful (5 for the 33 tensors of ``models.large_cnn``). Greedy, O(k)."""
    open_, groups, off = {}, [], 0
    for j, sj in enumerate(sizes):
        g = open_.get(sj)
        if g is not None and (g[1] == 1 or (j - g[6] == g[2] and off - g[7] == g[5])):
            if g[1] == 1:
                g[2], g[5] = j - g[0], off - g[4]
            g[1] += 1
            g[6], g[7] = j, off
        else:
            g = [j, 1, 1, sj, off, sj, j, off]
            open_[sj] = g
            groups.append(g)
        off += sj
    return tuple(tuple(g[:6]) for g in groups)


def group_views(v: torch.Tensor, groups) -> list:
    """(k-slice, (c, s) view of ``v``) per family of ``strided_groups``: no copies (v contiguous, 1-D)."""
    base = v.storage_offset()
    return [(slice(j0, j0 + (c - 1) * dj + 1, dj), v.as_strided((c, s), (do, 1), base + o0))
            for j0, c, dj, s, o0, do in groups]


def grouped_block_sums(v: torch.Tensor, groups, k: int, squares: torch.Tensor | None = None) -> torch.Tensor:
    """E^T v through the families of ``strided_groups`` (one reduction per family); with ``squares`` a
    (k,) tensor, E^T (v * v) is added into it in place (by row norms, no n-sized temporary)."""
    if len(groups) == 1 and groups[0][1] == k:         # equal blocks: one (k, s) view, no slice assignments
        _, _, _, s, o0, do = groups[0]
        V = v.as_strided((k, s), (do, 1), v.storage_offset() + o0)
        e = torch.sum(V, dim=1)
        if squares is not None:
            squares.add_(torch.linalg.vector_norm(V, dim=1).square_())
        return e
    e = torch.empty(k, dtype=v.dtype, device=v.device)
    for sl, V in group_views(v, groups):
        e[sl] = V.sum(dim=1)
        if squares is not None:
            squares[sl] += torch.linalg.vector_norm(V, dim=1).square_()
    return e


def grouped_expand_affine(lam: torch.Tensor, c: torch.Tensor, v: torch.Tensor, groups,
                          out: torch.Tensor | None = None) -> torch.Tensor:
    """out = (E lam) * v + E c (lam, c of length k) through the families of ``strided_groups``: one fused
    pass per family, no block index."""
    out = torch.empty_like(v) if out is None else out
    for (sl, V), (_, O) in zip(group_views(v, groups), group_views(out, groups)):
        # c, then += lam * v in place: the same numbers as torch.addcmul(c, lam, V), whose broadcast
        # first operand takes a slow path on CPU (measured 2.5x slower on the large CNN's (15, 9216) family)
        O.copy_(c[sl].unsqueeze(1).expand_as(O)).addcmul_(lam[sl].unsqueeze(1), V)
    return out


def add_expanded_(out: torch.Tensor, c: torch.Tensor, sizes: Sequence[int]) -> torch.Tensor:
    """out += E c in place (out (n,) contiguous, c (k,)): one view per family of ``strided_groups`` (equal
    blocks are one (k, s) view), else through ``expand``."""
    sizes = tuple(sizes)
    if out.ndim == 1 and out.is_contiguous():
        groups = strided_groups(sizes)
        if len(groups) <= GROUPED_MAX:
            for sl, O in group_views(out, groups):
                O.add_(c[sl].unsqueeze(1))
            return out
    return out.add_(expand(c, sizes))


GROUPED_MAX = 16   # at most this many families: views per family; more: one segment reduction


def block_index(sizes: Sequence[int], device="cpu") -> torch.Tensor:
    """Length-n int64 vector whose entry j is the block of coordinate j (contiguous blocks).

    Built on each call (8 n bytes; not memoized, so no hidden n-long tensor outlives its caller); the
    operators use the (k,) block lengths instead.
    """
    sizes = _check_sizes(sizes)
    return _block_structure(sizes, _norm_device(device))[0]


def _norm_device(device) -> torch.device:
    d = torch.device(device)
    if d.type == "cuda" and d.index is None:
        d = torch.device("cuda", torch.cuda.current_device())
    return d


def block_sums(v: torch.Tensor, sizes: Sequence[int], index: torch.Tensor | None = None) -> torch.Tensor:
    """E^T v: the k block sums of v (n,) -> (k,), or of each column of v (n, m) -> (k, m). O(n m).

    ``index`` = ``block_index(sizes, v.device)`` if already at hand.
    """
    sizes = _check_sizes(sizes)
    v = _check_tensor(v, "v")
    if v.ndim not in (1, 2) or v.shape[0] != sum(sizes):
        raise ValueError(f"v must have shape ({sum(sizes)},) or ({sum(sizes)}, m) for sizes summing to "
                         f"{sum(sizes)}, got {tuple(v.shape)}")
    if v.ndim == 1 and v.is_contiguous():
        groups = strided_groups(tuple(sizes))
        if len(groups) <= GROUPED_MAX:   # a few regular families (equal blocks: one (k, s) view), no index
            return grouped_block_sums(v, groups, len(sizes))
    # contiguous blocks: a segmented sum over the cached block lengths (about 2.5x faster than index_add_
    # on CPU); ``index`` is accepted for callers that hold it, the lengths come from the same cache
    lengths = _block_lengths(sizes, _norm_device(v.device))
    return torch.segment_reduce(v, "sum", lengths=lengths, axis=0)


def expand(w: torch.Tensor, sizes: Sequence[int], index: torch.Tensor | None = None) -> torch.Tensor:
    """E w: repeat w_i over the s_i coordinates of block i; (k,) -> (n,) or (k, m) -> (n, m). O(n m)."""
    sizes = _check_sizes(sizes)
    w = _check_tensor(w, "w")
    if w.ndim not in (1, 2) or w.shape[0] != len(sizes):
        raise ValueError(f"w must have shape ({len(sizes)},) or ({len(sizes)}, m) for {len(sizes)} blocks, "
                         f"got {tuple(w.shape)}")
    if w.ndim == 1:
        n = sum(sizes)
        groups = strided_groups(tuple(sizes))
        if len(groups) <= GROUPED_MAX:
            out = torch.empty(n, dtype=w.dtype, device=w.device)
            for (sl, O) in group_views(out, groups):
                O.copy_(w[sl].unsqueeze(1).expand(O.shape))
            return out
    idx = block_index(sizes, w.device) if index is None else index
    return w.index_select(0, idx)


class BlockMean(Operator):
    """D = Lambda_bar + B_bar (docs/METHODS.md section 3): diagonal lam_i and constant b_ij on block (i, j).

    ``lam``: (k,), ``B``: (k, k) (symmetric for ``power``; assumed, not checked), ``sizes``: block sizes
    s_i > 0 (contiguous blocks, n = sum s_i). Memory O(k^2 + k) (no per-coordinate block index); never an
    n x n matrix.

    - ``mv(v)`` = lam[idx] * v + E B E^T v: O(n + k^2).
    - Any matrix function, with S = diag(s), K = Lambda + S^{1/2} B S^{1/2}:
      h(Lambda_bar + B_bar) = h(Lambda_bar) + E S^{-1/2} [h(K) - h(Lambda)] S^{-1/2} E^T,
      which is again a block mean: lam' = h(lam), B' = S^{-1/2} [h(K) - h(Lambda)] S^{-1/2}.
      ``inverse(shift)`` (h(t) = 1/(t + shift), one k x k inverse) and ``matrix_power(p, shift)``
      (h(t) = (t + shift)^p, one k x k eigh of K, cached across shifts and powers) return that block mean;
      ``solve`` and ``power`` apply it: O(n + k^3).
    - For a singleton block (s_i = 1) lam_i is not an eigenvalue of D (only lam_i + b_ii is); h(lam_i) is then
      replaced by 0 in both terms (they cancel exactly), so a singleton lam_i + shift <= 0 causes no blow-up.
    """

    def __init__(self, lam: torch.Tensor, B: torch.Tensor, sizes: Sequence[int]):
        lam = _check_tensor(lam, "lam", ndim=1)
        k = lam.shape[0]
        if k < 1:
            raise ValueError("lam must have at least one entry (one per block), got shape (0,)")
        self.lam = lam
        self.B = _check_tensor(B, "B", shape=(k, k), like=lam, like_name="lam")
        self.sizes = _check_sizes(sizes, "sizes", k=k)
        self.k, self.n, self.dtype, self.device = k, sum(self.sizes), lam.dtype, lam.device
        self._lengths = _block_lengths(self.sizes, _norm_device(lam.device))   # (k,) int64, cached
        self.s = self._lengths.to(lam.dtype)
        self.groups = strided_groups(self.sizes)   # regular families of blocks (``strided_groups``)
        self._eigK = None
        self._thin = None         # (mu, W) of K = M M^T from ``set_thin_k`` (t < k columns), else None
        self._host = None         # (lam, B) as NumPy arrays on their memory, or (lam, B, (mu, W)): host path
        self._powers: dict = {}   # (p, shift) -> the powered block mean, for Python-number shifts
        self._sums_of = None      # (weak reference to v, v's version, E^T v): ``remember_sums``

    def remember_sums(self, v: torch.Tensor, sums: torch.Tensor) -> None:
        """Record ``sums`` = E^T v, computed by the caller, for ``block_sums_of(v)``. v is held by a weak
        reference (the record keeps no n-vector alive) with its version counter: an in-place change of v,
        or another tensor, misses the record."""
        self._sums_of = (weakref.ref(v), v._version, sums)

    def __getstate__(self) -> dict:
        """Pickled (``torch.save`` of an optimizer's state) without the record of ``remember_sums``: a weak
        reference cannot be pickled, and the record is only valid for the step that made it."""
        state = self.__dict__.copy()
        state["_sums_of"] = None
        return state

    def block_sums_of(self, v: torch.Tensor) -> torch.Tensor:
        """E^T v of a contiguous (n,) v: the recorded sums when v is the tensor ``remember_sums`` saw,
        unchanged since, else one reduction per family of blocks."""
        memo = self._sums_of
        if memo is not None and memo[0]() is v and memo[1] == v._version:
            return memo[2]
        return grouped_block_sums(v, self.groups, self.k)

    def _derived(self, lam: torch.Tensor, B: torch.Tensor, host: tuple | None = None) -> "BlockMean":
        """A block mean on the same blocks from (k,) lam and (k, k) B of this one's dtype and device: the
        block structure shared, nothing re-validated (the refresh path of every step). ``host``: NumPy
        arrays sharing lam's and B's memory (the host path made them), so its powers need no conversion."""
        new = object.__new__(BlockMean)
        new.__dict__.update(self.__dict__)
        new.lam, new.B, new._eigK, new._powers, new._host, new._sums_of = lam, B, None, {}, host, None
        new._thin = None
        return new

    def _consts(self) -> dict:
        return _block_consts(self.sizes, self.dtype, _norm_device(self.device))

    @property
    def index(self) -> torch.Tensor:
        """The length-n block index (``block_index``); built on demand, not held by the operator."""
        return block_index(self.sizes, self.device)

    def mv(self, v, out: torch.Tensor | None = None, sums: torch.Tensor | None = None):
        """D v; ``out`` (a contiguous (n,) tensor, not ``v``) receives it without an allocation on the
        view path (a few regular families of blocks; equal blocks are one); ``sums`` = E^T v when the
        caller has it already (the AdaGrad-BMA update computes the gradient's block sums)."""
        v = self._check_v(v)
        if out is not None and (v.ndim != 1 or out.shape != v.shape or not out.is_contiguous()):
            raise ValueError(f"out must be a contiguous tensor of shape {tuple(v.shape)} for a 1-D v")
        if sums is not None and (v.ndim != 1 or sums.shape != (self.k,)):
            raise ValueError(f"sums must be the ({self.k},) block sums of a 1-D v, got shape {tuple(sums.shape)}")
        if v.ndim == 1:
            if len(self.groups) <= GROUPED_MAX and v.is_contiguous():   # a few regular families of blocks: views
                e = grouped_block_sums(v, self.groups, self.k) if sums is None else sums
                return grouped_expand_affine(self.lam, self.B @ e, v, self.groups, out=out)
            if out is not None:
                return out.copy_(self.mv(v))
            e = torch.segment_reduce(v, "sum", lengths=self._lengths, axis=0)
            out = torch.repeat_interleave(self.B @ e, self._lengths, output_size=self.n)
            return out.addcmul_(torch.repeat_interleave(self.lam, self._lengths, output_size=self.n), v)
        e = block_sums(v, self.sizes)
        idx = self.index
        return _col(self.lam.index_select(0, idx), v) * v + (self.B @ e).index_select(0, idx)

    def _finish(self, hK: torch.Tensor, hlam: torch.Tensor) -> "BlockMean":
        Bp = hK.mul_(self._consts()["rsrs"])         # S^{-1/2} h(K) S^{-1/2} - diag(h(lam) / s)
        Bp.diagonal().sub_(hlam / self.s)
        return self._derived(hlam, Bp)

    def inverse(self, shift=0.0) -> "BlockMean":
        """(D + shift I)^{-1} as a block mean (exact, no clamping; singular D + shift I gives inf/nan)."""
        shift = self._shift(shift)
        rs = self.s.sqrt()
        lam_s = self.lam + shift
        K = torch.diag(lam_s) + rs.unsqueeze(1) * self.B * rs.unsqueeze(0)
        single = self.s == 1
        hlam = torch.where(single, torch.zeros_like(lam_s), 1.0 / torch.where(single, torch.ones_like(lam_s), lam_s))
        return self._finish(torch.linalg.inv(K), hlam)

    def matrix_power(self, p: float, shift=0.0) -> "BlockMean":
        """(D + shift I)^p as a block mean, eigenvalues clamped as in the module docstring (B symmetric)."""
        p = _check_p(p)
        shift = self._shift(shift)
        key = (p, shift) if isinstance(shift, float) else None
        if key is not None and key in self._powers:
            return self._powers[key]
        out = self.inverse(shift) if p == -1 else self._matrix_power(p, shift)
        if key is not None:
            if len(self._powers) >= 4:
                self._powers.clear()
            self._powers[key] = out
        return out

    def k_eigh(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(mu, W), the eigendecomposition of K = Lambda + S^{1/2} B S^{1/2} (symmetrized; eigenvalues
        ascending), the k x k matrix through which D acts on block-constant vectors (on vectors of zero
        mean within each block D is diag(lam)). Cached: it is the factorization ``matrix_power`` uses
        (computed by whichever comes first, on the NumPy host path where that applies)."""
        if _host_small(self.k, self.lam, self.B):
            mu, W = self._host_eigh()
            return torch.from_numpy(mu), torch.from_numpy(W)
        return self._torch_eigh()

    def set_thin_k(self, M: torch.Tensor) -> None:
        """Declare K = M M^T for a (k, t) matrix M with t < k columns (K = S^{-1/2} U S^{-1/2} of statistics
        U = sum_j e_j e_j^T, M = S^{-1/2} [e_1 .. e_t]): the powers then use the t nonzero eigenpairs of K,
        from the t x t Gram matrix M^T M (O(k t^2 + t^3) instead of a k x k eigh), and K's other
        eigenvalues are 0 (the same clamping rule applies to them). The caller vouches for K = M M^T."""
        if M.ndim != 2 or M.shape[0] != self.k or not 0 < M.shape[1] < self.k:
            raise ValueError(f"M must have shape ({self.k}, t) with 0 < t < {self.k}, got {tuple(M.shape)}")
        G = M.T @ M
        sig2, V = torch.linalg.eigh((G + G.T).mul_(0.5))
        sig = sig2.clamp(min=0).sqrt_()
        W = (M @ V).div_(torch.where(sig > 0, sig, torch.ones_like(sig)))   # a zero singular value: a zero column
        self._thin, self._powers = (sig2, W), {}

    def _thin_power(self, p, shift) -> "BlockMean":
        """``_matrix_power`` from the thin eigenpairs of ``set_thin_k``: h(K) = W (h(mu) - h(0)) W^T + h(0) I,
        with the scale and floor of the full eigendecomposition (whose other eigenvalues are 0)."""
        mu, W = self._thin
        c = self._consts()
        sh = torch.as_tensor(shift, dtype=self.dtype, device=self.device)
        mu_s, lam_s = mu + sh, self.lam + sh
        scale = torch.maximum(torch.maximum(mu_s.abs().max(), sh.abs()), (lam_s.abs() * c["multi_f"]).max())
        h0 = _pow_eigs(sh, p, scale)
        hlam = torch.where(c["multi"], _pow_eigs(lam_s, p, scale), 0.0)
        hK = (W * (_pow_eigs(mu_s, p, scale) - h0)) @ W.T
        hK.diagonal().add_(h0)
        return self._finish(hK, hlam)

    def _torch_eigh(self):
        if self._eigK is None:
            K = self.B * self._consts()["sqsq"]       # Lambda + S^{1/2} B S^{1/2}, symmetrized
            K.diagonal().add_(self.lam)
            self._eigK = torch.linalg.eigh((K + K.T).mul_(0.5))
        return self._eigK

    def _host_eigh(self):
        """``_torch_eigh`` in NumPy on the operator's CPU memory (``_host_small``), cached in ``_host``."""
        if self._host is None:                          # each .numpy() is four dispatcher calls: made once
            self._host = (self.lam.numpy(), self.B.numpy())
        if len(self._host) == 2:
            c, k = _host_block_consts(self.sizes, self.dtype), self.k
            lam, Bn = self._host
            K = Bn * c["sqsq"]                          # Lambda + S^{1/2} B S^{1/2}, symmetrized
            K.flat[::k + 1] += lam
            K += K.T
            K *= 0.5
            self._host = (lam, Bn, np.linalg.eigh(K))
        return self._host[2]

    def _matrix_power(self, p, shift) -> "BlockMean":
        if self._thin is not None and p != 0:
            return self._thin_power(p, shift)
        if isinstance(shift, float) and _host_small(self.k, self.lam, self.B):
            return self._host_matrix_power(p, shift)
        c = self._consts()
        mu, W = self._torch_eigh()
        mu_s, lam_s = mu + shift, self.lam + shift
        scale = torch.maximum(mu_s.abs().max(), (lam_s.abs() * c["multi_f"]).max())
        hlam = torch.where(c["multi"], _pow_eigs(lam_s, p, scale), 0.0)
        hK = (W * _pow_eigs(mu_s, p, scale)) @ W.T
        return self._finish(hK, hlam)

    def _host_matrix_power(self, p: float, shift: float) -> "BlockMean":
        """``_matrix_power`` with the k x k algebra in NumPy on the operator's CPU memory (``_host_small``):
        the same formulas, clamping rule and LAPACK eigensolver, without a torch dispatch per k x k op."""
        c, k = _host_block_consts(self.sizes, self.dtype), self.k
        mu, W = self._host_eigh()
        lam = self._host[0]
        if p < 0:
            # ``_host_pow_eigs``'s clamping rule in fewer NumPy calls (in float64 the same numbers; in float32
            # the scale is summed in float64): eigh's eigenvalues are ascending, so max |mu + shift| is at one
            # end; the powers are taken in place
            lam_s = lam + shift
            if c["all_multi"]:
                lmax = float(np.abs(lam_s).max())
            else:
                lmax = float((np.abs(lam_s) * c["multi_f"]).max())
            scale = max(abs(float(mu[0]) + shift), abs(float(mu[-1]) + shift), lmax)
            floor = max(scale * c["eps"], c["sqrt_tiny"])
            hlam = np.maximum(lam_s, floor, out=lam_s)
            hlam **= p
            if not c["all_multi"]:
                hlam = np.where(c["multi"], hlam, 0.0).astype(lam.dtype, copy=False)   # singletons: h(lam_i) = 0
            pw = np.maximum(mu + shift, floor)
            pw **= p
        else:
            mu_s, lam_s = mu + shift, lam + shift
            scale = max(float(np.abs(mu_s).max()), float((np.abs(lam_s) * c["multi_f"]).max()))
            hlam = np.where(c["multi"], _host_pow_eigs(lam_s, p, scale), 0.0).astype(lam.dtype, copy=False)
            pw = _host_pow_eigs(mu_s, p, scale)
        hK = (W * pw) @ W.T
        hK *= c["rsrs"]                                 # S^{-1/2} h(K) S^{-1/2} - diag(h(lam) / s)
        hK.flat[::k + 1] -= hlam / c["s"]
        return self._derived(torch.from_numpy(hlam), torch.from_numpy(hK), host=(hlam, hK))

    def solve(self, v, shift=0.0):
        v = self._check_v(v)
        return self.inverse(shift).mv(v)

    def _power(self, v, p, shift):
        return self.matrix_power(p, shift).mv(v)

    def to_dense(self):
        idx = self.index
        return torch.diag(self.lam[idx]) + self.B[idx][:, idx]


def block_mean_from_stats(U: torch.Tensor, Q: torch.Tensor, sizes: Sequence[int],
                          like: BlockMean | None = None, host: tuple | None = None) -> BlockMean:
    """Frobenius-optimal block mean of H = sum_t g_t g_t^T from block statistics only (docs/METHODS.md section 3).

    ``U`` = sum_t e_t e_t^T with e_t = E^T g_t (k x k), ``Q`` = sum_t E^T (g_t * g_t) (k,). Then
    b_ij = U_ij / (s_i s_j) (i != j), b_ii = (U_ii - Q_i) / (s_i (s_i - 1)) (0 if s_i = 1),
    lambda_i = Q_i / s_i - b_ii. In general U = E^T H E and Q = E^T diag(H) for any H. O(k^2).
    ``like``: a block mean on the same blocks, dtype and device (the previous refresh's): its block
    structure is reused and nothing is re-validated. ``host``: NumPy views (U, Q) of the same CPU memory,
    kept by the caller across refreshes (the host path then converts nothing).
    """
    if like is not None and like.k == Q.shape[0] and like.dtype == Q.dtype and like.device == Q.device:
        k = like.k
        if _host_small(k, U, Q):                        # the same arithmetic in NumPy on the CPU memory
            c = _host_block_consts(like.sizes, like.dtype)
            Un, Qn = (U.numpy(), Q.numpy()) if host is None else host
            bdiag = (np.diagonal(Un) - Qn) / c["pairs"] * c["multi_f"]
            B = Un / c["ss"]
            B.flat[::k + 1] = bdiag
            lam = Qn / c["s"] - bdiag
            return like._derived(torch.from_numpy(lam), torch.from_numpy(B), host=(lam, B))
        c = like._consts()
        bdiag = (U.diagonal() - Q).div_(c["pairs"]).mul_(c["multi_f"])
        B = U / c["ss"]
        B.diagonal().copy_(bdiag)
        return like._derived(Q / like.s - bdiag, B)
    Q = _check_tensor(Q, "Q", ndim=1)
    k = Q.shape[0]
    U = _check_tensor(U, "U", shape=(k, k), like=Q, like_name="Q")
    sizes = _check_sizes(sizes, "sizes", k=k)
    s = torch.tensor(sizes, dtype=Q.dtype, device=Q.device)
    multi = s > 1
    bdiag = torch.where(multi, (U.diagonal() - Q) / torch.where(multi, s * (s - 1), torch.ones_like(s)),
                        torch.zeros_like(s))
    B = U / (s.unsqueeze(1) * s.unsqueeze(0))
    B = B - torch.diag(B.diagonal()) + torch.diag(bdiag)
    return BlockMean(Q / s - bdiag, B, sizes)


def block_mean_approximation(M: torch.Tensor, sizes: Sequence[int]) -> BlockMean:
    """The block mean closest to a dense n x n matrix M in Frobenius norm (docs/METHODS.md section 3).

    b_ij = mean of M^{ij} (i != j); b_ii = mean of the off-diagonal entries of M^{ii} (0 if s_i = 1);
    lambda_i = mean of diag(M^{ii}) - b_ii. Computed from E^T M E and E^T diag(M): O(n^2) time (reading M),
    O(n k) extra memory.
    """
    M = _check_square(M, "M")
    sizes = _check_sizes(sizes, "sizes")
    if sum(sizes) != M.shape[0]:
        raise ValueError(f"sizes must sum to n={M.shape[0]} (the size of M), got sum {sum(sizes)} for {sizes!r}")
    idx = block_index(sizes, M.device)
    T = block_sums(block_sums(M, sizes, idx).T, sizes, idx).T        # E^T M E
    return block_mean_from_stats(T, block_sums(M.diagonal(), sizes, idx), sizes)


def block_mean_inverse_formula(lam: torch.Tensor, B: torch.Tensor, sizes: Sequence[int]) -> BlockMean:
    """Talk's closed form: (Lambda_bar + B_bar)^{-1} = Lambda_bar^{-1} + D_bar with
    D = (Lambda S + S B S)^{-1} - (Lambda S)^{-1}, S = diag(s). Needs lam_i != 0 and an invertible matrix. O(k^3).
    """
    op = BlockMean(lam, B, sizes)
    s = op.s
    D = torch.linalg.inv(torch.diag(lam * s) + s.unsqueeze(1) * B * s.unsqueeze(0)) - torch.diag(1.0 / (lam * s))
    return BlockMean(1.0 / lam, D, op.sizes)


def block_mean_inv_sqrt_formula(lam: torch.Tensor, B: torch.Tensor, sizes: Sequence[int]) -> BlockMean:
    """Talk's closed form: (Lambda_bar + B_bar)^{-1/2} = Lambda_bar^{-1/2} + D_bar with
    D = S^{-1/2} [(Lambda + S^{1/2} B S^{1/2})^{-1/2} - Lambda^{-1/2}] S^{-1/2}.
    Needs lam > 0 and K = Lambda + S^{1/2} B S^{1/2} positive definite (no clamping). O(k^3).
    """
    op = BlockMean(lam, B, sizes)
    r = op.s.sqrt()
    K = torch.diag(lam) + r.unsqueeze(1) * B * r.unsqueeze(0)
    mu, W = torch.linalg.eigh(0.5 * (K + K.T))
    K_mh = W @ (mu.rsqrt().unsqueeze(1) * W.T)
    D = (K_mh - torch.diag(lam.rsqrt())) / (r.unsqueeze(1) * r.unsqueeze(0))
    return BlockMean(lam.rsqrt(), D, op.sizes)


# --------------------------------------------------------------------------------------------------
# Kronecker and scaled
# --------------------------------------------------------------------------------------------------
class Kronecker(Operator):
    """D = A kron B (``torch.kron`` convention), A: p x p, B: q x q symmetric PSD (assumed), n = p q.

    Vec ordering: torch.kron(A, B)[i q + k, j q + l] = A_ij B_kl, so with x = X.reshape(-1) for X of shape
    (p, q) (row-major flattening), (A kron B) x = (A X B^T).reshape(-1).
    mv O(n (p + q)); solve and power through the cached eigh of both factors (A = Ua diag(a) Ua^T,
    B = Ub diag(b) Ub^T; eigenvalues of D are a_i b_k): O(p^3 + q^3) once, then O(n (p + q)) per call.
    Memory O(p^2 + q^2).
    """

    def __init__(self, A: torch.Tensor, B: torch.Tensor):
        self.A = _check_square(A, "A")
        self.B = _check_square(B, "B", like=A, like_name="A")
        self.p, self.q = A.shape[0], B.shape[0]
        self.n, self.dtype, self.device = self.p * self.q, A.dtype, A.device
        self._eig = None

    def _kron_mv(self, A, B, v):
        m = v.shape[1:]
        X = v.reshape(self.p, -1)                                   # (p, q m)
        Y = (A @ X).reshape(self.p, self.q, -1)                     # sum_j A_ij X_j..
        return torch.matmul(B, Y).reshape((self.n,) + tuple(m))     # sum_l B_kl Y_il.

    def _eigs(self):
        if self._eig is None:
            a, Ua = torch.linalg.eigh(0.5 * (self.A + self.A.T))
            b, Ub = torch.linalg.eigh(0.5 * (self.B + self.B.T))
            self._eig = (Ua, Ub, torch.outer(a, b).reshape(-1))
        return self._eig

    def _apply_h(self, h, v):
        Ua, Ub, _ = self._eigs()
        w = self._kron_mv(Ua.T, Ub.T, v)
        return self._kron_mv(Ua, Ub, _col(h, v) * w)

    def mv(self, v):
        return self._kron_mv(self.A, self.B, self._check_v(v))

    def solve(self, v, shift=0.0):
        v = self._check_v(v)
        t = self._eigs()[2]
        return self._apply_h(1.0 / (t + self._shift(shift)), v)

    def _power(self, v, p, shift):
        t = self._eigs()[2]
        return self._apply_h(_pow_eigs(t + shift, p), v)

    def to_dense(self):
        return torch.kron(self.A, self.B)


class Scaled(Operator):
    """D = Z F Z with Z = diag(z), z > 0 (assumed, not checked), F = ``op``: the talk's H_t ~= Z F Z (AdaGrad-BMA).

    - ``mv(v)`` = z * F(z * v) (exact).
    - ``solve(v, shift=0)`` = z^{-1} * F^{-1}(z^{-1} * v) (exact). A nonzero or tensor shift raises
      ``NotImplementedError``: (Z F Z + c I)^{-1} = Z^{-1} (F + c Z^{-2})^{-1} Z^{-1} is not a solve with F.
    - ``power(v, p, shift)`` for p != 0, 1 is the SCALED power  z^p * F_shift^p(z^p * v),  F_shift = F + shift I.
      This equals (Z F Z)^p only when shift = 0 and Z and F commute (e.g. F = I, where Z F Z = Z^2 and the
      result is diagonal AdaGrad's diag(z^2)^p, or z constant); otherwise it is the AdaGrad-BMA approximation
      Z^p F^p Z^p and ``shift`` regularizes F, not D. p = 1 is exact: mv(v) + shift v. With p = -1 and
      shift = 0 it agrees with ``solve``.
    Memory: op's plus O(n); cost: op's plus O(n).
    """

    def __init__(self, op: Operator, z: torch.Tensor):
        if not isinstance(op, Operator):
            raise ValueError(f"op must be an Operator, got {type(op).__name__}")
        z = _check_tensor(z, "z", shape=(op.n,))
        if z.dtype != op.dtype:
            raise ValueError(f"z has dtype {z.dtype} but op has {op.dtype}; all factors must share one dtype")
        if not _same_device(z.device, op.device):
            raise ValueError(f"z is on {z.device} but op is on {op.device}; all factors must share one device")
        self.op, self.z = op, z
        self.n, self.dtype, self.device = op.n, op.dtype, op.device
        self._zpow: dict = {}

    def mv(self, v):
        v = self._check_v(v)
        zc = _col(self.z, v)
        return zc * self.op.mv(zc * v)

    def solve(self, v, shift=0.0):
        v = self._check_v(v)
        if isinstance(shift, torch.Tensor) or shift != 0:
            raise NotImplementedError(
                "Scaled.solve supports only shift=0 (a Python number): (Z F Z + shift I)^{-1} is not a solve "
                "with F; use power(v, -1, shift) for the scaled approximation Z^{-1} (F + shift I)^{-1} Z^{-1}")
        zc = _col(self.z, v)
        return self.op.solve(v / zc) / zc

    def power(self, v, p, shift=0.0):
        p = _check_p(p)
        shift = self._shift(shift)
        v = self._check_v(v)
        if p == 1:
            out = self.mv(v)
            return out if _is_zero(shift) else out + shift * v
        if p == 0:
            return v.clone()
        if v.ndim == 1:                      # z^p cached per p; one n-vector besides op's result
            zp = self._zpow.get(p)
            if zp is None:
                zp = self._zpow[p] = self.z.pow(p)
            return self.op.power(zp * v, p, shift).mul_(zp)
        zp = _col(self.z ** p, v)
        return zp * self.op.power(zp * v, p, shift)

    def to_dense(self):
        return self.z.unsqueeze(1) * self.op.to_dense() * self.z.unsqueeze(0)
