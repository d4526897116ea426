"""The dataset registry (``datasets/registry.toml``), the data directory and small file helpers.

Locations (all overridable by environment variables):

- registry: ``$PRECOND_REGISTRY`` or ``<repository>/datasets/registry.toml``; files named by
  ``shipped:``/``encode:`` sources live next to it;
- data directory: ``$PRECOND_DATA_DIR`` or ``~/.cache/precond_core``, with ``raw/`` (downloaded or
  user-placed files, and the encoded ``mushrooms``) and ``parsed/`` (the parsed cache).

Every write is atomic: a temporary file in the destination folder, then ``os.replace``.
"""
from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

from .errors import DatasetError
from .._atomic import atomic_write_bytes  # noqa: F401  (re-exported for the data layer)

TASKS = ("binary", "multiclass", "regression")
_REQUIRED = ("task", "n_samples", "n_features", "source", "sha256", "url", "license", "attribution")


@dataclass(frozen=True)
class Entry:
    """One registry record (see the header of ``datasets/registry.toml`` for the fields)."""

    name: str
    task: str
    n_samples: int
    n_features: int
    source: str
    file: str
    sha256: str
    url: str
    license: str
    attribution: str
    compression: str = ""
    n_classes: int | None = None

    @property
    def kind(self) -> str:
        return self.source.split(":", 1)[0]

    @property
    def text_file(self) -> str:
        """Name of the (decompressed) LIBSVM text file in ``raw/``."""
        if self.compression and self.file.endswith("." + self.compression):
            return self.file[: -len(self.compression) - 1]
        return self.file

    def expected_sha256(self) -> str:
        """The registry checksum, else ``$PRECOND_SHA256_<NAME>`` (user supplied), else ``""``."""
        return self.sha256 or os.environ.get(sha_env_var(self.name), "").strip().lower()


def sha_env_var(name: str) -> str:
    """Environment variable through which a user supplies the sha256 of ``name``'s download."""
    return "PRECOND_SHA256_" + re.sub(r"[^0-9A-Za-z]", "_", name).upper()


def repo_datasets_dir() -> Path:
    return Path(__file__).resolve().parents[2] / "datasets"


def registry_path() -> Path:
    env = os.environ.get("PRECOND_REGISTRY")
    return Path(env) if env else repo_datasets_dir() / "registry.toml"


def shipped_dir() -> Path:
    return registry_path().parent


def data_dir(override: str | os.PathLike | None = None) -> Path:
    if override is not None:
        return Path(override)
    env = os.environ.get("PRECOND_DATA_DIR")
    return Path(env) if env else Path.home() / ".cache" / "precond_core"


_CACHE: dict[tuple[str, int, int], dict[str, Entry]] = {}


def registry() -> dict[str, Entry]:
    """Parse the registry (memoized per file path, size and mtime)."""
    import tomllib

    path = registry_path()
    try:
        st = path.stat()
    except FileNotFoundError:
        raise DatasetError("the dataset registry is missing (set PRECOND_REGISTRY to its path)", path=path) from None
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key in _CACHE:
        return _CACHE[key]
    with open(path, "rb") as f:
        try:
            raw = tomllib.load(f)
        except tomllib.TOMLDecodeError as e:
            raise DatasetError(f"invalid TOML: {e}", path=path) from None
    out = {}
    for name, rec in raw.items():
        missing = [k for k in _REQUIRED if k not in rec]
        if missing:
            raise DatasetError(f"entry [{name}] lacks fields {missing}", path=path)
        if rec["task"] not in TASKS:
            raise DatasetError(f"entry [{name}] has task {rec['task']!r}, allowed: {TASKS}", path=path)
        sha = rec["sha256"]
        if sha and not re.fullmatch(r"[0-9a-f]{64}", sha):
            raise DatasetError(f"entry [{name}] sha256 must be 64 lowercase hex digits or empty, got {sha!r}", path=path)
        out[name] = Entry(name=name, task=rec["task"], n_samples=int(rec["n_samples"]),
                          n_features=int(rec["n_features"]), source=rec["source"], file=rec.get("file", ""),
                          sha256=sha, url=rec["url"], license=rec["license"], attribution=rec["attribution"],
                          compression=rec.get("compression", ""), n_classes=rec.get("n_classes"))
    _CACHE.clear()
    _CACHE[key] = out
    return out


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _unlink(p) -> None:
    try:
        os.unlink(p)
    except FileNotFoundError:
        pass


__all__ = ["Entry", "registry", "registry_path", "shipped_dir", "data_dir", "sha256_file", "sha_env_var",
           "atomic_write_bytes", "TASKS"]
