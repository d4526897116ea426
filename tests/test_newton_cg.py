"""newton_cg: CG on HVPs against dense float64 ground truth; negative curvature; float32 inner solve."""
import pytest
import torch

import precond_core as pc
from precond_core import newton_cg as NCG
from precond_core.oracle import Oracle

F64 = torch.float64


def _logreg(n=30, S=200, seed=0):
    A, b = pc.synthetic.logistic_data(n_samples=S, n_features=n, seed=seed, dtype=F64)
    return pc.problems.logistic_regression(A, b, lam=1e-3)


def test_cg_direction_meets_forcing_term_against_dense_solve():
    prob = _logreg()
    x = torch.full((prob.n,), 0.05, dtype=F64)
    f, g = prob.loss_grad(x)
    H = prob.hessian(x)
    pre = NCG.NewtonCG(cg_maxiter=500)
    oracle = Oracle(prob)
    op, st = pre.update(pre.init(prob, x, None), x, g, oracle)
    for shift in (0.0, 0.3):
        d = op.solve(g, shift)
        A = H + shift * torch.eye(prob.n, dtype=F64)
        res = torch.linalg.vector_norm(A @ d - g) / torch.linalg.vector_norm(g)
        assert res <= min(0.5, float(torch.linalg.vector_norm(g)) ** 0.5) * (1 + 1e-9)
    # a tight forcing term gives the Newton direction itself
    op.eta = 1e-12
    assert torch.allclose(op.solve(g), torch.linalg.solve(H, g), rtol=1e-8, atol=1e-12)
    assert oracle.hvps > 0 and st["events"]["cg_iterations"] > 0


def test_newton_cg_converges_like_newton():
    prob = _logreg()
    tr = pc.minimize(prob, "newton_cg", eps=1e-10, max_iters=50)
    ref = pc.minimize(prob, "newton", eps=1e-10, max_iters=50)
    assert tr.stop_reason == "converged" and tr.iterations <= ref.iterations + 5
    assert torch.allclose(tr.x, ref.x, rtol=1e-7, atol=1e-9)
    assert tr.events["negative_curvature"] == 0 and tr.events["cg_iterations"] > 0


def test_negative_curvature_stops_cg_and_is_counted():
    H = torch.diag(torch.tensor([2.0, 1.0, -1.0], dtype=F64))
    events = {}
    op = NCG.CGInverse(lambda v: H @ v, 3, F64, torch.device("cpu"), gnorm=1.0, maxiter=10, events=events)
    g = torch.tensor([1.0, 1.0, 1.0], dtype=F64)
    d = op.solve(g)
    assert events["negative_curvature"] == 1
    assert float(torch.dot(g, d)) > 0            # -d is a descent direction
    g2 = torch.tensor([0.0, 0.0, 1.0], dtype=F64)   # curvature -1 at the first product: the gradient itself
    assert torch.equal(op.solve(g2), g2) and events["negative_curvature"] == 2


def test_float32_inner_solve_reaches_float64_tolerance():
    prob = _logreg()
    tr = pc.minimize(prob, pc.make_method("newton_cg", inner_dtype="float32"), eps=1e-9, max_iters=60)
    ref = pc.minimize(prob, "newton", eps=1e-10, max_iters=50)
    assert tr.stop_reason == "converged" and tr.grad_norms[-1] <= 1e-9
    assert tr.x.dtype == F64 and torch.allclose(tr.x, ref.x, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("method", ["newton_cg", "newton"])
def test_float32_inner_solve_refused_where_only_float64_exists(method):
    q = pc.problems.quadratic(n=6, cond=5.0, seed=0)
    with pytest.raises(ValueError, match="inner_dtype"):
        pc.Solver(q, pc.make_method(method, inner_dtype="float32"))
    with pytest.raises(ValueError, match="inner_dtype"):
        pc.make_method(method, inner_dtype="float16")
    A, b = pc.synthetic.logistic_data(n_samples=50, n_features=5, seed=0, dtype=torch.float32)
    p32 = pc.problems.logistic_regression(A, b, lam=1e-3)
    with pytest.raises(ValueError, match="wider"):
        pc.Solver(p32, pc.make_method(method, inner_dtype="float64"))


def test_cg_maxiter_must_be_positive():
    with pytest.raises(ValueError, match="cg_maxiter"):
        pc.make_method("newton_cg", cg_maxiter=0)


# -- dense newton with a float32 Hessian and a refined solve ------------------------------------------------
def test_newton_float32_hessian_refined_direction_and_answer():
    """inner_dtype='float32': the refined direction is the float64 Newton direction to about
    (cond(H) eps32)^2, and the run reaches the float64 run's answer (the stopping test is float64)."""
    import precond_core as pc
    from precond_core.oracle import Oracle
    prob = _logreg(n=20, S=300, seed=3)
    x = torch.randn(20, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 0.1
    g = prob.grad(x)
    d64 = torch.linalg.solve(prob.hessian(x), g)
    pre = pc.make_method("newton", inner_dtype="float32").preconditioner
    oracle = Oracle(prob)
    op, _ = pre.update(pre.init(prob, x, None), x, g, oracle)
    assert op.H.dtype == torch.float32 and oracle.hvps == 20
    H = prob.hessian(x)
    torch.testing.assert_close(op.H.double(), H, rtol=1e-5, atol=1e-7)    # formed in float32
    d = op.solve(g)
    assert d.dtype == torch.float64 and oracle.hvps == 21                # one refinement HVP
    cond = float(torch.linalg.cond(H))
    assert float((d - d64).norm() / d64.norm()) <= max(1e-12, 10 * (cond * 6e-8) ** 2)
    unrefined = torch.cholesky_solve(g.float().unsqueeze(1), torch.linalg.cholesky(op.H)).squeeze(1).double()
    assert (d - d64).norm() < (unrefined - d64).norm()                   # the refinement helps
    ds = op.solve(g, 0.5)                                                # shifted solve (adaptive rule)
    torch.testing.assert_close(ds, torch.linalg.solve(H + 0.5 * torch.eye(20, dtype=torch.float64), g),
                               rtol=1e-9, atol=1e-12)
    t64 = pc.minimize(prob, pc.make_method("newton"), eps=1e-9)
    t32 = pc.minimize(prob, pc.make_method("newton", inner_dtype="float32"), eps=1e-9)
    assert t64.stop_reason == t32.stop_reason == "converged"
    torch.testing.assert_close(t32.x, t64.x, rtol=1e-8, atol=1e-9)
