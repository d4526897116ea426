"""Small matrix-free linear-algebra routines on Hessian-vector products (torch only)."""
from __future__ import annotations

from typing import Callable

import torch


def _unit(n, generator, dtype, device):
    v = torch.randn(n, generator=generator, dtype=dtype, device=device)
    return v / torch.linalg.vector_norm(v)


def power_iteration(matvec: Callable[[torch.Tensor], torch.Tensor], n: int, *, iters: int = 30,
                    generator: torch.Generator, dtype=torch.float64, device="cpu") -> float:
    """Largest-magnitude eigenvalue of a symmetric operator by ``iters`` power iterations (``iters`` products).

    Returns the Rayleigh quotient of the last iterate: a lower bound on |lambda|_max that converges
    geometrically in |lambda_2 / lambda_1|.
    """
    v = _unit(n, generator, dtype, device)
    lam = torch.zeros((), dtype=dtype, device=device)
    for _ in range(iters):
        w = matvec(v)
        lam = torch.dot(v, w)
        nw = torch.linalg.vector_norm(w)
        if not bool(nw > 0):
            return 0.0
        v = w / nw
    return float(lam)


def lanczos(matvec: Callable[[torch.Tensor], torch.Tensor], n: int, rank: int, *, iters: int | None = None,
            generator: torch.Generator, dtype=torch.float64, device="cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """Top-``rank`` (largest algebraic) eigenpairs of a symmetric operator by Lanczos with full
    reorthogonalization: ``iters`` (default min(n, 2 rank + 10)) products, O(n iters) memory.

    Returns (eigenvalues (rank,), eigenvectors (n, rank)), eigenvalues in descending order.
    """
    m = min(n, iters if iters is not None else 2 * rank + 10)
    rank = min(rank, m)
    Q = torch.zeros(n, m, dtype=dtype, device=device)
    alpha = torch.zeros(m, dtype=dtype, device=device)
    beta = torch.zeros(m, dtype=dtype, device=device)
    q = _unit(n, generator, dtype, device)
    k = m
    for j in range(m):
        Q[:, j] = q
        w = matvec(q)
        alpha[j] = torch.dot(q, w)
        w = w - Q[:, : j + 1] @ (Q[:, : j + 1].T @ w)      # full reorthogonalization (twice is enough)
        w = w - Q[:, : j + 1] @ (Q[:, : j + 1].T @ w)
        b = torch.linalg.vector_norm(w)
        if j + 1 < m:
            if not bool(b > 1e-12 * (alpha[: j + 1].abs().max() + 1e-300)):  # invariant subspace found
                k = j + 1
                break
            beta[j] = b
            q = w / b
    T = torch.diag(alpha[:k]) + torch.diag(beta[: k - 1], 1) + torch.diag(beta[: k - 1], -1)
    evals, evecs = torch.linalg.eigh(T)
    r = min(rank, k)
    idx = torch.argsort(evals, descending=True)[:r]
    return evals[idx], Q[:, :k] @ evecs[:, idx]


__all__ = ["power_iteration", "lanczos"]
