"""The averaged uniform-direction estimate (samples = m), BFGS, the Fisher sigma rule and the talk's bounds,
against dense float64 constructions and exact formulas."""
import math

import pytest
import torch

import precond_core as pc
from precond_core import preconditioners as P
from precond_core import quasi_newton as QN
from precond_core import theory
from precond_core.oracle import Oracle

F64 = torch.float64


def _logistic(n_samples=40, n_features=6, lam=1e-2):
    A, b = pc.synthetic.logistic_data(n_samples=n_samples, n_features=n_features, seed=2, dtype=F64)
    return pc.problems.logistic_regression(A, b, lam=lam)


def _point(prob, seed=0):
    g = torch.Generator().manual_seed(seed)
    return 0.3 * torch.randn(prob.n, generator=g, dtype=prob.dtype)


def _dense_Dm(H, U, form, delta):
    """D_m = (1/m) sum_i n H u_i u_i^T (rows of U are u_i), symmetrized / + delta I, in dense float64."""
    n, m = H.shape[0], U.shape[0]
    D = sum(n * torch.outer(H @ U[i], U[i]) for i in range(m)) / m
    if form != "raw":
        D = 0.5 * (D + D.T) + delta * torch.eye(n, dtype=F64)
    return D


@pytest.mark.parametrize("m", [1, 3, 10])
@pytest.mark.parametrize("form,delta", [("raw", 0.0), ("symmetrized", 0.0), ("regularized", 0.25)])
def test_averaged_forms_match_dense(m, form, delta):
    prob = _logistic()
    x, n = _point(prob), prob.n
    H = prob.hessian(x)
    oracle = Oracle(prob)
    pre = P.UniformDirection(form, delta, samples=m)
    op, _ = pre.update(pre.init(prob, x, torch.Generator().manual_seed(7)), x, prob.grad(x), oracle)
    U = P.UniformDirection.draw(torch.empty(m, n, dtype=F64), torch.Generator().manual_seed(7))   # replay
    D = _dense_Dm(H, U, form, delta)
    assert oracle.hvps == m
    assert torch.allclose(op.to_dense(), D, atol=1e-10)
    inner = op.r if hasattr(op, "r") else 1
    assert inner == (m if form == "raw" else 2 * m) or (m == 1 and form == "raw")
    v = torch.randn(n, generator=torch.Generator().manual_seed(1), dtype=F64)
    for shift in (0.5, 3.0):
        expect = torch.linalg.solve(D + shift * torch.eye(n, dtype=F64), v)
        assert torch.allclose(oracle.solve(op, v, shift), expect, rtol=1e-8, atol=1e-10)
    assert torch.allclose(op.mv(v), D @ v, atol=1e-10)


def test_woodbury_holds_no_n_by_n_matrix():
    prob = _logistic(n_samples=60, n_features=40)
    x = _point(prob)
    for form in ("raw", "regularized"):
        pre = P.UniformDirection(form, 0.1, samples=4)
        op, _ = pre.update(pre.init(prob, x, torch.Generator().manual_seed(0)), x, prob.grad(x), Oracle(prob))
        op.solve(prob.grad(x), 1.0)
        sizes = [t.numel() for t in vars(op).values() if isinstance(t, torch.Tensor)]
        assert sizes and max(sizes) <= 8 * prob.n < prob.n ** 2, sizes    # O(n m) state, no n x n matrix


@pytest.mark.parametrize("form,delta", [("raw", 0.0), ("symmetrized", 0.0), ("regularized", 0.3)])
def test_expected_error_monte_carlo(form, delta):
    """E||D_m - H||_F^2 by a seeded Monte Carlo over N draws of the preconditioner itself, against
    theory.uniform_direction_error; tolerance: 4 standard errors of the Monte Carlo mean."""
    n, m, N = 5, 3, 4000
    prob = pc.problems.quadratic([3.0, 2.0, 1.0, 0.5, 0.1], seed=3)
    x = torch.zeros(n, dtype=F64)
    H = prob.hessian(x)
    pre = P.UniformDirection(form, delta, samples=m)
    st = pre.init(prob, x, torch.Generator().manual_seed(11))
    errs = []
    for _ in range(N):
        op, st = pre.update(st, x, x, Oracle(prob))
        errs.append(float(((op.to_dense() - H) ** 2).sum()))
    errs = torch.tensor(errs, dtype=F64)
    mc, se = float(errs.mean()), float(errs.std() / math.sqrt(N))
    exact = theory.uniform_direction_error(H, form, delta, samples=m)
    assert abs(mc - exact) <= 4 * se, (mc, exact, se)
    lmax = float(torch.linalg.eigvalsh(H).max())
    assert exact <= theory.uniform_direction_talk_bound(lmax, n, delta) / 1.0   # the proposition is a bound


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2"])
def test_samples_must_be_positive_integer(bad):
    with pytest.raises(ValueError, match="samples"):
        P.UniformDirection(samples=bad)
    with pytest.raises(ValueError, match="samples"):
        pc.make_method("uniform_direction", samples=bad)


def test_samples_rejected_by_methods_without_it():
    for name in ("gd", "newton", "bfgs", "hutchinson"):
        with pytest.raises(ValueError, match="samples"):
            pc.make_method(name, samples=2)


def test_sigma_local_and_sup_forms():
    prob = _logistic()
    x = _point(prob)
    n = prob.n
    lmax = float(torch.linalg.eigvalsh(prob.hessian(x)).max())
    local = P.UniformDirection("regularized", 0.1, samples=4).sigma(Oracle(prob), x)
    exact = math.sqrt(lmax ** 2 * n * (n - 1) / 4 + n * 0.01)
    assert exact * (1 - 1e-4) <= local <= exact * (1 + 1e-12)    # power iteration: a lower bound on lambda_max
    sup = P.UniformDirection("regularized", 0.1, samples=4, sigma_form="sup")
    assert sup.sigma(Oracle(prob), x) == pytest.approx(math.sqrt(prob.L ** 2 * n * (n - 1) / 4 + n * 0.01))
    assert prob.L >= lmax * (1 - 1e-12)
    assert "local" in P.UniformDirection().sigma_source(prob) and "sup" in sup.sigma_source(prob)
    with pytest.raises(ValueError, match="sigma_form"):
        P.UniformDirection(sigma_form="global")


def test_bfgs_update_matches_dense_formula_and_skips():
    prob = _logistic()
    pre = QN.BFGS()
    st = pre.init(prob, prob.x0(), None)
    x0, x1 = _point(prob, 0), _point(prob, 1)
    g0, g1 = prob.grad(x0), prob.grad(x1)
    pre.update(st, x0, g0, None)
    op, st = pre.update(st, x1, g1, None)
    s, y = x1 - x0, g1 - g0
    rho = 1 / float(y @ s)
    H0 = float(y @ s) / float(y @ y) * torch.eye(prob.n, dtype=F64)
    I = torch.eye(prob.n, dtype=F64)
    expect = (I - rho * torch.outer(s, y)) @ H0 @ (I - rho * torch.outer(y, s)) + rho * torch.outer(s, s)
    assert torch.allclose(op.Hinv, expect, atol=1e-12)
    assert torch.allclose(op.solve(g1), expect @ g1, atol=1e-12)
    before = op.Hinv.clone()
    pre.update(st, x1 + s, g1 - y, None)     # y^T s < 0: curvature condition fails, pair skipped
    assert st["skipped"] == 1 and torch.equal(st["Hinv"], before)


def test_bfgs_converges_on_logistic():
    prob = _logistic()
    tr = pc.minimize(prob, "bfgs", eps=1e-8, max_iters=200)
    assert tr.stop_reason == "converged"
    gd = pc.minimize(prob, pc.make_method("gd", step="armijo"), eps=1e-8, max_iters=tr.iterations)
    assert gd.grad_norms[-1] > tr.grad_norms[-1]


def test_fisher_sigma_is_an_estimate_unless_the_bound_covers_it():
    prob = _logistic()
    x = _point(prob)
    m = pc.make_method("fisher_empirical", step="regularized", M=1.0)
    m.step_rule.init(prob, x)
    assert m.step_rule.sigma_source.startswith("estimate")
    oracle = Oracle(prob)
    op, _ = m.preconditioner.update(None, x, prob.grad(x), oracle)
    est = m.preconditioner.sigma(oracle, x, op=op)
    true = float(torch.linalg.matrix_norm(prob.hessian(x) - op.to_dense(), ord=2))
    assert 0.9 * true <= est <= true * (1 + 1e-9)
    assert m.preconditioner.sigma(oracle, x) is None   # without D: no talk bound is used
    given = pc.make_method("fisher_sampled", step="regularized", M=1.0, sigma=2.0)
    given.step_rule.init(prob, x)
    assert given.step_rule.sigma_source == "given"
    tr = pc.minimize(prob, m, eps=1e-6, max_iters=300)
    assert tr.stop_reason == "converged"


def test_talk_bounds_formulas_and_log_readings():
    d, M, sig, eps, g0 = 2.0, 0.5, 3.0, 1e-3, 5.0
    a = theory.iteration_bound(d, M, sig, eps, g0, "eps")
    b = theory.iteration_bound(d, M, sig, eps, g0, "2")
    raw = 8 * d * (math.sqrt(M / 2) * eps ** -1.5 + sig * eps ** -2)
    assert a == math.ceil(raw + 2 * math.log(g0 / eps)) and b == math.ceil(raw + 2 * math.log(g0 / 2))
    L, S, fs = 0.25, 30, 0.1
    ls = theory.fisher_ls_bound(d, M, L, S, fs, eps, g0)
    assert ls == math.ceil(8 * d * ((math.sqrt(M / 2) + L * math.sqrt(2 * S * d)) * eps ** -1.5
                                    + L * math.sqrt(2 * S * fs) * eps ** -2) + 2 * math.log(g0 / eps))
    sm = theory.fisher_softmax_bound(d, M, fs, eps, g0, R=1.0)
    assert sm == math.ceil(8 * d * (2 / eps + math.sqrt(M / 2) * eps ** -1.5 + 2 * fs * eps ** -2)
                           + 2 * math.log(g0 / eps))
    with pytest.raises(ValueError, match="log_term"):
        theory.iteration_bound(d, M, sig, eps, g0, "ten")
    with pytest.raises(ValueError, match="L"):
        theory.fisher_ls_bound(d, M, -1.0, S, fs, eps, g0)


def test_talk_bounds_for_runs():
    prob = pc.problems.make_problem("nls", n_samples=30, n_features=5)
    x0 = prob.x0()
    f0, g0 = prob.loss_grad(x0)
    m = pc.make_method("fisher_empirical", step="regularized")
    ks = theory.talk_bounds(prob, m, x0, 1e-4, float(f0), float(g0.norm()))
    assert set(ks) == {"fisher_ls"} and ks["fisher_ls"] > 0
    ud = pc.make_method("uniform_direction", step="regularized", samples=2)
    ks = theory.talk_bounds(prob, ud, x0, 1e-4, float(f0), float(g0.norm()))
    assert set(ks) == {"ud, log(||g0||/eps)", "ud, log(||g0||/2)"}


def test_raw_form_without_shift_when_m_at_least_n():
    """c = 0: D_m = (n/m) V U^T solved directly when m >= n (in 1D, D = H: UD Newton is Newton)."""
    prob = pc.problems.make_problem("one_d", x0=1.0)
    ud = pc.minimize(prob, pc.make_method("uniform_direction", form="raw", step="fixed", lr=1.0), eps=1e-14,
                     max_iters=20)
    nt = pc.minimize(prob, pc.make_method("newton", step="fixed", lr=1.0), eps=1e-14, max_iters=20)
    assert ud.stop_reason == nt.stop_reason == "converged"
    assert torch.allclose(torch.tensor(ud.grad_norms), torch.tensor(nt.grad_norms), rtol=1e-10, atol=0)
    small = _logistic(n_features=4)
    x = _point(small)
    pre = P.UniformDirection("raw", samples=9)
    op, _ = pre.update(pre.init(small, x, torch.Generator().manual_seed(0)), x, small.grad(x), Oracle(small))
    v = small.grad(x)
    assert torch.allclose(op.solve(v), torch.linalg.solve(op.to_dense(), v), rtol=1e-8)


def test_draw_rows_are_unit_and_isotropic():
    """Rows of ``draw`` are unit vectors with E[u u^T] = I/n (seeded, 4 standard errors per entry)."""
    n, N = 4, 20000
    U = P.UniformDirection.draw(torch.empty(N, n, dtype=F64), torch.Generator().manual_seed(5))
    assert torch.allclose(U.norm(dim=1), torch.ones(N, dtype=F64), atol=1e-12)
    outer = torch.einsum("ki,kj->kij", U, U)
    mean, se = outer.mean(0), outer.std(0) / math.sqrt(N)
    assert ((mean - torch.eye(n, dtype=F64) / n).abs() <= 4 * se + 1e-12).all()
    big = P.UniformDirection.draw(torch.empty(1, 3 * P.UniformDirection.DRAW_CHUNK + 5, dtype=F64),
                                  torch.Generator().manual_seed(0))
    assert bool((big != 0).all())    # every chunk, the last partial one included, is filled


def test_run_row_records_sigma_source(tmp_path):
    import json as _json
    from precond_core.bench.grid import Cell
    from precond_core.bench.runner import run_sweep
    from precond_core.bench.store import load_tables
    common = dict(eps=1e-4, max_iters=5, max_seconds=5.0, suite="sigma-test")
    cells = [Cell("nls", {"n_samples": 30, "n_features": 5}, "fisher_empirical", {"step": "regularized"}, seed=0, **common),
             Cell("nls", {"n_samples": 30, "n_features": 5}, "uniform_direction",
                  {"step": "regularized", "sigma_form": "sup"}, seed=0, **common),
             Cell("nls", {"n_samples": 30, "n_features": 5}, "gd", {}, seed=0, **common)]
    s = run_sweep(("sigma-test", cells), tmp_path, git=("0" * 40, False), progress=False, log=lambda m: None)
    assert not s.failed, s.failed
    runs, _ = load_tables(tmp_path)
    src = {r["method"]: _json.loads(r["method_params_resolved"]).get("sigma_source") for _, r in runs.iterrows()}
    assert src["fisher_empirical"].startswith("estimate")
    assert "sup" in src["uniform_direction"] and src["gd"] is None
