"""Problems: analytic oracles against autograd of independent reference formulas (float64, CPU; CUDA when
present), constants, Fisher identities, memory of the scalable problem, and argument validation."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import precond_core.problems as P

pytestmark = pytest.mark.filterwarnings("ignore:Sparse CSR tensor support is in beta state")
from precond_core.problems.base import partition
from precond_core.synthetic import logistic_data, nls_data, softmax_data

F64 = torch.float64
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA"))]


# -- problems with an independent reference loss -----------------------------------------------------
def _logistic(sparse=False, S=40, n=12, lam=1e-2, device="cpu"):
    A, b = logistic_data(S, n, seed=3, device=device)
    if sparse:
        A = A * (torch.rand(S, n, generator=torch.Generator().manual_seed(1), dtype=F64) < 0.3).to(device)
    p = P.logistic_regression(A.to_sparse_csr() if sparse else A, b, lam)
    ref = lambda x: F.softplus(-b * (A @ x)).mean() + 0.5 * lam * x @ x  # noqa: E731
    per = lambda x: F.softplus(-b * (A @ x))  # noqa: E731
    return p, ref, per


def _nls(phi, device="cpu", lam=0.05):
    A, b = nls_data(25, 7, phi, seed=4, device=device)
    p = P.nonlinear_least_squares(A, b, phi, lam=lam)
    link = {"sigmoid": torch.sigmoid, "tanh": torch.tanh, "identity": lambda t: t}[phi]
    ref = lambda x: 0.5 * ((link(A @ x) - b) ** 2).sum() + 0.5 * lam * x @ x  # noqa: E731
    per = lambda x: 0.5 * (link(A @ x) - b) ** 2  # noqa: E731
    return p, ref, per


def _softmax(device="cpu", S=30, d=4, C=3, lam=1e-2):
    A, y = softmax_data(S, d, C, seed=5, device=device)
    p = P.softmax_regression(A, y, C, lam)
    ref = lambda x: F.cross_entropy(A @ x.reshape(C, d).T, y) + 0.5 * lam * x @ x  # noqa: E731
    per = lambda x: F.cross_entropy(A @ x.reshape(C, d).T, y, reduction="none")  # noqa: E731
    return p, ref, per


def _quadratic(device="cpu"):
    p = P.quadratic(n=9, cond=50.0, seed=2, device=device)
    Q = p.basis @ torch.diag(p.eigenvalues) @ p.basis.T
    ref = lambda x: 0.5 * (x - p.x_star) @ Q @ (x - p.x_star)  # noqa: E731
    per = lambda x: 0.5 * (p.A @ x - p.c) ** 2  # noqa: E731
    return p, ref, per


def _one_d(device="cpu"):
    return P.one_d(device=device), lambda x: torch.log(2 * torch.cosh(x)).sum(), None


def _function(device="cpu"):
    A, b = logistic_data(15, 6, seed=8, device=device)
    per = lambda x: F.softplus(-b * (A @ x)) + 0.1 * torch.sin(A @ x) ** 2  # noqa: E731
    fun = lambda x: per(x).mean()  # noqa: E731
    return P.from_function(fun, torch.zeros(6, dtype=F64, device=device), per_sample=per), fun, per


CASES = {
    "logistic_dense": lambda dev: _logistic(False, device=dev),
    "logistic_sparse": lambda dev: _logistic(True, device=dev),
    "nls_sigmoid": lambda dev: _nls("sigmoid", dev),
    "nls_tanh": lambda dev: _nls("tanh", dev),
    "nls_identity": lambda dev: _nls("identity", dev),
    "softmax": _softmax,
    "quadratic": _quadratic,
    "one_d": _one_d,
    "function": _function,
}


def _points(p, k=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(p.n, generator=g, dtype=F64) * s).to(p.device) for s in (0.3, 1.0, 2.5)[:k]]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case", list(CASES))
def test_oracles_match_autograd(case, device):
    p, ref, _ = CASES[case](device)
    for x in _points(p):
        v = torch.randn(p.n, generator=torch.Generator().manual_seed(7), dtype=F64).to(device)
        xr = x.clone().requires_grad_(True)
        (g_ref,) = torch.autograd.grad(ref(xr), xr, create_graph=True)
        (hv_ref,) = torch.autograd.grad(g_ref, xr, grad_outputs=v)
        f, g = p.loss_grad(x)
        torch.testing.assert_close(f, ref(x).detach(), rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(p.loss(x), f, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(g, g_ref.detach(), rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(p.grad(x.clone()), g, rtol=1e-12, atol=1e-13)
        torch.testing.assert_close(p.hvp(x, v), hv_ref, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(p.hvp(x.clone(), v), hv_ref, rtol=1e-10, atol=1e-12)  # no cache


@pytest.mark.parametrize("case", list(CASES))
def test_hessian_and_blocks(case):
    p, ref, _ = CASES[case]("cpu")
    x = _points(p)[1]
    H_ref = torch.autograd.functional.hessian(ref, x)
    H = p.hessian(x)
    torch.testing.assert_close(H, H_ref, rtol=1e-10, atol=1e-12)
    sizes = p.blocks or partition(p.n, min(3, p.n))
    start = 0
    for B, s in zip(p.hessian_blocks(x, sizes), sizes):
        torch.testing.assert_close(B, H_ref[start:start + s, start:start + s], rtol=1e-10, atol=1e-12)
        start += s


@pytest.mark.parametrize("case", [c for c in CASES if c != "one_d"])
def test_per_sample_grads(case):
    p, ref, per = CASES[case]("cpu")
    x = _points(p)[2]
    J = torch.func.jacrev(per)(x)
    G = p.per_sample_grads(x)
    torch.testing.assert_close(G, J, rtol=1e-10, atol=1e-12)
    # fisher_scale * sum of rows = gradient of the unregularized loss
    torch.testing.assert_close(p.fisher_scale * G.sum(0), p.grad(x) - p.lam * x, rtol=1e-10, atol=1e-12)
    idx = torch.tensor([3, 0, 7, 3])
    torch.testing.assert_close(p.per_sample_grads(x, idx), J[idx], rtol=1e-10, atol=1e-12)


def _model_fisher_mc(p, x, K=3000, seed=0):
    """Mean and standard error over K label draws of fisher_scale * G^T G (all samples per draw)."""
    gen = torch.Generator().manual_seed(seed)
    idx = torch.arange(p.n_samples).repeat(K)
    G = p.model_sample_grads(x, idx, gen).reshape(K, p.n_samples, p.n)
    X = torch.einsum("ksi,ksj->kij", G, G) * p.fisher_scale
    return X.mean(0), X.std(0) / math.sqrt(K)


@pytest.mark.parametrize("case", ["logistic_dense", "logistic_sparse", "nls_sigmoid", "nls_tanh", "softmax", "quadratic"])
def test_model_fisher_expectation(case):
    """The mean of K i.i.d. unbiased draws lies within 6 standard errors (estimated from the same draws)
    of its expectation in every entry: for logistic/softmax/quadratic the Hessian of the unregularized
    loss, for NLS the Gauss-Newton matrix. (A 6-sigma band: a false alarm has probability ~1e-9 per entry.)"""
    p, _, _ = CASES[case]("cpu")
    x = _points(p)[1]
    target = (p.gauss_newton(x) if case.startswith("nls") else p.hessian(x)) - p.lam * torch.eye(p.n, dtype=F64)
    mean, se = _model_fisher_mc(p, x)
    assert bool(((mean - target).abs() <= 6 * se + 1e-12).all())
    # the band is tight enough to tell the model Fisher from the empirical one
    G = p.per_sample_grads(x)
    emp = p.fisher_scale * G.T @ G
    assert not bool(((mean - emp).abs() <= 6 * se + 1e-12).all())


def test_softmax_kfac_layout_and_exactness():
    # one sample: kron(G, A_cov) is the exact expected (model) Fisher in x's row-major layout
    A, y = softmax_data(1, 4, 3, seed=9)
    p = P.softmax_regression(A, y, 3, lam=0.0)
    x = torch.randn(p.n, generator=torch.Generator().manual_seed(0), dtype=F64)
    (G, Acov), = p.kfac_factors(x, torch.Generator())
    assert G.shape == (3, 3) and Acov.shape == (4, 4)
    pr = torch.softmax(x.reshape(3, 4) @ A[0], 0)
    exact = torch.kron(torch.diag(pr) - torch.outer(pr, pr), torch.outer(A[0], A[0]))
    torch.testing.assert_close(torch.kron(G, Acov), exact, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(torch.kron(G, Acov), p.hessian(x), rtol=1e-12, atol=1e-14)
    assert not torch.allclose(torch.kron(Acov, G), exact)  # the other order is the wrong layout
    # many samples: the factors are the sample means of the per-sample factors
    p, _, _ = _softmax()
    x = _points(p)[1]
    (G, Acov), = p.kfac_factors(x, torch.Generator())
    Pm = torch.softmax(p.design.A @ x.reshape(p.C, p.d).T, 1)
    G_ref = torch.stack([torch.diag(q) - torch.outer(q, q) for q in Pm]).mean(0)
    torch.testing.assert_close(G, G_ref, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(Acov, p.design.A.T @ p.design.A / p.S, rtol=1e-12, atol=1e-14)


def test_logistic_and_quadratic_kfac():
    p, _, _ = _logistic()
    (Acov, G), = p.kfac_factors(torch.zeros(p.n, dtype=F64), torch.Generator())
    # at x = 0 every w_s = 1/4, so the K-FAC product is the model Fisher = Hessian - lam I
    torch.testing.assert_close(torch.kron(Acov, G), p.hessian(torch.zeros(p.n, dtype=F64)) - p.lam * torch.eye(p.n, dtype=F64))
    q = P.quadratic(n=6, cond=10.0)
    (Acov, G), = q.kfac_factors(q.x0(), torch.Generator())
    torch.testing.assert_close(torch.kron(Acov, G), q.hessian(q.x0()))
    assert G.shape == (1, 1) and float(G) == 1.0


def test_quadratic_spectrum():
    eig = torch.tensor([0.1, 0.5, 1.0, 2.0, 10.0], dtype=F64)
    q = P.quadratic(eig, seed=3)
    torch.testing.assert_close(torch.linalg.eigvalsh(q.hessian(q.x0())), eig, rtol=1e-12, atol=1e-12)
    assert q.L == 10.0 and q.mu == 0.1 and q.f_star == 0.0 and q.M == 0.0
    torch.testing.assert_close(q.loss(q.x_star), torch.zeros((), dtype=F64), atol=1e-20, rtol=0)
    q = P.quadratic(n=8, cond=1e3)
    ev = torch.linalg.eigvalsh(q.hessian(q.x0()))
    torch.testing.assert_close(ev[-1] / ev[0], torch.tensor(1e3, dtype=F64), rtol=1e-9, atol=0)


@pytest.mark.parametrize("case", ["logistic_dense", "logistic_sparse", "nls_sigmoid", "nls_tanh", "nls_identity",
                                  "softmax", "quadratic", "one_d"])
def test_L_and_M_bound_curvature(case):
    p, _, _ = CASES[case]("cpu")
    pts = _points(p, seed=1) + [torch.zeros(p.n, dtype=F64)]
    Hs = [p.hessian(x) for x in pts]
    for H in Hs:
        assert float(torch.linalg.eigvalsh(H).abs().max()) <= p.L * (1 + 1e-10)
    if p.M is not None:
        for i in range(len(pts)):
            for j in range(i):
                gap = float(torch.linalg.matrix_norm(Hs[i] - Hs[j], 2))
                assert gap <= p.M * float(torch.linalg.vector_norm(pts[i] - pts[j])) * (1 + 1e-10)


def test_logistic_L_tight_at_zero_and_lanczos_estimate():
    p, _, _ = _logistic(S=60, n=30)
    lmax = float(torch.linalg.eigvalsh(p.hessian(torch.zeros(p.n, dtype=F64)))[-1])
    assert abs(p.L - lmax) <= 1e-10 * lmax  # w = 1/4 at x = 0: the bound is attained
    exact = p.design.spectral_norm_sq()
    est = p.design.spectral_norm_sq(exact_below=0, steps=30)
    assert exact <= est <= 1.03 * exact


def test_fisher_sigma_bounds():
    p, _, _ = _nls("sigmoid", lam=0.0)
    for x in _points(p, seed=2):
        assert float(torch.linalg.matrix_norm(p.hessian(x) - p.gauss_newton(x), 2)) <= float(p.fisher_sigma(x))
    p, _, _ = _softmax(lam=0.0)
    for x in _points(p, seed=2):
        G = p.per_sample_grads(x)
        gap = torch.linalg.matrix_norm(p.hessian(x) - p.fisher_scale * G.T @ G, 2)
        assert float(gap) <= float(p.fisher_sigma(x))


def test_sparse_equals_dense_logistic():
    A, b = logistic_data(30, 10, seed=1)
    A = A * (A.abs() > 0.8)
    pd, ps = P.logistic_regression(A, b, 1e-2), P.logistic_regression(A.to_sparse_csr(), b, 1e-2)
    x = torch.randn(10, generator=torch.Generator().manual_seed(2), dtype=F64)
    v = torch.randn(10, generator=torch.Generator().manual_seed(3), dtype=F64)
    torch.testing.assert_close(ps.loss_grad(x), pd.loss_grad(x))
    torch.testing.assert_close(ps.hvp(x, v), pd.hvp(x, v))
    torch.testing.assert_close(ps.hessian(x), pd.hessian(x))
    torch.testing.assert_close(ps.per_sample_grads(x, torch.tensor([5, 1])), pd.per_sample_grads(x, torch.tensor([5, 1])))
    assert ps.M == pytest.approx(pd.M, rel=1e-12) and ps.L == pytest.approx(pd.L, rel=1e-12)


def test_cache_skips_a_pass_and_is_safe():
    p, ref, _ = _logistic()
    calls = []
    mv = p.design.mv
    p.design.mv = lambda z: (calls.append(1), mv(z))[1]
    x = _points(p)[1]
    v = torch.ones(p.n, dtype=F64)
    p.loss_grad(x)
    assert len(calls) == 1
    p.hvp(x, v)
    assert len(calls) == 2  # only A v: A x came from the cache
    x.mul_(2.0)  # in-place change bumps the version: no stale reuse
    hv = p.hvp(x, v)
    assert len(calls) == 4
    xr = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(ref(xr), xr, create_graph=True)
    (hv_ref,) = torch.autograd.grad(g, xr, grad_outputs=v)
    torch.testing.assert_close(hv, hv_ref)


def test_scalable_memory_is_linear():
    p = P.scalable(10**6)
    nnz = p.design.nnz
    assert p.design.sparse and nnz <= 3 * 10**6
    # A and A^T in CSR with int64 indices: (8 + 8) bytes per entry each, plus row pointers and labels
    assert p.nbytes <= 40 * nnz
    x = torch.zeros(p.n, dtype=F64)
    f, g = p.loss_grad(x)
    assert float(f) == pytest.approx(math.log(2.0))
    assert g.shape == (10**6,)
    rows = p.per_sample_grads(x, torch.tensor([0, 5]))
    assert rows.shape == (2, 10**6) and int((rows != 0).sum()) == 2 * p.design.A.crow_indices()[1]
    with pytest.raises(ValueError, match="n="):
        p.hessian(x)


def test_scalable_small_hessian():
    p = P.scalable(300, seed=1)
    x = _points(p)[0]
    A = p.design.to_dense()
    pr = torch.sigmoid(A @ x)
    H_ref = A.T @ ((pr * (1 - pr))[:, None] * A) / p.S + p.lam * torch.eye(p.n, dtype=F64)
    torch.testing.assert_close(p.hessian(x), H_ref)
    sizes = (100, 150, 50)
    for B, s0, s in zip(p.hessian_blocks(x, sizes), (0, 100, 250), sizes):
        torch.testing.assert_close(B, H_ref[s0:s0 + s, s0:s0 + s])
    torch.testing.assert_close(p.design.gram(torch.ones(p.S, dtype=F64), 0, p.n, max_elems=p.S * 7), A.T @ A)


@pytest.mark.parametrize("name", ["logistic", "scalable", "nls", "softmax", "one_d", "quadratic"])
def test_registry_float32(name):
    small = {"logistic": dict(n_samples=50, n_features=8), "scalable": dict(n=500), "nls": dict(n_samples=20),
             "softmax": dict(n_samples=40), "one_d": {}, "quadratic": dict(n=10)}[name]
    p = P.make_problem(name, dtype=torch.float32, seed=1, **small)
    assert p.dtype == torch.float32
    x = p.x0()
    f, g = p.loss_grad(x)
    assert f.dtype == g.dtype == torch.float32 and g.shape == (p.n,)
    assert p.hvp(x, g).dtype == torch.float32
    p64 = P.make_problem(name, dtype=torch.float64, seed=1, **small)
    torch.testing.assert_close(f.double(), p64.loss(p64.x0()), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="x has dtype"):
        p.loss(x.double())


def test_registry_info_and_errors():
    assert P.list_problems() == sorted(["logistic", "scalable", "nls", "softmax", "one_d", "quadratic"])
    info = P.problem_info("quadratic")
    assert info["params"] == {"n": 100, "cond": 100.0} and info["summary"]
    q = P.make_problem("quadratic", n=5, cond=10.0, seed=3)
    assert q.n == 5 and q.L == pytest.approx(1.0)
    with pytest.raises(ValueError, match="unknown problem name 'nope'.*logistic"):
        P.make_problem("nope")
    with pytest.raises(ValueError, match=r"unknown parameter\(s\) \['bogus'\].*cond"):
        P.make_problem("quadratic", bogus=1)
    with pytest.raises(ValueError, match="unknown problem name"):
        P.problem_info("nope")
    with pytest.raises(ValueError, match="dtype"):
        P.make_problem("one_d", dtype=torch.int32)


def test_bad_inputs():
    A, b = logistic_data(20, 5, seed=0)
    with pytest.raises(ValueError, match=r"b must contain only labels -1 and \+1.*0\.0"):
        P.logistic_regression(A, (b + 1) / 2)
    with pytest.raises(ValueError, match=r"b must have shape \(20,\)"):
        P.logistic_regression(A, b[:10])
    with pytest.raises(ValueError, match="A must be a 2-D"):
        P.logistic_regression(A.numpy(), b)
    with pytest.raises(ValueError, match="lam"):
        P.logistic_regression(A, b, lam=-1.0)
    p = P.logistic_regression(A, b)
    with pytest.raises(ValueError, match=r"x must have shape \(5,\)"):
        p.grad(torch.zeros(4, dtype=F64))
    with pytest.raises(ValueError, match="x has dtype torch.float32"):
        p.loss_grad(torch.zeros(5))
    with pytest.raises(ValueError, match="v must have shape"):
        p.hvp(torch.zeros(5, dtype=F64), torch.zeros(6, dtype=F64))
    with pytest.raises(ValueError, match=r"idx must hold sample indices in \[0, 20\)"):
        p.per_sample_grads(torch.zeros(5, dtype=F64), torch.tensor([0, 20]))
    with pytest.raises(ValueError, match="generator"):
        p.model_sample_grads(torch.zeros(5, dtype=F64), None, 0)
    with pytest.raises(ValueError, match="phi must be one of"):
        P.nonlinear_least_squares(A, b, phi="relu")
    Xs, y = softmax_data(10, 3, 3, seed=0)
    with pytest.raises(ValueError, match=r"y must hold class indices in \[0, n_classes=2\)"):
        P.softmax_regression(Xs, y.clamp(min=1), 2)
    with pytest.raises(ValueError, match="n_classes"):
        P.softmax_regression(Xs, y, 1)
    with pytest.raises(ValueError, match="n must be a positive integer"):
        P.scalable(0)
    with pytest.raises(ValueError, match="x0 must be a finite number"):
        P.one_d(float("nan"))
    with pytest.raises(ValueError, match="blocks sizes must sum"):
        p.hessian_blocks(torch.zeros(5, dtype=F64), (2, 2))


def test_from_function_matches_logistic():
    A, b = logistic_data(15, 6, seed=8)
    lp = P.logistic_regression(A, b, lam=0.0)
    per = lambda x: F.softplus(-b * (A @ x))  # noqa: E731
    fp = P.from_function(lambda x: per(x).mean(), torch.zeros(6, dtype=F64), per_sample=per)
    assert fp.fisher_scale == pytest.approx(1 / 15) and fp.n_samples == 15
    x = _points(lp)[1]
    v = torch.ones(6, dtype=F64)
    torch.testing.assert_close(fp.loss_grad(x), lp.loss_grad(x))
    torch.testing.assert_close(fp.hvp(x, v), lp.hvp(x, v))
    torch.testing.assert_close(fp.per_sample_grads(x, torch.tensor([2, 4])), lp.per_sample_grads(x, torch.tensor([2, 4])))
    sp = P.from_function(lambda x: per(x).sum(), torch.zeros(6, dtype=F64), per_sample=per)
    assert sp.fisher_scale == 1.0
    with pytest.raises(ValueError, match="fisher_scale must be given"):
        P.from_function(lambda x: 3 * per(x).sum(), torch.zeros(6, dtype=F64), per_sample=per)
    with pytest.raises(ValueError, match="fun must return a scalar"):
        P.from_function(per, torch.zeros(6, dtype=F64))


def test_one_d_constants():
    p = P.one_d()
    assert float(p.x0()) == 3.0 and p.f_star == pytest.approx(math.log(2))
    torch.testing.assert_close(p.loss(torch.zeros(1, dtype=F64)), torch.tensor(math.log(2), dtype=F64))
    big = torch.tensor([800.0], dtype=F64)  # no overflow in cosh
    torch.testing.assert_close(p.loss(big), big[0])
    t = torch.linspace(-4, 4, 2001, dtype=F64)
    d3 = (2 * torch.tanh(t) * (1 - torch.tanh(t) ** 2)).abs().max()
    assert float(d3) <= p.M <= float(d3) * (1 + 1e-5)


@pytest.mark.parametrize("device", DEVICES)
def test_device_placement_and_generators(device):
    p, _, _ = _logistic(True, device=device)
    x = torch.zeros(p.n, dtype=F64, device=device)
    G = p.model_sample_grads(x, torch.arange(5), torch.Generator().manual_seed(0))  # CPU generator is fine
    assert G.device.type == device and G.shape == (5, p.n)
    g2 = p.model_sample_grads(x, torch.arange(5), torch.Generator().manual_seed(0))
    torch.testing.assert_close(G, g2)
    s = P.make_problem("softmax", device=device, n_samples=20)
    assert s.loss(s.x0()).device.type == device
    if device == "cuda":
        with pytest.raises(ValueError, match="x is on device cpu"):
            p.loss(torch.zeros(p.n, dtype=F64))


def _have(name):
    try:
        from precond_core import datasets
        return bool(datasets.available().get(name))
    except Exception:  # the data layer or its optional dependencies are absent
        return False


@pytest.mark.skipif(not _have("mushrooms"), reason="mushrooms data set not on this machine")
def test_registry_logistic_mushrooms():
    p = P.make_problem("logistic", dataset="mushrooms")
    assert (p.n, p.n_samples) == (112, 8124)  # the talk's LIBSVM mushrooms: n = 112
    assert set(torch.unique(p.b).tolist()) == {-1.0, 1.0}
    x0 = torch.zeros(p.n, dtype=F64)
    assert float(p.loss(x0)) == pytest.approx(math.log(2.0))
    lmax = float(torch.linalg.eigvalsh(p.hessian(x0))[-1])
    assert lmax <= p.L <= lmax * (1 + 1e-9)
