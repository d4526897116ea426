"""Structured operators against dense float64 ground truth (torch.linalg on ``to_dense()``)."""
from __future__ import annotations


import pytest
import torch

from precond_core import operators as ops
from precond_core.problems.base import partition
from precond_core.operators import (BlockDiagonal, BlockMean, Dense, Diagonal, Identity, Kronecker, LowRank,
                                    RankOne, Scalar, Scaled)

DT = torch.float64
DEVICES = [
    "cpu",
    pytest.param("cuda", marks=[pytest.mark.cuda,
                                pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")]),
]
SHIFTS = [0.0, 0.37, "tensor"]          # "tensor": a 0-d tensor shift on the operator's device
POWERS = [1.0, -1.0, -0.5, 0.5]


def gen(seed):
    return torch.Generator().manual_seed(seed)


def randn(g, *shape, device="cpu"):
    return torch.randn(*shape, generator=g, dtype=DT).to(device)


def spd(g, n, device="cpu", floor=0.1):
    A = torch.randn(n, n, generator=g, dtype=DT)
    return (A @ A.T / n + floor * torch.eye(n, dtype=DT)).to(device)


def as_shift(s, device):
    return torch.tensor(1.1, dtype=DT, device=device) if s == "tensor" else s


def shift_value(s):
    return 1.1 if s == "tensor" else s


def dense_power(M, p, shift=0.0):
    """(M + shift I)^p of a symmetric matrix by eigh, eigenvalues clamped at 0 for fractional powers."""
    lam, W = torch.linalg.eigh(M + shift * torch.eye(M.shape[0], dtype=M.dtype, device=M.device))
    if not float(p).is_integer():
        lam = lam.clamp(min=0)
    return W @ torch.diag(lam ** p) @ W.T


def close(a, b, rtol=1e-9):
    """Relative agreement in the max norm (scale-free)."""
    err = (a - b).abs().max().item()
    scale = b.abs().max().item() + 1e-300
    assert err <= rtol * scale, f"max error {err:.3e} vs scale {scale:.3e}"


def sym_cases(device):
    """(name, operator) for symmetric positive definite operators of every kind."""
    g = gen(0)
    cases = [
        ("scalar", Scalar(7, 2.5, DT, device)),
        ("identity", Identity(5, DT, device)),
        ("diagonal", Diagonal(torch.rand(8, generator=g, dtype=DT).to(device) + 0.5)),
        ("dense", Dense(spd(g, 6, device))),
    ]
    U = randn(g, 9, 3, device=device)
    Cr = randn(g, 3, 3, device=device)
    cases.append(("lowrank", LowRank(U, Cr @ Cr.T, base=0.7)))
    w = randn(g, 3, 1, device=device)
    cases.append(("lowrank_singular_C", LowRank(randn(g, 9, 3, device=device), w @ w.T, base=0.5)))
    Cr = randn(g, 6, 6, device=device)
    cases.append(("lowrank_r_ge_n", LowRank(randn(g, 4, 6, device=device), Cr @ Cr.T, base=0.3)))
    cases.append(("lowrank_tensor_base", LowRank(U, torch.eye(3, dtype=DT, device=device) / 4,
                                                 base=torch.tensor(0.2, dtype=DT, device=device))))
    lam = torch.rand(4, generator=g, dtype=DT).to(device) + 0.3
    G = randn(g, 4, 4, device=device)
    cases.append(("blockmean", BlockMean(lam, G @ G.T / 4, (3, 1, 4, 2))))
    cases.append(("kronecker", Kronecker(spd(g, 3, device), spd(g, 4, device))))
    blocks = [Dense(spd(g, 3, device)), Diagonal(torch.rand(2, generator=g, dtype=DT).to(device) + 0.2),
              Kronecker(spd(g, 2, device), spd(g, 2, device)),
              LowRank(randn(g, 5, 2, device=device), torch.eye(2, dtype=DT, device=device), 0.4),
              BlockMean(torch.ones(2, dtype=DT, device=device), torch.full((2, 2), 0.1, dtype=DT, device=device),
                        (2, 3))]
    cases.append(("blockdiag", BlockDiagonal(blocks)))
    return cases


def nonsym_cases(device):
    g = gen(1)
    n = 8
    u = randn(g, n, device=device)
    u = u / u.norm()
    H = spd(g, n, device)
    Hu = H @ u
    sym2 = LowRank(torch.stack([u, Hu], 1), (n / 2) * torch.tensor([[0.0, 1.0], [1.0, 0.0]], dtype=DT,
                                                                     device=device), base=0.2)
    return [
        ("rankone", RankOne(n * Hu, u, base=1.0)),
        ("dense_nonsym", Dense(randn(g, 6, 6, device=device) + 3 * torch.eye(6, dtype=DT, device=device))),
        ("lowrank_indefinite", sym2),
        ("scaled", Scaled(Dense(spd(g, 5, device)), torch.rand(5, generator=g, dtype=DT).to(device) + 0.5)),
    ]


def all_cases(device):
    return sym_cases(device) + nonsym_cases(device)


def mv_only_cases(device):
    """Operators whose solve/power assume symmetry but whose mv does not."""
    g = gen(13)
    return [("kronecker_nonsym", Kronecker(randn(g, 3, 3, device=device), randn(g, 2, 2, device=device)))]


def rhs(op, m, seed=5):
    g = gen(seed)
    shape = (op.n,) if m is None else (op.n, m)
    return randn(g, *shape, device=op.device)


# ------------------------------------------------------------------------------------------------
# generic checks, every operator
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("m", [None, 3])
def test_mv_matches_dense(device, m):
    for name, op in all_cases(device) + mv_only_cases(device):
        v = rhs(op, m)
        out = op.mv(v)
        assert out.shape == v.shape and out.dtype == DT, name
        close(out, op.to_dense() @ v)
        close(op @ v, op.to_dense() @ v)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("m", [None, 2])
@pytest.mark.parametrize("shift", SHIFTS)
def test_solve_matches_dense(device, m, shift):
    for name, op in all_cases(device):
        if name == "scaled" and shift != 0.0:
            continue                                   # exact shifted solve is not offered (tested below)
        v = rhs(op, m)
        s = shift_value(shift)
        A = op.to_dense() + s * torch.eye(op.n, dtype=DT, device=device)
        out = op.solve(v, as_shift(shift, device))
        assert out.shape == v.shape, name
        close(out, torch.linalg.solve(A, v), rtol=1e-8)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("m", [None, 2])
@pytest.mark.parametrize("p", POWERS)
@pytest.mark.parametrize("shift", SHIFTS)
def test_power_matches_eigh(device, m, p, shift):
    for name, op in sym_cases(device):
        v = rhs(op, m)
        out = op.power(v, p, as_shift(shift, device))
        assert out.shape == v.shape, name
        assert torch.isfinite(out).all(), name
        close(out, dense_power(op.to_dense(), p, shift_value(shift)) @ v, rtol=1e-8)


@pytest.mark.parametrize("device", DEVICES)
def test_power_one_and_minus_one_agree_with_mv_solve(device):
    for name, op in all_cases(device):
        v = rhs(op, None)
        close(op.power(v, 1, 0.25), op.mv(v) + 0.25 * v)
        close(op.power(v, -1), op.solve(v))
        close(op.power(v, 0), v)


@pytest.mark.parametrize("device", DEVICES)
def test_to_dense_is_independent_of_mv(device):
    # to_dense of every class is built from its factors; compare with the columns of mv(I)
    for name, op in all_cases(device):
        close(op.mv(torch.eye(op.n, dtype=DT, device=device)), op.to_dense())


# ------------------------------------------------------------------------------------------------
# low rank: Woodbury / push-through, min_eig
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("device", DEVICES)
def test_woodbury_and_push_through_vs_dense(device):
    g = gen(2)
    n = 12
    u = randn(g, n, device=device)
    u = u / u.norm()
    H = spd(g, n, device)
    U = torch.stack([u, H @ u], 1)
    C = (n / 2) * torch.tensor([[0.0, 1.0], [1.0, 0.0]], dtype=DT, device=device)   # invertible, indefinite
    v = randn(g, n, 3, device=device)
    for c in [0.5, 2.0, torch.tensor(3.0, dtype=DT, device=device)]:
        A = U @ C @ U.T + float(c) * torch.eye(n, dtype=DT, device=device)
        ref = torch.linalg.solve(A, v)
        close(ops.woodbury_solve(U, C, c, v), ref, rtol=1e-8)
        close(ops.push_through_solve(U, C, c, v), ref, rtol=1e-8)
        close(LowRank(U, C).solve(v, c), ref, rtol=1e-8)
    # singular C: Woodbury's C^{-1} does not exist, the push-through form still works
    w = randn(g, 3, 1, device=device)
    U3 = randn(g, n, 3, device=device)
    Cs = w @ w.T
    A = U3 @ Cs @ U3.T + 0.3 * torch.eye(n, dtype=DT, device=device)
    close(ops.push_through_solve(U3, Cs, 0.3, v), torch.linalg.solve(A, v), rtol=1e-8)


@pytest.mark.parametrize("device", DEVICES)
def test_lowrank_min_eig_vs_eigvalsh(device):
    for name, op in all_cases(device):
        if not isinstance(op, LowRank):
            continue
        for shift in [0.0, -0.4, 1.5]:
            ref = torch.linalg.eigvalsh(op.to_dense()).min() + shift
            got = op.min_eig(shift)
            assert got.ndim == 0
            assert abs(got.item() - ref.item()) <= 1e-9 * (1 + ref.abs().item()), name
    # the symmetrized uniform-direction estimate is indefinite for small base: min_eig detects it
    ind = dict(nonsym_cases(device))["lowrank_indefinite"]
    assert ind.min_eig().item() < 0
    assert ind.min_eig(-ind.min_eig().item() + 1e-3).item() > 0


# ------------------------------------------------------------------------------------------------
# rank one: Sherman-Morrison
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("device", DEVICES)
def test_sherman_morrison_and_rankone(device):
    g = gen(3)
    n = 10
    a, b = randn(g, n, device=device), randn(g, n, device=device)
    v = randn(g, n, 2, device=device)
    for c in [0.7, 4.0]:
        A = c * torch.eye(n, dtype=DT, device=device) + torch.outer(a, b)
        close(ops.sherman_morrison_solve(a, b, c, v), torch.linalg.solve(A, v), rtol=1e-8)
        close(ops.sherman_morrison_solve(a, b, c, v[:, 0]), torch.linalg.solve(A, v[:, 0]), rtol=1e-8)
    op = RankOne(a, b, base=0.5)
    with pytest.raises(NotImplementedError, match="non-symmetric"):
        op.power(v, -0.5)
    assert not op.is_singular(0.0).item()
    # c + b^T a = 0 exactly singular: flagged, and the solve is not finite (documented)
    sing_shift = -(0.5 + (b @ a).item())
    assert op.is_singular(sing_shift).item()
    assert op.is_singular(-0.5).item()                      # c = 0


# ------------------------------------------------------------------------------------------------
# block mean
# ------------------------------------------------------------------------------------------------
def dense_E(sizes, device="cpu"):
    idx = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))
    return torch.nn.functional.one_hot(idx, len(sizes)).to(DT).to(device)


@pytest.mark.parametrize("device", DEVICES)
def test_block_sums_and_expand(device):
    g = gen(4)
    sizes = (3, 1, 5, 2)
    E = dense_E(sizes, device)
    v = randn(g, 11, device=device)
    V = randn(g, 11, 4, device=device)
    close(ops.block_sums(v, sizes), E.T @ v)
    close(ops.block_sums(V, sizes), E.T @ V)
    w, W = randn(g, 4, device=device), randn(g, 4, 3, device=device)
    close(ops.expand(w, sizes), E @ w)
    close(ops.expand(W, sizes, ops.block_index(sizes, device)), E @ W)


@pytest.mark.parametrize("device", DEVICES)
def test_block_mean_talk_formulas_vs_dense_and_general_path(device):
    g = gen(5)
    sizes = (2, 4, 1, 3)
    lam = torch.rand(4, generator=g, dtype=DT).to(device) + 0.2
    G = randn(g, 4, 4, device=device)
    B = G @ G.T / 4 - 0.05                       # symmetric, with negative entries, Lambda_bar + B_bar PD
    op = BlockMean(lam, B, sizes)
    D = op.to_dense()
    assert torch.linalg.eigvalsh(D).min() > 0
    inv, isq = ops.block_mean_inverse_formula(lam, B, sizes), ops.block_mean_inv_sqrt_formula(lam, B, sizes)
    close(inv.to_dense(), torch.linalg.inv(D), rtol=1e-9)
    close(isq.to_dense(), dense_power(D, -0.5), rtol=1e-9)
    close(op.inverse().to_dense(), inv.to_dense(), rtol=1e-9)
    close(op.matrix_power(-0.5).to_dense(), isq.to_dense(), rtol=1e-9)
    close(op.matrix_power(0.5, 0.3).to_dense(), dense_power(D, 0.5, 0.3), rtol=1e-9)
    close(op.matrix_power(2).to_dense(), D @ D, rtol=1e-9)
    # the result of the general path is a block mean again: its lam'/B' are O(k), never n x n
    assert op.matrix_power(-0.5).B.shape == (4, 4)


@pytest.mark.parametrize("device", DEVICES)
def test_block_mean_singleton_lambda_does_not_blow_up(device):
    # for s_i = 1 only lam_i + b_ii matters; lam_i + shift <= 0 there must not leak into the result
    lam = torch.tensor([-1.0, 0.5, 0.8], dtype=DT, device=device)
    B = torch.tensor([[2.0, 0.1, 0.0], [0.1, 0.2, 0.05], [0.0, 0.05, 0.3]], dtype=DT, device=device)
    op = BlockMean(lam, B, (1, 3, 2))
    D = op.to_dense()
    assert torch.linalg.eigvalsh(D).min() > 0
    v = rhs(op, None)
    close(op.power(v, -0.5), dense_power(D, -0.5) @ v, rtol=1e-9)
    close(op.solve(v), torch.linalg.solve(D, v), rtol=1e-9)


def frob_err(M, lam, B, sizes):
    return ((M - BlockMean(lam, B, sizes).to_dense()) ** 2).sum()


@pytest.mark.parametrize("device", DEVICES)
def test_block_mean_approximation_is_frobenius_optimal(device):
    g = gen(6)
    sizes = (3, 1, 4, 2)
    n = sum(sizes)
    M = randn(g, n, n, device=device)
    M = M + M.T
    bm = ops.block_mean_approximation(M, sizes)
    best = frob_err(M, bm.lam, bm.B, sizes)
    for _ in range(20):
        dl = 0.05 * randn(g, 4, device=device)
        dB = 0.05 * randn(g, 4, 4, device=device)
        assert frob_err(M, bm.lam + dl, bm.B + (dB + dB.T) / 2, sizes) > best
        assert frob_err(M, bm.lam + dl, bm.B + dB, sizes) > best
    # stationarity: the gradient of the Frobenius error wrt (lam, B) vanishes (b_ii of the singleton
    # block does not enter the matrix separately from lam_i; its gradient is still 0)
    lam = bm.lam.clone().requires_grad_(True)
    B = bm.B.clone().requires_grad_(True)
    frob_err(M, lam, B, sizes).backward()
    assert lam.grad.abs().max() < 1e-10 * M.abs().max()
    assert B.grad.abs().max() < 1e-10 * M.abs().max()
    # it is the block mean by definition: hand-check one off-diagonal and one diagonal block
    assert abs(bm.B[0, 2].item() - M[0:3, 4:8].mean().item()) < 1e-12
    blk = M[4:8, 4:8]
    off = (blk.sum() - blk.diagonal().sum()) / 12
    assert abs(bm.B[2, 2].item() - off.item()) < 1e-12
    assert abs(bm.lam[2].item() - (blk.diagonal().mean() - off).item()) < 1e-12
    assert bm.B[1, 1].item() == 0.0                      # singleton block


@pytest.mark.parametrize("device", DEVICES)
def test_singleton_blocks_reproduce_the_matrix(device):
    g = gen(7)
    n = 7
    H = spd(g, n, device)
    bm = ops.block_mean_approximation(H, (1,) * n)
    close(bm.to_dense(), H, rtol=1e-12)
    v = rhs(bm, 2)
    close(bm.power(v, -0.5, 1e-3), dense_power(H, -0.5, 1e-3) @ v, rtol=1e-8)   # = full-matrix AdaGrad
    close(bm.solve(v, 0.1), torch.linalg.solve(H + 0.1 * torch.eye(n, dtype=DT, device=device), v), rtol=1e-9)


@pytest.mark.parametrize("device", DEVICES)
def test_block_mean_from_stats_equals_approximation_of_sum_ggT(device):
    g = gen(8)
    sizes = (4, 1, 3, 2)
    n, k = sum(sizes), len(sizes)
    U = torch.zeros(k, k, dtype=DT, device=device)
    Q = torch.zeros(k, dtype=DT, device=device)
    H = torch.zeros(n, n, dtype=DT, device=device)
    for _ in range(6):
        gt = randn(g, n, device=device)
        e = ops.block_sums(gt, sizes)
        U += torch.outer(e, e)
        Q += ops.block_sums(gt * gt, sizes)
        H += torch.outer(gt, gt)
    a, b = ops.block_mean_from_stats(U, Q, sizes), ops.block_mean_approximation(H, sizes)
    close(a.lam, b.lam, rtol=1e-12)
    close(a.B, b.B, rtol=1e-12)


@pytest.mark.parametrize("sizes", [(3, 1, 4, 2, 5), (4, 4, 4, 4)])
@pytest.mark.parametrize("host", [True, False])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_block_mean_host_and_torch_paths_against_dense(host, dtype, sizes, monkeypatch):
    """On CPU the k x k algebra of the block mean's powers and of ``block_mean_from_stats(like=)`` runs in
    NumPy (k <= HOST_SMALL_MAX); HOST_SMALL_MAX = 0 forces the torch path (that of GPUs and large k). Both
    against dense float64; both identical to roundoff where the eigenvalue floor bites. With and without
    singleton blocks (the host path's negative powers take a shorter route when every block has two or
    more coordinates)."""
    if not host:
        monkeypatch.setattr(ops, "HOST_SMALL_MAX", 0)
    rtol = 1e-9 if dtype == torch.float64 else 2e-4
    g = gen(21)
    n, k = sum(sizes), len(sizes)
    U, Q, H = torch.zeros(k, k, dtype=DT), torch.zeros(k, dtype=DT), torch.zeros(n, n, dtype=DT)
    for _ in range(9):
        gt = randn(g, n)
        e = ops.block_sums(gt, sizes)
        U += torch.outer(e, e)
        Q += ops.block_sums(gt * gt, sizes)
        H += torch.outer(gt, gt)
    ref = ops.block_mean_approximation(H, sizes)
    like = BlockMean(torch.ones(k, dtype=dtype), torch.zeros(k, k, dtype=dtype), sizes)
    bm = ops.block_mean_from_stats(U.to(dtype), Q.to(dtype), sizes, like=like)
    assert bm.lam.dtype == bm.B.dtype == dtype
    close(bm.lam.double(), ref.lam, rtol)
    close(bm.B.double(), ref.B, rtol)
    D = ref.to_dense()
    assert torch.linalg.eigvalsh(D).min() > 0
    for p, shift in [(-0.5, 1e-3), (-0.5, 0.0), (0.5, 0.3), (2.0, 0.0), (-0.3, 0.1)]:
        out = bm.matrix_power(p, shift)
        assert out.lam.dtype == dtype
        close(out.to_dense().double(), dense_power(D, p, shift), rtol * 10)
    # a rank-one block mean: the floor rule clamps; both paths give the same numbers
    e = randn(g, k)
    low = BlockMean(torch.zeros(k, dtype=DT), torch.outer(e, e), sizes)
    monkeypatch.setattr(ops, "HOST_SMALL_MAX", 32)
    a = low.matrix_power(-0.5, 0.0).to_dense()
    monkeypatch.setattr(ops, "HOST_SMALL_MAX", 0)
    b = BlockMean(low.lam, low.B, sizes).matrix_power(-0.5, 0.0).to_dense()
    assert torch.isfinite(a).all()
    close(a, b, 1e-9)


# ------------------------------------------------------------------------------------------------
# memory
# ------------------------------------------------------------------------------------------------
def test_nbytes_linear_in_n():
    n, k = 10 ** 6, 64
    sizes = partition(n, k)
    lam = torch.ones(k, dtype=DT)
    bm = BlockMean(lam, torch.eye(k, dtype=DT), sizes)
    expected = 8 * (k + k * k + k + k)                # lam, B, s (float64), int64 block lengths: no n-long index
    assert bm.nbytes == expected
    assert bm.nbytes < 1e-3 * n * n
    # mv at this size without any n x n matrix: with B = I, D 1 = lam + s_i on block i
    out = bm.mv(torch.ones(n, dtype=DT))
    close(out, 1 + ops.expand(torch.tensor(sizes, dtype=DT), sizes))
    assert bm.matrix_power(-0.5).nbytes == expected

    d = Diagonal(torch.ones(n, dtype=DT))
    assert d.nbytes == 8 * n
    r = 3
    lr = LowRank(torch.ones(n, r, dtype=DT), torch.eye(r, dtype=DT), 1.0)
    lr.power(torch.ones(n, dtype=DT), -0.5)               # fills the caches (Gram not used here, W = Q V)
    lr.solve(torch.ones(n, dtype=DT))
    assert lr.nbytes <= 8 * (2 * n * r + 3 * r * r + r + 1)


def test_blockmean_mv_with_identity_B_is_size_scaled():
    sizes = (3, 1, 2)
    bm = BlockMean(torch.ones(3, dtype=DT), torch.eye(3, dtype=DT), sizes)
    s = torch.tensor([3.0, 3.0, 3.0, 1.0, 2.0, 2.0], dtype=DT)
    close(bm.mv(torch.ones(6, dtype=DT)), 1 + s)


# ------------------------------------------------------------------------------------------------
# Kronecker
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("device", DEVICES)
def test_kronecker_vec_identity(device):
    g = gen(9)
    A, B = randn(g, 3, 3, device=device), randn(g, 4, 4, device=device)
    X = randn(g, 3, 4, device=device)
    K = Kronecker(A, B)
    x = X.reshape(-1)
    close(torch.kron(A, B) @ x, (A @ X @ B.T).reshape(-1), rtol=1e-12)      # the documented convention
    close(K.mv(x), (A @ X @ B.T).reshape(-1), rtol=1e-12)
    close(K.to_dense(), torch.kron(A, B), rtol=0)


# ------------------------------------------------------------------------------------------------
# Scaled (Z F Z)
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("device", DEVICES)
def test_scaled_identity_is_diagonal_adagrad(device):
    g = gen(10)
    n = 9
    h = torch.rand(n, generator=g, dtype=DT).to(device) + 0.1                 # diag(H_t)
    op = Scaled(Identity(n, DT, device), h.sqrt())
    v = randn(g, n, device=device)
    for p in [-0.5, 0.5, -1.0, 2.0]:
        close(op.power(v, p), h ** p * v, rtol=1e-12)
        close(op.power(v, p), Diagonal(h).power(v, p), rtol=1e-12)


@pytest.mark.parametrize("device", DEVICES)
def test_scaled_general_is_documented_approximation(device):
    g = gen(11)
    n = 6
    F = spd(g, n, device)
    z = torch.rand(n, generator=g, dtype=DT).to(device) + 0.5
    op = Scaled(Dense(F), z)
    Z = torch.diag(z)
    v = randn(g, n, device=device)
    close(op.to_dense(), Z @ F @ Z, rtol=1e-12)
    close(op.solve(v), torch.linalg.solve(Z @ F @ Z, v), rtol=1e-9)
    for p, shift in [(-0.5, 0.0), (-0.5, 0.2), (0.5, 0.0)]:
        Zp = torch.diag(z ** p)
        close(op.power(v, p, shift), Zp @ dense_power(F, p, shift) @ Zp @ v, rtol=1e-9)
    # and it is not the exact power when Z and F do not commute
    assert (op.power(v, -0.5) - dense_power(Z @ F @ Z, -0.5) @ v).abs().max() > 1e-3
    with pytest.raises(NotImplementedError, match="shift=0"):
        op.solve(v, 0.1)


# ------------------------------------------------------------------------------------------------
# clamping: PSD / singular inputs give finite powers
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_singular_psd_powers_are_finite(dtype):
    g = gen(12)
    n = 8
    X = torch.randn(n, 3, generator=g, dtype=dtype)
    M = X @ X.T                                                              # rank 3, eigh gives tiny +- values
    cases = [Dense(M), Diagonal(torch.tensor([0.0, 1.0, 2.0, 0.0], dtype=dtype)),
             LowRank(X, torch.eye(3, dtype=dtype)), Scalar(4, 0.0, dtype),
             BlockMean(torch.zeros(2, dtype=dtype), torch.zeros(2, 2, dtype=dtype), (3, 2)),
             Kronecker(M[:4, :4], torch.eye(2, dtype=dtype))]
    for op in cases:
        v = torch.ones(op.n, dtype=dtype)
        for p in [-0.5, 0.5, -2.0]:
            out = op.power(v, p)
            assert torch.isfinite(out).all(), (type(op).__name__, p)
    # the floor is relative: eps * max |eigenvalue|
    assert ops.eig_floor(torch.tensor(1.0, dtype=DT)).item() == torch.finfo(DT).eps


# ------------------------------------------------------------------------------------------------
# validation
# ------------------------------------------------------------------------------------------------
def test_bad_inputs_raise_value_error():
    f32, f64 = torch.float32, torch.float64
    with pytest.raises(ValueError, match="n must be"):
        Scalar(0, 1.0)
    with pytest.raises(ValueError, match="^d must be a 1-D"):
        Diagonal(torch.ones(2, 2))
    with pytest.raises(ValueError, match="^C must have shape"):
        LowRank(torch.ones(5, 2, dtype=f64), torch.ones(3, 3, dtype=f64))
    with pytest.raises(ValueError, match="^C has dtype"):
        LowRank(torch.ones(5, 2, dtype=f64), torch.ones(2, 2, dtype=f32))
    with pytest.raises(ValueError, match="^base must be"):
        LowRank(torch.ones(5, 2, dtype=f64), torch.eye(2, dtype=f64), base=torch.ones(2))
    for bad in (float("nan"), float("inf"), True, "1"):       # the lazy Python base is validated at once
        with pytest.raises(ValueError, match="^base must be"):
            LowRank(torch.ones(5, 2, dtype=f64), torch.eye(2, dtype=f64), base=bad)
    lr = LowRank(torch.ones(5, 2, dtype=f32), torch.eye(2, dtype=f32), base=0.1)
    assert lr.base.dtype == f32 and lr.base.ndim == 0 and float(lr.base) == float(torch.tensor(0.1, dtype=f32))
    with pytest.raises(ValueError, match="^b must have shape"):
        RankOne(torch.ones(4, dtype=f64), torch.ones(3, dtype=f64))
    with pytest.raises(ValueError, match="^M must be square"):
        Dense(torch.ones(3, 4, dtype=f64))
    with pytest.raises(ValueError, match="^B must be square"):
        Kronecker(torch.eye(2, dtype=f64), torch.ones(2, 3, dtype=f64))
    with pytest.raises(ValueError, match=r"^sizes sizes must sum|^sizes must have 2 blocks"):
        BlockMean(torch.ones(2, dtype=f64), torch.eye(2, dtype=f64), (3, 1, 1))
    with pytest.raises(ValueError, match="^sizes must contain positive"):
        BlockMean(torch.ones(2, dtype=f64), torch.eye(2, dtype=f64), (3, 0))
    with pytest.raises(ValueError, match="^sizes must sum to n=4"):
        ops.block_mean_approximation(torch.eye(4, dtype=f64), (2, 1))
    with pytest.raises(ValueError, match="^B has dtype"):
        BlockMean(torch.ones(2, dtype=f64), torch.eye(2, dtype=f32), (1, 1))
    with pytest.raises(ValueError, match=r"^blocks\[1\] has dtype"):
        BlockDiagonal([Identity(2, f64), Identity(2, f32)])
    with pytest.raises(ValueError, match="^blocks must be a non-empty"):
        BlockDiagonal([])
    with pytest.raises(ValueError, match="^z must have shape"):
        Scaled(Identity(3), torch.ones(2, dtype=f64))
    with pytest.raises(ValueError, match=r"^v must have shape \(3,\)"):
        Identity(3).mv(torch.ones(4, dtype=f64))
    with pytest.raises(ValueError, match="^v has dtype"):
        Identity(3).solve(torch.ones(3, dtype=f32))
    with pytest.raises(ValueError, match="^shift must be"):
        Diagonal(torch.ones(3, dtype=f64)).solve(torch.ones(3, dtype=f64), torch.ones(3))
    with pytest.raises(ValueError, match="^shift must be"):
        Diagonal(torch.ones(3, dtype=f64)).solve(torch.ones(3, dtype=f64), float("nan"))
    with pytest.raises(ValueError, match="^p must be"):
        Identity(3).power(torch.ones(3, dtype=f64), "half")
    with pytest.raises(ValueError, match="^v must have shape"):
        ops.block_sums(torch.ones(5, dtype=f64), (2, 2))
    with pytest.raises(ValueError, match="^w must have shape"):
        ops.expand(torch.ones(3, dtype=f64), (2, 2))
    with pytest.raises(ValueError, match="^Q must be a 1-D"):
        ops.block_mean_from_stats(torch.eye(2, dtype=f64), torch.ones(2, 2, dtype=f64), (1, 1))


def test_sparse_lowrank_matches_dense_lowrank():
    """SparseLowRank(J, Uc, C, n, base) is LowRank(U, C, base) with U zero outside the rows J: mv, solve
    (vector and matrix right-hand sides, shifts), solve_add_, power, min_eig and to_dense agree."""
    gen = torch.Generator().manual_seed(3)
    n = 30
    for r in (1, 3):
        J = torch.randperm(n, generator=gen)[:7]
        Uc = torch.randn(7, r, generator=gen, dtype=torch.float64)
        A = torch.randn(r, r, generator=gen, dtype=torch.float64)
        C = A @ A.T + 0.1 * torch.eye(r, dtype=torch.float64)
        U = torch.zeros(n, r, dtype=torch.float64)
        U[J] = Uc
        sp, de = ops.SparseLowRank(J, Uc, C, n, base=0.2), ops.LowRank(U, C, base=0.2)
        assert torch.allclose(sp.to_dense(), de.to_dense(), atol=1e-14)
        for v in (torch.randn(n, generator=gen, dtype=torch.float64), torch.randn(n, 4, generator=gen, dtype=torch.float64)):
            assert torch.allclose(sp.mv(v), de.mv(v), rtol=1e-12, atol=1e-14)
            for shift in (0.0, 0.7):
                assert torch.allclose(sp.solve(v, shift), de.solve(v, shift), rtol=1e-10, atol=1e-12)
            assert torch.allclose(sp.power(v, -0.5), de.power(v, -0.5), rtol=1e-10, atol=1e-12)
        v = torch.randn(n, generator=gen, dtype=torch.float64)
        x0 = torch.randn(n, generator=gen, dtype=torch.float64)
        assert torch.allclose(sp.solve_add_(x0.clone(), v, -0.3, 0.5), de.solve_add_(x0.clone(), v, -0.3, 0.5),
                              rtol=1e-10, atol=1e-12)
        assert torch.allclose(sp.min_eig(), de.min_eig(), rtol=1e-10)
    with pytest.raises(ValueError, match="J must be"):
        ops.SparseLowRank(torch.tensor([0, 1]), torch.ones(3, 1, dtype=torch.float64), torch.ones(1, 1, dtype=torch.float64), 5)


def test_block_mean_remembered_sums_are_used_only_for_the_same_unchanged_vector():
    """``block_sums_of(v)`` returns the sums ``remember_sums`` recorded only for that tensor at that version;
    otherwise (another tensor, v changed in place, v freed) it computes E^T v. The record keeps no vector
    alive."""
    import gc
    import weakref
    sizes = (3, 3, 3, 3)
    F = BlockMean(torch.ones(4, dtype=torch.float64), torch.zeros(4, 4, dtype=torch.float64), sizes)
    E = torch.repeat_interleave(torch.eye(4, dtype=torch.float64), torch.tensor(sizes), dim=0)   # (12, 4)
    v = torch.arange(12, dtype=torch.float64)
    marker = torch.full((4,), -7.0, dtype=torch.float64)       # not E^T v: tells the record from a recomputation
    F.remember_sums(v, marker)
    assert F.block_sums_of(v) is marker
    assert torch.equal(F.block_sums_of(v.clone()), E.T @ v)    # equal values, another tensor
    v.mul_(2.0)
    assert torch.equal(F.block_sums_of(v), E.T @ v)            # changed in place since the record
    w = torch.ones(12, dtype=torch.float64)
    F.remember_sums(w, marker)
    ref = weakref.ref(w)
    del w
    gc.collect()
    assert ref() is None                                       # the record did not keep w alive
    assert F.matrix_power(-0.5, 1e-10)._sums_of is None        # a derived operator starts without a record


@pytest.mark.parametrize("t", [1, 4, 11])
def test_block_mean_thin_k_powers_against_a_known_spectrum(t):
    """``set_thin_k``: K = M M^T from t < k columns. With equal blocks (S = s0 I) and E = Qo diag(d), Qo
    orthonormal, K = Qo diag(d^2 / s0) Qo^T exactly, so h(K) = Qo (h(d^2/s0) - h(0)) Qo^T + h(0) I is known
    in float64; the thin powers match it to roundoff (with the AdaGrad shift 1e-10 too, where K's zero
    eigenvalues decide the result), and the full k x k path to its own eigensolver's accuracy."""
    g = gen(30 + t)
    k, s0 = 12, 3
    sizes = (s0,) * k
    Qo, _ = torch.linalg.qr(randn(g, k, t))
    d = torch.rand(t, generator=g, dtype=DT) * 4 + 0.5
    E = Qo * d
    U = E @ E.T
    Q = (E * E).sum(1) * 1.5                        # any Q with lam >= 0: only U enters K
    like = BlockMean(torch.ones(k, dtype=DT), torch.zeros(k, k, dtype=DT), sizes)
    full = ops.block_mean_from_stats(U, Q, sizes, like=like)
    thin = ops.block_mean_from_stats(U, Q, sizes, like=like)
    thin.set_thin_k(E / s0 ** 0.5)
    for p, shift in [(-0.5, 1e-10), (-0.5, 1e-3), (0.5, 0.0), (-0.3, 0.1)]:
        mu = d * d / s0
        scale = torch.maximum(torch.maximum((mu + shift).abs().max(), torch.tensor(abs(shift), dtype=DT)),
                              (full.lam + shift).abs().max())
        h = ops._pow_eigs(mu + shift, p, scale)
        h0 = ops._pow_eigs(torch.tensor(shift, dtype=DT), p, scale)
        hK = (Qo * (h - h0)) @ Qo.T + h0 * torch.eye(k, dtype=DT)
        hlam = ops._pow_eigs(full.lam + shift, p, scale)
        want_B = hK / s0 - torch.diag(hlam / s0)
        got = thin.matrix_power(p, shift)
        close(got.lam, hlam, 1e-12)
        assert (got.B - want_B).abs().max() <= 1e-11 * want_B.abs().max(), (p, shift)
        if shift >= 1e-3 or p > 0:                  # the full path agrees where K's zero eigenvalues are not decisive
            assert (full.matrix_power(p, shift).B - want_B).abs().max() <= 1e-7 * want_B.abs().max(), (p, shift)
    with pytest.raises(ValueError, match="M must have shape"):
        thin.set_thin_k(torch.zeros(k, k, dtype=DT))
