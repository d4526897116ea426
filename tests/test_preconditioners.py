"""Each preconditioner's operator against a dense float64 construction of the same matrix."""
import math

import torch

import precond_core as pc
from precond_core import preconditioners as P
from precond_core.oracle import Oracle

F64 = torch.float64


def _logistic(n_samples=40, n_features=6, lam=1e-2, device="cpu"):
    A, b = pc.synthetic.logistic_data(n_samples=n_samples, n_features=n_features, seed=2, dtype=F64, device=device)
    return pc.problems.logistic_regression(A, b, lam=lam)


def _point(prob, seed=0):
    g = torch.Generator(device=prob.device).manual_seed(seed)
    return 0.3 * torch.randn(prob.n, generator=g, dtype=prob.dtype, device=prob.device)


def _update(pre, prob, x, seed=0, steps=1, grads=None):
    gen = torch.Generator(device=prob.device).manual_seed(seed)
    oracle = Oracle(prob)
    state = pre.init(prob, x, gen)
    op = None
    for i in range(steps):
        g = prob.grad(x) if grads is None else grads[i]
        op, state = pre.update(state, x, g, oracle)
    return op, state, oracle


def test_uniform_direction_forms_match_dense(device):
    prob = _logistic(device=device)
    x = _point(prob)
    H = prob.hessian(x)
    n = prob.n
    for form, delta in (("raw", 0.0), ("symmetrized", 0.0), ("regularized", 0.25)):
        op, state, oracle = _update(P.UniformDirection(form, delta), prob, x, seed=7)
        gen = torch.Generator(device=device).manual_seed(7)              # replay the draw
        u = P.UniformDirection.draw(torch.empty(1, n, dtype=F64, device=device), gen)[0]
        D = n * torch.outer(H @ u, u)
        if form != "raw":
            D = 0.5 * (D + D.T) + delta * torch.eye(n, dtype=F64, device=device)
        assert torch.allclose(op.to_dense(), D, atol=1e-10), form
        assert oracle.hvps == 1
        v = torch.randn(n, dtype=F64, device=device)
        for shift in (0.5, 3.0):
            expect = torch.linalg.solve(D + shift * torch.eye(n, dtype=F64, device=device), v)
            assert torch.allclose(op.solve(v, shift), expect, rtol=1e-8, atol=1e-10)


def test_uniform_direction_later_steps_match_dense(device):
    """Steps after the first refill the state's buffers (and, for the symmetrized forms, reuse the
    operator object with its caches cleared): every step's operator is the dense matrix of that step's
    draw, and a power cached at one step is not served at the next."""
    prob = _logistic(device=device)
    n = prob.n
    for form, delta in (("symmetrized", 0.0), ("regularized", 0.25)):
        pre = P.UniformDirection(form, delta)
        gen = torch.Generator(device=device).manual_seed(5)
        replay = torch.Generator(device=device).manual_seed(5)
        state, oracle = pre.init(prob, _point(prob), gen), Oracle(prob)
        v = torch.randn(n, dtype=F64, device=device)
        for step in range(3):
            x = _point(prob, seed=step)
            op, state = pre.update(state, x, prob.grad(x), oracle)
            u = P.UniformDirection.draw(torch.empty(1, n, dtype=F64, device=device), replay)[0]
            D = n * torch.outer(prob.hessian(x) @ u, u)
            D = 0.5 * (D + D.T) + delta * torch.eye(n, dtype=F64, device=device)
            assert torch.allclose(op.to_dense(), D, atol=1e-10), (form, step)
            evals, V = torch.linalg.eigh(D + 3.0 * torch.eye(n, dtype=F64, device=device))
            assert torch.allclose(op.power(v, -0.5, 3.0), V @ (evals.rsqrt() * (V.T @ v)), rtol=1e-8, atol=1e-10)
            x1 = x.clone()
            op.solve_add_(x1, v, -0.3, 3.0)
            want = x - 0.3 * torch.linalg.solve(D + 3.0 * torch.eye(n, dtype=F64, device=device), v)
            assert torch.allclose(x1, want, rtol=1e-9, atol=1e-11), (form, step)


def test_fisher_empirical_matches_dense():
    prob = _logistic(n_samples=40, n_features=6)
    x = _point(prob)
    op, _, _ = _update(P.FisherEmpirical(), prob, x)
    G = prob.per_sample_grads(x)
    F = G.T @ G / prob.n_samples + prob.lam * torch.eye(prob.n, dtype=F64)
    assert torch.allclose(op.to_dense(), F, atol=1e-12)
    # low-rank path (S < n)
    prob2 = _logistic(n_samples=5, n_features=12)
    x2 = _point(prob2)
    op2, _, _ = _update(P.FisherEmpirical(), prob2, x2)
    G2 = prob2.per_sample_grads(x2)
    F2 = G2.T @ G2 / 5 + prob2.lam * torch.eye(12, dtype=F64)
    assert torch.allclose(op2.to_dense(), F2, atol=1e-12)
    v = torch.randn(12, dtype=F64)
    assert torch.allclose(op2.solve(v, 0.1), torch.linalg.solve(F2 + 0.1 * torch.eye(12, dtype=F64), v), atol=1e-10)


def test_sampled_fisher_is_unbiased_for_empirical_fisher():
    """Mean over draws of the rank-b estimate -> empirical Fisher (b = 1 and b = 4)."""
    prob = _logistic(n_samples=30, n_features=5)
    x = _point(prob)
    G = prob.per_sample_grads(x)
    F = G.T @ G / prob.n_samples
    for b in (1, 4):
        pre = P.FisherSampled(b)
        gen = torch.Generator().manual_seed(0)
        oracle = Oracle(prob)
        state = pre.init(prob, x, gen)
        acc = torch.zeros_like(F)
        N = 3000
        for _ in range(N):
            op, state = pre.update(state, x, None, oracle)
            acc += op.to_dense() - prob.lam * torch.eye(prob.n, dtype=F64)
        # per-entry standard error of a mean of N draws of S*g_s g_s^T / b (without replacement: smaller)
        spread = (prob.n_samples * (G[:, :, None] * G[:, None, :])).std(0) / math.sqrt(N * b)
        assert torch.all((acc / N - F).abs() <= 5 * spread + 1e-12), b
        assert oracle.sample_grads == N * b


def test_sample_without_replacement_law_and_seeding():
    """Ordered b-tuples of distinct indices, uniform (the law of randperm(S)[:b]): chi-square over all
    S (S-1) ... ordered tuples; b = 1 uniform over S; seeded reruns equal."""
    for S, b in ((5, 1), (5, 2), (6, 3)):
        gen = torch.Generator().manual_seed(S + b)
        N = 30000
        draws = [tuple(P._sample_without_replacement(S, b, gen).tolist()) for _ in range(N)]
        assert all(len(set(t)) == b and all(0 <= i < S for i in t) for t in draws)
        cells = math.perm(S, b)
        counts = torch.zeros(cells, dtype=F64)
        index = {t: k for k, t in enumerate(__import__("itertools").permutations(range(S), b))}
        for t in draws:
            counts[index[t]] += 1
        expect = N / cells
        chi2 = float(((counts - expect) ** 2 / expect).sum())
        dof = cells - 1
        assert chi2 <= dof + 5 * math.sqrt(2 * dof), (S, b, chi2)
        again = torch.Generator().manual_seed(S + b)
        assert [tuple(P._sample_without_replacement(S, b, again).tolist()) for _ in range(50)] == draws[:50]
    # b (b - 1) > S: the randperm path, still distinct
    idx = P._sample_without_replacement(10, 8, torch.Generator().manual_seed(0))
    assert idx.unique().numel() == 8


def test_sparse_sample_grads_match_dense_rows():
    prob = pc.problems.scalable(300, seed=1)
    x = _point(prob)
    for idx in (torch.tensor([7]), torch.tensor([3, 29, 0, 11])):
        J, Uc = prob.sparse_per_sample_grads(x, idx)
        U = torch.zeros(prob.n, idx.numel(), dtype=F64)
        U[J] = Uc
        assert J.unique().numel() == J.numel()
        assert torch.allclose(U.T, prob.per_sample_grads(x, idx), rtol=1e-13, atol=1e-15)
    assert _logistic().sparse_per_sample_grads(_point(_logistic()), torch.tensor([1])) is None   # dense design
    # a CSR design whose row lists its columns out of order: the general path, same rows
    crow = torch.tensor([0, 3, 5, 5, 7])
    col = torch.tensor([4, 1, 3, 0, 2, 3, 1])
    val = torch.tensor([1.0, 2.0, 0.5, -1.0, 3.0, 2.0, -0.5], dtype=F64)
    A = torch.sparse_csr_tensor(crow, col, val, size=(4, 5))
    odd = pc.problems.logistic_regression(A, torch.tensor([1.0, -1.0, 1.0, -1.0], dtype=F64))
    assert odd.design.rows_strictly_increasing() is False
    x5 = torch.tensor([0.1, -0.2, 0.3, 0.4, -0.5], dtype=F64)
    for idx in (torch.tensor([0]), torch.tensor([2]), torch.tensor([3, 0])):
        J, Uc = odd.sparse_per_sample_grads(x5, idx)
        U = torch.zeros(5, idx.numel(), dtype=F64)
        U[J] = Uc
        assert torch.allclose(U.T, odd.per_sample_grads(x5, idx), rtol=1e-13, atol=1e-15)
    assert prob.design.rows_strictly_increasing() is True
    # a repeated (row, column) entry counts twice, in the dense rows as in the sparse products and factor
    dup = torch.sparse_csr_tensor(torch.tensor([0, 3, 4]), torch.tensor([1, 1, 2, 0]),
                                  torch.tensor([1.0, 2.0, 0.5, -1.0], dtype=F64), size=(2, 3))
    twice = pc.problems.logistic_regression(dup, torch.tensor([1.0, -1.0], dtype=F64))
    x3 = torch.tensor([0.2, -0.4, 0.3], dtype=F64)
    rows = twice.per_sample_grads(x3, torch.tensor([0, 1]))
    Ad, bl = torch.tensor([[0.0, 3.0, 0.5], [-1.0, 0.0, 0.0]], dtype=F64), torch.tensor([1.0, -1.0], dtype=F64)
    assert torch.allclose(rows, (-bl * torch.sigmoid(-bl * (Ad @ x3)))[:, None] * Ad, rtol=1e-13, atol=1e-15)
    J, Uc = twice.sparse_per_sample_grads(x3, torch.tensor([0, 1]))
    U = torch.zeros(3, 2, dtype=F64)
    U[J] = Uc
    assert torch.allclose(U.T, rows, rtol=1e-13, atol=1e-15)


def test_sampled_fisher_on_sparse_design_matches_dense_construction():
    """The sparse path (scalable problem): the operator equals lam I + (S / b) (1/S) G^T G of the replayed
    draw, its solve and the fixed step's solve_add_ equal the dense ones; unbiased for the empirical Fisher."""
    prob = pc.problems.scalable(120, seed=3)
    x = _point(prob)
    I = torch.eye(prob.n, dtype=F64)
    for b in (1, 3):
        op, _, oracle = _update(P.FisherSampled(b), prob, x, seed=5)
        idx = P._sample_without_replacement(prob.n_samples, b, torch.Generator().manual_seed(5))
        G = prob.per_sample_grads(x, idx)
        D = prob.fisher_scale * prob.n_samples / b * G.T @ G + prob.lam * I
        assert torch.allclose(op.to_dense(), D, rtol=1e-12, atol=1e-14) and oracle.sample_grads == b
        v = torch.randn(prob.n, dtype=F64, generator=torch.Generator().manual_seed(b))
        for shift in (0.0, 0.3):
            assert torch.allclose(op.solve(v, shift), torch.linalg.solve(D + shift * I, v), rtol=1e-9, atol=1e-12)
        x1 = x.clone()
        op.solve_add_(x1, v, -0.5)
        assert torch.allclose(x1, x - 0.5 * torch.linalg.solve(D, v), rtol=1e-9, atol=1e-12)
        assert torch.allclose(op.mv(v), D @ v, rtol=1e-12, atol=1e-14)
        assert torch.allclose(op.power(v, -0.5), torch.linalg.matrix_power(D, 1) @ torch.zeros_like(v) +
                              (lambda e: e[1] @ torch.diag(e[0] ** -0.5) @ e[1].T)(torch.linalg.eigh(D)) @ v,
                              rtol=1e-8, atol=1e-10)
    # unbiased: mean of N rank-one draws -> (1/S) G^T G (all samples)
    prob = pc.problems.scalable(40, seed=4)
    x = _point(prob)
    G = prob.per_sample_grads(x)
    F = G.T @ G / prob.n_samples
    pre, N = P.FisherSampled(1), 4000
    state, oracle = pre.init(prob, x, torch.Generator().manual_seed(2)), Oracle(prob)
    acc = torch.zeros_like(F)
    for _ in range(N):
        op, state = pre.update(state, x, None, oracle)
        acc += op.to_dense() - prob.lam * torch.eye(prob.n, dtype=F64)
    spread = (prob.n_samples * (G[:, :, None] * G[:, None, :])).std(0) / math.sqrt(N)
    assert torch.all((acc / N - F).abs() <= 5 * spread + 1e-12)


def test_model_fisher_is_unbiased_for_gauss_newton_logistic():
    """Labels drawn from the model: E[(1/S) sum g g^T] = Hessian of the unregularized loss."""
    prob = _logistic(n_samples=20, n_features=4, lam=0.0)
    x = _point(prob)
    H = prob.hessian(x)
    pre = P.FisherSampled(20, model=True)
    gen = torch.Generator().manual_seed(1)
    oracle = Oracle(prob)
    state = pre.init(prob, x, gen)
    N = 3000
    acc = torch.zeros_like(H)
    for _ in range(N):
        op, state = pre.update(state, x, None, oracle)
        acc += op.to_dense()
    assert torch.allclose(acc / N, H, atol=0.02 * H.abs().max().item())


def test_exact_hessian_and_blocks_match_dense():
    prob = _logistic(n_samples=30, n_features=9)
    x = _point(prob)
    H = prob.hessian(x)
    op, _, oracle = _update(P.ExactHessian(), prob, x)
    assert torch.allclose(op.to_dense(), H, atol=1e-12) and oracle.hvps == prob.n
    op, _, _ = _update(P.BlockDiagHessian(blocks=(2, 3, 4)), prob, x)
    mask = torch.block_diag(torch.ones(2, 2), torch.ones(3, 3), torch.ones(4, 4)).bool()
    assert torch.allclose(op.to_dense(), torch.where(mask, H, torch.zeros_like(H)), atol=1e-12)
    op, _, _ = _update(P.HessianBMA(blocks=(2, 3, 4)), prob, x)
    ref = pc.operators.block_mean_approximation(H, (2, 3, 4)).to_dense()
    assert torch.allclose(op.to_dense(), ref, atol=1e-12)


def test_lowrank_hessian_recovers_top_eigenpairs():
    prob = pc.problems.quadratic(torch.tensor([10.0, 8.0, 6.0, 1.0, 0.5, 0.2, 0.1, 0.05], dtype=F64), seed=0)
    x = prob.x0()
    op, _, oracle = _update(P.LowRankHessian(rank=3), prob, x)
    evals, evecs = torch.linalg.eigh(prob.hessian(x))
    top = evecs[:, -3:] @ torch.diag(evals[-3:]) @ evecs[:, -3:].T
    assert torch.allclose(op.to_dense(), top, atol=1e-8)
    assert oracle.hvps <= 8


def test_hutchinson_diagonal_matches_formula():
    prob = _logistic()
    x = _point(prob)
    H = prob.hessian(x)
    op, _, oracle = _update(P.Hutchinson(probes=3), prob, x, seed=4)
    gen = torch.Generator().manual_seed(4)
    est = torch.zeros(prob.n, dtype=F64)
    for _ in range(3):
        z = P.Hutchinson.rademacher_(torch.empty(prob.n, dtype=F64), gen)  # the probes, replayed
        est += z * (H @ z)
    assert torch.allclose(op.to_dense(), torch.diag((est / 3).abs()), atol=1e-12) and oracle.hvps == 3
    # one probe: d = |z * Hz| computed as |Hz|
    op1, _, _ = _update(P.Hutchinson(), prob, x, seed=5)
    z = P.Hutchinson.rademacher_(torch.empty(prob.n, dtype=F64), torch.Generator().manual_seed(5))
    assert torch.allclose(op1.to_dense(), torch.diag((z * (H @ z)).abs()), atol=1e-12)


def test_rademacher_probes_are_independent_fair_signs():
    """Seeded: entries in {-1, +1}; the frequency of +1 at each of the 8 positions within a byte, of each
    pair of positions, and overall, within 5 standard errors of 1/2, 1/4; lag correlations ~ 0."""
    gen = torch.Generator().manual_seed(123)
    N = 1 << 20
    z = P.Hutchinson.rademacher_(torch.empty(N + 5, dtype=F64), gen)   # a tail of n mod 8 = 5 entries
    assert set(z.unique().tolist()) == {-1.0, 1.0}
    plus = (z[:N] > 0).to(F64).view(-1, 8)
    m = plus.shape[0]
    assert torch.all((plus.mean(0) - 0.5).abs() <= 5 * math.sqrt(0.25 / m))
    pairs = plus.T @ plus / m                                              # P(both +1) per pair of positions
    off = pairs[~torch.eye(8, dtype=torch.bool)]
    assert torch.all((off - 0.25).abs() <= 5 * math.sqrt(0.25 * 0.75 / m))
    for lag in (1, 7, 8, 9, 64):
        assert abs(float((z[:-lag] * z[lag:]).mean())) <= 5 / math.sqrt(N)
    # seeded: the same stream again; different seeds differ
    again = P.Hutchinson.rademacher_(torch.empty(N + 5, dtype=F64), torch.Generator().manual_seed(123))
    assert torch.equal(z, again)
    assert not torch.equal(z, P.Hutchinson.rademacher_(torch.empty(N + 5, dtype=F64), torch.Generator().manual_seed(124)))
    for n in (1, 7, 8, 9):
        assert set(P.Hutchinson.rademacher_(torch.empty(n, dtype=torch.float32), gen).abs().tolist()) == {1.0}


def test_hutchinson_expectation_is_the_hessian_diagonal():
    """The mean of N single-probe estimates z * Hz (from the preconditioner's own stream, dense float64 H
    by autograd) -> diag(H), within 5 standard errors sqrt(sum_{j != i} H_ij^2 / N) per entry."""
    prob = _logistic(n_features=9)
    x = _point(prob)
    H = torch.autograd.functional.hessian(lambda v: prob.loss(v), x)
    pre, N = P.Hutchinson(probes=1), 3000
    gen = torch.Generator().manual_seed(0)
    state = pre.init(prob, x, gen)
    oracle = Oracle(prob)
    signed = torch.zeros(prob.n, dtype=F64)
    for _ in range(N):
        op, state = pre.update(state, x, prob.grad(x), oracle)
        z = state.extra["z"]
        signed += z * (H @ z)
        assert torch.allclose(op.d, (z * (H @ z)).abs(), rtol=1e-10, atol=1e-12)
    sd = ((H ** 2).sum(1) - torch.diag(H) ** 2).sqrt() / math.sqrt(N)
    assert torch.all((signed / N - torch.diag(H)).abs() <= 5 * sd + 1e-12)


def test_adagrad_variants_match_dense_statistics():
    g = torch.Generator().manual_seed(0)
    prob = pc.problems.quadratic(n=9, cond=5.0, seed=1)
    x = prob.x0()
    grads = [torch.randn(9, generator=g, dtype=F64) for _ in range(5)]
    Hsum = sum(torch.outer(v, v) for v in grads)
    op, _, _ = _update(P.AdaGradFull(), prob, x, steps=5, grads=grads)
    assert torch.allclose(op.to_dense(), Hsum)
    op, _, _ = _update(P.AdaGradDiag(), prob, x, steps=5, grads=grads)
    assert torch.allclose(op.to_dense(), torch.diag(torch.diag(Hsum)))
    op, _, _ = _update(P.AdaGradBMA(blocks=(3, 2, 4)), prob, x, steps=5, grads=grads)
    ref = pc.operators.block_mean_approximation(Hsum, (3, 2, 4))
    assert torch.allclose(op.to_dense(), ref.to_dense(), atol=1e-12)
    # Adam: bias-corrected EMA of g*g
    op, _, _ = _update(P.AdamP(beta2=0.9), prob, x, steps=5, grads=grads)
    v = sum(0.1 * 0.9 ** (4 - i) * grads[i] ** 2 for i in range(5)) / (1 - 0.9 ** 5)
    assert torch.allclose(torch.diag(op.to_dense()), v)


def test_kfac_on_quadratic_is_exact():
    prob = pc.problems.quadratic(n=6, cond=4.0, seed=0)
    x = prob.x0()
    op, _, _ = _update(P.KFAC(), prob, x)
    assert torch.allclose(op.to_dense(), prob.hessian(x), atol=1e-12)


def test_kfac_softmax_matches_kronecker_of_factors():
    A, y = pc.synthetic.softmax_data(n_samples=50, n_features=4, n_classes=3, seed=0)
    prob = pc.problems.softmax_regression(A, y, n_classes=3, lam=1e-2)
    x = _point(prob)
    op, _, _ = _update(P.KFAC(), prob, x, seed=3)
    factors = prob.kfac_factors(x, torch.Generator().manual_seed(3))
    dense = torch.block_diag(*[torch.kron(a, b) for a, b in factors]) + prob.lam * torch.eye(prob.n, dtype=F64)
    assert torch.allclose(op.to_dense(), dense, atol=1e-12)


def test_lbfgs_inverse_satisfies_secant_equation():
    prob = pc.problems.quadratic(n=7, cond=10.0, seed=2)
    tr = pc.minimize(prob, "lbfgs", eps=1e-12, max_iters=4)
    pre = P.LBFGS(memory=3)
    gen = torch.Generator().manual_seed(0)
    oracle = Oracle(prob)
    state = pre.init(prob, prob.x0(), gen)
    xs = [prob.x0() + 0.1 * k * torch.ones(7, dtype=F64) + 0.05 * k ** 2 * torch.arange(7, dtype=F64) for k in range(4)]
    for x in xs:
        op, state = pre.update(state, x, prob.grad(x), oracle)
    s, yv = state.S[-1], state.Y[-1]
    assert torch.allclose(op.solve(yv), s, atol=1e-10)          # H_k y = s for the newest pair
    assert tr.grad_norms[-1] < tr.grad_norms[0]


def test_state_bytes_is_O_n_for_matrix_free_methods():
    prob = pc.problems.scalable(100000, seed=0)
    n = prob.n
    for name, kw in [("adagrad", {}), ("uniform_direction", {}), ("adagrad_bma", {"k": 64}), ("fisher_sampled", {})]:
        s = pc.Solver(prob, pc.make_method(name, **kw))
        s.step()
        s.step()
        assert 0 < s.state_bytes <= 8 * 8 * n, (name, s.state_bytes)


def test_adagrad_bma_scaled_singleton_blocks_reproduce_H_t():
    """Z F Z with singleton blocks is H_t = sum g g^T itself (the normalization is exact there)."""
    g = torch.Generator().manual_seed(3)
    prob = pc.problems.quadratic(n=7, cond=5.0, seed=1)
    grads = [torch.randn(7, generator=g, dtype=F64) for _ in range(4)]
    Hsum = sum(torch.outer(v, v) for v in grads)
    op, _, _ = _update(P.AdaGradBMA(k=7, variant="scaled", damping=0.0), prob, prob.x0(), steps=4, grads=grads)
    assert torch.allclose(op.to_dense(), Hsum, rtol=1e-9, atol=1e-12)


def test_adagrad_bma_scaled_equals_exact_when_diagonal_is_block_constant():
    """With diag(H_t) constant on each block, Z F Z is exactly the block mean of H_t."""
    g = torch.Generator().manual_seed(4)
    prob = pc.problems.quadratic(n=6, cond=5.0, seed=1)
    signs = [torch.randint(0, 2, (6,), generator=g).to(F64) * 2 - 1 for _ in range(5)]
    grads = [sg * torch.tensor([1.0, 1.0, 1.0, 2.0, 2.0, 2.0], dtype=F64) * (i + 1) for i, sg in enumerate(signs)]
    sizes = (3, 3)
    exact, _, _ = _update(P.AdaGradBMA(blocks=sizes), prob, prob.x0(), steps=5, grads=grads)
    scaled, _, _ = _update(P.AdaGradBMA(blocks=sizes, variant="scaled", damping=0.0, delta=0.0), prob, prob.x0(),
                           steps=5, grads=grads)
    assert torch.allclose(scaled.to_dense(), exact.to_dense(), rtol=1e-10, atol=1e-12)


def test_adagrad_bma_update_every_refreshes_the_factor_on_schedule():
    g = torch.Generator().manual_seed(5)
    prob = pc.problems.quadratic(n=8, cond=5.0, seed=1)
    grads = [torch.randn(8, generator=g, dtype=F64) for _ in range(5)]
    op_lazy, state, _ = _update(P.AdaGradBMA(k=4, update_every=3), prob, prob.x0(), steps=5, grads=grads)
    op_at_4, _, _ = _update(P.AdaGradBMA(k=4), prob, prob.x0(), steps=4, grads=grads)
    assert torch.allclose(op_lazy.to_dense(), op_at_4.to_dense())       # built at step 4, reused at step 5
    assert torch.allclose(state.U, sum(torch.outer(pc.operators.block_sums(v, (2, 2, 2, 2)),
                                                   pc.operators.block_sums(v, (2, 2, 2, 2))) for v in grads))


def test_adagrad_bma_auto_refresh_keeps_every_stale_factor_within_its_bound():
    """update_every="auto" against dense float64: at every step the factor in use F (possibly stale) and the
    exact block mean D_t of H_t = sum g g^T satisfy F <= D_t <= (1 + REFRESH_TOL) F (generalized eigenvalues
    of the pencil (D_t, F) in [1, 1 + tol], up to roundoff), so each stale step is at most sqrt(1 + tol)
    times the exact one; stale factors are used (fewer refreshes than steps) once the factor has full
    rank, and while it is rank-deficient every step refreshes."""
    g = torch.Generator().manual_seed(9)
    n, sizes = 12, (3, 3, 3, 3)
    prob = pc.problems.quadratic(n=n, cond=5.0, seed=1)
    pre = P.AdaGradBMA(blocks=list(sizes), update_every="auto")
    tol = pre.REFRESH_TOL
    state, oracle, x = pre.init(prob, prob.x0(), None), Oracle(prob), prob.x0()
    H = torch.zeros(n, n, dtype=F64)
    ratios, refreshed = [], []
    for t in range(120):
        gt = torch.randn(n, generator=g, dtype=F64)
        H += torch.outer(gt, gt)
        before = state.refreshes
        op, state = pre.update(state, x, gt, oracle)
        refreshed.append(state.refreshes > before)
        if t >= 10:                                  # the factor (n x n) positive definite: the pencil is defined
            D = pc.operators.block_mean_approximation(H, sizes).to_dense()
            Li = torch.linalg.inv(torch.linalg.cholesky(op.to_dense()))
            ev = torch.linalg.eigvalsh(Li @ D @ Li.T)
            ratios.append((float(ev.min()), float(ev.max())))
    assert all(refreshed[:4])                       # a rank-deficient factor (rank t < k = 4): every step
    assert sum(refreshed) < 60 and sum(refreshed[-40:]) < 10   # then ever rarer
    assert min(lo for lo, _ in ratios) > 1 - 1e-8
    assert max(hi for _, hi in ratios) <= 1 + tol + 1e-8
    assert max(hi for _, hi in ratios) > 1.05       # stale factors were really used


def test_adagrad_bma_update_every_auto_and_defaults():
    """The default refresh: every step up to k = 64, "auto" above (exact variant), every ceil(k / 32) steps
    above for the scaled variant; "auto" is refused for the scaled variant, by the class and the registry."""
    assert P.AdaGradBMA().every(64) == 1 and P.AdaGradBMA().every(512) is None
    assert P.AdaGradBMA(variant="scaled").every(512) == 16 and P.AdaGradBMA(update_every="auto").every(8) is None
    m = pc.make_method("adagrad_bma", update_every="auto")
    assert m.preconditioner.update_every == "auto"
    for make in (lambda: P.AdaGradBMA(variant="scaled", update_every="auto"),
                 lambda: pc.make_method("adagrad_bma", variant="scaled", update_every="auto")):
        try:
            make()
        except ValueError as exc:
            assert "update_every" in str(exc)
        else:
            raise AssertionError("update_every='auto' with variant='scaled' was accepted")


def test_adagrad_bma_default_refresh_above_k64_does_not_diverge():
    """Regression: with k = 256 > 64 the default refresh ("auto") keeps AdaGrad-BMA descending on the scalable
    problem, where a fixed period of 16 steps (ceil(k / 32) for k = 512, the earlier default's rule) applies
    a stale rank-deficient factor to new gradients and the gradient norm grows about 10^12-fold."""
    def run(**kw):
        s = pc.Solver(pc.problems.scalable(1000, seed=0), pc.make_method("adagrad_bma", k=256, **kw), seed=0)
        g0, worst = float(s.g.norm()), 0.0
        for _ in range(40):
            s.step()
            worst = max(worst, float(s.g.norm()) / g0)
        return worst, float(s.g.norm()) / g0
    worst, final = run()
    assert worst < 1.0 and final < 0.3
    assert run(update_every=16)[0] > 1e6


def test_adagrad_bma_auto_first_steps_use_the_thin_factor_and_match_every_step_refresh():
    """update_every="auto", steps 1 .. k - 1: the factor comes from the stored block sums (a t x t
    eigenproblem); the iterates equal those of update_every=1 (a k x k eigh every step) to roundoff, and the
    stored block sums are released once k steps have run."""
    k, steps = 16, 24
    def run(every):
        s = pc.Solver(pc.problems.scalable(200, seed=1), pc.make_method("adagrad_bma", k=k, update_every=every), seed=0)
        seen = []
        for _ in range(steps):
            s.step()
            seen.append(s.pstate.E is not None)
        return s, seen
    auto, seen = run("auto")
    every, _ = run(1)
    assert seen[:k - 1] == [True] * (k - 1) and not any(seen[k:])
    assert float((auto.x - every.x).norm() / every.x.norm()) < 1e-9
