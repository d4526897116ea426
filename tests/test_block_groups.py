"""Block statistics through regular families of blocks (``operators.strided_groups``) against dense E."""
import random

import pytest
import torch

from precond_core import operators as ops
from precond_core.models import large_cnn


def _E(sizes):
    E = torch.zeros(sum(sizes), len(sizes), dtype=torch.float64)
    o = 0
    for i, s in enumerate(sizes):
        E[o:o + s, i] = 1
        o += s
    return E


CASES = [
    (5, 5, 5, 5),
    (86, 3, 92, 3, 92, 3, 92, 3, 12, 1),
    (3, 1, 3, 1, 3, 1, 7, 2, 2, 2),
    tuple(random.Random(0).choice([1, 2, 3, 4, 6]) for _ in range(40)),
]


@pytest.mark.parametrize("sizes", CASES, ids=range(len(CASES)))
def test_groups_cover_every_block_once(sizes):
    groups = ops.strided_groups(sizes)
    seen = {}
    for j0, c, dj, s, o0, do in groups:
        for r in range(c):
            j = j0 + r * dj
            assert j not in seen and sizes[j] == s and sum(sizes[:j]) == o0 + r * do
            seen[j] = True
    assert sorted(seen) == list(range(len(sizes)))


def test_large_cnn_is_five_families():
    sizes = tuple(p.numel() for p in large_cnn(3).parameters())
    assert len(sizes) == 34 and len(ops.strided_groups(sizes)) == 5


@pytest.mark.parametrize("sizes", CASES, ids=range(len(CASES)))
def test_grouped_sums_expansion_and_block_mean_mv_match_dense(sizes):
    g = torch.Generator().manual_seed(1)
    n, k = sum(sizes), len(sizes)
    v = torch.randn(n, generator=g, dtype=torch.float64)
    w = torch.randn(k, generator=g, dtype=torch.float64)
    E = _E(sizes)
    torch.testing.assert_close(ops.block_sums(v, sizes), E.T @ v)
    torch.testing.assert_close(ops.expand(w, sizes), E @ w)
    torch.testing.assert_close(ops.add_expanded_(v.clone(), w, sizes), v + E @ w)
    q = torch.zeros(k, dtype=torch.float64)
    e = ops.grouped_block_sums(v, ops.strided_groups(sizes), k, squares=q)
    torch.testing.assert_close(e, E.T @ v)
    torch.testing.assert_close(q, E.T @ (v * v))
    lam = torch.rand(k, generator=g, dtype=torch.float64) + 1
    B = torch.randn(k, k, generator=g, dtype=torch.float64)
    B = B + B.T
    op = ops.BlockMean(lam, B, sizes)
    dense = torch.diag(E @ lam) + E @ B @ E.T
    torch.testing.assert_close(op.mv(v), dense @ v)
    torch.testing.assert_close(op.mv(v, sums=E.T @ v), dense @ v)     # block sums given by the caller
    with pytest.raises(ValueError, match="sums"):
        op.mv(v, sums=torch.zeros(k + 1, dtype=torch.float64))
    # a view into a larger buffer (the optimizers' flat parameter buffers) gives the same
    buf = torch.cat([torch.zeros(3, dtype=torch.float64), v])
    torch.testing.assert_close(op.mv(buf[3:]), dense @ v)
