"""Synthetic data generators: determinism, shapes, label sets, sparse structure and O(nnz) size."""
from __future__ import annotations

import math

import pytest
import torch

from precond_core import synthetic as syn

F64 = torch.float64


def test_logistic_data_seeded():
    A, b = syn.logistic_data(50, 7, seed=1)
    A2, b2 = syn.logistic_data(50, 7, seed=1)
    A3, _ = syn.logistic_data(50, 7, seed=2)
    assert A.shape == (50, 7) and b.shape == (50,) and A.dtype == F64
    assert torch.equal(A, A2) and torch.equal(b, b2) and not torch.equal(A, A3)
    assert set(b.tolist()) <= {-1.0, 1.0}
    A32, b32 = syn.logistic_data(50, 7, seed=1, dtype=torch.float32)
    assert A32.dtype == torch.float32 and torch.equal(A32, A.float()) and torch.equal(b32, b.float())


def test_logistic_labels_follow_the_model():
    # with the recipe's w* ~ N(0, I/n) the margins are ~N(0, 1): labels are informative but noisy
    A, b = syn.logistic_data(4000, 20, seed=0)
    sol = torch.linalg.lstsq(A, b[:, None]).solution[:, 0]
    acc = float(((A @ sol).sign() == b).double().mean())
    assert 0.6 < acc < 0.95


def test_sparse_logistic_structure():
    n = 5000
    S, k = syn.sparse_logistic_defaults(n)
    assert (S, k) == (500, 20)
    A, b = syn.sparse_logistic_data(n, seed=3)
    assert A.layout == torch.sparse_csr and A.shape == (S, n) and b.shape == (S,)
    crow, col = A.crow_indices(), A.col_indices()
    assert torch.equal(crow, torch.arange(S + 1) * k)
    cols = col.reshape(S, k)
    assert bool((cols[:, 1:] > cols[:, :-1]).all())  # distinct, sorted per row
    assert int(cols.min()) >= 0 and int(cols.max()) < n
    assert set(b.tolist()) <= {-1.0, 1.0}
    rn = (A.values().reshape(S, k) ** 2).sum(1)
    assert 0.5 < float(rn.mean()) < 1.5  # ||a_s|| about 1
    A2, b2 = syn.sparse_logistic_data(n, seed=3)
    assert torch.equal(A2.values(), A.values()) and torch.equal(b2, b)


def test_sparse_defaults_scale_linearly():
    nnz = {n: math.prod(syn.sparse_logistic_defaults(n)) for n in (10**4, 10**5, 10**6, 10**7)}
    for n, z in nnz.items():
        assert 2 * n <= z <= 2 * n + 10**5
    assert syn.sparse_logistic_defaults(100) == (100, 10)
    with pytest.raises(ValueError, match="nnz_per_row must be <= n_features=50"):
        syn.sparse_logistic_defaults(50, nnz_per_row=51)


def test_sparse_logistic_million_is_small():
    A, b = syn.sparse_logistic_data(10**6, seed=0)
    nbytes = sum(t.numel() * t.element_size() for t in (A.crow_indices(), A.col_indices(), A.values(), b))
    assert A._nnz() == 2 * 10**6
    assert nbytes <= 20 * A._nnz()


def test_quadratic_spectrum():
    eig = torch.tensor([3.0, 0.2, 1.0, 7.0], dtype=F64)
    d = syn.quadratic_spectrum(eig, seed=1)
    torch.testing.assert_close(d.basis.T @ d.basis, torch.eye(4, dtype=F64))
    torch.testing.assert_close(torch.linalg.eigvalsh(d.A.T @ d.A / 4), eig.sort().values)
    torch.testing.assert_close(d.c, d.A @ d.x_star)
    d2 = syn.quadratic_spectrum(n=6, cond=100.0, seed=1)
    torch.testing.assert_close(d2.eigenvalues, torch.logspace(-2, 0, 6, dtype=F64))
    with pytest.raises(ValueError, match="eigenvalues must be"):
        syn.quadratic_spectrum([1.0, -1.0])
    with pytest.raises(ValueError, match="needs eigenvalues, or both n and cond"):
        syn.quadratic_spectrum(n=5)
    with pytest.raises(ValueError, match="cond must be"):
        syn.quadratic_spectrum(n=5, cond=0.5)


def test_nls_and_softmax_data():
    A, b = syn.nls_data(30, 4, "tanh", seed=2)
    assert A.shape == (30, 4) and b.shape == (30,)
    A0, b0 = syn.nls_data(30, 4, "tanh", noise=0.0, seed=2)
    assert float(b0.abs().max()) < 1.0  # noiseless tanh outputs lie in (-1, 1)
    X, y = syn.softmax_data(200, 5, 4, seed=0)
    assert X.shape == (200, 5) and y.dtype == torch.int64
    assert set(y.tolist()) == {0, 1, 2, 3}
    with pytest.raises(ValueError, match="n_classes must be an integer >= 2"):
        syn.softmax_data(10, 2, 1)
    with pytest.raises(ValueError, match="phi must be one of"):
        syn.nls_data(phi="relu")


def test_bad_arguments():
    with pytest.raises(ValueError, match="seed"):
        syn.logistic_data(seed=-1)
    with pytest.raises(ValueError, match="n_samples"):
        syn.logistic_data(n_samples=0)
    with pytest.raises(ValueError, match="dtype"):
        syn.logistic_data(dtype=torch.int64)
    with pytest.raises(ValueError, match="n_features"):
        syn.sparse_logistic_data(0)
