"""Multinomial (softmax) logistic regression: one linear layer with a cross-entropy loss.

x = W.flatten() with W of shape (C, d), row-major: x[c * d + j] = W[c, j] (PyTorch's ``nn.Linear`` weight
layout); one contiguous block of d coordinates per class.
"""
from __future__ import annotations

import torch

from .base import Problem
from ._common import Design, XCache, check_idx, check_lam, resolve_dtype_device, uniform


class SoftmaxRegression(Problem):
    """f(x) = (1/S) sum_s [logsumexp(W a_s) - (W a_s)_{y_s}] + lam/2 ||x||^2.

    With P = softmax(A W^T) (S x C) and Y the one-hot labels:
      grad = vec((P - Y)^T A) / S + lam x,
      hvp  = vec(R^T A) / S + lam v,  R = P * (A V^T) - P * rowsum(P * (A V^T)),  V = v.reshape(C, d),
    i.e. the Hessian is (1/S) sum_s (diag p_s - p_s p_s^T) kron (a_s a_s^T) + lam I in this layout.
    Per-sample gradient: kron(p_s - e_{y_s}, a_s). fisher_scale = 1/S. P at the last x is cached.

    Constants: L = ||A||_2^2 / (2 S) + lam (the largest eigenvalue of diag p - p p^T is at most 1/2);
    M = None; ``fisher_sigma(x)`` = 2 * (data loss at x), the talk's bound on the gap between the
    Fisher and the Hessian. Memory: A (S x d), y, an O(S C) cache.
    """

    def __init__(self, A, y, n_classes: int, lam: float = 1e-3, *, dtype=None, device=None, name="softmax"):
        if not isinstance(A, torch.Tensor):
            raise ValueError(f"A must be a 2-D torch tensor (dense or sparse CSR), got {type(A).__name__}")
        if isinstance(n_classes, bool) or not isinstance(n_classes, int) or n_classes < 2:
            raise ValueError(f"n_classes must be an integer >= 2, got {n_classes!r}")
        dtype, device = resolve_dtype_device(A, dtype, device)
        self.design = Design(A, dtype, device, "A")
        self.S, self.d = self.design.S, self.design.n
        self.C = n_classes
        self.n = self.C * self.d
        self.n_samples = self.S
        if not isinstance(y, torch.Tensor):
            try:
                y = torch.as_tensor(y)
            except (TypeError, ValueError, RuntimeError):
                raise ValueError(f"y must be a 1-D tensor of class indices, got {type(y).__name__}") from None
        if y.dim() != 1 or y.shape[0] != self.S:
            raise ValueError(f"y must have shape ({self.S},) to match A's {self.S} rows, got {tuple(y.shape)}")
        if y.is_floating_point():
            if not bool((y == y.round()).all()):
                raise ValueError("y must hold integer class indices, got non-integer values")
            y = y.long()
        if y.numel() and (int(y.min()) < 0 or int(y.max()) >= n_classes):
            raise ValueError(f"y must hold class indices in [0, n_classes={n_classes}), got values in "
                             f"[{int(y.min())}, {int(y.max())}]")
        self.y = y.to(device=device, dtype=torch.int64)
        self.lam = check_lam(lam)
        self.dtype, self.device, self.name = dtype, device, name
        self.fisher_scale = 1.0 / self.S
        self.blocks = (self.d,) * self.C
        self.f_star = None
        self.M = None
        self._L = None
        self._cache = XCache()

    @property
    def L(self) -> float:
        if self._L is None:
            self._L = self.design.spectral_norm_sq() / (2.0 * self.S) + self.lam
        return self._L

    def describe(self) -> dict:
        d = super().describe()
        d.update(lam=self.lam, n_classes=self.C, n_features=self.d)
        return d

    def _forward(self, x):
        c = self._cache.get(x)
        if c is not None:
            return c
        Z = self._logits(self.design, x)
        lse = torch.logsumexp(Z, dim=1)
        return self._cache.put(x, {"Z": Z, "lse": lse, "P": torch.exp(Z - lse[:, None])})

    def _logits(self, design, x):
        return design.A @ x.reshape(self.C, self.d).T  # (S, C)

    def _data_loss(self, c):
        return (c["lse"] - c["Z"].gather(1, self.y[:, None]).squeeze(1)).mean()

    def loss(self, x):
        self._check(x)
        return self._data_loss(self._forward(x)) + 0.5 * self.lam * torch.dot(x, x)

    def _grad(self, x, c):
        R = c["P"].clone()
        R[torch.arange(self.S, device=self.device), self.y] -= 1.0
        return (self.design.At @ R).T.reshape(-1).mul_(1.0 / self.S).add_(x, alpha=self.lam)

    def grad(self, x):
        self._check(x)
        return self._grad(x, self._forward(x))

    def loss_grad(self, x):
        self._check(x)
        c = self._forward(x)
        return self._data_loss(c) + 0.5 * self.lam * torch.dot(x, x), self._grad(x, c)

    def hvp(self, x, v):
        self._check(x)
        self._check(v, "v")
        P = self._forward(x)["P"]
        U = self.design.A @ v.reshape(self.C, self.d).T  # (S, C)
        PU = P * U
        R = PU - P * PU.sum(1, keepdim=True)
        return (self.design.At @ R).T.reshape(-1).mul_(1.0 / self.S).add_(v, alpha=self.lam)

    def _rows_grads(self, x, idx, labels):
        Ai = self.design.rows(idx)
        Z = Ai @ x.reshape(self.C, self.d).T
        E = torch.softmax(Z, dim=1)
        E[torch.arange(idx.numel(), device=self.device), labels] -= 1.0
        return (E[:, :, None] * Ai[:, None, :]).reshape(idx.numel(), self.n)

    def per_sample_grads(self, x, idx=None):
        """Rows kron(p_s - e_{y_s}, a_s) (b x C d)."""
        self._check(x)
        idx = check_idx(idx, self.S, self.device)
        return self._rows_grads(x, idx, self.y[idx])

    def model_sample_grads(self, x, idx, generator):
        """Rows kron(p_s - e_{y~}, a_s) with y~ ~ Categorical(p_s) drawn with ``generator``;
        E[g g^T] = (diag p_s - p_s p_s^T) kron a_s a_s^T."""
        self._check(x)
        idx = check_idx(idx, self.S, self.device)
        Ai = self.design.rows(idx)
        P = torch.softmax(Ai @ x.reshape(self.C, self.d).T, dim=1)
        u = uniform((idx.numel(), 1), generator, self.dtype, self.device)
        lab = (torch.cumsum(P, 1) < u).sum(1).clamp_(max=self.C - 1)
        return self._rows_grads(x, idx, lab)

    def hessian(self, x):
        """(1/S) sum_s (diag p_s - p_s p_s^T) kron a_s a_s^T + lam I, dense (C d x C d)."""
        self._check(x)
        P = self._forward(x)["P"]
        Ad = self.design.to_dense()
        H = torch.empty(self.n, self.n, dtype=self.dtype, device=self.device)
        d = self.d
        for c in range(self.C):
            for e in range(c, self.C):
                w = P[:, c] * ((1.0 if c == e else 0.0) - P[:, e])
                blk = Ad.T @ (w[:, None] * Ad) / self.S
                H[c * d:(c + 1) * d, e * d:(e + 1) * d] = blk
                H[e * d:(e + 1) * d, c * d:(c + 1) * d] = blk.T
        H = 0.5 * (H + H.T)
        H.diagonal().add_(self.lam)
        return H

    def kfac_factors(self, x, generator=None):
        """One layer: [(G, A_cov)] ordered so that ``torch.kron(G, A_cov)`` is the K-FAC Fisher in x's layout.

        In this layout (W row-major, C x d) a per-sample gradient is kron(e_s, a_s), so the exact expected
        Fisher of sample s is (diag p_s - p_s p_s^T) kron (a_s a_s^T): the class factor comes first.
        G = (1/S) sum_s (diag p_s - p_s p_s^T) (C x C, exact expectation over labels; ``generator`` unused),
        A_cov = (1/S) sum_s a_s a_s^T (d x d). kron(G, A_cov) equals the model Fisher when S = 1 and is
        K-FAC's independence approximation of it otherwise."""
        self._check(x)
        P = self._forward(x)["P"]
        G = (torch.diag(P.sum(0)) - P.T @ P) / self.S
        Ad = self.design.to_dense()
        A_cov = Ad.T @ Ad / self.S
        return [(0.5 * (G + G.T), 0.5 * (A_cov + A_cov.T))]

    def fisher_sigma(self, x) -> torch.Tensor:
        """2 * (1/S) sum_s CE_s(x): the talk's bound sigma <= 2 f(x) for softmax (data loss, lam excluded,
        since lam I enters the Fisher and the Hessian alike)."""
        self._check(x)
        return 2.0 * self._data_loss(self._forward(x))


def softmax_regression(A, y, n_classes: int | None = None, lam: float = 1e-3, *, dtype=None, device=None,
                       name: str = "softmax") -> SoftmaxRegression:
    """Softmax regression problem (see :class:`SoftmaxRegression`); ``n_classes`` defaults to max(y) + 1."""
    if n_classes is None:
        if not isinstance(y, torch.Tensor) or y.numel() == 0:
            raise ValueError("n_classes must be given when y is not a non-empty tensor")
        n_classes = int(y.max()) + 1
    return SoftmaxRegression(A, y, n_classes, lam, dtype=dtype, device=device, name=name)
