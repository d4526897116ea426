"""Shared pieces of the data-driven problems: a design matrix (dense or sparse CSR), index and label
checks, label draws with a caller's generator, and a per-``x`` cache of forward quantities."""
from __future__ import annotations

import math
import warnings
import weakref

import torch

_DTYPES = (torch.float32, torch.float64)


def as_device(device) -> torch.device:
    try:
        return torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"device must be a torch device or its name (e.g. 'cpu', 'cuda'), got {device!r}") from None


def check_dtype(dtype, name: str = "dtype") -> torch.dtype:
    if dtype not in _DTYPES:
        raise ValueError(f"{name} must be torch.float32 or torch.float64, got {dtype!r}")
    return dtype


def _csr(crow, col, val, size) -> torch.Tensor:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(crow, col, val, size=size, check_invariants=False)


def csr_transpose(A: torch.Tensor) -> torch.Tensor:
    """A^T as a CSR tensor, in O(nnz log nnz) time (one stable sort of the column indices), O(nnz) memory."""
    S, n = A.shape
    crow, col, val = A.crow_indices(), A.col_indices(), A.values()
    lens = crow[1:] - crow[:-1]
    rows = torch.repeat_interleave(torch.arange(S, device=A.device, dtype=col.dtype), lens, output_size=col.numel())
    order = torch.sort(col, stable=True).indices
    counts = torch.bincount(col, minlength=n)
    crow_t = torch.zeros(n + 1, dtype=crow.dtype, device=A.device)
    torch.cumsum(counts, 0, out=crow_t[1:])
    return _csr(crow_t, rows[order], val[order], (n, S))


_INT32_LIMIT = 2 ** 31 - 1


class Design:
    """A data matrix A (S x n), dense or torch sparse CSR, with the products the problems need.

    For sparse A the transpose is kept as a second CSR tensor, so A v and A^T y both cost O(nnz)
    (torch's CSR-transposed product is ~30x slower on CPU). Memory: A and A^T (2 nnz values and
    indices) for sparse A; A only for dense A (A^T is a view).
    """

    GRAM_ROWS = 512   # samples per row block of the dense ``gram``

    def __init__(self, A: torch.Tensor, dtype: torch.dtype, device: torch.device, name: str = "A"):
        if not isinstance(A, torch.Tensor):
            raise ValueError(f"{name} must be a 2-D torch tensor (dense or sparse CSR), got {type(A).__name__}")
        if A.layout == torch.sparse_coo or A.layout == torch.sparse_csc:
            A = A.to_sparse_csr()
        if A.layout not in (torch.strided, torch.sparse_csr):
            raise ValueError(f"{name} must be dense or sparse CSR, got layout {A.layout}")
        if A.dim() != 2 or A.shape[0] < 1 or A.shape[1] < 1:
            raise ValueError(f"{name} must be a non-empty 2-D matrix (samples x features), got shape {tuple(A.shape)}")
        self.sparse = A.layout == torch.sparse_csr
        A = A.to(device=device, dtype=dtype)
        if self.sparse:
            crow, col = A.crow_indices(), A.col_indices()
            if col.dtype != torch.int64:
                A = _csr(crow.long(), col.long(), A.values(), A.shape)
            if not bool(torch.isfinite(A.values()).all()):
                raise ValueError(f"{name} has non-finite entries")
            At = csr_transpose(A)
            if max(A.values().numel(), A.shape[0], A.shape[1]) < _INT32_LIMIT:
                # int32 indices: torch's CPU (MKL) sparse product converts int64 indices to int32 on every
                # call, a temporary as long as the index arrays (A^T's row pointer alone has n + 1 entries:
                # one float32 n-vector per gradient) and a pass over them
                A, At = (_csr(M.crow_indices().int(), M.col_indices().int(), M.values(), M.shape) for M in (A, At))
            self.At = At
            self._t_crow_cpu = self.At.crow_indices().cpu().long()
        else:
            A = A.contiguous()
            if not bool(torch.isfinite(A).all()):
                raise ValueError(f"{name} has non-finite entries")
            self.At = A.T
        self.A = A
        self.S, self.n = A.shape
        self.dtype, self.device = dtype, device

    def astype(self, dtype: torch.dtype) -> "Design":
        """A copy of this design with its values in ``dtype`` (e.g. a float32 copy for a low-precision inner
        solve): the indices and structure are shared, the values converted once, no re-validation."""
        new = object.__new__(Design)
        new.__dict__.update(self.__dict__)
        if self.sparse:
            new.A, new.At = (_csr(M.crow_indices(), M.col_indices(), M.values().to(dtype), M.shape)
                             for M in (self.A, self.At))
        else:
            new.A = self.A.to(dtype)
            new.At = new.A.T
        new.dtype = dtype
        return new

    # -- products -----------------------------------------------------------------------------
    def mv(self, x: torch.Tensor) -> torch.Tensor:
        return self.A @ x

    def rmv(self, y: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        if out is not None and y.ndim == 1:
            return torch.mv(self.At, y, out=out)
        return self.At @ y

    def raddmv(self, v: torch.Tensor, y: torch.Tensor, beta: float, alpha: float,
               out: torch.Tensor | None = None) -> torch.Tensor:
        """beta v + alpha A^T y in one product (no separate scaling passes over the n-vector)."""
        return torch.addmv(v, self.At, y, beta=beta, alpha=alpha, out=out)

    @property
    def nnz(self) -> int:
        return self.A.values().numel() if self.sparse else self.S * self.n

    @property
    def nbytes(self) -> int:
        """Bytes of the tensors held (A, and A^T for sparse A)."""
        if not self.sparse:
            return self.A.numel() * self.A.element_size()
        tot = 0
        for M in (self.A, self.At):
            for t in (M.crow_indices(), M.col_indices(), M.values()):
                tot += t.numel() * t.element_size()
        return tot

    # -- dense pieces -------------------------------------------------------------------------
    def rows(self, idx: torch.Tensor) -> torch.Tensor:
        """Dense rows A[idx] (b x n); O(b n) memory."""
        if not self.sparse:
            return self.A[idx]
        crow, col, val = self.A.crow_indices(), self.A.col_indices(), self.A.values()
        starts = crow[idx]
        lens = crow[idx + 1] - starts
        b = idx.numel()
        out = torch.zeros(b, self.n, dtype=self.dtype, device=self.device)
        total = int(lens.sum())
        r = torch.repeat_interleave(torch.arange(b, device=self.device), lens, output_size=total)
        offs = torch.cumsum(lens, 0) - lens
        pos = starts[r] + torch.arange(total, device=self.device) - offs[r]
        out.index_put_((r, col[pos]), val[pos], accumulate=True)   # repeated (row, column) entries add, as in A
        return out

    def rows_strictly_increasing(self) -> bool:
        """Whether every row of the sparse CSR design lists strictly increasing (so distinct) columns;
        checked once (O(nnz)) and remembered."""
        flag = getattr(self, "_rows_increasing", None)
        if flag is None:
            crow, col = self.A.crow_indices().long(), self.A.col_indices().long()
            inc = col[1:] > col[:-1]
            starts = torch.zeros(col.shape[0], dtype=torch.bool)  # entry k starts a row: no comparison with k - 1
            starts[crow[1:-1][crow[1:-1] < col.shape[0]]] = True
            flag = bool((inc | starts[1:]).all()) if col.shape[0] > 1 else True
            self._rows_increasing = flag
        return flag

    def cols(self, start: int, end: int) -> torch.Tensor:
        """Dense columns A[:, start:end] (S x (end - start)); O(S (end - start)) memory."""
        if not self.sparse:
            return self.A[:, start:end]
        lo, hi = int(self._t_crow_cpu[start]), int(self._t_crow_cpu[end])
        crow = self.At.crow_indices()[start:end + 1]
        lens = crow[1:] - crow[:-1]
        local = torch.repeat_interleave(torch.arange(end - start, device=self.device), lens, output_size=hi - lo)
        out = torch.zeros(self.S, end - start, dtype=self.dtype, device=self.device)
        out[self.At.col_indices()[lo:hi], local] = self.At.values()[lo:hi]
        return out

    def _t_rows(self, start: int, end: int) -> torch.Tensor:
        """A[:, start:end]^T as a CSR tensor ((end - start) x S) sharing A^T's storage (sparse A only)."""
        lo, hi = int(self._t_crow_cpu[start]), int(self._t_crow_cpu[end])
        crow = self.At.crow_indices()[start:end + 1] - lo
        return _csr(crow, self.At.col_indices()[lo:hi], self.At.values()[lo:hi], (end - start, self.S))

    def gram(self, w: torch.Tensor, start: int, end: int, max_elems: int = 1 << 24) -> torch.Tensor:
        """A[:, B]^T diag(w) A[:, B] for the block B = [start, end) (dense s x s, s = end - start).

        Dense A: one matrix product. Sparse A: A[:, B]^T is a CSR slice of A^T, multiplied by dense column
        chunks of diag(w) A[:, B] of at most ``max_elems`` entries, so memory stays O(s^2 + max_elems).
        """
        if not self.sparse:
            # row blocks of ``GRAM_ROWS`` samples through one small reused buffer: no S x s temporary
            # (a fresh one costs its page faults, about a third of the product at 8124 x 112)
            C = self.A[:, start:end]
            s = end - start
            if self.S <= self.GRAM_ROWS:
                return C.T @ (w[:, None] * C)
            out = torch.zeros(s, s, dtype=self.dtype, device=self.device)
            buf = torch.empty(self.GRAM_ROWS, s, dtype=self.dtype, device=self.device)
            for o in range(0, self.S, self.GRAM_ROWS):
                e = min(self.S, o + self.GRAM_ROWS)
                Cr = C[o:e]
                out.addmm_(Cr.T, torch.mul(Cr, w[o:e, None], out=buf[:e - o]))
            return out
        Bt = self._t_rows(start, end)
        s = end - start
        step = max(1, max_elems // max(self.S, 1))
        out = torch.empty(s, s, dtype=self.dtype, device=self.device)
        for c0 in range(0, s, step):
            c1 = min(s, c0 + step)
            out[:, c0:c1] = Bt @ (w[:, None] * self.cols(start + c0, start + c1))
        return out

    def row_sq_norms(self) -> torch.Tensor:
        """||a_s||^2 for every sample (S,), O(nnz)."""
        if not self.sparse:
            return (self.A * self.A).sum(1)
        sq = _csr(self.A.crow_indices(), self.A.col_indices(), self.A.values() ** 2, self.A.shape)
        return sq @ torch.ones(self.n, dtype=self.dtype, device=self.device)

    def to_dense(self) -> torch.Tensor:
        return self.A.to_dense() if self.sparse else self.A

    def spectral_norm_sq(self, seed: int = 0, steps: int = 40, exact_below: int = 2048,
                         margin: float = 0.02) -> float:
        """||A||_2^2, the largest eigenvalue of the Gram matrix.

        Exact (``eigvalsh`` of the smaller Gram matrix, float64) when min(S, n) <= ``exact_below`` and
        S n <= 2^24. Otherwise ``steps`` Lanczos steps with full reorthogonalization on the smaller Gram
        matrix from a start drawn with ``torch.Generator().manual_seed(seed)``; the top Ritz value is a lower
        bound that converges fast, and it is multiplied by (1 + ``margin``) so that it can serve as the
        upper bound the step sizes need (an estimate, not a certificate). Memory: ``steps`` vectors of
        length min(S, n).
        """
        m = min(self.S, self.n)
        if m <= exact_below and self.S * self.n <= (1 << 24):
            D = self.to_dense().to(torch.float64)
            G = D @ D.T if self.S <= self.n else D.T @ D
            return float(torch.linalg.eigvalsh(G)[-1])
        if self.n <= self.S:
            op = lambda v: self.rmv(self.mv(v))  # noqa: E731
        else:
            op = lambda v: self.mv(self.rmv(v))  # noqa: E731
        g = torch.Generator().manual_seed(seed)
        q = torch.randn(m, generator=g, dtype=torch.float64).to(dtype=self.dtype, device=self.device)
        q = q / torch.linalg.vector_norm(q)
        Q = torch.empty(min(steps, m), m, dtype=self.dtype, device=self.device)
        alphas, betas = [], []
        for j in range(min(steps, m)):
            Q[j] = q
            w = op(q)
            a = torch.dot(q, w)
            w = w - Q[: j + 1].T @ (Q[: j + 1] @ w)  # full reorthogonalization (twice is enough)
            w = w - Q[: j + 1].T @ (Q[: j + 1] @ w)
            alphas.append(float(a))
            bnorm = float(torch.linalg.vector_norm(w))
            if bnorm <= 1e-10 * max(abs(alphas[-1]), 1e-300):
                break
            betas.append(bnorm)
            q = w / bnorm
        k = len(alphas)
        T = torch.diag(torch.tensor(alphas, dtype=torch.float64))
        if k > 1:
            off = torch.tensor(betas[: k - 1], dtype=torch.float64)
            T += torch.diag(off, 1) + torch.diag(off, -1)
        return float(torch.linalg.eigvalsh(T)[-1]) * (1.0 + margin)


class XCache:
    """Forward quantities computed at one ``x``, reused while the same tensor object is unmodified.

    The key is a weak reference to ``x`` plus its autograd version counter (bumped by every in-place
    operation), so a cached value is never reused for a different or modified vector. Tensors without a
    version counter (inference mode) or that require grad are not cached. Writes through ``x.data``
    bypass the version counter: do not mutate x that way between calls.
    """

    __slots__ = ("_ref", "_version", "data")

    def __init__(self):
        self._ref, self._version, self.data = None, -1, None

    def get(self, x: torch.Tensor):
        if self._ref is None or self._ref() is not x:
            return None
        try:
            return self.data if x._version == self._version else None
        except RuntimeError:
            return None

    def clear(self) -> None:
        self._ref, self._version, self.data = None, -1, None

    def put(self, x: torch.Tensor, data: dict) -> dict:
        if x.requires_grad:
            return data
        try:
            self._version = x._version
            self._ref = weakref.ref(x)
            self.data = data
        except (RuntimeError, TypeError):
            self._ref, self.data = None, None
        return data


def check_idx(idx, S: int, device: torch.device, name: str = "idx") -> torch.Tensor:
    """Sample indices as an int64 tensor on ``device`` (all S samples when ``idx`` is None)."""
    if idx is None:
        return torch.arange(S, device=device)
    if not isinstance(idx, torch.Tensor):
        try:
            idx = torch.as_tensor(idx)
        except (TypeError, ValueError, RuntimeError):
            raise ValueError(f"{name} must be a 1-D integer tensor of sample indices in [0, {S}), got {idx!r}") from None
    if idx.dim() != 1 or idx.dtype in (torch.bool,) or idx.is_floating_point() or idx.is_complex():
        raise ValueError(f"{name} must be a 1-D integer tensor of sample indices in [0, {S}), "
                         f"got dtype {idx.dtype} and shape {tuple(idx.shape)}")
    if idx.device.type == "cpu" and idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= S):
        raise ValueError(f"{name} must hold sample indices in [0, {S}), got values in "
                         f"[{int(idx.min())}, {int(idx.max())}]")
    return idx.to(device=device, dtype=torch.int64)


def uniform(shape, generator: torch.Generator, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """U[0, 1) draws from ``generator`` on the generator's own device, moved to ``device``."""
    if not isinstance(generator, torch.Generator):
        raise ValueError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    return torch.rand(shape, generator=generator, dtype=dtype, device=generator.device).to(device)


def normal(shape, generator: torch.Generator, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    if not isinstance(generator, torch.Generator):
        raise ValueError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    return torch.randn(shape, generator=generator, dtype=dtype, device=generator.device).to(device)


def check_lam(lam, name: str = "lam") -> float:
    if isinstance(lam, bool) or not isinstance(lam, (int, float)) or not math.isfinite(lam) or lam < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {lam!r}")
    return float(lam)


def resolve_dtype_device(A: torch.Tensor, dtype, device):
    """The problem's dtype/device: given ones, else A's (float64 when A is not floating point)."""
    if dtype is None:
        dtype = A.dtype if A.dtype in _DTYPES else torch.float64
    return check_dtype(dtype), as_device(A.device if device is None else device)
