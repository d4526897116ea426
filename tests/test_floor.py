"""The in-place hot paths (AdaGrad/Adam power step, L-BFGS two-loop, Hutchinson probes, block means) give
the results of the plain formulas in float64 up to roundoff."""
import pytest
import torch

import precond_core as pc
from precond_core import operators as ops
from precond_core import preconditioners as P
from precond_core.oracle import Oracle

F64 = torch.float64


def _problem(n=12, seed=0):
    return pc.problems.quadratic(n=n, cond=20.0, seed=seed)


def _ref_power_run(problem, lr, beta1, beta2, eps, steps, adam):
    """Plain out-of-place AdaGrad / Adam on dense float64, the formulas of docs/METHODS.md."""
    x = problem.x0().clone()
    v = torch.zeros_like(x)
    m = torch.zeros_like(x)
    for t in range(1, steps + 1):
        g = problem.grad(x)
        if adam:
            v = beta2 * v + (1 - beta2) * g * g
            d = v / (1 - beta2 ** t)
            m = beta1 * m + (1 - beta1) * g
            mh = m / (1 - beta1 ** t)
        else:
            v = v + g * g
            d, mh = v, g
        t_ = d + eps
        h = torch.maximum(t_, ops.eig_floor(t_.abs().max())) ** -0.5
        x = x - lr * h * mh
    return x


@pytest.mark.parametrize("name", ["adagrad", "adam"])
def test_power_step_fast_path_matches_formula(name):
    prob = _problem()
    method = pc.make_method(name)
    s = pc.Solver(prob, method)
    for _ in range(15):
        s.step()
    p = method.params
    ref = _ref_power_run(prob, p["lr"], p["beta1"], p.get("beta2", 0.0), p["eps"], 15, adam=name == "adam")
    assert torch.allclose(s.x, ref, rtol=1e-12, atol=1e-14)
    assert s.counts["solves"] == 15


@pytest.mark.parametrize("name", ["adagrad", "adam"])
@pytest.mark.parametrize("limit", [None, 0.0, "mid"])
def test_fused_power_step_matches_formula_on_both_paths(name, limit):
    """The fused CPU step (torch's AdaGrad / Adam kernel on an accumulator holding D + eps I) and its unfused
    fallback (taken when the floor rule could clamp) give the plain formula's iterates, and the operator
    is D (sum g*g; Adam: the bias-corrected EMA of g*g)."""
    prob, steps, adam = _problem(), 12, name == "adam"
    kw = {"lr": 0.3, "eps": 1e-8} if adam else {"lr": 0.3}
    method = pc.make_method(name, **kw)
    p = method.params
    s = pc.Solver(prob, method)
    assert s._fused is not None
    if limit == 0.0:        # no step can be shown clamp-free: every step unfused
        s.pstate.extra["limit"] = 0.0
    kernel = "_fused_adam_" if adam else "_fused_adagrad_"
    calls, real = [], getattr(torch, kernel)
    try:
        setattr(torch, kernel, lambda *a, **k: (calls.append(1), real(*a, **k))[1])
        for i in range(steps):
            if limit == "mid" and i == steps // 2:   # fused first, then unfused on the same accumulator
                s.pstate.extra["limit"] = 0.0
            s.step()
    finally:
        setattr(torch, kernel, real)
    ref = _ref_power_run(prob, 0.3, p["beta1"], p.get("beta2", 0.0), p["eps"], steps, adam=adam)
    assert torch.allclose(s.x, ref, rtol=1e-12, atol=1e-14)
    assert len(calls) == {None: steps, 0.0: 0, "mid": steps // 2}[limit]
    xs = [prob.x0().clone()]   # the iterates of the plain formula, and the gradients there
    for t in range(1, steps):
        xs.append(_ref_power_run(prob, 0.3, p["beta1"], p.get("beta2", 0.0), p["eps"], t, adam=adam))
    gs = [prob.grad(xi) for xi in xs]
    if adam:
        b2 = p["beta2"]
        D = sum((1 - b2) * b2 ** (steps - 1 - i) * gi * gi for i, gi in enumerate(gs)) / (1 - b2 ** steps)
    else:
        D = sum(gi * gi for gi in gs)
    assert torch.allclose(s.op.to_dense(), torch.diag(D), rtol=1e-10, atol=1e-14)
    assert torch.allclose(s.op.d, D, rtol=1e-10, atol=1e-14)


def test_fused_adagrad_keeps_the_floor_rule():
    """Gradients so large that eps is below the floor eig_floor(max): the step clamps exactly as the
    unfused rule does (the fused kernel, which cannot clamp, is not used)."""
    n = 6
    d = torch.tensor([1e12, 1e10, 1.0, 1e-3, 1e-9, 0.0], dtype=F64)
    x0 = torch.ones(n, dtype=F64)
    prob = pc.problems.from_function(lambda x: 0.5 * (d * x * x).sum(), x0)
    s = pc.Solver(prob, pc.make_method("adagrad", lr=0.1))
    assert s._fused is not None
    s.step()
    g = d * x0
    t_ = g * g + 1e-10
    floor = ops.eig_floor(t_.abs().max())
    assert bool((t_ < floor).any())   # the floor rule bites on this step
    ref = x0 - 0.1 * g * torch.maximum(t_, floor) ** -0.5
    assert torch.allclose(s.x, ref, rtol=1e-13, atol=0)


def test_diagonal_power_diag_matches_power():
    d = torch.tensor([0.0, 1e-30, 2.0, 5.0, 1e3], dtype=F64)
    D = ops.Diagonal(d)
    v = torch.linspace(-1, 1, 5, dtype=F64)
    out = torch.empty(5, dtype=F64)
    for p in (-0.5, -1.0, -0.25, 0.5, 1.0, 0.0, 2.0):
        for shift in (0.0, 1e-10, 0.3):
            assert torch.allclose(D.power_diag(p, shift, out) * v, D.power(v, p, shift), rtol=1e-13, atol=0)


def _two_loop(S, Y, v):
    """The textbook L-BFGS two-loop recursion (Nocedal and Wright, Algorithm 7.4), out of place."""
    q = v.clone()
    alphas = []
    for s, y in reversed(list(zip(S, Y))):
        a = torch.dot(s, q) / torch.dot(y, s)
        alphas.append(a)
        q = q - a * y
    q = q * (torch.dot(S[-1], Y[-1]) / torch.dot(Y[-1], Y[-1]))
    for (s, y), a in zip(zip(S, Y), reversed(alphas)):
        b = torch.dot(y, q) / torch.dot(y, s)
        q = q + (a - b) * s
    return q


def test_lbfgs_cached_rho_matches_two_loop_and_reuses_buffers():
    prob = _problem(n=10)
    s = pc.Solver(prob, pc.make_method("lbfgs", memory=3))
    ptrs = set()
    for it in range(8):
        s.step()
        st = s.pstate
        ptrs |= {t.untyped_storage().data_ptr() for t in st.S}
        if len(st.S) >= 2:
            v = torch.linspace(-1, 2, prob.n, dtype=F64)
            assert torch.allclose(s.op.solve(v), _two_loop(st.S, st.Y, v), rtol=1e-12, atol=1e-15)
            for sv, yv, rho in zip(st.S, st.Y, st.rho):
                assert rho == pytest.approx(1 / float(torch.dot(yv, sv)), rel=1e-14)
    # every pair is a row of the state's one preallocated buffer
    assert ptrs == {st.W.untyped_storage().data_ptr()}
    assert len(s.pstate.S) == 3


def test_lbfgs_refused_pair_keeps_the_oldest():
    pre = P.LBFGS(memory=2)
    prob = _problem(n=4)
    st = pre.init(prob, prob.x0(), None)
    xs = [torch.tensor([1.0, 0, 0, 0], dtype=F64) * i for i in range(3)]
    gs = [torch.tensor([2.0, 0, 0, 0], dtype=F64) * i for i in range(3)]
    for x, g in zip(xs, gs):
        _, st = pre.update(st, x, g, None)
    kept = [t.clone() for t in st.S]
    _, st = pre.update(st, xs[2] + 1.0, gs[2] - 1.0, None)   # y^T s < 0: refused
    assert len(st.S) == 2 and all(torch.equal(a, b) for a, b in zip(kept, st.S))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_hutchinson_probes_are_signs_in_working_dtype(dtype):
    gen = torch.Generator().manual_seed(0)
    z = P.Hutchinson.rademacher_(torch.empty(10_000, dtype=dtype), gen)
    assert z.dtype == dtype
    assert set(z.unique().tolist()) == {-1.0, 1.0}
    assert abs(float(z.mean())) < 0.05


@pytest.mark.parametrize("sizes", [(4, 4, 4), (3, 1, 5, 2)])
def test_blockmean_mv_without_gathers_matches_dense(sizes):
    gen = torch.Generator().manual_seed(1)
    k, n = len(sizes), sum(sizes)
    A = torch.randn(k, k, generator=gen, dtype=F64)
    bm = ops.BlockMean(torch.rand(k, generator=gen, dtype=F64) + 1, A @ A.T, sizes)
    v = torch.randn(n, generator=gen, dtype=F64)
    assert torch.allclose(bm.mv(v), bm.to_dense() @ v, rtol=1e-12, atol=1e-12)
    assert "index" not in vars(bm)      # no per-coordinate index held by the operator
    P1 = bm.matrix_power(-0.5, 1e-3)
    assert bm.matrix_power(-0.5, 1e-3) is P1   # powered operator cached between refreshes
    evals, W = torch.linalg.eigh(bm.to_dense() + 1e-3 * torch.eye(n, dtype=F64))
    ref = W @ torch.diag(evals ** -0.5) @ W.T
    assert torch.allclose(P1.mv(v), ref @ v, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("blocks", [None, [3, 1, 5, 3]])
def test_adagrad_bma_statistics_match_dense_sum(blocks):
    prob = _problem(n=12)
    kw = {"blocks": blocks} if blocks else {"k": 4}
    s = pc.Solver(prob, pc.make_method("adagrad_bma", **kw))
    H = torch.zeros(12, 12, dtype=F64)
    for _ in range(5):
        H += torch.outer(s.g, s.g)
        s.step()
    ref = ops.block_mean_approximation(H, s.pstate.sizes)
    assert torch.allclose(s.pstate.F.to_dense(), ref.to_dense(), rtol=1e-11, atol=1e-13)


def test_power_step_never_overwrites_an_iterate_someone_holds():
    prob = _problem()
    s = pc.Solver(prob, pc.make_method("adagrad"))
    kept, copies = [], []
    for i in range(6):
        s.step()
        if i % 2 == 0:                      # hold every other iterate (and a view of one)
            kept.append(s.x)
            copies.append(s.x.clone())
    view = s.x[:3]
    before = view.clone()
    for _ in range(4):
        s.step()
    assert all(torch.equal(a, b) for a, b in zip(kept, copies))
    assert torch.equal(view, before)
    ref = _ref_power_run(prob, 0.1, 0.0, 0.0, 1e-10, 10, adam=False)
    assert torch.allclose(s.x, ref, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("kw", [{"k": 4}, {"k": 12}, {"blocks": [3, 1, 5, 3]}, {"k": 3, "update_every": 2}])
def test_adagrad_bma_power_step_matches_dense_formula(kw):
    """x+ = x - lr (BMA(sum g g^T) + eps I)^(-1/2) g with the dense matrix power (eigenvalues clamped as
    ``operators.eig_floor``), the factor refreshed on the method's schedule."""
    prob = _problem(n=12)
    m = pc.make_method("adagrad_bma", **kw)
    s = pc.Solver(prob, m)
    x = prob.x0().clone()
    H = torch.zeros(12, 12, dtype=F64)
    every = kw.get("update_every", 1)
    sizes = s.pstate.sizes
    F = None
    for t in range(7):
        g = prob.grad(x)
        H += torch.outer(g, g)
        if t % every == 0:
            F = ops.block_mean_approximation(H, sizes).to_dense()
        evals, W = torch.linalg.eigh(F + 1e-10 * torch.eye(12, dtype=F64))
        evals = torch.maximum(evals, ops.eig_floor(evals.abs().max()))
        x = x - 0.1 * (W @ torch.diag(evals ** -0.5) @ W.T) @ g
        s.step()
    if "blocks" not in kw and "update_every" not in kw:   # well conditioned here: the dense formula itself
        assert torch.allclose(s.x, x, rtol=1e-7, atol=1e-9)
    # and always the operator's general power path (rank-deficient early factors amplify roundoff in the
    # dense eigendecomposition, so the two routes to the same block mean are compared directly)
    pre, oracle = m.preconditioner, Oracle(prob)
    st = pre.init(prob, prob.x0(), None)
    y = prob.x0().clone()
    for _ in range(7):
        g = prob.grad(y)
        op, st = pre.update(st, y, g, oracle)
        y = y - 0.1 * op.power(g, -0.5, 1e-10)
    # tolerance: roundoff (eps |x|) times the clamped eigenvalues' (eps * scale)^(-1/2) ~ 1e8 of a
    # rank-deficient early factor, which amplifies any last-bit difference between the routes (in every entry)
    assert torch.allclose(s.x, y, rtol=1e-8, atol=1e8 * torch.finfo(F64).eps * float(y.abs().max()))


def test_adagrad_bma_update_every_default_and_bad_input():
    assert P.AdaGradBMA().every(64) == 1 and P.AdaGradBMA().every(512) is None   # None: the adaptive refresh
    assert P.AdaGradBMA(update_every=3).every(512) == 3
    for bad in (0, -1, 1.5, True, "2"):
        with pytest.raises(ValueError, match="update_every"):
            pc.make_method("adagrad_bma", update_every=bad)
        with pytest.raises(ValueError, match="update_every"):
            P.AdaGradBMA(update_every=bad)


def test_gd_fixed_step_fast_path_matches_formula():
    prob = _problem()
    s = pc.Solver(prob, pc.make_method("gd", lr=0.05))
    x = prob.x0().clone()
    for _ in range(10):
        x = x - 0.05 * prob.grad(x)
        s.step()
    assert torch.allclose(s.x, x, rtol=1e-13, atol=1e-15) and s.counts["solves"] == 10


# -- memory: in-place iterate, fused solves, HVPs into a buffer, int32 CSR indices -----------------------------
@pytest.mark.parametrize("method,kw", [("gd", {}), ("adagrad", {}), ("adam", {}), ("adagrad_bma", {"k": 5}),
                                       ("uniform_direction", {"step": "fixed", "lr": 0.05}),
                                       ("uniform_direction", {"step": "regularized"}),
                                       ("hutchinson", {"step": "fixed", "lr": 0.05})])
def test_in_place_iterate_gives_the_out_of_place_trajectory(method, kw):
    """A solver that owns its iterate writes x+ into x; one whose iterates are all held by the caller
    (never owned, so always out of place) follows the same trajectory up to roundoff, and the held
    iterates are never changed."""
    prob = pc.problems.scalable(60, seed=1)
    owned, held = pc.Solver(prob, pc.make_method(method, **kw)), pc.Solver(prob, pc.make_method(method, **kw))
    ids, kept, copies = set(), [], []
    for _ in range(6):
        ids.add(id(owned.x))
        owned.step()
        kept.append(held.x)
        copies.append(held.x.clone())
        held.step()
    assert len(ids) == 1 and id(owned.x) in ids          # one storage for every iterate
    assert all(torch.equal(a, b) for a, b in zip(kept, copies))
    assert len({id(t) for t in kept}) == len(kept)
    assert torch.allclose(owned.x, held.x, rtol=1e-11, atol=1e-13)
    assert owned.counts == held.counts


def test_in_place_step_keeps_the_problem_cache_honest():
    """The forward-pass cache is keyed on the tensor's version: an iterate overwritten in place is never
    mistaken for the old point (the loss after the step is that of the new point)."""
    prob = pc.problems.scalable(50, seed=2)
    s = pc.Solver(prob, pc.make_method("adagrad"))
    for _ in range(3):
        s.step()
        f_ref, g_ref = pc.problems.scalable(50, seed=2).loss_grad(s.x.clone())
        assert torch.allclose(s.f, f_ref, rtol=1e-13) and torch.allclose(s.g, g_ref, rtol=1e-12, atol=1e-15)


def test_solve_add_matches_solve():
    gen = torch.Generator().manual_seed(3)
    n = 40
    U = torch.randn(n, 4, generator=gen, dtype=F64)
    C = torch.randn(4, 4, generator=gen, dtype=F64)
    C = C + C.T
    x0, v = torch.randn(n, generator=gen, dtype=F64), torch.randn(n, generator=gen, dtype=F64)
    d = torch.rand(n, generator=gen, dtype=F64) + 0.5
    for op, shift in [(ops.LowRank(U, C, base=0.3), 0.0), (ops.LowRank(U, C, base=0.3), torch.tensor(2.0, dtype=F64)),
                      (ops.LowRank(U, C), 1.5), (ops.Diagonal(d), 0.0), (ops.Diagonal(d), 0.7),
                      (ops.Dense(U @ U.T + torch.eye(n, dtype=F64)), 0.0), (P.Shifted(ops.LowRank(U, C), 0.4), 0.1)]:
        x = x0.clone()
        out = op.solve_add_(x, v, -0.3, shift)
        assert out is x
        assert torch.allclose(x, x0 - 0.3 * op.solve(v, shift), rtol=1e-12, atol=1e-13), type(op).__name__


@pytest.mark.parametrize("host", [True, False])
@pytest.mark.parametrize("r", [2, 5])
def test_low_rank_solve_add_both_paths_against_dense(host, r, monkeypatch):
    """LowRank.solve_add_ with the r x r algebra in NumPy (CPU, r <= HOST_SMALL_MAX) and in torch (the
    path of GPUs and larger r, forced here by HOST_SMALL_MAX = 0), against the dense float64 solve; base
    as a Python number and as a 0-d tensor, float64 and float32."""
    if not host:
        monkeypatch.setattr(ops, "HOST_SMALL_MAX", 0)
    gen = torch.Generator().manual_seed(11)
    n = 30
    U = torch.randn(n, r, generator=gen, dtype=F64)
    C = torch.randn(r, r, generator=gen, dtype=F64)
    C = C + C.T
    x0, v = torch.randn(n, generator=gen, dtype=F64), torch.randn(n, generator=gen, dtype=F64)
    for dtype, tol in [(F64, 1e-11), (torch.float32, 2e-4)]:
        for base, shift in [(0.7, 0.0), (0.7, 0.4), (torch.tensor(0.7), torch.tensor(0.2, dtype=F64)), (0.0, 2.5)]:
            c = float(base) + float(shift)
            dense = c * torch.eye(n, dtype=F64) + U @ C @ U.T
            want = x0 - 0.3 * torch.linalg.solve(dense, v)
            op = ops.LowRank(U.to(dtype), C.to(dtype), base=base)
            x = x0.to(dtype)
            assert op.solve_add_(x, v.to(dtype), -0.3, shift) is x
            assert (x.double() - want).norm() <= tol * want.norm(), (dtype, base, shift)


@pytest.mark.parametrize("host", [True, False])
@pytest.mark.parametrize("r", [2, 3])
def test_low_rank_solve_add_singular_raises_linalg_error(host, r, monkeypatch):
    """c I + U C U^T singular (U = r columns of the identity, C = -c I: the r x r system is exactly zero):
    every path raises ``torch.linalg.LinAlgError`` (the error ``minimize`` stops on as diverged), the 2 x 2
    host solve and NumPy's included, and x is left as it was."""
    if not host:
        monkeypatch.setattr(ops, "HOST_SMALL_MAX", 0)
    n, c = 6, 0.5
    U = torch.eye(n, dtype=F64)[:, :r]
    op = ops.LowRank(U, -c * torch.eye(r, dtype=F64), base=c)
    x0 = torch.arange(n, dtype=F64)
    x = x0.clone()
    with pytest.raises(torch.linalg.LinAlgError):
        op.solve_add_(x, torch.ones(n, dtype=F64), -0.3)
    assert torch.equal(x, x0)


@pytest.mark.parametrize("p", [-0.5, -1.0, -0.3, 0.5, 2.0, 0.0])
def test_diagonal_power_add_in_chunks_matches_power_diag(p, monkeypatch):
    gen = torch.Generator().manual_seed(4)
    n = 1000
    d = torch.rand(n, generator=gen, dtype=F64)
    d[::7] = 0.0                                        # zeros: the clamped floor is used for p < 0
    x0, v = torch.randn(n, generator=gen, dtype=F64), torch.randn(n, generator=gen, dtype=F64)
    op = ops.Diagonal(d)
    ref = x0 - 0.2 * op.power_diag(p, 1e-12, torch.empty(n, dtype=F64)) * v
    monkeypatch.setattr(ops.Diagonal, "CHUNK", 64)      # several chunks and a short last one
    x = x0.clone()
    assert op.power_add(x, v, p, 1e-12, -0.2, out=x) is x
    assert torch.allclose(x, ref, rtol=1e-13, atol=1e-14)
    assert torch.allclose(op.power_add(x0, v, p, 1e-12, -0.2, out=torch.empty(n, dtype=F64)), ref,
                          rtol=1e-13, atol=1e-14)
    op.extremes = (float(d.min()), float(d.max()))      # as the accumulators attach them: same result
    assert torch.allclose(op.power_add(x0, v, p, 1e-12, -0.2, out=torch.empty(n, dtype=F64)), ref,
                          rtol=1e-13, atol=1e-14)


def test_hvp_into_matches_hvp_and_oracle_out():
    prob = pc.problems.scalable(80, seed=5)
    gen = torch.Generator().manual_seed(5)
    x, v = torch.randn(80, generator=gen, dtype=F64), torch.randn(80, generator=gen, dtype=F64)
    out = torch.empty(80, dtype=F64)
    assert prob.hvp_into(x, v, out) is out
    assert torch.allclose(out, prob.hvp(x, v), rtol=1e-13, atol=1e-15)
    q = pc.problems.quadratic(n=6, cond=5.0, seed=0)       # no hvp_into: the oracle copies
    o, w = Oracle(q), torch.ones(6, dtype=F64)
    buf = torch.empty(6, dtype=F64)
    assert o.hvp(q.x0(), w, out=buf) is buf and torch.allclose(buf, q.hvp(q.x0(), w)) and o.hvps == 1
    with pytest.raises(ValueError, match="out"):
        prob.hvp_into(x, v, torch.empty(79, dtype=F64))


def test_sparse_design_uses_int32_indices_and_matches_dense():
    prob = pc.problems.scalable(300, seed=6)
    D = prob.design
    for M in (D.A, D.At):
        assert M.crow_indices().dtype == torch.int32 and M.col_indices().dtype == torch.int32
    A = D.to_dense()
    gen = torch.Generator().manual_seed(6)
    x, y = torch.randn(300, generator=gen, dtype=F64), torch.randn(D.S, generator=gen, dtype=F64)
    assert torch.allclose(D.mv(x), A @ x, rtol=1e-13, atol=1e-14)
    assert torch.allclose(D.rmv(y), A.T @ y, rtol=1e-13, atol=1e-14)
    idx = torch.tensor([0, 5, 7])
    assert torch.equal(D.rows(idx), A[idx])
    assert torch.equal(D.cols(10, 20), A[:, 10:20])
    assert torch.allclose(D.gram(torch.ones(D.S, dtype=F64), 0, 300), A.T @ A, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("name", ["adagrad", "adam"])
def test_chunked_accumulators_carry_exact_extremes(name, monkeypatch):
    """The diagonal accumulators, updated chunk by chunk, equal the unchunked formulas and hand the
    power step the exact min and max of D (no separate pass)."""
    monkeypatch.setattr(P, "_CHUNK", 7)
    prob = pc.problems.scalable(50, seed=7)
    pre = pc.make_method(name).preconditioner
    x = prob.x0()
    st = pre.init(prob, x, None)
    acc = torch.zeros(50, dtype=F64)
    for t in range(1, 4):
        g = prob.grad(x + 0.1 * t)
        op, st = pre.update(st, x, g, Oracle(prob))
        if name == "adagrad":
            acc += g * g
            ref = acc
        else:
            acc = 0.999 * acc + 0.001 * g * g
            ref = acc / (1 - 0.999 ** t)
        torch.testing.assert_close(op.d, ref, rtol=1e-14, atol=0)
        lo, hi = op.extremes
        assert isinstance(lo, float) and lo == float(op.d.min()) and hi == float(op.d.max())
