"""L2-regularized logistic regression, dense or sparse data.

f(x) = (1/S) sum_s log(1 + exp(-b_s a_s^T x)) + (lam/2) ||x||^2,   b_s in {-1, +1}.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F

from .base import Problem, check_partition
from ._common import Design, XCache, check_idx, check_lam, resolve_dtype_device, uniform

_C3 = 1.0 / (6.0 * math.sqrt(3.0))  # sup_t |d^3/dt^3 log(1 + e^t)|


def _check_labels(b, S: int, dtype, device, name: str = "b") -> torch.Tensor:
    if not isinstance(b, torch.Tensor):
        try:
            b = torch.as_tensor(b)
        except (TypeError, ValueError, RuntimeError):
            raise ValueError(f"{name} must be a 1-D tensor of {S} labels in {{-1, +1}}, got {type(b).__name__}") from None
    if b.dim() != 1 or b.shape[0] != S:
        raise ValueError(f"{name} must have shape ({S},) to match A's {S} rows, got {tuple(b.shape)}")
    bad = (b != 1) & (b != -1)
    if bool(bad.any()):
        vals = torch.unique(b[bad].cpu())[:5].tolist()
        raise ValueError(f"{name} must contain only labels -1 and +1, found {vals}; map {{0, 1}} or {{1, 2}} labels first")
    return b.to(dtype=dtype, device=device)


class LogisticRegression(Problem):
    """Logistic regression with an analytic one-pass ``loss_grad`` and a two-pass ``hvp``.

    Oracles (z = A x, s = sigmoid(-b * z), w = s (1 - s) = p (1 - p)):
      loss   = mean(softplus(-b z)) + lam/2 ||x||^2
      grad   = -(1/S) A^T (b * s) + lam x                       (passes: A x, A^T y)
      hvp    = (1/S) A^T (w * (A v)) + lam v                     (passes: A v, A^T y as one addmv, plus A x
                                                                  unless cached)
      per-sample gradient of l_s: -b_s s_s a_s; model labels y ~ +1 w.p. p_s = sigmoid(z_s).
    The vector s at the last x seen is cached (O(S) memory, keyed on the tensor object and its version
    counter), so ``loss_grad(x)`` followed by ``hvp(x, v)`` (or several HVPs at one x) skips the A x pass.

    Constants: fisher_scale = 1/S (the model Fisher (1/S) G^T G has expectation A^T diag(w) A / S, the
    Hessian of the unregularized loss); L = ||A||_2^2 / (4 S) + lam (exact for small data, Lanczos estimate
    otherwise; computed on first access); M = (1/(6 sqrt 3)) (1/S) sum_s ||a_s||^3.
    Memory: A (and A^T as a second CSR tensor when sparse), b, and O(S) cache.
    """

    max_dense_n = 8192

    def __init__(self, A, b, lam: float = 1e-3, *, dtype=None, device=None, name: str = "logistic",
                 spectral_seed: int = 0):
        if not isinstance(A, torch.Tensor):
            raise ValueError(f"A must be a 2-D torch tensor (dense or sparse CSR), got {type(A).__name__}")
        dtype, device = resolve_dtype_device(A, dtype, device)
        self.design = Design(A, dtype, device, "A")
        self.S, self.n = self.design.S, self.design.n
        self.n_samples = self.S
        self.b = _check_labels(b, self.S, dtype, device, "b")
        self.lam = check_lam(lam)
        self.dtype, self.device, self.name = dtype, device, name
        self.fisher_scale = 1.0 / self.S
        self.f_star = None
        self._spectral_seed = spectral_seed
        self._L = self._M = None
        self._cache = XCache()

    # -- constants (computed on first use) ----------------------------------------------------
    @property
    def L(self) -> float:
        if self._L is None:
            self._L = self.design.spectral_norm_sq(seed=self._spectral_seed) / (4.0 * self.S) + self.lam
        return self._L

    @property
    def M(self) -> float:
        if self._M is None:
            self._M = _C3 * float((self.design.row_sq_norms() ** 1.5).mean())
        return self._M

    @property
    def A(self) -> torch.Tensor:
        return self.design.A

    @property
    def nbytes(self) -> int:
        """Bytes of the data held: A (and A^T), b."""
        return self.design.nbytes + self.b.numel() * self.b.element_size()

    def describe(self) -> dict:
        d = super().describe()
        d.update(lam=self.lam, sparse=self.design.sparse, nnz=self.design.nnz)
        return d

    # -- internals ----------------------------------------------------------------------------
    def _forward(self, x: torch.Tensor) -> dict:
        c = self._cache.get(x)
        if c is not None:
            return c
        z = self.design.mv(x)
        m = torch.mul(z, self._neg_b())
        return self._cache.put(x, {"z": z, "m": m, "s": torch.sigmoid(m)})

    def _neg_b(self) -> torch.Tensor:
        """-b, computed once per labels tensor (one multiply per forward pass instead of a negation and a
        multiply)."""
        nb = getattr(self, "_nb", None)
        if nb is None or nb[0] is not self.b:
            nb = self._nb = (self.b, -self.b)
        return nb[1]

    def _loss_from(self, c: dict, x: torch.Tensor) -> torch.Tensor:
        # mean softplus + (lam / 2) x^T x, the regularizer added in the same op
        return torch.add(F.softplus(c["m"]).mean(), torch.dot(x, x), alpha=0.5 * self.lam)

    def _grad_from(self, c: dict, x: torch.Tensor) -> torch.Tensor:
        # lam x - (1/S) A^T (b s): sparse A in one product (no separate scaling passes over the n-vector);
        # dense A by a plain product and two in-place passes (torch's addmv with A^T and beta != 0 is ~25%
        # slower than mv there on CPU)
        if self.design.sparse:
            return self.design.raddmv(x, self.b * c["s"], self.lam, -1.0 / self.S)
        return self.design.rmv(self.b * c["s"]).mul_(-1.0 / self.S).add_(x, alpha=self.lam)

    def _weights(self, c: dict) -> torch.Tensor:
        if "w" not in c:
            c["w"] = c["s"] * (1.0 - c["s"])
        return c["w"]

    # -- oracles ------------------------------------------------------------------------------
    def loss(self, x: torch.Tensor) -> torch.Tensor:
        self._check(x)
        return self._loss_from(self._forward(x), x)

    def grad(self, x: torch.Tensor) -> torch.Tensor:
        self._check(x)
        return self._grad_from(self._forward(x), x)

    def loss_grad(self, x: torch.Tensor):
        self._check(x)
        c = self._forward(x)
        return self._loss_from(c, x), self._grad_from(c, x)

    def hvp(self, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        self._check(x)
        self._check(v, "v")
        w = self._weights(self._forward(x))
        return self.design.raddmv(v, w * self.design.mv(v), self.lam, 1.0 / self.S)

    def hvp_into(self, x: torch.Tensor, v: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """``hvp(x, v)`` written into ``out`` (shape (n,), not overlapping ``v``): no n-sized temporary."""
        self._check(x)
        self._check(v, "v")
        self._check(out, "out")
        w = self._weights(self._forward(x))
        return self.design.raddmv(v, w * self.design.mv(v), self.lam, 1.0 / self.S, out=out)

    def per_sample_grads(self, x: torch.Tensor, idx=None) -> torch.Tensor:
        """Rows -b_s sigmoid(-b_s a_s^T x) a_s for s in idx (dense (b, n); for sparse A, the selected rows
        are densified: O(b n) memory)."""
        self._check(x)
        idx = check_idx(idx, self.S, self.device)
        Ai = self.design.rows(idx)
        coef = -self.b[idx] * torch.sigmoid(-self.b[idx] * (Ai @ x))
        return Ai.mul_(coef[:, None])   # Ai is a fresh copy (``Design.rows``): scaled in place

    def sparse_per_sample_grads(self, x: torch.Tensor, idx):
        """(J, Uc) with the rows of ``per_sample_grads(x, idx)`` (b x n) equal to (E_J Uc)^T: J the distinct
        columns the selected rows of a sparse design touch, Uc (|J| x b). O(nnz of the rows), no n-vector.
        ``idx``: an int (one row) or a 1-D index tensor. ``None`` for a dense design or off the CPU (use
        ``per_sample_grads``)."""
        design = self.design
        if not design.sparse or x.device.type != "cpu":
            return None
        A = design.A
        crow, col, val = A.crow_indices(), A.col_indices(), A.values()
        b = 1 if isinstance(idx, int) else idx.shape[0]
        if b == 1 and design.rows_strictly_increasing():
            # one row with distinct columns: J and the values are slices of the CSR arrays (no gather, no
            # sort), the coefficient a host number (CPU): four small tensor operations in all
            s = idx if isinstance(idx, int) else int(idx[0])
            lo, hi = crow[s:s + 2].tolist()
            J, vals = col[lo:hi], val[lo:hi]
            bs = self.b[s].item()
            m = -bs * torch.dot(vals, x.index_select(0, J)).item()                     # -b_s a_s^T x
            sig = 1.0 / (1.0 + math.exp(-m)) if m >= 0 else math.exp(m) / (1.0 + math.exp(m))
            return J, torch.mul(vals, -bs * sig).unsqueeze(1)
        if isinstance(idx, int):
            idx = torch.tensor([idx])
        idx = check_idx(idx, self.S, self.device)
        starts, ends = crow[idx].long(), crow[idx + 1].long()
        lens = ends - starts
        total = int(lens.sum())
        rows = torch.repeat_interleave(torch.arange(b), lens, output_size=total)
        pos = starts[rows] + torch.arange(total) - (torch.cumsum(lens, 0) - lens)[rows]
        J, inv = torch.unique(col[pos].long(), return_inverse=True)
        Uc = torch.zeros(J.shape[0], b, dtype=x.dtype)
        Uc.index_put_((inv, rows), val[pos], accumulate=True)     # repeated (row, column) entries add, as in A
        bl = self.b[idx]
        coef = -bl * torch.sigmoid(-bl * (Uc.T @ x.index_select(0, J)))          # a_s^T x over the rows' nonzeros
        return J, Uc.mul_(coef)

    def model_sample_grads(self, x: torch.Tensor, idx, generator: torch.Generator) -> torch.Tensor:
        """Rows -y_s sigmoid(-y_s a_s^T x) a_s with y_s = +1 w.p. sigmoid(a_s^T x), else -1 (drawn with
        ``generator``). E[g_s g_s^T] = p_s (1 - p_s) a_s a_s^T."""
        self._check(x)
        idx = check_idx(idx, self.S, self.device)
        Ai = self.design.rows(idx)
        z = Ai @ x
        u = uniform(z.shape, generator, self.dtype, self.device)
        y = torch.where(u < torch.sigmoid(z), 1.0, -1.0).to(self.dtype)
        return Ai.mul_((-y * torch.sigmoid(-y * z))[:, None])   # Ai is a fresh copy: scaled in place

    def _check_dense_n(self, what: str):
        if self.n > self.max_dense_n:
            raise ValueError(f"{what} builds dense n x n matrices; n={self.n} exceeds the limit "
                             f"{self.max_dense_n} for {self.name!r}")

    def hessian(self, x: torch.Tensor) -> torch.Tensor:
        """A^T diag(w) A / S + lam I (dense n x n; sparse A is densified in column chunks)."""
        self._check(x)
        self._check_dense_n("hessian")
        w = self._weights(self._forward(x))
        H = self.design.gram(w, 0, self.n) / self.S
        H = 0.5 * (H + H.T)
        H.diagonal().add_(self.lam)
        return H

    def hessian_blocks(self, x: torch.Tensor, sizes: Sequence[int]) -> list[torch.Tensor]:
        """Blocks A[:, B]^T diag(w) A[:, B] / S + lam I, one per contiguous block B of ``sizes``.
        Memory: the blocks plus O(S * block size) work space."""
        self._check(x)
        sizes = check_partition(sizes, self.n)
        w = self._weights(self._forward(x))
        out, start = [], 0
        for s in sizes:
            B = self.design.gram(w, start, start + s) / self.S
            B = 0.5 * (B + B.T)
            B.diagonal().add_(self.lam)
            out.append(B)
            start += s
        return out

    def kfac_factors(self, x: torch.Tensor, generator: torch.Generator | None = None):
        """One linear layer with one output: [(A_cov, G)] with A_cov = A^T A / S (n x n) and
        G = [[mean_s w_s]] (1 x 1), the exact expected output-gradient second moment (``generator`` is
        not used). A_cov kron G is K-FAC's independence approximation of the model Fisher
        A^T diag(w) A / S; it is exact when all w_s are equal (e.g. at x = 0)."""
        self._check(x)
        self._check_dense_n("kfac_factors")
        ones = torch.ones(self.S, dtype=self.dtype, device=self.device)
        A_cov = self.design.gram(ones, 0, self.n) / self.S
        A_cov = 0.5 * (A_cov + A_cov.T)
        G = self._weights(self._forward(x)).mean().reshape(1, 1)
        return [(A_cov, G)]


def logistic_regression(A, b, lam: float = 1e-3, *, dtype=None, device=None, name: str = "logistic") -> LogisticRegression:
    """Logistic regression problem f(x) = (1/S) sum log(1 + exp(-b_s a_s^T x)) + lam/2 ||x||^2.

    ``A``: (S, n) dense tensor or torch sparse CSR (COO/CSC are converted); ``b``: (S,) labels in {-1, +1}.
    ``dtype``/``device`` default to A's. See :class:`LogisticRegression`.
    """
    return LogisticRegression(A, b, lam, dtype=dtype, device=device, name=name)


class ScalableLogistic(LogisticRegression):
    """Sparse synthetic logistic regression of any size (see ``synthetic.sparse_logistic_data``).

    Holds only A and A^T in CSR (O(nnz) = O(n) memory with the default sizes); never builds a dense
    n x n or S x n matrix; ``hessian`` and ``kfac_factors`` only for n <= 4096."""

    max_dense_n = 4096


def scalable(n: int, seed: int = 0, *, n_samples: int | None = None, nnz_per_row: int | None = None,
             lam: float = 1e-3, dtype=torch.float64, device="cpu") -> ScalableLogistic:
    """Sparse synthetic logistic regression with n features, for cost-per-step sweeps (10^2 .. 10^7).

    Data from :func:`precond_core.synthetic.sparse_logistic_data` (defaults: S = clip(n // 10, 100, 10^5)
    samples, nnz about max(2 n, 10 S)); a gradient or HVP costs O(nnz) = O(n).
    """
    from precond_core.synthetic import sparse_logistic_data
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    A, b = sparse_logistic_data(n, n_samples=n_samples, nnz_per_row=nnz_per_row, seed=seed, dtype=dtype, device=device)
    p = ScalableLogistic(A, b, lam, dtype=dtype, device=device, name="scalable", spectral_seed=seed)
    return p
