"""Hessian-free Newton-CG (docs/METHODS.md section 4): the Newton direction by truncated conjugate
gradients on Hessian-vector products, never an n x n matrix.

``NewtonCG.update`` returns a ``CGInverse`` operator at x; the step rule's ``solve(g, shift)`` runs CG
on (H + shift I) d = g (shift = 0 for ``armijo``/``fixed``, the rule's alpha for ``adaptive`` and
``regularized``), stopped by the Eisenstat-Walker forcing term ||r|| <= eta ||g||, eta =
min(0.5, sqrt(||g||)) (superlinear local convergence), or after ``cg_maxiter`` products. Negative
curvature (p^T (H + shift I) p <= 0): CG stops and returns the last iterate, a descent direction (the
gradient itself when it is met at the first product); each occurrence is counted in
``state["events"]["negative_curvature"]`` and reported in ``Trace.events``. The default step rule is the
Armijo backtracking line search starting at t = 1.

``inner_dtype="float32"``: the CG runs in float32 on a float32 copy of the data (made once, in
``init``) with the Hessian weights at x cast once per step, while the gradient, the line search and the
stopping test stay in the problem's dtype; the direction is cast back. Supported for logistic
regression (problems that hold a ``design`` and expose their curvature weights); any other problem
refuses it with a ``ValueError`` naming ``inner_dtype``. Memory: O(n) (CG's four vectors), plus the
float32 copy of the data when asked.
"""
from __future__ import annotations

import math

import torch

from . import operators as ops
from .preconditioners import Preconditioner

INNER_DTYPES = (None, "float32", "float64")


class CGInverse(ops.Operator):
    """(H + shift I)^{-1} v ~= truncated CG on the products ``hvp`` (``solve`` only)."""

    def __init__(self, hvp, n, dtype, device, gnorm: float, maxiter: int, events: dict, inner_dtype=None,
                 oracle=None):
        self.hvp, self.n, self.dtype, self.device = hvp, n, dtype, device
        self.eta = min(0.5, math.sqrt(gnorm))
        self.maxiter, self.events, self.inner_dtype, self.oracle = maxiter, events, inner_dtype, oracle

    def solve(self, v, shift=0.0):
        v = self._check_v(v)
        c = float(shift)
        b = v if self.inner_dtype is None else v.to(self.inner_dtype)
        z = torch.zeros_like(b)
        r = b.clone()
        p = b.clone()
        rr = float(torch.dot(r, r))
        tol2 = (self.eta ** 2) * rr
        for j in range(self.maxiter):
            Ap = self.hvp(p)
            if self.oracle is not None:
                self.oracle.hvps += 1
            if c:
                Ap.add_(p, alpha=c)
            pAp = float(torch.dot(p, Ap))
            if not pAp > 0:                       # negative (or zero) curvature: stop with a descent direction
                self.events["negative_curvature"] = self.events.get("negative_curvature", 0) + 1
                if j == 0:
                    z = b.clone()
                break
            alpha = rr / pAp
            z.add_(p, alpha=alpha)
            r.add_(Ap, alpha=-alpha)
            rr_new = float(torch.dot(r, r))
            self.events["cg_iterations"] = self.events.get("cg_iterations", 0) + 1
            if rr_new <= tol2:
                break
            p.mul_(rr_new / rr).add_(r)
            rr = rr_new
        return z if self.inner_dtype is None else z.to(self.dtype)

    def mv(self, v):
        v = self._check_v(v)
        out = self.hvp(v if self.inner_dtype is None else v.to(self.inner_dtype))
        return out if self.inner_dtype is None else out.to(self.dtype)

    def _power(self, v, p, shift):
        raise NotImplementedError("Newton-CG provides the inverse only (p = -1)")


def lowp_oracle(inner_dtype, problem, x, factory, missing: str):
    """(factory(problem, dtype), dtype) for an ``inner_dtype`` narrower than x's, (None, None) when it is None
    or x's own; ``ValueError`` naming ``inner_dtype`` when it is wider or the problem has no such oracle
    (``missing`` says what it has instead)."""
    want = None if inner_dtype is None else getattr(torch, inner_dtype)
    if want is None or want == x.dtype:
        return None, None
    if torch.finfo(want).bits > torch.finfo(x.dtype).bits:
        raise ValueError(f"inner_dtype={inner_dtype!r} is wider than the problem's dtype {x.dtype}; "
                         "use inner_dtype=None")
    out = factory(problem, want)
    if out is None:
        raise ValueError(f"inner_dtype={inner_dtype!r}: problem {problem.name!r} {missing}; use inner_dtype=None")
    return out, want


def _lowp_hvp_factory(problem, dtype):
    """A builder ``at(x) -> hvp32(v)`` of Hessian-vector products in ``dtype`` for logistic regression
    (a float32 copy of the design, weights at x cast once per step), or ``None`` when the problem has no
    such path."""
    design = getattr(problem, "design", None)
    if design is None or not callable(getattr(problem, "_weights", None)) or not hasattr(problem, "lam"):
        return None
    low = design.astype(dtype)
    inv_s, lam = 1.0 / design.S, float(problem.lam)

    def at(x):
        w = problem._weights(problem._forward(x)).to(dtype)
        return lambda v: low.rmv(w * low.mv(v)).mul_(inv_s).add_(v, alpha=lam)
    return at


def _lowp_hessian_factory(problem, dtype):
    """A builder ``at(x) -> H`` of the dense logistic-regression Hessian A^T diag(w) A / S + lam I in
    ``dtype`` (a copy of the design in ``dtype`` made once; per call one elementwise scaling and one matrix
    product), or ``None`` when the problem has no such path."""
    design = getattr(problem, "design", None)
    if design is None or not callable(getattr(problem, "_weights", None)) or not hasattr(problem, "lam"):
        return None
    low = design.astype(dtype)
    inv_s, lam, n = 1.0 / design.S, float(problem.lam), design.n

    def at(x):
        w = problem._weights(problem._forward(x)).to(dtype)
        H = low.gram(w, 0, n).mul_(inv_s)
        H = 0.5 * (H + H.T)
        H.diagonal().add_(lam)
        return H
    return at


class RefinedHessian(ops.Operator):
    """The Hessian H at x held in a lower precision (H_low, factored by Cholesky in that dtype), applied
    in the problem's dtype with iterative refinement.

    ``solve(v, shift)``: d = (H_low + shift I)^{-1} v, then ``refine`` rounds of r = v - (H + shift I) d
    with the exact product ``hvp`` in the problem's dtype and d += (H_low + shift I)^{-1} r. Each round
    multiplies the error by about cond(H) eps(low dtype); an H_low + shift I that is not positive
    definite is solved by LU instead. ``mv`` is the exact product. Memory O(n^2) in the low dtype.
    """

    def __init__(self, H_low: torch.Tensor, hvp, dtype, refine: int = 1):
        self.H, self.hvp, self.refine = H_low, hvp, int(refine)
        self.n, self.dtype, self.device = H_low.shape[0], dtype, H_low.device
        self._factors: dict = {}

    def _factor(self, shift):
        key = shift if isinstance(shift, float) else None
        if key is not None and key in self._factors:
            return self._factors[key]
        M = self.H if _is_zero(shift) else self.H + torch.as_tensor(shift, dtype=self.H.dtype) * torch.eye(
            self.n, dtype=self.H.dtype, device=self.device)
        L, info = torch.linalg.cholesky_ex(M)
        fac = ("chol", L) if int(info) == 0 else ("lu", torch.linalg.lu_factor(M))
        if key is not None:
            self._factors[key] = fac
        return fac

    def _solve_low(self, v, shift):
        kind, F = self._factor(shift)
        b = v.to(self.H.dtype).unsqueeze(1)
        z = torch.cholesky_solve(b, F) if kind == "chol" else torch.linalg.lu_solve(*F, b)
        return z.squeeze(1).to(self.dtype)

    def solve(self, v, shift=0.0):
        v = self._check_v(v)
        shift = self._shift(shift)
        d = self._solve_low(v, shift)
        for _ in range(self.refine):
            r = v - self.hvp(d)
            if not _is_zero(shift):
                r = r - shift * d
            d = d + self._solve_low(r, shift)
        return d

    def mv(self, v):
        return self.hvp(self._check_v(v))

    def to_dense(self):
        return self.H.to(self.dtype)


def _is_zero(shift) -> bool:
    return not isinstance(shift, torch.Tensor) and shift == 0


class NewtonCG(Preconditioner):
    name = "newton_cg"

    def __init__(self, inner_dtype: str | None = None, cg_maxiter: int | None = None):
        if inner_dtype not in INNER_DTYPES:
            raise ValueError(f"inner_dtype must be one of {INNER_DTYPES}, got {inner_dtype!r}")
        if cg_maxiter is not None and (not isinstance(cg_maxiter, int) or isinstance(cg_maxiter, bool)
                                       or cg_maxiter < 1):
            raise ValueError(f"cg_maxiter must be a positive integer or None, got {cg_maxiter!r}")
        self.inner_dtype, self.cg_maxiter = inner_dtype, cg_maxiter

    def init(self, problem, x, generator):
        state = {"events": {"negative_curvature": 0, "cg_iterations": 0}, "lowp": None, "inner": None}
        state["lowp"], state["inner"] = lowp_oracle(
            self.inner_dtype, problem, x, _lowp_hvp_factory,
            f"has only {x.dtype} Hessian-vector products (a low-precision inner solve is available for logistic "
            "regression)")
        return state

    def update(self, s, x, g, oracle):
        n = x.shape[0]
        maxiter = self.cg_maxiter or min(n, 1000)
        gnorm = float(torch.linalg.vector_norm(g))
        if s["lowp"] is not None:
            hvp = s["lowp"](x)
            return CGInverse(hvp, n, x.dtype, x.device, gnorm, maxiter, s["events"], s["inner"], oracle), s
        return CGInverse(lambda v: oracle.hvp(x, v), n, x.dtype, x.device, gnorm, maxiter, s["events"]), s


__all__ = ["NewtonCG", "CGInverse", "RefinedHessian", "INNER_DTYPES"]
