"""Small analytic problems (the talk's 1D function, quadratics) and problems from any torch function."""
from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from .base import Problem, check_vector
from ._common import XCache, as_device, check_dtype, check_idx, normal


class OneD(Problem):
    """The talk's 1D function with positive second derivative: f(x) = log(2 cosh x).

    f' = tanh x, f'' = sech^2 x in (0, 1], |f'''| = 2 |tanh x| sech^2 x <= 4/(3 sqrt 3):
    n = 1, L = 1, M = 4/(3 sqrt 3), f_star = log 2 (at x = 0). Computed as |x| + softplus(-2|x|) (no overflow).
    """

    def __init__(self, x0: float = 3.0, *, dtype=torch.float64, device="cpu"):
        if isinstance(x0, bool) or not isinstance(x0, (int, float)) or not math.isfinite(x0):
            raise ValueError(f"x0 must be a finite number, got {x0!r}")
        self.dtype, self.device = check_dtype(dtype), as_device(device)
        self.n, self.name, self._x0 = 1, "one_d", float(x0)
        self.L, self.M, self.f_star = 1.0, 4.0 / (3.0 * math.sqrt(3.0)), math.log(2.0)
        self.lam, self.fisher_scale = 0.0, 1.0

    def x0(self):
        return torch.full((1,), self._x0, dtype=self.dtype, device=self.device)

    def loss(self, x):
        check_vector(x, 1, self.dtype, self.device)
        a = x.abs()
        return (a + F.softplus(-2.0 * a)).sum()

    def grad(self, x):
        check_vector(x, 1, self.dtype, self.device)
        return torch.tanh(x)

    def loss_grad(self, x):
        return self.loss(x), torch.tanh(x)

    def hvp(self, x, v):
        check_vector(x, 1, self.dtype, self.device)
        check_vector(v, 1, self.dtype, self.device, "v")
        return (1.0 - torch.tanh(x) ** 2) * v


def one_d(x0: float = 3.0, *, dtype=torch.float64, device="cpu") -> OneD:
    """f(x) = log(2 cosh x), started at ``x0`` (see :class:`OneD`)."""
    return OneD(x0, dtype=dtype, device=device)


class Quadratic(Problem):
    """f(x) = 1/2 (x - x*)^T Q (x - x*) = (1/S) sum_s 1/2 (a_s^T x - c_s)^2, Q = A^T A / S, S = n.

    Data from :func:`precond_core.synthetic.quadratic_spectrum` (Q has the prescribed eigenvalues).
    Strongly convex: L = max eigenvalue, ``mu`` = min eigenvalue, M = 0, f_star = 0, ``x_star`` known.
    Per-sample gradient r_s a_s (r = A x - c); model labels c~ = a^T x + N(0, 1) give rows -e_s a_s with
    E[(1/S) G^T G] = Q exactly (fisher_scale = 1/S). K-FAC: one layer, [(Q, [[1]])], exact.
    Memory: A (n x n), Q is not stored (hvp = A^T (A v) / S).
    """

    def __init__(self, data, *, name="quadratic"):
        self.A, self.c, self.x_star, self.eigenvalues, self.basis = data
        self.n = self.S = self.n_samples = self.A.shape[1]
        self.dtype, self.device, self.name = self.A.dtype, self.A.device, name
        self.L = float(self.eigenvalues.max())
        self.mu = float(self.eigenvalues.min())
        self.M, self.f_star, self.lam = 0.0, 0.0, 0.0
        self.fisher_scale = 1.0 / self.S
        self._cache = XCache()

    def describe(self):
        d = super().describe()
        d.update(cond=self.L / self.mu)
        return d

    def _res(self, x):
        c = self._cache.get(x)
        if c is None:
            c = self._cache.put(x, {"r": self.A @ x - self.c})
        return c["r"]

    def loss(self, x):
        check_vector(x, self.n, self.dtype, self.device)
        r = self._res(x)
        return 0.5 * torch.dot(r, r) / self.S

    def grad(self, x):
        check_vector(x, self.n, self.dtype, self.device)
        return self.A.T @ self._res(x) / self.S

    def loss_grad(self, x):
        check_vector(x, self.n, self.dtype, self.device)
        r = self._res(x)
        return 0.5 * torch.dot(r, r) / self.S, self.A.T @ r / self.S

    def hvp(self, x, v):
        check_vector(x, self.n, self.dtype, self.device)
        check_vector(v, self.n, self.dtype, self.device, "v")
        return self.A.T @ (self.A @ v) / self.S

    def hessian(self, x):
        check_vector(x, self.n, self.dtype, self.device)
        H = self.A.T @ self.A / self.S
        return 0.5 * (H + H.T)

    def hessian_blocks(self, x, sizes):
        from .base import check_partition
        check_vector(x, self.n, self.dtype, self.device)
        sizes = check_partition(sizes, self.n)
        out, start = [], 0
        for s in sizes:
            C = self.A[:, start:start + s]
            B = C.T @ C / self.S
            out.append(0.5 * (B + B.T))
            start += s
        return out

    def per_sample_grads(self, x, idx=None):
        check_vector(x, self.n, self.dtype, self.device)
        idx = check_idx(idx, self.S, self.device)
        Ai = self.A[idx]
        return Ai * (Ai @ x - self.c[idx])[:, None]

    def model_sample_grads(self, x, idx, generator):
        check_vector(x, self.n, self.dtype, self.device)
        idx = check_idx(idx, self.S, self.device)
        e = normal(idx.shape, generator, self.dtype, self.device)
        return self.A[idx] * (-e)[:, None]

    def kfac_factors(self, x, generator=None):
        return [(self.hessian(x), torch.ones(1, 1, dtype=self.dtype, device=self.device))]


def quadratic(eigenvalues: Sequence[float] | torch.Tensor | None = None, *, n: int | None = None,
              cond: float | None = None, seed: int = 0, dtype=torch.float64, device="cpu") -> Quadratic:
    """Quadratic with the given ``eigenvalues``, or ``n`` eigenvalues geometric in [1/cond, 1]
    (defaults n = 100, cond = 100 when neither is given). See :class:`Quadratic`."""
    from precond_core.synthetic import quadratic_spectrum
    if eigenvalues is None:
        n = 100 if n is None else n
        cond = 100.0 if cond is None else cond
    return Quadratic(quadratic_spectrum(eigenvalues, n=n, cond=cond, seed=seed, dtype=dtype, device=device))


class FunctionProblem(Problem):
    """A problem from a differentiable torch function ``fun(x) -> scalar``.

    grad by reverse mode; hvp by double backward (``torch.autograd.grad`` with ``create_graph=True``,
    then the gradient of <g, v>). Per-sample gradients (for the Fisher methods) come from either

    - ``sample_loss(x, *sample) -> scalar`` with ``data`` (a tensor or a tuple of tensors whose first
      dimension indexes the S samples): rows by ``torch.func.vmap(torch.func.grad(sample_loss))`` over the
      requested samples only (b rows cost about b sample gradients; ``fun`` may then be omitted and is
      the mean of the sample losses), or
    - ``per_sample(x) -> (S,)`` per-sample losses: rows by one forward and ``torch.func.vmap`` of its
      vector-Jacobian product over the requested unit vectors (no full Jacobian unless all rows are asked).

    ``fisher_scale`` defaults to 1/S when fun equals the mean of the sample losses at x0 and to 1 when it
    equals the sum (else it must be given). Without either, methods that need per-sample gradients are
    refused at construction (``provides``). No model-label gradients and no K-FAC factors.
    """

    def __init__(self, fun: Callable | None, x0: torch.Tensor, per_sample: Callable | None = None,
                 name: str = "custom", *, sample_loss: Callable | None = None, data=None,
                 fisher_scale: float | None = None, lam: float = 0.0, L=None, M=None, f_star=None):
        if not isinstance(x0, torch.Tensor) or x0.dim() != 1 or x0.numel() < 1:
            raise ValueError(f"x0 must be a non-empty 1-D torch tensor, got "
                             f"{tuple(x0.shape) if isinstance(x0, torch.Tensor) else type(x0).__name__}")
        if per_sample is not None and sample_loss is not None:
            raise ValueError("give per_sample or sample_loss (with data), not both")
        if sample_loss is not None:
            if not callable(sample_loss):
                raise ValueError(f"sample_loss must be callable, got {type(sample_loss).__name__}")
            data = (data,) if isinstance(data, torch.Tensor) else data
            if (not isinstance(data, (tuple, list)) or not data
                    or not all(isinstance(t, torch.Tensor) and t.dim() >= 1 for t in data)
                    or len({t.shape[0] for t in data}) != 1):
                raise ValueError("data must be a tensor or a tuple of tensors with the same first dimension "
                                 "(the samples) when sample_loss is given")
            data = tuple(data)
            if fun is None:
                fun = self._mean_sample_loss
        elif data is not None:
            raise ValueError("data is used only with sample_loss")
        if not callable(fun):
            raise ValueError(f"fun must be callable, got {type(fun).__name__}")
        self.sample_loss, self.data = sample_loss, data
        self.dtype = check_dtype(x0.dtype, "x0.dtype")
        self.device = x0.device
        self.n, self.name = x0.numel(), name
        self._x0 = x0.detach().clone()
        self.fun, self.per_sample = fun, per_sample
        self.lam, self.L, self.M, self.f_star = lam, L, M, f_star
        f0 = self._eval(self._x0)
        if f0.dim() != 0:
            raise ValueError(f"fun must return a scalar (0-d tensor), got shape {tuple(f0.shape)}")
        ls = None
        if per_sample is not None:
            if not callable(per_sample):
                raise ValueError(f"per_sample must be callable or None, got {type(per_sample).__name__}")
            with torch.no_grad():
                ls = per_sample(self._x0)
            if not isinstance(ls, torch.Tensor) or ls.dim() != 1:
                raise ValueError("per_sample must return a 1-D tensor of per-sample losses")
        elif sample_loss is not None:
            with torch.no_grad():
                ls = self._sample_losses(self._x0)
            if ls.dim() != 1:
                raise ValueError("sample_loss must return a scalar (0-d tensor) per sample")
        if ls is not None:
            self.n_samples = self.S = ls.numel()
            if fisher_scale is None:
                if torch.allclose(ls.mean(), f0, rtol=1e-5, atol=1e-8):
                    fisher_scale = 1.0 / self.n_samples
                elif torch.allclose(ls.sum(), f0, rtol=1e-5, atol=1e-8):
                    fisher_scale = 1.0
                else:
                    raise ValueError("fisher_scale must be given: fun(x0) is neither the mean nor the sum of the "
                                     "per-sample losses at x0")
        self.fisher_scale = 1.0 if fisher_scale is None else float(fisher_scale)

    def _sample_losses(self, x):
        return torch.func.vmap(self.sample_loss, in_dims=(None,) + (0,) * len(self.data))(x, *self.data)

    def _mean_sample_loss(self, x):
        return self._sample_losses(x).mean()

    def provides(self, capability: str) -> bool:
        """Whether this problem has the oracle ``capability`` (``per_sample_grads`` needs per_sample or
        sample_loss; ``model_sample_grads`` and ``kfac_factors`` are never available)."""
        if capability == "per_sample_grads":
            return self.per_sample is not None or self.sample_loss is not None
        if capability in ("model_sample_grads", "kfac_factors"):
            return False
        return True

    def x0(self):
        return self._x0.clone()

    def _eval(self, x):
        with torch.no_grad():
            out = self.fun(x)
        if not isinstance(out, torch.Tensor):
            raise ValueError(f"fun must return a torch tensor, got {type(out).__name__}")
        return out

    def loss(self, x):
        check_vector(x, self.n, self.dtype, self.device)
        return self._eval(x)

    def loss_grad(self, x):
        check_vector(x, self.n, self.dtype, self.device)
        with torch.enable_grad():
            xr = x.detach().requires_grad_(True)
            f = self.fun(xr)
            (g,) = torch.autograd.grad(f, xr)
        return f.detach(), g

    def grad(self, x):
        return self.loss_grad(x)[1]

    def hvp(self, x, v):
        check_vector(x, self.n, self.dtype, self.device)
        check_vector(v, self.n, self.dtype, self.device, "v")
        with torch.enable_grad():
            xr = x.detach().requires_grad_(True)
            (g,) = torch.autograd.grad(self.fun(xr), xr, create_graph=True)
            (hv,) = torch.autograd.grad(g, xr, grad_outputs=v, allow_unused=True)
        return torch.zeros_like(v) if hv is None else hv.detach()

    def per_sample_grads(self, x, idx=None):
        """Rows grad_x loss_s(x) for s in ``idx`` (all S when None), shape (len(idx), n)."""
        if not self.provides("per_sample_grads"):
            return super().per_sample_grads(x, idx)
        check_vector(x, self.n, self.dtype, self.device)
        x = x.detach()
        rows = None if idx is None else check_idx(idx, self.n_samples, self.device)
        if self.sample_loss is not None:
            data = self.data if rows is None else tuple(t[rows] for t in self.data)
            g = torch.func.vmap(torch.func.grad(self.sample_loss), in_dims=(None,) + (0,) * len(data))
            return g(x, *data)
        _, vjp = torch.func.vjp(self.per_sample, x)
        rows = torch.arange(self.n_samples, device=self.device) if rows is None else rows
        E = torch.zeros(rows.numel(), self.n_samples, dtype=self.dtype, device=self.device)
        E[torch.arange(rows.numel(), device=self.device), rows] = 1.0  # unit cotangents, b x S (no S x S)
        return torch.func.vmap(lambda e: vjp(e)[0])(E)


def from_function(fun: Callable | None, x0: torch.Tensor, per_sample: Callable | None = None, name: str = "custom",
                  **kwargs) -> FunctionProblem:
    """Generic problem from ``fun(x) -> scalar`` (see :class:`FunctionProblem`); keyword arguments:
    sample_loss and data (per-sample gradients by vmap(grad)), fisher_scale, lam, L, M, f_star."""
    return FunctionProblem(fun, x0, per_sample, name, **kwargs)
