"""Iteration bounds from the talks, for drawing measured iterations beside theory (docs/METHODS.md section 1).

Seed 000 (regularized step x+ = x - (D + alpha I)^{-1} g, alpha = sqrt(M ||g|| / 2) + sigma):
- uniform-direction lemma: K = ceil( 8 (f(x0) - f*) (sqrt(M/2) eps^{-3/2} + sigma eps^{-2}) + log term )
  where the slide prints the log term as 2 log(||g0|| / 2) (``log_term="2"``, negative when ||g0|| < 2)
  while the Fisher lemmas print 2 log(||g0|| / eps) (``log_term="eps"``, the default): both readings are
  offered and labelled;
- Fisher, nonlinear least squares f = 1/2 sum (phi(a_s, x) - b_s)^2 with x -> phi(a_s, x) L-smooth:
  K = ceil( 8 (f0 - f*) ((sqrt(M/2) + L sqrt(2 S R)) eps^{-3/2} + L sqrt(2 S f*) eps^{-2}) + 2 log(||g0||/eps) )
- Fisher, softmax: K = ceil( 8 (f0 - f*) (2 R eps^{-1} + sqrt(M/2) eps^{-3/2} + 2 f* eps^{-2}) + 2 log(||g0||/eps) )
The talk leaves R undefined; it is read here as a bound on f(x_k) - f* along the run, R = f0 - f* (the
regularized step decreases f, so f(x_k) - f* <= f0 - f*). Each K bounds the steps until
min_k ||g_k|| <= eps.
"""
from __future__ import annotations

import math


LOG_TERMS = {"eps": "2 log(||g0||/eps)", "2": "2 log(||g0||/2) (as printed in the uniform-direction lemma)"}


def _check_nonneg(**kw):
    for name, v in kw.items():
        if v is None or not v >= 0:
            raise ValueError(f"{name} must be a number >= 0, got {v!r}")


def _log_term(g0_norm: float, eps: float, log_term: str) -> float:
    if log_term not in LOG_TERMS:
        raise ValueError(f"log_term must be one of {sorted(LOG_TERMS)}, got {log_term!r}")
    return 2.0 * math.log(g0_norm / (eps if log_term == "eps" else 2.0))


def iteration_bound(f0_minus_fstar: float, M: float, sigma: float, eps: float, g0_norm: float,
                    log_term: str = "eps") -> float:
    """The uniform-direction lemma's K (a float, ``inf`` when a constant is infinite) with the log term
    read as ``log_term`` ("eps" or "2", see the module docstring); raises ValueError on bad input."""
    _check_nonneg(f0_minus_fstar=f0_minus_fstar, M=M, sigma=sigma)
    if not eps > 0:
        raise ValueError(f"eps must be > 0, got {eps!r}")
    if g0_norm <= eps:
        return 0.0
    K = 8.0 * f0_minus_fstar * (math.sqrt(M / 2.0) * eps ** -1.5 + sigma * eps ** -2) + _log_term(g0_norm, eps, log_term)
    return float(max(math.ceil(K), 0))


def fisher_ls_bound(f0_minus_fstar: float, M: float, L: float, S: int, f_star: float, eps: float,
                    g0_norm: float, R: float | None = None) -> float:
    """The Fisher lemma's K for nonlinear least squares (module docstring); R defaults to f0 - f*."""
    R = f0_minus_fstar if R is None else R
    _check_nonneg(f0_minus_fstar=f0_minus_fstar, M=M, L=L, S=S, f_star=f_star, R=R)
    if not eps > 0:
        raise ValueError(f"eps must be > 0, got {eps!r}")
    if g0_norm <= eps:
        return 0.0
    K = 8.0 * f0_minus_fstar * ((math.sqrt(M / 2.0) + L * math.sqrt(2.0 * S * R)) * eps ** -1.5
                                + L * math.sqrt(2.0 * S * f_star) * eps ** -2) + _log_term(g0_norm, eps, "eps")
    return float(max(math.ceil(K), 0))


def fisher_softmax_bound(f0_minus_fstar: float, M: float, f_star: float, eps: float, g0_norm: float,
                         R: float | None = None) -> float:
    """The Fisher lemma's K for softmax regression (module docstring); R defaults to f0 - f*."""
    R = f0_minus_fstar if R is None else R
    _check_nonneg(f0_minus_fstar=f0_minus_fstar, M=M, f_star=f_star, R=R)
    if not eps > 0:
        raise ValueError(f"eps must be > 0, got {eps!r}")
    if g0_norm <= eps:
        return 0.0
    K = 8.0 * f0_minus_fstar * (2.0 * R / eps + math.sqrt(M / 2.0) * eps ** -1.5 + 2.0 * f_star * eps ** -2) \
        + _log_term(g0_norm, eps, "eps")
    return float(max(math.ceil(K), 0))


__all__ = ["iteration_bound", "fisher_ls_bound", "fisher_softmax_bound", "talk_bounds", "LOG_TERMS", "bound_for_run", "f_star_estimate", "uniform_direction_error",
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
    any is unknown. Fisher preconditioners whose D the talk's sigma(x) bounds get the Fisher lemma's K
    (``talk_bounds``); other Fisher estimates get ``None`` (no lemma covers them)."""
    from .oracle import Oracle
    params = getattr(method, "params", {})
    M = params.get("M") if params.get("M") is not None else problem.M
    if M is None:
        return None
    if getattr(method.preconditioner, "sigma_per_step", False):
        ks = talk_bounds(problem, method, x0, eps, f0, g0_norm, oracle=oracle)
        return next((v for k, v in ks.items() if k.startswith("fisher")), None)
    sigma = params.get("sigma")
    if sigma is None:
        sigma = method.preconditioner.sigma(oracle or Oracle(problem), x0)
    f_star = f_star_estimate(problem)
    if sigma is None or f_star is None:
        return None
    return iteration_bound(max(f0 - f_star, 0.0), float(M), float(sigma), eps, g0_norm)


def uniform_direction_error(H, form: str = "raw", delta: float = 0.0, samples: int = 1) -> float:
    """Exact E||D_m - H||_F^2 for the uniform-direction estimate averaged over m = ``samples`` directions
    (u_i independent, uniform on the unit sphere). Every form averages m independent unbiased terms
    (plus delta I), so the variance part below divides by m and the bias n delta^2 does not.

    With t1 = tr(H), t2 = tr(H^2) = ||H||_F^2 (symmetric H):
    - raw D = n H u u^T:                 (n - 1) t2
    - symmetrized S = (n/2)(H u u^T + u u^T H), D = S + delta I:
                                         (n/2 - 1) t2 + n (t1^2 + 2 t2) / (2 (n + 2)) + n delta^2
    (uses E[u u^T] = I/n and E[(u^T H u)^2] = (t1^2 + 2 t2) / (n (n + 2))). Both are at most
    lambda_max^2 n (n - 1) (+ n delta^2), the talk's proposition, with equality iff H = c I: the
    proposition is an upper bound, exact only for multiples of the identity.
    """
    import torch
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
        raise ValueError(f"samples must be a positive integer, got {samples!r}")
    n = H.shape[0]
    t1, t2 = float(torch.trace(H)), float((H * H).sum())
    if form == "raw":
        if delta:
            raise ValueError("delta applies to the regularized (symmetrized) form only")
        return (n - 1) * t2 / samples
    if form in ("symmetrized", "regularized"):
        return ((n / 2 - 1) * t2 + n * (t1 ** 2 + 2 * t2) / (2 * (n + 2))) / samples + n * delta ** 2
    raise ValueError(f"form must be 'raw', 'symmetrized' or 'regularized', got {form!r}")


def uniform_direction_talk_bound(lambda_max: float, n: int, delta: float = 0.0) -> float:
    """The talk's value lambda_max^2 n (n - 1) + n delta^2 for E||D - H||_F^2."""
    return lambda_max ** 2 * n * (n - 1) + n * delta ** 2




def talk_bounds(problem, method, x0, eps: float, f0: float, g0_norm: float, oracle=None,
                M: float | None = None) -> dict:
    """Every talk bound K that applies to ``method`` on ``problem`` with known constants, by label:
    ``"ud, log(||g0||/eps)"`` and ``"ud, log(||g0||/2)"`` (uniform-direction lemma, sigma from the method or
    its preconditioner), ``"fisher_ls"`` (problems with ``L_x``, the smoothness of x -> phi(a_s, x)) and
    ``"fisher_softmax"`` (other problems with ``fisher_sigma``), with R = f0 - f*. Missing constants
    (M, f*) leave a bound out; an empty dict when none applies."""
    from .oracle import Oracle
    params = getattr(method, "params", {})
    if M is None:
        M = params.get("M") if params.get("M") is not None else problem.M
    out: dict = {}
    if M is None:
        return out
    f_star = f_star_estimate(problem)
    if f_star is None:
        return out
    d = max(f0 - f_star, 0.0)
    pre = method.preconditioner
    if getattr(pre, "sigma_per_step", None) is not None and hasattr(problem, "fisher_sigma"):
        if hasattr(problem, "L_x"):
            out["fisher_ls"] = fisher_ls_bound(d, float(M), float(problem.L_x), int(problem.n_samples),
                                               max(f_star, 0.0), eps, g0_norm)
        else:
            out["fisher_softmax"] = fisher_softmax_bound(d, float(M), max(f_star, 0.0), eps, g0_norm)
    if getattr(pre, "name", "") == "uniform_direction":
        sigma = params.get("sigma")
        if sigma is None:
            sigma = pre.sigma(oracle or Oracle(problem), x0)
        if sigma is not None:
            for lt in ("eps", "2"):
                out[f"ud, log(||g0||/{lt})"] = iteration_bound(d, float(M), float(sigma), eps, g0_norm, lt)
    return out
