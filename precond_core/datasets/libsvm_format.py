"""Strict LIBSVM text validation, parsing with libsvm-official, and the parsed cache.

A LIBSVM line is ``LABEL IDX:VAL IDX:VAL ...`` with 1-based, strictly increasing integer indices and
finite decimal numbers, separated by spaces or tabs. ``libsvm.svmutil.svm_read_problem`` (the
reference implementation) is lenient: it accepts index 0, repeated and unordered indices and drops
zero values, and its errors name no line. So a strict pass runs first (one C-level regular-expression
match per line plus vectorized index checks in numpy) and raises ``DatasetFormatError`` with file and
line; only a file that passes it is parsed by libsvm-official and cached.

Cache: ``<data dir>/parsed/<sha256 of the text>.v1.npz`` holding the CSR arrays (``indptr``, ``indices``
0-based, ``data``), the raw labels ``y`` and the largest feature index used. The key is the content
hash, so a changed file gets a new key and is never served from an old entry. Memory while parsing:
the text plus libsvm's arrays (about 24 bytes per nonzero); cached: 16 bytes per nonzero.
"""
from __future__ import annotations

import io
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import DatasetFormatError
from .registry import atomic_write_bytes, _unlink

CACHE_VERSION = "v1"
_NUM = r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?"
_NUM_RE = re.compile(_NUM)
_LINE_RE = re.compile(rf"[ \t]*{_NUM}(?:[ \t]+\d+:{_NUM})*[ \t]*\r?")
_IDX_RE = re.compile(r"(\d+):")


@dataclass
class Parsed:
    """Raw parse of a LIBSVM file: CSR arrays (0-based columns), labels as written, max index used."""

    indptr: np.ndarray
    indices: np.ndarray
    data: np.ndarray
    y: np.ndarray
    max_index: int
    sha256: str

    @property
    def n_samples(self) -> int:
        return len(self.y)

    @property
    def nnz(self) -> int:
        return len(self.data)


def _diagnose(line: str) -> str:
    """Say precisely why one line failed the line pattern."""
    toks = line.split()
    if not toks:
        return "missing label (blank line)"
    if ":" in toks[0]:
        return f"missing label: the line starts with the feature entry {toks[0]!r}"
    if not _NUM_RE.fullmatch(toks[0]):
        return f"label {toks[0]!r} is not a number"
    for t in toks[1:]:
        if t.count(":") != 1:
            return f"entry {t!r} is not of the form index:value"
        ind, val = t.split(":")
        if not re.fullmatch(r"[+-]?\d+", ind):
            return f"feature index {ind!r} in {t!r} is not an integer"
        if int(ind) <= 0:
            return f"feature index must be a positive integer (indices are 1-based), got {int(ind)} in {t!r}"
        if not _NUM_RE.fullmatch(val):
            return f"non-numeric value {val!r} for feature {ind}"
    return "malformed line (expected 'LABEL IDX:VALUE IDX:VALUE ...' separated by spaces or tabs)"


def validate(text: str, path, n_features: int | None = None, n_samples: int | None = None) -> int:
    """Raise ``DatasetFormatError`` (file and line) unless ``text`` is strict LIBSVM.

    Checks: every line matches the line pattern (label, then index:value pairs; no blank lines
    except a final newline); indices >= 1 and strictly increasing within a line; the largest index
    is at most ``n_features`` and the number of lines equals ``n_samples`` (when given).
    Returns the largest feature index (1-based; 0 when no line has a feature).
    Time O(bytes), in C-level loops except one regex match and one ``count`` call per line.
    """
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    if not lines:
        raise DatasetFormatError("the file is empty (no data lines)", path=path)
    match = _LINE_RE.fullmatch
    for i, line in enumerate(lines):
        if match(line) is None:
            raise DatasetFormatError(_diagnose(line), path=path, line=i + 1)
    counts = np.fromiter((ln.count(":") for ln in lines), dtype=np.int64, count=len(lines))
    idx = np.array(_IDX_RE.findall(text), dtype=np.int64) if counts.sum() else np.zeros(0, np.int64)
    rowptr = np.zeros(len(lines) + 1, dtype=np.int64)
    np.cumsum(counts, out=rowptr[1:])

    def line_of(k: int) -> int:  # 1-based line holding entry k
        return int(np.searchsorted(rowptr, k, side="right"))

    bad = np.flatnonzero(idx <= 0)
    if bad.size:
        k = int(bad[0])
        raise DatasetFormatError(f"feature index must be a positive integer (indices are 1-based), got {idx[k]}",
                                 path=path, line=line_of(k))
    if idx.size > 1:
        within = np.ones(idx.size - 1, dtype=bool)
        starts = rowptr[1:-1]
        starts = starts[(starts > 0) & (starts < idx.size)]
        within[starts - 1] = False
        bad = np.flatnonzero((np.diff(idx) <= 0) & within)
        if bad.size:
            k = int(bad[0])
            what = "is repeated" if idx[k] == idx[k + 1] else f"follows index {idx[k]}"
            raise DatasetFormatError(f"feature index {idx[k + 1]} {what}; indices must be strictly increasing",
                                     path=path, line=line_of(k + 1))
    if n_features is not None and idx.size and idx.max() > n_features:
        k = int(np.flatnonzero(idx > n_features)[0])
        raise DatasetFormatError(f"feature index {idx[k]} exceeds the {n_features} features the registry declares "
                                 "(the data is not resized)", path=path, line=line_of(k))
    if n_samples is not None and len(lines) != n_samples:
        raise DatasetFormatError(f"the file has {len(lines)} samples, the registry declares {n_samples}", path=path)
    return int(idx.max()) if idx.size else 0


def parse_text(text: str, path, sha256: str, n_features: int | None = None,
               n_samples: int | None = None) -> Parsed:
    """Validate ``text`` strictly, then parse it with ``libsvm.svmutil.svm_read_problem``."""
    max_index = validate(text, path, n_features=n_features, n_samples=n_samples)
    from libsvm import commonutil
    from libsvm.svmutil import svm_read_problem

    if getattr(commonutil, "scipy", None) is None:  # libsvm only returns CSR when scipy imports
        raise ImportError("libsvm-official needs scipy to return CSR matrices: pip install scipy")
    y, X = svm_read_problem(io.StringIO(text), return_scipy=True)
    data = np.asarray(X.data, dtype=np.float64)
    if not np.all(np.isfinite(data)):
        k = int(np.flatnonzero(~np.isfinite(data))[0])
        line = int(np.searchsorted(X.indptr, k, side="right"))
        raise DatasetFormatError("non-finite feature value (overflow to inf)", path=path, line=line)
    if not np.all(np.isfinite(y)):
        raise DatasetFormatError("non-finite label", path=path, line=int(np.flatnonzero(~np.isfinite(y))[0]) + 1)
    indices = np.asarray(X.indices, dtype=np.int64)
    return Parsed(indptr=np.asarray(X.indptr, dtype=np.int64), indices=indices, data=data,
                  y=np.array(y, dtype=np.float64), max_index=max_index,
                  sha256=sha256)


def cache_path(cache_dir: Path, sha256: str) -> Path:
    return cache_dir / f"{sha256}.{CACHE_VERSION}.npz"


def read_cache(cache_dir: Path, sha256: str) -> Parsed | None:
    """Return the cached parse for content ``sha256``, or ``None`` (a corrupt entry is removed)."""
    p = cache_path(cache_dir, sha256)
    if not p.exists():
        return None
    try:
        with np.load(p, allow_pickle=False) as z:
            if str(z["sha256"]) != sha256:
                raise ValueError("cache key mismatch")
            return Parsed(indptr=z["indptr"], indices=z["indices"], data=z["data"], y=z["y"],
                          max_index=int(z["max_index"]), sha256=sha256)
    except Exception:  # unreadable or foreign entry: drop it, the caller re-parses
        _unlink(p)
        return None


def write_cache(cache_dir: Path, parsed: Parsed) -> Path:
    buf = io.BytesIO()
    np.savez(buf, indptr=parsed.indptr, indices=parsed.indices, data=parsed.data, y=parsed.y,
             max_index=np.int64(parsed.max_index), sha256=np.str_(parsed.sha256))
    p = cache_path(cache_dir, parsed.sha256)
    atomic_write_bytes(p, buf.getvalue())
    return p


def map_labels(y: np.ndarray, task: str, path, n_classes: int | None = None) -> tuple[np.ndarray, dict]:
    """Map raw labels to the task's convention and return (mapped, mapping raw -> new).

    binary: exactly two values, the smaller -> -1 and the larger -> +1 (so -1/+1 stay, 0/1 and 1/2
    become -1/+1); multiclass: integer values; with ``n_classes`` known, labels in 0..C-1 are kept
    and labels in 1..C shifted by one, otherwise the sorted distinct values map to 0..C-1 (at most
    ``n_classes`` of them when given); regression: unchanged. A label set that does not fit raises ``DatasetFormatError``
    naming the first line where it stops fitting.
    """
    if task == "regression":
        return y.copy(), {}
    if task == "binary":
        vals, first = np.unique(y, return_index=True)
        if len(vals) != 2:
            if len(vals) < 2:
                raise DatasetFormatError(f"a binary task needs two label values, the file has only {vals.tolist()}",
                                         path=path, line=None)
            order = np.sort(first)
            raise DatasetFormatError(f"a binary task needs exactly two label values, got {len(vals)}: "
                                     f"{vals.tolist()[:10]} (third distinct label {y[order[2]]:g} here)",
                                     path=path, line=int(order[2]) + 1)
        mapping = {float(vals[0]): -1.0, float(vals[1]): 1.0}
        return np.where(y == vals[1], 1.0, -1.0), mapping
    if task == "multiclass":
        nonint = np.flatnonzero(y != np.round(y))
        if nonint.size:
            k = int(nonint[0])
            raise DatasetFormatError(f"a multiclass task needs integer labels, got {y[k]!r}", path=path, line=k + 1)
        vals, first, inv = np.unique(y, return_index=True, return_inverse=True)
        if n_classes is not None and len(vals) > n_classes:
            k = int(np.sort(first)[n_classes])
            raise DatasetFormatError(f"the registry declares {n_classes} classes, the file has {len(vals)}",
                                     path=path, line=k + 1)
        if len(vals) < 2:
            raise DatasetFormatError(f"a multiclass task needs at least two labels, got {vals.tolist()}",
                                     path=path, line=None)
        if n_classes is not None:  # a known label range keeps class ids stable when a class is absent
            for base in (0, 1):
                if vals[0] >= base and vals[-1] <= n_classes - 1 + base:
                    return (y - base).astype(np.int64), {float(v): int(v) - base for v in vals}
        return inv.astype(np.int64), {float(v): i for i, v in enumerate(vals)}
    raise ValueError(f"task must be one of ('binary', 'multiclass', 'regression'), got {task!r}")


def infer_task(y: np.ndarray) -> str:
    """binary for two distinct labels, multiclass for more integer labels, regression otherwise."""
    vals = np.unique(y)
    if len(vals) == 2:
        return "binary"
    if len(vals) > 2 and np.all(vals == np.round(vals)):
        return "multiclass"
    return "regression"
