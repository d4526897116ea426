"""Shared tests parametrized over the method registry: a new method is tested by being registered."""
import math

import pytest
import torch

import precond_core as pc
from precond_core import theory
from precond_core.problems import base

F64 = torch.float64


def _quadratic(device="cpu", n=12):
    return pc.problems.quadratic(n=n, cond=20.0, seed=3, dtype=F64, device=device)


def _logistic(device="cpu", n_samples=200, n_features=10, lam=1e-2):
    A, b = pc.synthetic.logistic_data(n_samples=n_samples, n_features=n_features, seed=1, dtype=F64, device=device)
    return pc.problems.logistic_regression(A, b, lam=lam)


@pytest.mark.parametrize("name", pc.list_methods())
def test_every_method_decreases_grad_norm_on_strongly_convex_quadratic(name, device):
    prob = _quadratic(device)
    kw = {"k": 4} if pc.method_info(name).blocks else {}
    tr = pc.minimize(prob, pc.make_method(name, **kw), eps=1e-12, max_iters=60, seed=0)
    assert tr.stop_reason in ("converged", "max_iters"), (tr.stop_reason, tr.message)
    assert min(tr.grad_norms) < 0.5 * tr.grad_norms[0], (name, tr.grad_norms[:5], tr.grad_norms[-3:])
    assert all(math.isfinite(v) for v in tr.losses)
    assert tr.state_bytes >= 0 and len(tr.times) == len(tr.losses) == tr.iterations + 1


@pytest.mark.parametrize("name", pc.list_methods())
def test_every_method_is_reproducible_with_a_seed(name):
    prob = _quadratic()
    kw = {"k": 4} if pc.method_info(name).blocks else {}
    a = pc.minimize(prob, pc.make_method(name, **kw), eps=1e-12, max_iters=8, seed=5)
    b = pc.minimize(prob, pc.make_method(name, **kw), eps=1e-12, max_iters=8, seed=5)
    assert a.grad_norms == b.grad_norms and a.losses == b.losses


@pytest.mark.parametrize("name", pc.list_methods())
def test_every_method_has_a_label_and_info(name):
    info = pc.method_info(name)
    m = pc.make_method(name)
    assert m.label == name and m.params["step"] == info.step and info.summary


def test_newton_reaches_1e_8_on_logistic_regression_in_15_iterations(device):
    prob = _logistic(device, n_samples=500, n_features=100, lam=1e-3)
    tr = pc.minimize(prob, "newton", eps=1e-8, max_iters=15)
    assert tr.stop_reason == "converged" and tr.iterations <= 15, (tr.iterations, tr.grad_norms)


def test_gd_is_much_slower_than_newton_on_the_block_mean_talk_problem():
    prob = _logistic(n_samples=500, n_features=100, lam=1e-3)
    newton = pc.minimize(prob, "newton", eps=1e-8, max_iters=50)
    gd = pc.minimize(prob, pc.make_method("gd", step="armijo"), eps=1e-8, max_iters=50)
    assert newton.stop_reason == "converged" and gd.grad_norms[-1] > 1e3 * newton.grad_norms[-1]


def test_uniform_direction_is_unbiased_monte_carlo():
    """E[n H u u^T] = H: mean of N draws; each entry's standard error is at most ~ n ||H||_2 / sqrt(N)."""
    n, N = 6, 40000
    g = torch.Generator().manual_seed(0)
    Q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=F64))
    H = Q @ torch.diag(torch.linspace(0.5, 3.0, n, dtype=F64)) @ Q.T
    U = torch.randn(N, n, generator=g, dtype=F64)
    U = U / U.norm(dim=1, keepdim=True)
    mean = n * (U @ H).T @ U / N           # (1/N) sum n (H u) u^T
    tol = 4 * n * 3.0 / math.sqrt(N)
    assert (mean - H).abs().max() < tol
    assert (mean - H).abs().max() > 0      # a real estimate, not H itself


@pytest.mark.parametrize("form,delta", [("raw", 0.0), ("symmetrized", 0.0), ("regularized", 0.3)])
def test_uniform_direction_error_formula_and_talk_bound(form, delta):
    """Monte-Carlo E||D - H||_F^2 matches the exact formula; the talk's value bounds it, with equality for H = cI."""
    n, N = 5, 60000
    g = torch.Generator().manual_seed(1)
    Q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=F64))
    H = Q @ torch.diag(torch.tensor([0.2, 0.5, 1.0, 1.5, 2.0], dtype=F64)) @ Q.T
    U = torch.randn(N, n, generator=g, dtype=F64)
    U = U / U.norm(dim=1, keepdim=True)
    V = U @ H
    D = n * V[:, :, None] * U[:, None, :]
    if form != "raw":
        D = 0.5 * (D + D.transpose(1, 2)) + delta * torch.eye(n, dtype=F64)
    err = ((D - H) ** 2).sum(dim=(1, 2))
    exact = theory.uniform_direction_error(H, form, delta)
    assert abs(err.mean().item() - exact) < 4 * err.std().item() / math.sqrt(N)
    talk = theory.uniform_direction_talk_bound(2.0, n, delta)
    assert exact < talk
    c = 1.7
    assert theory.uniform_direction_error(c * torch.eye(n, dtype=F64), form, delta) == pytest.approx(
        theory.uniform_direction_talk_bound(c, n, delta))


def test_hutchinson_tends_to_diagonal():
    """mean of z * (H z) over N Rademacher probes -> diag(H); entry i has variance sum_{j != i} H_ij^2."""
    prob = _quadratic(n=8)
    x = prob.x0()
    H = prob.hessian(x)
    g = torch.Generator().manual_seed(0)
    N = 4000
    Z = torch.randint(0, 2, (N, 8), generator=g).to(F64) * 2 - 1
    est = (Z * (Z @ H)).mean(0)
    sd = ((H ** 2).sum(1) - torch.diag(H) ** 2).sqrt() / math.sqrt(N)
    assert torch.all((est - torch.diag(H)).abs() <= 4 * sd + 1e-12)


def test_adagrad_bma_singleton_blocks_equal_full_matrix_adagrad():
    prob = _quadratic(n=10)
    a = pc.minimize(prob, pc.make_method("adagrad_bma", k=10, variant="exact", lr=0.5), eps=1e-12, max_iters=15)
    b = pc.minimize(prob, pc.make_method("adagrad_full", lr=0.5), eps=1e-12, max_iters=15)
    assert torch.allclose(torch.tensor(a.grad_norms), torch.tensor(b.grad_norms), rtol=1e-9, atol=1e-12)


def test_adagrad_bma_scaled_with_identity_F_is_diagonal_adagrad():
    g = torch.Generator().manual_seed(0)
    z2 = torch.rand(50, generator=g, dtype=F64) + 0.1
    v = torch.randn(50, generator=g, dtype=F64)
    op = pc.operators.Scaled(pc.operators.Scalar(50, 1.0, dtype=F64), z2.sqrt())
    assert torch.allclose(op.power(v, -0.5), v / z2.sqrt(), rtol=1e-12)
    diag = pc.operators.Diagonal(z2).power(v, -0.5)
    assert torch.allclose(op.power(v, -0.5), diag, rtol=1e-12)


def test_adagrad_bma_state_is_O_k2_and_never_n_by_n():
    prob = pc.problems.scalable(20000, seed=0)
    tr = pc.minimize(prob, pc.make_method("adagrad_bma", k=64), eps=1e-12, max_iters=3)
    assert tr.state_bytes < 20 * prob.n * 8, tr.state_bytes


def test_uniform_direction_regularized_step_uses_talk_sigma():
    prob = pc.problems.one_d()
    m = pc.make_method("uniform_direction", step="regularized", form="regularized", delta=0.0)
    tr = pc.minimize(prob, m, eps=1e-6, max_iters=200)
    assert tr.stop_reason == "converged"


def test_regularized_step_without_M_is_a_clear_error():
    A, b = pc.synthetic.logistic_data(n_samples=50, n_features=5, seed=0)
    prob = pc.problems.from_function(lambda x: (x ** 4).sum() + (x ** 2).sum(), torch.ones(3, dtype=F64))
    with pytest.raises(ValueError, match="M"):
        pc.minimize(prob, pc.make_method("uniform_direction", step="regularized"), max_iters=2)


def test_theory_iteration_bound():
    K = theory.iteration_bound(2.0, 1.0, 0.5, 1e-2, 10.0)
    expected = math.ceil(8 * 2.0 * (math.sqrt(0.5) * 1e-2 ** -1.5 + 0.5 * 1e-2 ** -2) + 2 * math.log(10.0 / 1e-2))
    assert K == expected
    with pytest.raises(ValueError, match="eps"):
        theory.iteration_bound(1.0, 1.0, 1.0, 0.0, 1.0)


# -- bad input --------------------------------------------------------------------------------------
def test_unknown_method_and_parameter_are_named():
    with pytest.raises(ValueError, match="unknown method 'nope'.*uniform_direction"):
        pc.make_method("nope")
    with pytest.raises(ValueError, match="unknown parameter.*dleta.*allowed.*delta"):
        pc.make_method("uniform_direction", dleta=0.1)
    with pytest.raises(ValueError, match="step='power' is not allowed"):
        pc.make_method("newton", step="power")


@pytest.mark.parametrize("kw,match", [({"delta": -0.1}, "delta"), ({"form": "sym"}, "form"),
                                      ({"lr": 0.0, "step": "fixed"}, "lr")])
def test_bad_method_parameters(kw, match):
    with pytest.raises(ValueError, match=match):
        pc.make_method("uniform_direction", **kw) if "lr" not in kw else pc.make_method("gd", **kw)


@pytest.mark.parametrize("blocks", [(3, 3), (0, 12), (-2, 14), (5, 5, 5)])
def test_invalid_partitions(blocks):
    with pytest.raises(ValueError, match="blocks"):
        pc.minimize(_quadratic(), pc.make_method("adagrad_bma", blocks=blocks), max_iters=1)


def test_k_out_of_range():
    with pytest.raises(ValueError, match="k"):
        pc.minimize(_quadratic(), pc.make_method("adagrad_bma", k=13), max_iters=1)


@pytest.mark.parametrize("eps", [0, -1e-3, float("nan")])
def test_bad_eps(eps):
    with pytest.raises(ValueError, match="eps"):
        pc.minimize(_quadratic(), "gd", eps=eps)


def test_mismatched_dtype_of_x0():
    prob = _quadratic()
    with pytest.raises(ValueError, match="x0.*dtype"):
        pc.minimize(prob, "gd", x0=torch.zeros(prob.n, dtype=torch.float32))
    with pytest.raises(ValueError, match="x0.*shape"):
        pc.minimize(prob, "gd", x0=torch.zeros(prob.n + 1, dtype=F64))


def test_dense_method_refuses_large_n():
    with pytest.raises(ValueError, match="n <= "):
        pc.minimize(pc.problems.scalable(10000, seed=0), "newton", max_iters=1)


def test_nonfinite_step_ends_with_diverged_not_an_exception():
    prob = _quadratic()
    tr = pc.minimize(prob, pc.make_method("gd", step="fixed", lr=1e6), eps=1e-8, max_iters=500)
    assert tr.stop_reason == "diverged"
    assert not math.isfinite(tr.losses[-1]) or not math.isfinite(tr.grad_norms[-1])


def test_timeout_stop_reason():
    prob = _quadratic()
    tr = pc.minimize(prob, pc.make_method("gd", lr=1e-6, step="fixed"), eps=1e-12, max_iters=10 ** 7, max_seconds=0.2)
    assert tr.stop_reason == "timeout" and tr.times[-1] >= 0.2


def test_trace_counts_are_cumulative_and_consistent():
    prob = _quadratic()
    tr = pc.minimize(prob, "uniform_direction", eps=1e-12, max_iters=5)
    assert tr.n_hvps[1] == 1 and all(b >= a for a, b in zip(tr.n_grads, tr.n_grads[1:]))
    assert tr.n_solves[-1] >= tr.iterations
    rows = tr.to_rows()
    assert len(rows) == tr.iterations + 1 and rows[-1]["grad_norm"] == tr.grad_norms[-1]
    s = tr.summary()
    assert s["iterations"] == tr.iterations and s["median_step_s"] > 0


def test_partition_helpers():
    assert base.partition(10, 3) == (4, 3, 3)
    with pytest.raises(ValueError, match="k"):
        base.partition(3, 4)


def test_fisher_regularized_step_recomputes_sigma_each_step():
    """The talk's Fisher step uses sigma(x_k) = 2 f(x_k) (softmax): alpha shrinks as f decreases."""
    A, y = pc.synthetic.softmax_data(n_samples=60, n_features=4, n_classes=3, seed=0)
    prob = pc.problems.softmax_regression(A, y, n_classes=3, lam=1e-2)
    m = pc.make_method("fisher_empirical", step="regularized", M=1.0)
    tr = pc.minimize(prob, m, eps=1e-12, max_iters=30)
    assert tr.losses[-1] < tr.losses[0] and tr.grad_norms[-1] < tr.grad_norms[0]
    sigma0 = float(prob.fisher_sigma(prob.x0()))
    sigma_end = float(prob.fisher_sigma(tr.x))
    assert sigma_end < sigma0


def test_theory_bound_for_run_on_1d_and_logistic():
    prob = pc.problems.one_d()
    m = pc.make_method("uniform_direction", step="regularized", delta=0.0)
    x0 = prob.x0()
    f0, g0 = float(prob.loss(x0)), float(prob.grad(x0).norm())
    K = theory.bound_for_run(prob, m, x0, 1e-4, f0, g0)
    tr = pc.minimize(prob, m, eps=1e-4, max_iters=10 ** 5)
    assert tr.stop_reason == "converged" and tr.iterations <= K     # the guarantee holds on this run
    # f* from Newton for a small logistic regression; lambda_max from power iteration
    lp = _logistic(n_samples=100, n_features=5)
    fs = theory.f_star_estimate(lp)
    newton = pc.minimize(lp, "newton", eps=1e-10, max_iters=50)
    assert fs == pytest.approx(newton.losses[-1], rel=1e-14)
    x0 = lp.x0()
    assert theory.bound_for_run(lp, pc.make_method("uniform_direction", step="regularized"), x0, 1e-4,
                                float(lp.loss(x0)), float(lp.grad(x0).norm())) > 0
    assert theory.bound_for_run(lp, pc.make_method("fisher_sampled", step="regularized"), x0, 1e-4, 1.0, 1.0) is None


def test_adagrad_bma_scaled_converges_on_logistic_regression():
    A, b = pc.synthetic.logistic_data(n_samples=200, n_features=12, seed=0)
    prob = pc.problems.logistic_regression(A, b, lam=1e-3)
    for k in (1, 3, 12):
        tr = pc.minimize(prob, pc.make_method("adagrad_bma", k=k, variant="scaled", lr=1.0), eps=1e-4, max_iters=2000)
        assert tr.stop_reason == "converged", (k, tr.grad_norms[-1])



@pytest.mark.parametrize("name", ["hutchinson", "uniform_direction", "fisher_sampled"])
def test_seeded_reruns_give_identical_traces_on_cpu(name):
    """The probe draws (bytes for Hutchinson, chunked float32 normals, randint sample indices) are seeded:
    two runs from one seed give bit-identical traces on the sparse scalable problem (the sparse Fisher path)."""
    runs = [pc.minimize(pc.problems.scalable(500, seed=2), pc.make_method(name, step="fixed"), eps=1e-14,
                        max_iters=12, seed=9) for _ in range(2)]
    assert runs[0].losses == runs[1].losses and runs[0].grad_norms == runs[1].grad_norms
    assert torch.equal(runs[0].x, runs[1].x)
    other = pc.minimize(pc.problems.scalable(500, seed=2), pc.make_method(name, step="fixed"), eps=1e-14,
                        max_iters=12, seed=10)
    assert other.losses != runs[0].losses


def test_fixed_step_defaults_to_the_newton_step_for_curvature_methods():
    """gd's fixed step defaults to lr = 1/L; a curvature method's x - lr D^{-1} g (D ~ H) to lr = 1. With
    1/L (612 on this problem) every curvature method's fixed step diverged on the scalable problem."""
    takes_fixed = [name for name in pc.list_methods() if "fixed" in pc.method_info(name).steps]
    assert "gd" in takes_fixed and len(takes_fixed) > 5
    for name in takes_fixed:
        lr = pc.method_info(name).all_params("fixed")["lr"]
        assert lr == (None if name == "gd" else 1.0), name
    prob = pc.problems.scalable(500, seed=2)
    for name in ("uniform_direction", "lbfgs", "newton_cg"):
        tr = pc.minimize(prob, pc.make_method(name, step="fixed"), eps=1e-8, max_iters=400, seed=1)
        assert tr.stop_reason == "converged", (name, tr.stop_reason, tr.grad_norms[-1])
    for name in ("hutchinson", "fisher_sampled"):   # noisy diagonal / rank-one estimates: finite, no divergence
        tr = pc.minimize(prob, pc.make_method(name, step="fixed"), eps=1e-8, max_iters=200, seed=1)
        assert tr.stop_reason == "max_iters" and all(map(math.isfinite, tr.grad_norms)), name
        old = pc.minimize(prob, pc.make_method(name, step="fixed", lr=1 / prob.L), eps=1e-8, max_iters=200, seed=1)
        assert old.stop_reason == "diverged", name
    # an explicit lr still wins
    assert pc.make_method("lbfgs", step="fixed", lr=0.5).step_rule.lr == 0.5
