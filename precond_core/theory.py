"""Iteration bounds from the talks, for drawing measured iterations beside theory.

Seed 000 (regularized step x+ = x - (D + alpha I)^{-1} g, alpha = sqrt(M ||g|| / 2) + sigma):
    K = ceil( 8 (f(x0) - f*) (sqrt(M/2) eps^{-3/2} + sigma eps^{-2}) + 2 log(||g0|| / eps) )
steps give min_k ||g_k|| <= eps.
"""
from __future__ import annotations

import math


def iteration_bound(f0_minus_fstar: float, M: float, sigma: float, eps: float, g0_norm: float) -> float:
    """The talk's K (a float, ``inf`` when a constant is infinite); raises ValueError on bad input."""
    for name, v in (("f0_minus_fstar", f0_minus_fstar), ("M", M), ("sigma", sigma)):
        if v is None or not v >= 0:
            raise ValueError(f"{name} must be a number >= 0, got {v!r}")
    if not eps > 0:
        raise ValueError(f"eps must be > 0, got {eps!r}")
    if g0_norm <= eps:
        return 0.0
    K = 8.0 * f0_minus_fstar * (math.sqrt(M / 2.0) * eps ** -1.5 + sigma * eps ** -2) + 2.0 * math.log(g0_norm / eps)
    return float(math.ceil(K))


__all__ = ["iteration_bound", "bound_for_run", "f_star_estimate", "uniform_direction_error",
           "uniform_direction_talk_bound"]


def f_star_estimate(problem, max_n: int = 2000, tol: float = 1e-10) -> float | None:
    """f* of ``problem``: its known value, else (convex problems with a Hessian, n <= ``max_n``) the loss
    where Newton with backtracking reaches ||g|| <= ``tol`` (then f - f* <= tol^2 / (2 mu)), cached on the
    problem; ``None`` when neither is available."""
    if problem.f_star is not None:
        return float(problem.f_star)
    cached = getattr(problem, "_f_star_newton", None)
    if cached is not None:
        return cached
    if problem.n > max_n:
        return None
    from .solver import minimize
    try:
        tr = minimize(problem, "newton", eps=tol, max_iters=100)
    except (ValueError, NotImplementedError):
        return None
    if tr.stop_reason != "converged":
        return None
    problem._f_star_newton = float(tr.losses[-1])
    return problem._f_star_newton


def bound_for_run(problem, method, x0, eps: float, f0: float, g0_norm: float, oracle=None) -> float | None:
    """K for ``method`` on ``problem`` when its constants are known: M from the method's parameters or
    the problem, f* from ``f_star_estimate``, sigma from the method's parameters or its preconditioner's
    bound (uniform direction: sqrt(lambda_max^2 n (n-1) + n delta^2); exact Hessian: 0). ``None`` when
    any is unknown or when sigma depends on x (Fisher)."""
    from .oracle import Oracle
    params = getattr(method, "params", {})
    M = params.get("M") if params.get("M") is not None else problem.M
    if M is None or getattr(method.preconditioner, "sigma_per_step", False):
        return None
    sigma = params.get("sigma")
    if sigma is None:
        sigma = method.preconditioner.sigma(oracle or Oracle(problem), x0)
    f_star = f_star_estimate(problem)
    if sigma is None or f_star is None:
        return None
    return iteration_bound(max(f0 - f_star, 0.0), float(M), float(sigma), eps, g0_norm)


def uniform_direction_error(H, form: str = "raw", delta: float = 0.0) -> float:
    """Exact E||D - H||_F^2 for the uniform-direction estimate (u uniform on the unit sphere).

    With t1 = tr(H), t2 = tr(H^2) = ||H||_F^2 (symmetric H):
    - raw D = n H u u^T:                 (n - 1) t2
    - symmetrized S = (n/2)(H u u^T + u u^T H), D = S + delta I:
                                         (n/2 - 1) t2 + n (t1^2 + 2 t2) / (2 (n + 2)) + n delta^2
    (uses E[u u^T] = I/n and E[(u^T H u)^2] = (t1^2 + 2 t2) / (n (n + 2))). Both are at most
    lambda_max^2 n (n - 1) (+ n delta^2), the talk's proposition, with equality iff H = c I: the
    proposition is an upper bound, exact only for multiples of the identity.
    """
    import torch
    n = H.shape[0]
    t1, t2 = float(torch.trace(H)), float((H * H).sum())
    if form == "raw":
        if delta:
            raise ValueError("delta applies to the regularized (symmetrized) form only")
        return (n - 1) * t2
    if form in ("symmetrized", "regularized"):
        return (n / 2 - 1) * t2 + n * (t1 ** 2 + 2 * t2) / (2 * (n + 2)) + n * delta ** 2
    raise ValueError(f"form must be 'raw', 'symmetrized' or 'regularized', got {form!r}")


def uniform_direction_talk_bound(lambda_max: float, n: int, delta: float = 0.0) -> float:
    """The talk's value lambda_max^2 n (n - 1) + n delta^2 for E||D - H||_F^2."""
    return lambda_max ** 2 * n * (n - 1) + n * delta ** 2


