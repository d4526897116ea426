"""Problems by name, for grid files and the command line.

``make_problem(name, *, dtype=torch.float64, device="cpu", seed=0, **params)`` builds one;
``list_problems()`` names them; ``problem_info(name)`` gives the parameters with their defaults and a
one-line summary. Unknown names and parameters raise a ``ValueError`` that lists what is allowed.

User problems enter the same way: ``register_problem(name, factory)`` adds a library's factory under a
name, and ``make_problem("package.module:function", ...)`` imports a factory by its path (from the current
directory or the installed packages). A factory is any callable returning a ``Problem``; it receives the
keyword arguments it declares, among them ``dtype``, ``device`` and ``seed`` when it takes them.
``dataset=`` of ``logistic``/``softmax`` is a registered data set name or the path of a LIBSVM file;
``provenance(name, params)`` gives what the results store records about such problems.
"""
from __future__ import annotations

import hashlib
import importlib
import inspect
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from ._common import as_device, check_dtype


@dataclass(frozen=True)
class _Entry:
    build: Callable
    defaults: dict
    summary: str
    factory: str = ""          # "module:function" of a user factory ("" for built-in problems)
    takes: tuple = ("dtype", "device", "seed")  # of dtype, device, seed: those the factory accepts
    open_kwargs: bool = False  # the factory takes **kwargs: any parameter is passed through


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
                               name=f"logistic-{dataset_label(dataset)}")


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
                              name=f"softmax-{dataset_label(dataset)}")


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


_BUILTIN = frozenset(_REGISTRY)
_SPECIAL = ("dtype", "device", "seed")


class _Required:
    """Default of a factory parameter that has none: it must be given."""

    def __repr__(self):
        return "<required>"


REQUIRED = _Required()


def _entry_for(factory: Callable, *, defaults: dict | None, summary: str, label: str) -> _Entry:
    if not callable(factory):
        raise ValueError(f"factory for problem {label!r} must be callable, got {type(factory).__name__}")
    try:
        sig = inspect.signature(factory)
    except (TypeError, ValueError):
        sig = None
    declared, takes, open_kw = {}, [], sig is None
    if sig is not None:
        for p in sig.parameters.values():
            if p.kind is p.VAR_KEYWORD:
                open_kw = True
            elif p.kind in (p.VAR_POSITIONAL, p.POSITIONAL_ONLY):
                continue
            elif p.name in _SPECIAL:
                takes.append(p.name)
            else:
                declared[p.name] = REQUIRED if p.default is p.empty else p.default
    if open_kw:
        takes = list(_SPECIAL)
    if defaults is not None:
        if not isinstance(defaults, dict):
            raise ValueError(f"defaults for problem {label!r} must be a dict, got {type(defaults).__name__}")
        declared = {**declared, **defaults}
    doc = (inspect.getdoc(factory) or "").strip().split("\n")[0]
    return _Entry(factory, declared, summary or doc or f"user problem {label}", factory=label,
                  takes=tuple(takes), open_kwargs=open_kw)


def register_problem(name: str, factory: Callable, *, defaults: dict | None = None, summary: str = "",
                     replace: bool = False) -> None:
    """Make ``factory(**params) -> Problem`` available as ``name`` to :func:`make_problem`, grid files
    (``name = "..."`` in ``[[problems]]``), the store and the report.

    Its parameters (with their defaults) are read off its signature, overridden by ``defaults``; it also
    gets ``dtype``, ``device`` and ``seed`` when it declares them (or ``**kwargs``). A parameter without a
    default must be given in every use. Built-in names cannot be replaced; a user name only with
    ``replace=True``. Model problems (a network, a loss and data) register the same way.
    """
    if not isinstance(name, str) or not name or ":" in name or name != name.strip():
        raise ValueError(f"problem name must be a non-empty string without ':' or surrounding spaces, got {name!r}")
    if name in _BUILTIN:
        raise ValueError(f"problem name {name!r} is built in and cannot be replaced; choose another name")
    if name in _REGISTRY and not replace:
        raise ValueError(f"problem name {name!r} is already registered; pass replace=True to replace it")
    mod = getattr(factory, "__module__", None) or "?"
    qual = getattr(factory, "__qualname__", None) or getattr(factory, "__name__", None) or type(factory).__name__
    entry = _entry_for(factory, defaults=defaults, summary=summary, label=f"{mod}:{qual}")
    _REGISTRY[name] = entry


def unregister_problem(name: str) -> None:
    """Remove a name added by :func:`register_problem` (built-in names cannot be removed)."""
    if name in _BUILTIN:
        raise ValueError(f"problem name {name!r} is built in and cannot be removed")
    _REGISTRY.pop(name, None)


def is_factory_path(name) -> bool:
    """True for ``"package.module:function"`` (a factory imported by its path)."""
    return isinstance(name, str) and name.count(":") == 1 and all(p.strip() for p in name.split(":"))


def import_factory(path: str) -> Callable:
    """The callable named by ``"package.module:function"`` (``function`` may be dotted: ``Class.method``);
    the module is searched in the current directory first, then in the installed packages."""
    if not is_factory_path(path):
        raise ValueError(f"factory must be 'package.module:function', got {path!r}")
    mod_name, attr = (p.strip() for p in path.split(":"))
    cwd = os.getcwd()
    added = cwd not in sys.path
    if added:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(mod_name)
    except ImportError as exc:
        raise ValueError(f"factory {path!r}: cannot import module {mod_name!r} from the current directory "
                         f"({cwd}) or the installed packages: {exc}") from None
    except Exception as exc:
        raise ValueError(f"factory {path!r}: importing module {mod_name!r} failed: {type(exc).__name__}: {exc}") from None
    finally:
        if added and cwd in sys.path:
            sys.path.remove(cwd)
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            close = [n for n in dir(obj) if not n.startswith("_")]
            import difflib
            hint = difflib.get_close_matches(part, close, n=1)
            raise ValueError(f"factory {path!r}: module {mod_name!r} has no attribute {part!r}"
                             + (f"; did you mean {hint[0]!r}?" if hint else ""))
        obj = getattr(obj, part)
    if not callable(obj):
        raise ValueError(f"factory {path!r} is not callable ({type(obj).__name__})")
    return obj


_FACTORIES: dict[str, _Entry] = {}  # factories imported by path


def list_problems() -> list[str]:
    """Names accepted by :func:`make_problem` (built-in and registered; factory paths are accepted too)."""
    return sorted(_REGISTRY)


def _entry(name) -> _Entry:
    if name in _REGISTRY:
        return _REGISTRY[name]
    if is_factory_path(name):
        if name not in _FACTORIES:
            _FACTORIES[name] = _entry_for(import_factory(name), defaults=None, summary="", label=name)
        return _FACTORIES[name]
    import difflib
    hint = difflib.get_close_matches(str(name), list_problems(), n=1)
    raise ValueError(f"unknown problem name {name!r}" + (f" (did you mean {hint[0]!r}?)" if hint else "")
                     + f"; allowed: {list_problems()} or a factory 'package.module:function'")


def problem_info(name: str) -> dict:
    """{"name", "summary", "params": {param: default}, "factory"} (dtype, device and seed are always
    accepted; ``factory`` is the "module:function" of a user problem, "" for a built-in one)."""
    e = _entry(name)
    return {"name": name, "summary": e.summary, "params": dict(e.defaults), "factory": e.factory}


def is_dataset_path(dataset) -> bool:
    """True when ``dataset`` names a file rather than a registered data set (it has a directory part or a
    suffix, or is an existing file, and is not a registry name)."""
    if not isinstance(dataset, (str, os.PathLike)):
        return False
    s = os.fspath(dataset)
    if s.startswith("synthetic:"):
        return False
    try:
        from precond_core.datasets.registry import registry
        if s in registry():
            return False
    except Exception:  # pragma: no cover - data layer unavailable
        pass
    return os.sep in s or "/" in s or bool(Path(s).suffix) or Path(s).is_file()


def dataset_label(dataset) -> str:
    """How problems and reports name a data set: the file name for a path, else the registry name."""
    return Path(os.fspath(dataset)).name if is_dataset_path(dataset) else str(dataset)


_SHA_CACHE: dict[tuple, str] = {}


def file_sha256(path) -> str:
    p = Path(path).resolve()
    st = p.stat()
    key = (str(p), st.st_size, st.st_mtime_ns)
    if key not in _SHA_CACHE:
        h = hashlib.sha256()
        with open(p, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        _SHA_CACHE[key] = h.hexdigest()
    return _SHA_CACHE[key]


def provenance(name: str, params: dict | None = None) -> dict:
    """What the results store records about a problem: ``problem_factory`` ("module:function" of a user
    problem, "" for a built-in one), and for a ``dataset`` given by path its ``dataset_name`` (file name),
    ``dataset_path`` (absolute) and ``dataset_sha256`` (all "" otherwise)."""
    params = params or {}
    e = _entry(name)
    out = {"problem_factory": e.factory, "dataset_name": "", "dataset_path": "", "dataset_sha256": ""}
    ds = params.get("dataset")
    if ds is not None:
        out["dataset_name"] = dataset_label(ds)
        if is_dataset_path(ds) and Path(os.fspath(ds)).is_file():
            out["dataset_path"] = str(Path(os.fspath(ds)).resolve())
            out["dataset_sha256"] = file_sha256(ds)
    return out


def make_problem(name: str, *, dtype: torch.dtype = torch.float64, device="cpu", seed: int = 0, **params):
    """Build the problem ``name`` with ``params`` overriding its defaults (see :func:`problem_info`)."""
    e = _entry(name)
    unknown = [] if e.open_kwargs else sorted(set(params) - set(e.defaults))
    if unknown:
        import difflib
        hints = {u: difflib.get_close_matches(u, list(e.defaults), n=1) for u in unknown}
        dym = "; ".join(f"did you mean {h[0]!r} for {u!r}?" for u, h in hints.items() if h)
        raise ValueError(f"unknown parameter(s) {unknown} for problem {name!r}; allowed: "
                         f"{sorted(e.defaults)} plus dtype, device, seed" + (f" ({dym})" if dym else ""))
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype, dtype)
    check_dtype(dtype)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    kw = {**e.defaults, **params}
    missing = sorted(k for k, v in kw.items() if v is REQUIRED)
    if missing:
        raise ValueError(f"problem {name!r} needs parameter(s) {missing} (no default)")
    if not e.factory:
        return e.build(dtype=dtype, device=as_device(device), seed=seed, **kw)
    special = {"dtype": dtype, "device": as_device(device), "seed": seed}
    out = e.build(**{k: v for k, v in special.items() if k in e.takes}, **kw)
    from .base import Problem
    if not isinstance(out, Problem):
        raise ValueError(f"problem factory {e.factory!r} returned {type(out).__name__}, expected a "
                         "precond_core.problems.Problem (e.g. from from_function)")
    return out
