"""Step rules: how far to move along the preconditioned direction (docs/METHODS.md section 1).

A step rule has ``init(problem, x) -> state`` and
``step(state, x, f, g, op, oracle) -> (x_new, f_new, g_new, state)``; ``f_new``/``g_new`` are the loss
and gradient at ``x_new`` when the rule had to compute them anyway (the solver then reuses them), else
``None``. ``op`` is the curvature operator D of the preconditioner (``operators.Operator``).

- ``Fixed(lr)``:           x+ = x - lr D^{-1} g                      (GD: D = I; Newton: lr = 1)
- ``Armijo(...)``:         x+ = x - t D^{-1} g, t backtracked until f(x+) <= f(x) - c t g^T D^{-1} g
- ``Regularized(M, sigma)``: x+ = x - (D + alpha I)^{-1} g, alpha = sqrt(M ||g|| / 2) + sigma (seed 000)
- ``Adaptive(gamma0)``:    alpha = ||g|| / gamma; accept if f(x) - f(x+) >= ||g(x+)||^2 / (8 alpha) and
                           double gamma, else halve gamma and retry (gradient-regularized Newton)
- ``Power(lr, p, eps, beta1)``: x+ = x - lr (D + eps I)^p m, m = bias-corrected EMA of g (beta1 = 0: m = g);
                           p = -1/2 is AdaGrad / Adam.
"""
from __future__ import annotations

import inspect
import math
import sys
from dataclasses import dataclass

import torch

from .operators import BlockMean, Diagonal, Scalar, group_views
from .problems.base import norm


def roundoff(f: float, dtype: torch.dtype) -> float:
    """Tolerance below which two loss values near ``f`` are indistinguishable: 10 eps |f|. Decrease
    tests use it so that at the optimum (where f(x) - f(x+) is rounding noise) a step rule neither
    rejects every trial nor shrinks its step to zero."""
    return 10.0 * torch.finfo(dtype).eps * max(abs(f), torch.finfo(dtype).tiny)


def _check_positive(name: str, value, allow_none: bool = False, allow_zero: bool = False):
    if value is None and allow_none:
        return
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (value >= 0 if allow_zero else value > 0)
    if not ok:
        what = "a finite number >= 0" if allow_zero else "a finite number > 0"
        raise ValueError(f"{name} must be {what}{' or None' if allow_none else ''}, got {value!r}")


class StepRule:
    name = "step"
    # whether ``step`` takes ``owns_x``: True when the caller (``Solver``) holds the only reference to x, so
    # the rule may write x_new into x's storage (no fresh n-vector per step); such a rule then returns x itself
    takes_owns_x = False

    def init(self, problem, x):
        return None

    def params(self) -> dict:
        return {}


class Fixed(StepRule):
    name = "fixed"

    def __init__(self, lr: float | None = None):
        _check_positive("lr", lr, allow_none=True)
        self.lr = lr

    def init(self, problem, x):
        lr = self.lr
        if lr is None:
            if problem.L is None:
                raise ValueError(f"step='fixed' needs lr: problem {problem.name!r} has no known smoothness "
                                 "constant L to default to lr = 1/L")
            lr = 1.0 / problem.L
        return lr

    takes_owns_x = True

    def step(self, lr, x, f, g, op, oracle, owns_x=False):
        if isinstance(op, Scalar) and op.py_c and g.shape == x.shape:   # D = c I (gd): one fused pass
            oracle.solves += 1
            if owns_x:
                return x.add_(g, alpha=-lr / op.py_c), None, None, lr
            return torch.add(x, g, alpha=-lr / op.py_c), None, None, lr
        if owns_x and g.shape == x.shape:       # x - lr D^{-1} g written into x (no n-sized temporary where
            oracle.solves += 1                  # the operator fuses it, e.g. LowRank, Diagonal)
            return op.solve_add_(x, g, -lr), None, None, lr
        return x - lr * oracle.solve(op, g), None, None, lr

    def params(self):
        return {"lr": self.lr}


class Armijo(StepRule):
    """Backtracking on the sufficient-decrease condition; the next search starts at min(lr, t / beta)."""
    name = "armijo"

    def __init__(self, lr: float = 1.0, c: float = 1e-4, beta: float = 0.5, max_backtracks: int = 50):
        _check_positive("lr", lr)
        if not 0 < c < 1:
            raise ValueError(f"c (Armijo constant) must be in (0, 1), got {c!r}")
        if not 0 < beta < 1:
            raise ValueError(f"beta (backtracking factor) must be in (0, 1), got {beta!r}")
        self.lr, self.c, self.beta, self.max_backtracks = float(lr), float(c), float(beta), int(max_backtracks)

    def init(self, problem, x):
        return self.lr

    def step(self, t_prev, x, f, g, op, oracle):
        d = oracle.solve(op, g)
        slope = torch.dot(g, d)
        if not bool(slope > 0):  # not a descent direction (indefinite D): fall back to the gradient
            d, slope = g, torch.dot(g, g)
        t = min(self.lr, t_prev / self.beta)
        fv, slope_v = float(f), float(slope)
        tol = roundoff(fv, x.dtype)
        for _ in range(self.max_backtracks):
            x_new = torch.add(x, d, alpha=-t)   # one fused pass, no t * d temporary
            f_new = oracle.loss(x_new)
            if float(f_new) <= fv - self.c * t * slope_v + tol:
                return x_new, f_new, None, t
            t *= self.beta
        return x_new, f_new, None, t

    def params(self):
        return {"lr": self.lr, "c": self.c, "beta": self.beta}


class Regularized(StepRule):
    """The talk's regularized step: alpha_k = sqrt(M ||g_k|| / 2) + sigma (no line search).

    ``M`` defaults to the problem's Hessian Lipschitz constant; ``sigma`` to the preconditioner's
    (``Preconditioner.sigma``): sqrt(lambda_max^2 n(n-1)/m + n delta^2) for the uniform direction
    (computed once; lambda_max at x0 or <= L, see ``UniformDirection``), 0 for the exact Hessian; for
    Fisher estimates the talk's sigma(x_k) only where its bound covers the estimate, else the documented
    estimate ||H(x0) - D(x0)||_2 (``preconditioners._FisherSigma``). After ``init``, ``sigma_source``
    says which: "given" or the preconditioner's ``sigma_source(problem)``; the runner records it.
    """
    name = "regularized"

    def __init__(self, M: float | None = None, sigma: float | None = None):
        _check_positive("M", M, allow_none=True, allow_zero=True)
        _check_positive("sigma", sigma, allow_none=True, allow_zero=True)
        self.M, self.sigma = M, sigma
        self.preconditioner = None  # set by the registry so sigma can default to its bound
        self.sigma_source = None    # set by init

    def init(self, problem, x):
        M = self.M if self.M is not None else problem.M
        if M is None:
            raise ValueError(f"step='regularized' needs M: problem {problem.name!r} has no known Hessian "
                             "Lipschitz constant; pass M=...")
        pre = self.preconditioner
        if self.sigma is None and (pre is None or not pre.has_sigma(problem)):
            raise ValueError(f"step='regularized' needs sigma: preconditioner "
                             f"{getattr(pre, 'name', None)!r} has no known bound on problem {problem.name!r}; "
                             "pass sigma=...")
        if self.sigma is not None:
            self.sigma_source = "given"
        else:
            src = getattr(pre, "sigma_source", None)
            self.sigma_source = src(problem) if callable(src) else "preconditioner bound"
        return {"M": float(M), "sigma": self.sigma}

    takes_owns_x = True

    def step(self, state, x, f, g, op, oracle, owns_x=False):
        sigma = state["sigma"]
        if sigma is None:
            pre = self.preconditioner
            if pre is None:
                sigma = None
            elif "op" in inspect.signature(pre.sigma).parameters:   # an estimate that needs D itself
                sigma = pre.sigma(oracle, x, op=op)
            else:
                sigma = pre.sigma(oracle, x)
            if sigma is None:
                raise ValueError("step='regularized' needs sigma: this preconditioner has no known bound; pass sigma=...")
            if not getattr(pre, "sigma_per_step", False):   # a bound over all x or an estimate at x0: once
                state["sigma"] = float(sigma)
        alpha = torch.sqrt(state["M"] * norm(g) / 2) + sigma
        if owns_x and g.shape == x.shape:      # x - (D + alpha I)^{-1} g written into x
            oracle.solves += 1
            return op.solve_add_(x, g, -1.0, alpha), None, None, state
        return x - oracle.solve(op, g, alpha), None, None, state

    def params(self):
        return {"M": self.M, "sigma": self.sigma}


class Adaptive(StepRule):
    """alpha_k = ||g_k|| / gamma_k with the acceptance test f(x) - f(x+) >= ||g(x+)||^2 / (8 alpha_k).

    On acceptance gamma is multiplied by ``grow`` (2 in docs/METHODS.md), on rejection by ``shrink`` (1/2)
    and the step is retried (at most ``max_tries`` times; the last trial is taken). A trial first
    evaluates f(x+) alone: when f increases the test fails whatever g(x+) is, so the gradient is
    skipped (problems that cache their forward pass then pay one pass instead of two). When
    |f(x) - f(x+)| is within rounding (``roundoff``), the decrease carries no information and the trial
    is accepted if ||g(x+)|| <= ||g(x)||. An accepted trial's loss and gradient are reused by the solver.
    """
    name = "adaptive"

    def __init__(self, gamma0: float = 1.0, grow: float = 2.0, shrink: float = 0.5, max_tries: int = 60):
        _check_positive("gamma0", gamma0)
        if not (isinstance(grow, (int, float)) and grow >= 1):
            raise ValueError(f"grow must be a number >= 1, got {grow!r}")
        if not (isinstance(shrink, (int, float)) and 0 < shrink < 1):
            raise ValueError(f"shrink must be a number in (0, 1), got {shrink!r}")
        self.gamma0, self.grow, self.shrink, self.max_tries = float(gamma0), float(grow), float(shrink), int(max_tries)

    def init(self, problem, x):
        return self.gamma0

    def step(self, gamma, x, f, g, op, oracle):
        gn = norm(g)
        fv = float(f)
        tol = roundoff(fv, x.dtype)
        for _ in range(self.max_tries):
            alpha = gn / gamma
            x_new = x - oracle.solve(op, g, alpha)
            if not float(oracle.loss(x_new)) <= fv + tol:   # increase (or NaN): reject without the gradient
                gamma *= self.shrink
                continue
            f_new, g_new = oracle.loss_grad(x_new)
            decrease, gn2_new = fv - float(f_new), float(torch.dot(g_new, g_new))
            if decrease >= gn2_new / (8 * float(alpha)) or (abs(decrease) <= tol and gn2_new <= float(gn) ** 2):
                return x_new, f_new, g_new, gamma * self.grow
            gamma *= self.shrink
        f_new, g_new = oracle.loss_grad(x_new)
        return x_new, f_new, g_new, gamma

    def params(self):
        return {"gamma0": self.gamma0, "grow": self.grow, "shrink": self.shrink}


@dataclass
class PowerState:
    t: int
    m: torch.Tensor | None


# torch's count of tensors sharing a storage (private; absent in some builds: then nothing is reused)
_STORAGE_USE_COUNT = getattr(torch._C, "_storage_Use_Count", None)


def _sole_owner(t: torch.Tensor, refs: int) -> bool:
    """Whether ``t`` is referenced by no Python name beyond ``refs`` known ones and no view shares its
    storage, so overwriting it cannot change a tensor anyone else holds. False whenever that cannot be
    established (the storage count is unavailable)."""
    if _STORAGE_USE_COUNT is None:
        return False
    return (sys.getrefcount(t) <= refs + 2   # + the parameter and getrefcount's own argument
            and _STORAGE_USE_COUNT(t.untyped_storage()._cdata) <= 2)


class Power(StepRule):
    """AdaGrad/Adam step x+ = x - lr (D + eps I)^p m_hat; m_hat = bias-corrected EMA of g (beta1 > 0)."""
    name = "power"

    def __init__(self, lr: float = 0.1, p: float = -0.5, eps: float = 1e-10, beta1: float = 0.0):
        _check_positive("lr", lr)
        _check_positive("eps", eps, allow_zero=True)
        if not 0 <= beta1 < 1:
            raise ValueError(f"beta1 must be in [0, 1), got {beta1!r}")
        self.lr, self.p, self.eps, self.beta1 = float(lr), float(p), float(eps), float(beta1)

    def init(self, problem, x):
        return PowerState(0, torch.zeros_like(x) if self.beta1 > 0 else None)

    takes_owns_x = True

    def step(self, state, x, f, g, op, oracle, owns_x=False):
        state.t += 1
        m, lr = g, self.lr
        if state.m is not None:
            state.m.lerp_(g, 1 - self.beta1)       # beta1 m + (1 - beta1) g in one pass
            m, lr = state.m, self.lr / (1 - self.beta1 ** state.t)   # bias correction folded into the step
        out = x if owns_x else None   # the next iterate is written into x when the caller owns it
        if type(op) is Diagonal and m.ndim == 1 and m.dtype == op.dtype and m.shape[0] == op.n:
            # diagonal D (AdaGrad, Adam): x - lr (D + eps I)^p m in one chunked pass (the powered diagonal
            # lives in a cache-sized buffer only)
            oracle.solves += 1
            x_new = op.power_add(x, m, self.p, self.eps, -lr, torch.empty_like(x) if out is None else out)
            return x_new, None, None, state
        if (type(op) is BlockMean and len(op.groups) <= 2 and m.ndim == 1 and m.dtype == op.dtype
                and m.shape[0] == op.n and m.is_contiguous() and x.is_contiguous()):
            # AdaGrad-BMA with equal blocks, or the two runs of equal blocks of ``partition(n, k)``: the powered
            # block mean (cached by the operator between refreshes) applied as x - lr (lam v + E B E^T v) on
            # (blocks, size) views of each family of blocks: one block-sum pass, two update passes, no gathers
            oracle.solves += 1
            h = op.matrix_power(self.p, self.eps)
            c = (h.B @ op.block_sums_of(m)).mul_(-lr)      # E^T g: the update's own sums when m is its g
            x_new = torch.empty_like(x) if out is None else out
            if len(op.groups) == 1 and op.groups[0][1] == op.k:   # equal blocks: (k, s) views of the vectors
                k, s = op.k, op.groups[0][3]
                torch.add(x.view(k, s), c.unsqueeze(1), out=x_new.view(k, s)).addcmul_(
                    h.lam.unsqueeze(1), m.view(k, s), value=-lr)
                return x_new, None, None, state
            for (sl, V), (_, Xv), (_, Xn) in zip(group_views(m, op.groups), group_views(x, op.groups),
                                                 group_views(x_new, op.groups)):
                torch.add(Xv, c[sl].unsqueeze(1), out=Xn).addcmul_(h.lam[sl].unsqueeze(1), V, value=-lr)
            return x_new, None, None, state
        d = oracle.power(op, m, self.p, self.eps)
        if out is not None and d.shape == x.shape:
            return x.add_(d, alpha=-lr), None, None, state
        return x - lr * d, None, None, state

    def params(self):
        return {"lr": self.lr, "p": self.p, "eps": self.eps, "beta1": self.beta1}


STEP_RULES = {"fixed": Fixed, "armijo": Armijo, "regularized": Regularized, "adaptive": Adaptive, "power": Power}

__all__ = ["StepRule", "Fixed", "Armijo", "Regularized", "Adaptive", "Power", "STEP_RULES"]
