"""Seeded synthetic data for the problems in ``precond_core.problems`` (torch only).

Every generator takes ``seed``, ``dtype`` and ``device``. Random numbers are drawn on the CPU from a
``torch.Generator`` seeded with ``seed`` (in float64), then cast to ``dtype`` and moved to ``device``,
so one seed gives the same data on every device and, up to rounding, in every dtype.
"""
from __future__ import annotations

import math
import warnings
from typing import NamedTuple, Sequence

import torch

__all__ = [
    "logistic_data", "sparse_logistic_data", "sparse_logistic_defaults", "quadratic_spectrum",
    "QuadraticData", "nls_data", "softmax_data",
]

_F64 = torch.float64


def _gen(seed) -> torch.Generator:
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    return torch.Generator().manual_seed(seed)


def _check_dtype(dtype) -> torch.dtype:
    if dtype not in (torch.float32, torch.float64):
        raise ValueError(f"dtype must be torch.float32 or torch.float64, got {dtype!r}")
    return dtype


def _pos_int(value, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def logistic_data(n_samples: int = 500, n_features: int = 100, seed: int = 0, *,
                  dtype: torch.dtype = torch.float64, device="cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """Dense logistic-regression data (the block-mean talk's experiment: 500 samples, 100 features).

    Recipe: A_{sj} ~ N(0, 1) i.i.d. (S x n); a true weight w* ~ N(0, I_n / n), so the margins
    a_s^T w* are about N(0, 1); labels b_s = +1 with probability sigmoid(a_s^T w*), else -1.
    Returns ``(A, b)``: A (S, n), b (S,) with entries in {-1, +1}. Memory: S n + S numbers.
    """
    S = _pos_int(n_samples, "n_samples")
    n = _pos_int(n_features, "n_features")
    dtype = _check_dtype(dtype)
    g = _gen(seed)
    A = torch.randn(S, n, generator=g, dtype=_F64)
    w = torch.randn(n, generator=g, dtype=_F64) / math.sqrt(n)
    u = torch.rand(S, generator=g, dtype=_F64)
    b = torch.where(u < torch.sigmoid(A @ w), 1.0, -1.0)
    return A.to(dtype=dtype, device=device), b.to(dtype=dtype, device=device)


def sparse_logistic_defaults(n_features: int, n_samples: int | None = None,
                             nnz_per_row: int | None = None) -> tuple[int, int]:
    """Default sizes of :func:`sparse_logistic_data`: ``(n_samples, nnz_per_row)``.

    n_samples = clip(n // 10, 100, 100_000); nnz_per_row = min(n, max(10, ceil(2 n / n_samples))).
    So nnz = n_samples * nnz_per_row is about max(2 n, 10 n_samples): linear in n (2 n for n >= 10^4).
    """
    n = _pos_int(n_features, "n_features")
    S = min(max(n // 10, 100), 100_000) if n_samples is None else _pos_int(n_samples, "n_samples")
    if nnz_per_row is None:
        k = min(n, max(10, -(-2 * n // S)))
    else:
        k = _pos_int(nnz_per_row, "nnz_per_row")
        if k > n:
            raise ValueError(f"nnz_per_row must be <= n_features={n}, got {k}")
    return S, k


def sparse_logistic_data(n_features: int, n_samples: int | None = None, nnz_per_row: int | None = None,
                         seed: int = 0, *, dtype: torch.dtype = torch.float64, device="cpu",
                         margin_std: float = 2.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Sparse logistic-regression data of any size (10^2 .. 10^7 features) in O(nnz) time and memory.

    Sizes: see :func:`sparse_logistic_defaults` (nnz grows linearly with n; for n = 10^6: 10^5 samples,
    20 nonzeros per row, nnz = 2 * 10^6, about 32 MB for A in float64).

    Recipe, row s: the columns [0, n) are cut into ``k = nnz_per_row`` contiguous strata of (almost) equal
    width and one column is drawn uniformly in each, so a row has k distinct, sorted columns (no sorting
    and no rejection needed); values ~ N(0, 1/k), so ||a_s|| is about 1. A true weight w* ~ N(0,
    margin_std^2 I) gives margins a_s^T w* of standard deviation about ``margin_std``; labels b_s = +1 with
    probability sigmoid(a_s^T w*), else -1.

    Returns ``(A, b)``: A a torch sparse CSR tensor (S, n) with int64 indices, b (S,) in {-1, +1}.
    Peak memory: about 5 nnz numbers of 8 bytes while generating, 2 nnz + S + 1 kept.
    """
    S, k = sparse_logistic_defaults(n_features, n_samples, nnz_per_row)
    n = n_features
    dtype = _check_dtype(dtype)
    if not margin_std > 0:
        raise ValueError(f"margin_std must be positive, got {margin_std!r}")
    g = _gen(seed)
    j = torch.arange(k + 1, dtype=torch.int64)
    edges = (j * n) // k
    lo, width = edges[:-1], edges[1:] - edges[:-1]
    cols = torch.rand(S, k, generator=g, dtype=_F64).mul_(width.to(_F64)).long()
    cols.add_(lo)
    vals = torch.randn(S, k, generator=g, dtype=_F64).mul_(1.0 / math.sqrt(k))
    w = torch.randn(n, generator=g, dtype=_F64).mul_(margin_std)
    z = (vals * w[cols]).sum(1)
    del w
    u = torch.rand(S, generator=g, dtype=_F64)
    b = torch.where(u < torch.sigmoid(z), 1.0, -1.0)
    crow = torch.arange(S + 1, dtype=torch.int64) * k
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        A = torch.sparse_csr_tensor(crow, cols.reshape(-1), vals.reshape(-1).to(dtype), size=(S, n),
                                    check_invariants=False)
        A = A.to(device)
    return A, b.to(dtype=dtype, device=device)


class QuadraticData(NamedTuple):
    """A quadratic f(x) = 1/2 (x - x*)^T Q (x - x*), Q = U diag(eigenvalues) U^T = A^T A / S.

    A = sqrt(S) diag(sqrt(eigenvalues)) U^T (S = n rows), c = A x*, so f(x) = ||A x - c||^2 / (2 S).
    """
    A: torch.Tensor
    c: torch.Tensor
    x_star: torch.Tensor
    eigenvalues: torch.Tensor
    basis: torch.Tensor


def quadratic_spectrum(eigenvalues: Sequence[float] | torch.Tensor | None = None, *, n: int | None = None,
                       cond: float | None = None, seed: int = 0, dtype: torch.dtype = torch.float64,
                       device="cpu") -> QuadraticData:
    """Quadratic with a prescribed spectrum in a random orthogonal basis.

    Either ``eigenvalues`` (all > 0), or ``n`` and ``cond``: eigenvalues geometrically spaced from
    1/cond to 1 (so L = 1, mu = 1/cond). The basis U is the Q factor of the QR decomposition of a seeded
    n x n Gaussian matrix (columns' signs fixed by diag(R) > 0, so U is Haar distributed); x* ~ N(0, I).
    Memory: two n x n matrices.
    """
    dtype = _check_dtype(dtype)
    if eigenvalues is None:
        if n is None or cond is None:
            raise ValueError("quadratic_spectrum needs eigenvalues, or both n and cond; "
                             f"got eigenvalues=None, n={n!r}, cond={cond!r}")
        n = _pos_int(n, "n")
        if not (isinstance(cond, (int, float)) and cond >= 1):
            raise ValueError(f"cond must be a number >= 1, got {cond!r}")
        lam = torch.logspace(-math.log10(cond), 0.0, n, dtype=_F64) if n > 1 else torch.ones(1, dtype=_F64)
    else:
        if n is not None or cond is not None:
            raise ValueError(f"give eigenvalues or (n, cond), not both; got n={n!r}, cond={cond!r}")
        lam = torch.as_tensor(eigenvalues, dtype=_F64).detach().cpu().reshape(-1)
        if lam.numel() == 0 or not bool((lam > 0).all()) or not bool(torch.isfinite(lam).all()):
            raise ValueError(f"eigenvalues must be a non-empty sequence of finite positive numbers, got {eigenvalues!r}")
        n = lam.numel()
    g = _gen(seed)
    Qm, R = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=_F64))
    U = Qm * torch.sign(torch.diagonal(R)).where(torch.diagonal(R) != 0, torch.ones(n, dtype=_F64))
    x_star = torch.randn(n, generator=g, dtype=_F64)
    A = math.sqrt(n) * lam.sqrt()[:, None] * U.T
    c = A @ x_star
    cast = dict(dtype=dtype, device=device)
    return QuadraticData(A.to(**cast), c.to(**cast), x_star.to(**cast), lam.to(**cast), U.to(**cast))


def nls_data(n_samples: int = 200, n_features: int = 50, phi: str = "sigmoid", noise: float = 0.1,
             seed: int = 0, *, dtype: torch.dtype = torch.float64, device="cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """Nonlinear least-squares data b_s = phi(a_s^T x*) + noise * e_s.

    A_{sj} ~ N(0, 1/n) (so ||a_s|| is about 1), x* ~ N(0, 4 I) (margins of standard deviation about 2),
    e_s ~ N(0, 1). ``phi`` is one of the link names of :func:`precond_core.problems.nonlinear_least_squares`.
    Returns ``(A, b)`` with A (S, n), b (S,).
    """
    from precond_core.problems.nls import LINKS  # the link functions live with the problem
    S = _pos_int(n_samples, "n_samples")
    n = _pos_int(n_features, "n_features")
    dtype = _check_dtype(dtype)
    if phi not in LINKS:
        raise ValueError(f"phi must be one of {sorted(LINKS)}, got {phi!r}")
    if not (isinstance(noise, (int, float)) and noise >= 0):
        raise ValueError(f"noise must be a non-negative number, got {noise!r}")
    g = _gen(seed)
    A = torch.randn(S, n, generator=g, dtype=_F64) / math.sqrt(n)
    x_star = 2.0 * torch.randn(n, generator=g, dtype=_F64)
    b = LINKS[phi].phi(A @ x_star) + noise * torch.randn(S, generator=g, dtype=_F64)
    return A.to(dtype=dtype, device=device), b.to(dtype=dtype, device=device)


def softmax_data(n_samples: int = 500, n_features: int = 50, n_classes: int = 5, seed: int = 0, *,
                 dtype: torch.dtype = torch.float64, device="cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """Multiclass data from a softmax model.

    A_{sj} ~ N(0, 1) (S x d), W* ~ N(0, 1/d) (C x d), labels y_s ~ Categorical(softmax(W* a_s)).
    Returns ``(A, y)``: A (S, d) in ``dtype``, y (S,) int64 in [0, C).
    """
    S = _pos_int(n_samples, "n_samples")
    d = _pos_int(n_features, "n_features")
    C = _pos_int(n_classes, "n_classes", 2)
    dtype = _check_dtype(dtype)
    g = _gen(seed)
    A = torch.randn(S, d, generator=g, dtype=_F64)
    W = torch.randn(C, d, generator=g, dtype=_F64) / math.sqrt(d)
    P = torch.softmax(A @ W.T, dim=1)
    y = torch.multinomial(P, 1, generator=g).reshape(-1)
    return A.to(dtype=dtype, device=device), y.to(device=device)
