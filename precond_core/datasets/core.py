"""``load``, ``load_info``, ``available`` and ``synthetic``: one entry point for all data."""
from __future__ import annotations

import hashlib
import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from . import download as _fetch
from .errors import ChecksumError, DatasetError, DatasetFormatError, DatasetUnavailable
from .libsvm_format import Parsed, infer_task, map_labels, parse_text, read_cache, validate, write_cache
from .registry import TASKS, Entry, atomic_write_bytes, data_dir, registry, sha256_file, shipped_dir

DENSITY_THRESHOLD = 0.1
SCALES = (None, "maxabs", "standard")
LAYOUTS = (None, "flat", "image")


@dataclass
class Dataset:
    """A loaded data set: ``A`` (n_samples x n_features, dense or sparse CSR, or images N x C x H x W),
    ``b`` (+-1 for binary, int64 0..C-1 for multiclass, values for regression) and where they came from.

    ``label_map`` maps each raw label to its value in ``b``. ``scale_factors``/``shift``: the transform
    applied to the columns, A = (A_raw - shift) / scale_factors (``None`` when not scaled).
    """

    A: torch.Tensor
    b: torch.Tensor
    name: str
    task: str
    n_samples: int
    n_features: int
    nnz: int
    label_map: dict
    source: str
    path: str | None = None
    sha256: str | None = None
    from_cache: bool = False
    scale: str | None = None
    scale_factors: torch.Tensor | None = None
    shift: torch.Tensor | None = None
    license: str = ""
    attribution: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def density(self) -> float:
        return self.nnz / max(1, self.n_samples * self.n_features)


# ---------------------------------------------------------------------------------------------------------
# raw files of LIBSVM entries


def _download_enabled(download: bool | None) -> bool:
    if download is not None:
        return bool(download)
    return os.environ.get("PRECOND_DOWNLOAD", "").strip().lower() in ("1", "true", "yes")


def _resolve_libsvm_raw(entry: Entry, *, trust_unverified: bool = False, override=None,
                        download: bool | None = None, write: bool = True) -> tuple[Path, str]:
    """Locate (and if needed produce) the verified LIBSVM text of ``entry``; return (path, sha256 of it)."""
    kind = entry.kind
    rel = entry.source.split(":", 1)[1] if ":" in entry.source else ""
    if kind == "shipped":
        p = shipped_dir() / rel
        if not p.is_file():
            raise DatasetUnavailable(f"the shipped file {p} is missing; " + _fetch.manual_hint(entry, override), path=p)
        sha = sha256_file(p)
        if entry.sha256 and sha != entry.sha256:
            raise _fetch._mismatch(entry, p, entry.sha256, sha, override)
        return p, sha
    raw = _fetch.raw_dir(override)
    text = raw / entry.text_file
    if kind == "encode":
        expected = entry.expected_sha256()
        if text.is_file():
            sha = sha256_file(text)
            if expected and sha != expected:
                raise ChecksumError(f"sha256 mismatch for {entry.name!r} ({text}): expected {expected}, got {sha}; "
                                    f"delete the file and load again to re-encode it from {shipped_dir() / rel}",
                                    path=text, expected=expected, actual=sha)
            return text, sha
        src = shipped_dir() / rel
        if not src.is_file():
            raise DatasetUnavailable(f"the raw file {src} that {entry.name!r} is encoded from is missing; "
                                     + _fetch.manual_hint(entry, override), path=src)
        from .mushroom import encode_mushrooms_file

        data = encode_mushrooms_file(src)
        sha = hashlib.sha256(data).hexdigest()
        if expected and sha != expected:
            raise ChecksumError(f"the encoding of {src} has sha256 {sha}, the registry expects {expected} for "
                                f"{entry.name!r}; nothing was written", path=src, expected=expected, actual=sha)
        if write:
            atomic_write_bytes(text, data)
            return text, sha
        return src, sha
    if kind != "download":
        raise ValueError(f"dataset {entry.name!r} (source {entry.source!r}) is not a LIBSVM file")
    if text.is_file():
        sha = sha256_file(text)
        expected = entry.expected_sha256()
        if not entry.compression and expected:
            if sha != expected:
                raise _fetch._mismatch(entry, text, expected, sha, override)
            return text, sha
        rec = _fetch.read_record(text)
        if rec == sha:
            return text, sha
        if rec is not None:
            raise ChecksumError(f"{text} changed since it was verified (recorded sha256 {rec}, now {sha}); "
                                "delete it and fetch again", path=text, expected=rec, actual=sha)
        if trust_unverified:
            if write:
                _fetch.write_record(text, sha, "trusted-by-user")
            return text, sha
        raise ChecksumError(_fetch._unverified_message(entry, text, sha, override), path=text, expected=None,
                            actual=sha)
    comp = raw / entry.file
    if entry.compression and comp.is_file():
        if not write:
            raise DatasetUnavailable(f"{comp} is present but not yet verified and decompressed", path=comp)
        actual = sha256_file(comp)
        text = _fetch.install(entry, comp, actual, trust_unverified=trust_unverified, override=override, move=False)
        return text, _fetch.read_record(text) or sha256_file(text)
    if _download_enabled(download) and write:
        text = _fetch.fetch(entry.name, data_dir=override, trust_unverified=trust_unverified, force=True)
        return text, _fetch.read_record(text) or sha256_file(text)
    raise DatasetUnavailable(f"dataset {entry.name!r} is not on this machine; "
                             + _fetch.manual_hint(entry, override), path=text)


# ---------------------------------------------------------------------------------------------------------
# parsing with the cache


def _read_text(path: Path, expect_sha: str | None) -> tuple[str, str]:
    data = path.read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    if expect_sha is not None and sha != expect_sha:
        raise ChecksumError(f"{path} changed while it was being loaded (sha256 {expect_sha} -> {sha})", path=path,
                            expected=expect_sha, actual=sha)
    try:
        return data.decode("ascii"), sha
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise DatasetFormatError(f"non-ASCII byte 0x{data[e.start]:02x} (LIBSVM text is ASCII)", path=path,
                                 line=line) from None


def _parsed(path: Path, sha: str | None, *, n_features, n_samples, task, n_classes, override, use_cache=True):
    """Return (Parsed, task, from_cache); labels and bounds are checked before anything is cached."""
    cache_dir = data_dir(override) / "parsed"
    if sha is None:
        sha = sha256_file(path)
    parsed = read_cache(cache_dir, sha) if use_cache else None
    from_cache = parsed is not None
    if parsed is None:
        text, sha = _read_text(path, sha)
        parsed = parse_text(text, path, sha, n_features=n_features, n_samples=n_samples)
    else:
        bad_shape = ((n_features is not None and parsed.max_index > n_features)
                     or (n_samples is not None and parsed.n_samples != n_samples))
        if bad_shape:  # re-run the strict pass on the text for the exact error and line
            validate(_read_text(path, sha)[0], path, n_features=n_features, n_samples=n_samples)
    task = task or infer_task(parsed.y)
    map_labels(parsed.y, task, path, n_classes)  # raises before caching when the labels do not fit
    if not from_cache and use_cache:
        write_cache(cache_dir, parsed)
    return parsed, task, from_cache


def _check_options(dtype, scale, layout, task):
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating torch.dtype, got {dtype!r}")
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {SCALES}, got {scale!r}")
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    if task is not None and task not in TASKS:
        raise ValueError(f"task must be one of {TASKS} or None, got {task!r}")


def _scale_csr(indptr, indices, data, n, d, scale):
    """maxabs on CSR arrays: divide column j by max_i |A_ij| (1 for an all-zero column). O(nnz)."""
    if scale == "standard":
        raise ValueError("scale='standard' centres the columns and would make a sparse matrix dense; "
                         "use scale='maxabs' or dense=True")
    s = np.zeros(d)
    np.maximum.at(s, indices, np.abs(data))
    s[s == 0] = 1.0
    return data / s[indices], s


def _scale_dense(X, scale):
    if scale == "maxabs":
        s = np.abs(X).max(axis=0) if X.shape[0] else np.ones(X.shape[1])
        s[s == 0] = 1.0
        return X / s, s, None
    mu = X.mean(axis=0)
    s = X.std(axis=0)
    s[s == 0] = 1.0
    return (X - mu) / s, s, mu


def _labels_tensor(y: np.ndarray, task: str, dtype, device) -> torch.Tensor:
    if task == "multiclass":
        return torch.as_tensor(y, dtype=torch.int64, device=device)
    return torch.as_tensor(y, device=device).to(dtype)


def _from_parsed(parsed: Parsed, *, name, task, n_features, n_classes, dtype, device, dense, scale, path, source,
                 entry: Entry | None, from_cache) -> Dataset:
    y, mapping = map_labels(parsed.y, task, path, n_classes)
    n, d = parsed.n_samples, int(n_features)
    nnz = parsed.nnz
    if dense is None:
        dense = nnz >= DENSITY_THRESHOLD * n * d
    data, s, mu = parsed.data, None, None
    if dense:
        X = np.zeros((n, d))
        rows = np.repeat(np.arange(n), np.diff(parsed.indptr))
        X[rows, parsed.indices] = data
        if scale is not None:
            X, s, mu = _scale_dense(X, scale)
        A = torch.from_numpy(X).to(device=device, dtype=dtype)
    else:
        if scale is not None:
            data, s = _scale_csr(parsed.indptr, parsed.indices, data, n, d, scale)
        with warnings.catch_warnings():  # torch's "CSR support is in beta" notice
            warnings.filterwarnings("ignore", message=".*[Ss]parse CSR tensor support is in beta.*")
            A = torch.sparse_csr_tensor(torch.from_numpy(parsed.indptr), torch.from_numpy(parsed.indices),
                                        torch.from_numpy(np.ascontiguousarray(data)), size=(n, d),
                                        dtype=torch.float64, check_invariants=False)  # validated already
        A = A.to(dtype=dtype).to(device=device)
    tt = (lambda a: None if a is None else torch.from_numpy(np.asarray(a, dtype=np.float64)).to(dtype))
    return Dataset(A=A, b=_labels_tensor(y, task, dtype, device), name=name, task=task, n_samples=n,
                   n_features=d, nnz=nnz, label_map=mapping, source=source, path=str(path), sha256=parsed.sha256,
                   from_cache=from_cache, scale=scale, scale_factors=tt(s), shift=tt(mu),
                   license=entry.license if entry else "", attribution=entry.attribution if entry else "")


def _from_dense_array(X: np.ndarray, y: np.ndarray, *, name, task, n_classes, dtype, device, scale, source,
                      entry: Entry | None, path=None, layout="flat", extra=None) -> Dataset:
    y2, mapping = map_labels(np.asarray(y, dtype=np.float64), task, path or name, n_classes, label_base=0)
    X = np.asarray(X, dtype=np.float64)
    s = mu = None
    if scale is not None:
        if layout == "image":
            raise ValueError("scale applies to flat feature matrices; pass layout='flat' to scale image data")
        X, s, mu = _scale_dense(X, scale)
    tt = (lambda a: None if a is None else torch.from_numpy(np.asarray(a, dtype=np.float64)).to(dtype))
    n = X.shape[0]
    d = int(np.prod(X.shape[1:]))
    return Dataset(A=torch.from_numpy(X).to(device=device, dtype=dtype), b=_labels_tensor(y2, task, dtype, device),
                   name=name, task=task, n_samples=n, n_features=d, nnz=int(np.count_nonzero(X)),
                   label_map=mapping, source=source, path=None if path is None else str(path), scale=scale,
                   scale_factors=tt(s), shift=tt(mu), license=entry.license if entry else "",
                   attribution=entry.attribution if entry else "", extra=extra or {})


# ---------------------------------------------------------------------------------------------------------
# public API


def load_info(name_or_path, *, dtype: torch.dtype = torch.float64, device="cpu", dense: bool | None = None,
              scale: str | None = None, task: str | None = None, n_features: int | None = None,
              split: str = "train", layout: str | None = None, seed: int = 0, trust_unverified: bool = False,
              download: bool | None = None, data_dir=None, cache: bool = True) -> Dataset:
    """Load a registered data set, a LIBSVM file or a ``synthetic:`` name; return a ``Dataset``.

    ``name_or_path``: a registry name (``available()`` lists them), ``"synthetic:<kind>[_<S>x<N>]"``
    (see ``synthetic``), or the path of a LIBSVM text file. ``dense=None`` picks dense storage when
    nnz >= 0.1 * n_samples * n_features, sparse CSR otherwise. ``scale``: None, ``"maxabs"``
    (A_ij / max_i |A_ij|, keeps sparsity) or ``"standard"`` ((A_ij - mean_j) / std_j, dense only).
    ``task`` overrides the registry's (or, for a path, the inferred) task. ``n_features``: columns for a
    path (default: the largest index in the file); for a registry name it must not be given.
    ``split``/``layout`` apply to image sets (``layout='image'`` gives N x C x H x W, their default).
    ``download`` (default ``$PRECOND_DOWNLOAD``, off): fetch a missing LIBSVM set from its URL.
    ``cache``: use and fill the parsed cache (``<data dir>/parsed``).
    Raises ``DatasetUnavailable`` when the data is not on this machine (benchmarks skip on it),
    ``ChecksumError`` on a wrong checksum, ``DatasetFormatError`` (file:line) on malformed input.
    """
    _check_options(dtype, scale, layout, task)
    if not isinstance(name_or_path, (str, os.PathLike)):
        raise ValueError(f"name_or_path must be a registry name or a file path, got {type(name_or_path).__name__}")
    key = os.fspath(name_or_path)
    if isinstance(name_or_path, str) and key.startswith("synthetic:"):
        return _load_synthetic(key, dtype=dtype, device=device, seed=seed)
    reg = registry()
    if isinstance(name_or_path, str) and key in reg:
        entry = reg[key]
        if n_features is not None:
            raise ValueError(f"n_features is fixed by the registry for {key!r} ({entry.n_features}), got {n_features}")
        if task is not None and task != entry.task:
            raise ValueError(f"task {task!r} does not match the registry's {entry.task!r} for {key!r}")
        return _load_entry(entry, dtype=dtype, device=device, dense=dense, scale=scale, split=split, layout=layout,
                           trust_unverified=trust_unverified, download=download, override=data_dir, cache=cache)
    path = Path(key)
    if not path.is_file():
        raise DatasetError(f"name_or_path {key!r} is neither a registered dataset ({', '.join(sorted(reg))}, "
                           "synthetic:<kind>) nor an existing file")
    if n_features is not None and (not isinstance(n_features, int) or n_features < 1):
        raise ValueError(f"n_features must be a positive integer, got {n_features!r}")
    parsed, task, hit = _parsed(path, None, n_features=n_features, n_samples=None, task=task, n_classes=None,
                                override=data_dir, use_cache=cache)
    return _from_parsed(parsed, name=path.name, task=task, n_features=n_features or parsed.max_index,
                        n_classes=None, dtype=dtype, device=device, dense=dense, scale=scale, path=path,
                        source="file", entry=None, from_cache=hit)


def load(name_or_path, **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
    """``(A, b)`` of ``load_info(name_or_path, **kwargs)``; see there for the options."""
    ds = load_info(name_or_path, **kwargs)
    return ds.A, ds.b


def _load_entry(entry: Entry, *, dtype, device, dense, scale, split, layout, trust_unverified, download, override,
                cache) -> Dataset:
    kind = entry.kind
    if kind in ("download", "shipped", "encode"):
        if layout == "image":
            raise ValueError(f"layout='image' applies to image data sets, {entry.name!r} is a LIBSVM feature matrix")
        path, sha = _resolve_libsvm_raw(entry, trust_unverified=trust_unverified, override=override,
                                        download=download)
        parsed, task, hit = _parsed(path, sha, n_features=entry.n_features, n_samples=entry.n_samples,
                                    task=entry.task, n_classes=entry.n_classes, override=override, use_cache=cache)
        return _from_parsed(parsed, name=entry.name, task=task, n_features=entry.n_features,
                            n_classes=entry.n_classes, dtype=dtype, device=device, dense=dense, scale=scale,
                            path=path, source=entry.source, entry=entry, from_cache=hit)
    if dense is False:
        raise ValueError(f"dense=False (sparse) is not offered for {entry.name!r}; it is a dense data set")
    if kind == "sklearn":
        X, y = _sklearn(entry)
        if layout == "image":
            if entry.name != "digits":
                raise ValueError(f"layout='image' applies to image data sets; {entry.name!r} is not one")
            X = X.reshape(-1, 1, 8, 8)
        return _from_dense_array(X, y, name=entry.name, task=entry.task, n_classes=entry.n_classes, dtype=dtype,
                                 device=device, scale=scale, source=entry.source, entry=entry,
                                 layout=layout or "flat")
    if kind in ("idx", "cifar10-python"):
        from .images import load_cifar10, load_fashion_mnist

        X, y, folder = (load_fashion_mnist if kind == "idx" else load_cifar10)(split, override)
        layout = layout or "image"
        if layout == "flat":
            X = X.reshape(X.shape[0], -1)
        if scale is not None:
            if layout == "image":
                raise ValueError("scale applies to flat feature matrices; pass layout='flat' to scale image data")
            return _from_dense_array(X / 255.0, y, name=entry.name, task=entry.task, n_classes=entry.n_classes,
                                     dtype=dtype, device=device, scale=scale, source=entry.source, entry=entry,
                                     path=folder, layout=layout, extra={"split": split})
        y2, mapping = map_labels(y.astype(np.float64), entry.task, folder, entry.n_classes, label_base=0)
        A = torch.from_numpy(np.ascontiguousarray(X)).to(device=device, dtype=dtype).div_(255)  # uint8 -> [0, 1]
        return Dataset(A=A, b=torch.as_tensor(y2, dtype=torch.int64, device=device), name=entry.name,
                       task=entry.task, n_samples=X.shape[0], n_features=int(np.prod(X.shape[1:])),
                       nnz=int(np.count_nonzero(X)), label_map=mapping, source=entry.source, path=str(folder),
                       license=entry.license, attribution=entry.attribution, extra={"split": split})
    raise DatasetError(f"entry [{entry.name}] has an unknown source {entry.source!r}", path=entry.name)


def _sklearn(entry: Entry) -> tuple[np.ndarray, np.ndarray]:
    try:
        import sklearn.datasets as skd
    except ImportError:
        raise DatasetUnavailable(f"{entry.name!r} is bundled with scikit-learn, which is not installed "
                                 "(pip install scikit-learn)", path=entry.name) from None
    fn = entry.source.split(":", 1)[1]
    X, y = getattr(skd, fn)(return_X_y=True)
    if X.shape != (entry.n_samples, entry.n_features):
        raise DatasetError(f"scikit-learn's {fn} returned shape {X.shape}, the registry declares "
                           f"({entry.n_samples}, {entry.n_features})", path=entry.name)
    return X, y


# ---------------------------------------------------------------------------------------------------------
# synthetic data (generators live in precond_core.synthetic)

SYNTHETIC = {
    "logistic": "logistic_data",
    "sparse_logistic": "sparse_logistic_data",
    "quadratic": "quadratic_spectrum",
    "nls": "nls_data",
    "softmax": "softmax_data",
}


def _synthetic_module():
    try:
        import precond_core.synthetic as syn
    except ImportError as e:
        raise DatasetUnavailable(f"precond_core.synthetic cannot be imported ({e})", path="synthetic") from None
    return syn


def synthetic(name: str, **params):
    """Call the seeded generator ``precond_core.synthetic.<SYNTHETIC[name]>(**params)`` and return its result.

    Kinds: ``logistic`` (the block-mean talk's logistic regression, 500 x 100 by default),
    ``sparse_logistic`` (n up to 10^7 features for cost-scaling sweeps), ``quadratic`` (prescribed
    spectrum), ``nls`` and ``softmax``. The rank-one talk's 1D function is a problem, not data:
    ``precond_core.problems.one_d``.
    """
    if name == "one_d":
        raise ValueError("name 'one_d' is a problem, not a data set: use precond_core.problems.one_d")
    if name not in SYNTHETIC:
        raise ValueError(f"name must be one of {sorted(SYNTHETIC)}, got {name!r}")
    fn = getattr(_synthetic_module(), SYNTHETIC[name], None)
    if fn is None:
        raise DatasetUnavailable(f"precond_core.synthetic has no function {SYNTHETIC[name]!r}", path="synthetic")
    return fn(**params)


_SYN_RE = re.compile(r"synthetic:([a-z_]+?)(?:_(\d+)x(\d+))?")
_SYN_TASK = {"logistic": "binary", "sparse_logistic": "binary", "nls": "regression", "softmax": "multiclass"}


def _load_synthetic(key: str, *, dtype, device, seed) -> Dataset:
    """``synthetic:<kind>`` or ``synthetic:<kind>_<S>x<N>`` -> the generator with n_samples=S,
    n_features=N (its defaults otherwise) and ``seed``."""
    m = _SYN_RE.fullmatch(key)
    if m is None or m.group(1) not in _SYN_TASK:
        raise ValueError(f"name_or_path {key!r}: synthetic names are 'synthetic:<kind>' or "
                         f"'synthetic:<kind>_<samples>x<features>' with kind in {sorted(_SYN_TASK)} "
                         "(quadratics: synthetic('quadratic', ...))")
    kind, S, N = m.groups()
    params = {"seed": seed}
    if S is not None:
        params.update(n_samples=int(S), n_features=int(N))
    elif kind == "sparse_logistic":
        raise ValueError(f"name_or_path {key!r}: give the size, e.g. 'synthetic:sparse_logistic_100000x1000000'")
    A, b = synthetic(kind, dtype=dtype, device=device, **params)
    sparse = A.layout != torch.strided
    nnz = int(A.values().numel()) if sparse else int(torch.count_nonzero(A))
    return Dataset(A=A, b=b, name=key, task=_SYN_TASK[kind], n_samples=A.shape[0], n_features=A.shape[1], nnz=nnz,
                   label_map={}, source=f"precond_core.synthetic.{SYNTHETIC[kind]}", extra={"params": params})


# ---------------------------------------------------------------------------------------------------------


@dataclass
class Availability:
    """Whether a data set can be loaded here (truthy when it can), where from, or why not."""

    name: str
    available: bool
    where: str | None
    reason: str

    def __bool__(self) -> bool:
        return self.available


def available(data_dir=None) -> dict[str, Availability]:
    """For every registry name (and each ``synthetic:<kind>``), whether it is available on this machine.

    Checks file presence and checksums without writing, downloading or parsing anything.
    """
    out = {}
    for name, entry in registry().items():
        try:
            where = _locate(entry, data_dir)
            out[name] = Availability(name, True, where, "ok")
        except (DatasetUnavailable, DatasetError) as e:
            out[name] = Availability(name, False, None, str(e))
    try:
        syn = _synthetic_module()
        ok, why = True, "ok"
    except DatasetUnavailable as e:
        syn, ok, why = None, False, str(e)
    for kind, fn in SYNTHETIC.items():
        has = ok and hasattr(syn, fn)
        out[f"synthetic:{kind}"] = Availability(f"synthetic:{kind}", has, "precond_core.synthetic" if has else None,
                                                why if not ok else ("ok" if has else f"no function {fn}"))
    return out


def _locate(entry: Entry, override) -> str:
    kind = entry.kind
    if kind in ("download", "shipped", "encode"):
        p, _ = _resolve_libsvm_raw(entry, override=override, download=False, write=False)
        return str(p)
    if kind == "sklearn":
        import importlib.util

        if importlib.util.find_spec("sklearn") is None:  # without importing it (slow)
            raise DatasetUnavailable("scikit-learn is not installed", path=entry.name)
        return f"scikit-learn {entry.source.split(':', 1)[1]}"
    from .images import cifar10_dirs, fashion_mnist_dirs, _find

    if kind == "idx":
        for d in fashion_mnist_dirs(override):
            if _find([d], "train-images-idx3-ubyte") and _find([d], "train-labels-idx1-ubyte"):
                return str(d)
        raise DatasetUnavailable("Fashion-MNIST files not found in " + ", ".join(map(str, fashion_mnist_dirs(override)))
                                 + " (apt-get install dataset-fashion-mnist)", path=entry.name)
    for d in cifar10_dirs(override):
        if (d / "data_batch_1").is_file():
            return str(d)
    raise DatasetUnavailable("CIFAR-10 python batches not found in " + ", ".join(map(str, cifar10_dirs(override))),
                             path=entry.name)


def load_or_skip(name_or_path, *, runner: str = "pytest", **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
    """``load(name_or_path, **kwargs)`` for benchmarks: when the data is not on this machine
    (``DatasetUnavailable``, which includes checksum failures) the benchmark is skipped with the
    error's message instead of failing: ``runner="pytest"`` calls ``pytest.skip(message)``,
    ``runner="asv"`` raises ``NotImplementedError(message)`` (asv's skip when raised in ``setup``)."""
    if runner not in ("pytest", "asv"):
        raise ValueError(f"runner must be 'pytest' or 'asv', got {runner!r}")
    try:
        return load(name_or_path, **kwargs)
    except DatasetUnavailable as e:
        if runner == "asv":
            raise NotImplementedError(str(e)) from None
        import pytest

        pytest.skip(str(e))
