"""Strict LIBSVM text validation, parsing with libsvm-official, and the parsed cache.

A LIBSVM line is ``LABEL IDX:VAL IDX:VAL ...`` with 1-based, strictly increasing integer indices and
finite decimal numbers, separated by spaces or tabs. ``libsvm.svmutil.svm_read_problem`` (the
reference implementation) is lenient: it accepts index 0, repeated and unordered indices, ``nan``
and ``1_0``, drops zero values, and its errors name no line. So ``parse_text`` adds strict checks
(one C-level regular-expression match per line before the parse, vectorized index checks on the
CSR arrays after it) and raises ``DatasetFormatError`` with file and line; only a file that passes
is cached. ``validate`` is the plain line-by-line reference of the same rules.

Cache: ``<data dir>/parsed/<sha256 of the text>.v1.npz`` holding the CSR arrays (``indptr``, ``indices``
0-based, ``data``), the raw labels ``y`` and the largest feature index used. The key is the content
hash, so a changed file gets a new key and is never served from an old entry. Memory while parsing:
the text plus libsvm's arrays (about 24 bytes per nonzero); cached: 16 bytes per nonzero.
"""
from __future__ import annotations

import io
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import DatasetFormatError
from .registry import atomic_write_bytes, _unlink

CACHE_VERSION = "v1"
_NUM = r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?"
_NUM_RE = re.compile(_NUM)
_LINE_RE = re.compile(rf"[ \t]*{_NUM}(?:[ \t]+[0-9]+:{_NUM})*[ \t]*\r?")
_IDX_RE = re.compile(r"([0-9]+):")


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


def _split_lines(text: str, path) -> list[str]:
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    if not lines:
        raise DatasetFormatError("the file is empty (no data lines)", path=path)
    return lines


def _check_indices(idx: np.ndarray, rowptr: np.ndarray, path, n_features: int | None) -> None:
    """Indices (1-based, entries of row r at idx[rowptr[r]:rowptr[r+1]]): >= 1, strictly increasing
    within a row, at most ``n_features``. Vectorized, O(len(idx))."""

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


def _check_samples(n_lines: int, path, n_samples: int | None) -> None:
    if n_samples is not None and n_lines != n_samples:
        raise DatasetFormatError(f"the file has {n_lines} samples, the registry declares {n_samples}", path=path)


def validate(text: str, path, n_features: int | None = None, n_samples: int | None = None) -> int:
    """Raise ``DatasetFormatError`` (file and line) unless ``text`` is strict LIBSVM.

    The reference check: every line matches the strict line pattern (a decimal label, then
    ``index:value`` pairs with decimal values; no blank lines except a final newline); indices >= 1
    and strictly increasing within a line; the largest index is at most ``n_features`` and the
    number of lines equals ``n_samples`` (when given). Returns the largest feature index (0 if none).
    ``parse_text`` reaches the same verdicts faster and calls this only to locate an error.
    """
    lines = _split_lines(text, path)
    match = _LINE_RE.fullmatch
    for i, line in enumerate(lines):
        if match(line) is None:
            raise DatasetFormatError(_diagnose(line), path=path, line=i + 1)
    counts = np.fromiter((ln.count(":") for ln in lines), dtype=np.int64, count=len(lines))
    idx = np.array(_IDX_RE.findall(text), dtype=np.int64) if counts.sum() else np.zeros(0, np.int64)
    rowptr = np.zeros(len(lines) + 1, dtype=np.int64)
    np.cumsum(counts, out=rowptr[1:])
    _check_indices(idx, rowptr, path, n_features)
    _check_samples(len(lines), path, n_samples)
    return int(idx.max()) if idx.size else 0


# Fast pre-check: the strict line shape with numbers as runs of [-+.0-9eE]. A run that passes it and
# that Python's float() accepts is exactly a strict decimal number, and libsvm-official calls float()
# on every label and value, so this plus a successful libsvm parse equals the strict pattern.
_FAST_LINE_RE = re.compile(r"[ \t]*[-+.0-9eE]+(?:[ \t]+[0-9]+:[-+.0-9eE]+)*[ \t]*\r?")
_ZERO_IDX_RE = re.compile(r"[ \t]0+:")  # after the fast pass, '[ \t]digits:' can only be an index


def parse_text(text: str, path, sha256: str, n_features: int | None = None,
               n_samples: int | None = None) -> Parsed:
    """Check ``text`` strictly and parse it with ``libsvm.svmutil.svm_read_problem``.

    Same verdicts as ``validate`` (which it runs to locate an error, and in full when the file holds
    explicit zero values that libsvm-official drops); otherwise the checks run on libsvm's CSR
    arrays, so the cost is one C-level regex match per line plus libsvm's own parse.
    """
    lines = _split_lines(text, path)
    if not all(map(_FAST_LINE_RE.fullmatch, lines)) or (
            (" 0" in text or "\t0" in text) and _ZERO_IDX_RE.search(text)):
        validate(text, path, n_features=n_features, n_samples=n_samples)  # raises with the line
        raise DatasetFormatError("malformed LIBSVM text", path=path)  # not reached: validate raised
    _check_samples(len(lines), path, n_samples)
    from libsvm import commonutil
    from libsvm.svmutil import svm_read_problem

    if getattr(commonutil, "scipy", None) is None:  # libsvm only returns CSR when scipy imports
        raise ImportError("libsvm-official needs scipy to return CSR matrices: pip install scipy")
    try:
        y, X = svm_read_problem(io.StringIO(text), return_scipy=True)
    except (ValueError, TypeError, OverflowError) as e:  # a run of [-+.0-9eE] that is no number
        validate(text, path, n_features=n_features, n_samples=n_samples)
        raise DatasetFormatError(f"libsvm-official cannot parse the file: {e}", path=path) from None
    indptr = np.asarray(X.indptr, dtype=np.int64)
    indices = np.asarray(X.indices, dtype=np.int64)
    data = np.asarray(X.data, dtype=np.float64)
    if len(y) != len(lines) or len(indptr) != len(lines) + 1:
        raise DatasetFormatError(f"libsvm-official read {len(y)} rows from {len(lines)} lines", path=path)
    if len(data) == text.count(":"):  # no explicit zeros dropped: the CSR holds every index written
        _check_indices(indices + 1, indptr, path, n_features)
        max_index = int(indices.max()) + 1 if indices.size else 0
    else:
        max_index = validate(text, path, n_features=n_features, n_samples=n_samples)
    if not np.all(np.isfinite(data)):
        k = int(np.flatnonzero(~np.isfinite(data))[0])
        line = int(np.searchsorted(indptr, k, side="right"))
        raise DatasetFormatError("non-finite feature value (overflow to inf)", path=path, line=line)
    if not np.all(np.isfinite(y)):
        raise DatasetFormatError("non-finite label (overflow to inf)", path=path,
                                 line=int(np.flatnonzero(~np.isfinite(y))[0]) + 1)
    return Parsed(indptr=indptr, indices=indices, data=data, y=np.array(y, dtype=np.float64),
                  max_index=max_index, sha256=sha256)


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


def map_labels(y: np.ndarray, task: str, path, n_classes: int | None = None,
               label_base: int | None = None) -> tuple[np.ndarray, dict]:
    """Map raw labels to the task's convention and return (mapped, mapping raw -> new).

    binary: exactly two values, the smaller -> -1 and the larger -> +1 (so -1/+1 stay, 0/1 and 1/2
    become -1/+1); multiclass: integer values; with ``n_classes`` known, labels are taken as
    ``label_base``..``label_base``+C-1 (default: 0-based when a label 0 occurs, else 1-based) and
    shifted to 0..C-1, so class ids stay stable when a class is absent; otherwise the sorted distinct values map to 0..C-1 (at most
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
            base = label_base if label_base is not None else (0 if vals[0] == 0 else 1)
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
