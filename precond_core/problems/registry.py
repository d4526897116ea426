"""Problems by name, for grid files and the command line.

``make_problem(name, *, dtype=torch.float64, device="cpu", seed=0, **params)`` builds one;
``list_problems()`` names them; ``problem_info(name)`` gives the parameters with their defaults and a
one-line summary. Unknown names and parameters raise a ``ValueError`` that lists what is allowed.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from ._common import as_device, check_dtype


@dataclass(frozen=True)
class _Entry:
    build: Callable
    defaults: dict
    summary: str


def _to_torch(M, dtype, device):
    """A dataset matrix (torch, numpy or scipy.sparse) as a torch tensor (CSR when sparse)."""
    if isinstance(M, torch.Tensor):
        return M.to(device=device, dtype=dtype) if M.is_floating_point() or M.layout != torch.strided else M.to(device)
    if hasattr(M, "tocsr"):  # scipy.sparse
        M = M.tocsr()
        M.sort_indices()
        return torch.sparse_csr_tensor(torch.as_tensor(M.indptr, dtype=torch.int64),
                                       torch.as_tensor(M.indices, dtype=torch.int64),
                                       torch.as_tensor(M.data), size=M.shape).to(device=device, dtype=dtype)
    return torch.as_tensor(M).to(device=device)


def _load(dataset: str, dtype, device):
    from precond_core import datasets  # lazy: optional data layer
    out = datasets.load(dataset, dtype=dtype, device=device)
    if isinstance(out, (tuple, list)) and len(out) >= 2:
        A, b = out[0], out[1]
    else:
        A = getattr(out, "A", getattr(out, "X", None))
        b = getattr(out, "b", getattr(out, "y", None))
        if A is None or b is None:
            raise ValueError(f"dataset {dataset!r}: precond_core.datasets.load returned {type(out).__name__}, "
                             "expected (A, b) or an object with A/X and b/y")
    A = _to_torch(A, dtype, device)
    b = _to_torch(b, dtype, device)
    return A, b.reshape(-1)


def _pm1_labels(b: torch.Tensor, dataset: str) -> torch.Tensor:
    vals = torch.unique(b.cpu())
    if vals.numel() != 2:
        raise ValueError(f"dataset {dataset!r} has {vals.numel()} distinct labels {vals[:5].tolist()}; "
                         "logistic regression needs two")
    if set(vals.tolist()) == {-1.0, 1.0}:
        return b
    return torch.where(b == vals[1].to(b.device), 1.0, -1.0).to(b.dtype)  # larger label -> +1


def _logistic(*, dtype, device, seed, dataset, n_samples, n_features, lam):
    from .logistic import logistic_regression
    from precond_core.synthetic import logistic_data
    if dataset is None:
        A, b = logistic_data(n_samples, n_features, seed, dtype=dtype, device=device)
        return logistic_regression(A, b, lam, name="logistic")
    A, b = _load(dataset, dtype, device)
    return logistic_regression(A, _pm1_labels(b.to(dtype), dataset), lam, dtype=dtype, device=device,
                               name=f"logistic-{dataset}")


def _scalable(*, dtype, device, seed, n, n_samples, nnz_per_row, lam):
    from .logistic import scalable
    return scalable(n, seed, n_samples=n_samples, nnz_per_row=nnz_per_row, lam=lam, dtype=dtype, device=device)


def _nls(*, dtype, device, seed, n_samples, n_features, phi, noise, lam):
    from .nls import nonlinear_least_squares
    from precond_core.synthetic import nls_data
    A, b = nls_data(n_samples, n_features, phi, noise, seed, dtype=dtype, device=device)
    return nonlinear_least_squares(A, b, phi, lam)


def _softmax(*, dtype, device, seed, dataset, n_samples, n_features, n_classes, lam):
    from .softmax import softmax_regression
    from precond_core.synthetic import softmax_data
    if dataset is None:
        A, y = softmax_data(n_samples, n_features, n_classes, seed, dtype=dtype, device=device)
        return softmax_regression(A, y, n_classes, lam)
    A, b = _load(dataset, dtype, device)
    if A.layout != torch.strided:
        A = A.to_dense()
    classes, y = torch.unique(b.cpu(), return_inverse=True)
    return softmax_regression(A, y.to(device), int(classes.numel()), lam, dtype=dtype, device=device,
                              name=f"softmax-{dataset}")


def _one_d(*, dtype, device, seed, x0):
    from .simple import one_d
    return one_d(x0, dtype=dtype, device=device)


def _quadratic(*, dtype, device, seed, n, cond):
    from .simple import quadratic
    return quadratic(n=n, cond=cond, seed=seed, dtype=dtype, device=device)


_REGISTRY: dict[str, _Entry] = {
    "logistic": _Entry(_logistic, dict(dataset=None, n_samples=500, n_features=100, lam=1e-3),
                       "L2 logistic regression: synthetic dense data (500 x 100) or a LIBSVM dataset by name"),
    "scalable": _Entry(_scalable, dict(n=10_000, n_samples=None, nnz_per_row=None, lam=1e-3),
                       "sparse synthetic logistic regression of any size n, O(n) memory and gradient cost"),
    "nls": _Entry(_nls, dict(n_samples=200, n_features=50, phi="sigmoid", noise=0.1, lam=0.0),
                  "nonlinear least squares 1/2 sum (phi(a^T x) - b)^2 on synthetic data"),
    "softmax": _Entry(_softmax, dict(dataset=None, n_samples=500, n_features=50, n_classes=5, lam=1e-3),
                      "softmax (multinomial logistic) regression, synthetic or a dataset by name"),
    "one_d": _Entry(_one_d, dict(x0=3.0), "the 1D function log(2 cosh x) (positive second derivative)"),
    "quadratic": _Entry(_quadratic, dict(n=100, cond=100.0),
                        "strongly convex quadratic with eigenvalues geometric in [1/cond, 1]"),
}


def list_problems() -> list[str]:
    """Names accepted by :func:`make_problem`."""
    return sorted(_REGISTRY)


def _entry(name) -> _Entry:
    if name not in _REGISTRY:
        raise ValueError(f"unknown problem name {name!r}; allowed: {list_problems()}")
    return _REGISTRY[name]


def problem_info(name: str) -> dict:
    """{"name", "summary", "params": {param: default}} (dtype, device and seed are always accepted)."""
    e = _entry(name)
    return {"name": name, "summary": e.summary, "params": dict(e.defaults)}


def make_problem(name: str, *, dtype: torch.dtype = torch.float64, device="cpu", seed: int = 0, **params):
    """Build the problem ``name`` with ``params`` overriding its defaults (see :func:`problem_info`)."""
    e = _entry(name)
    unknown = sorted(set(params) - set(e.defaults))
    if unknown:
        raise ValueError(f"unknown parameter(s) {unknown} for problem {name!r}; allowed: "
                         f"{sorted(e.defaults)} plus dtype, device, seed")
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype, dtype)
    check_dtype(dtype)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    kw = {**e.defaults, **params}
    return e.build(dtype=dtype, device=as_device(device), seed=seed, **kw)
