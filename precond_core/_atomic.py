"""Atomic file writes (standard library only), shared by the data cache, the results store and the report.

A file is written under a temporary name ``.tmp-<pid>-<name>`` in the destination folder, flushed to
disk, given the permissions a plain ``open`` would give (0666 less the umask), and moved into place
with ``os.replace``: a reader sees the old file or the whole new one, never a part, and a crash or an
interrupt leaves no temporary file behind (it is removed on the way out).
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def tmp_name(path: Path) -> Path:
    """The temporary name used while ``path`` is written."""
    return path.with_name(f".tmp-{os.getpid()}-{path.name}")


@contextmanager
def atomic_path(path, *, overwrite: bool = True):
    """Yield a temporary path to write; on success it replaces ``path``, on any exception it is removed.

    ``overwrite=False`` refuses (``FileExistsError``) when ``path`` exists, for append-only stores.
    """
    path = Path(path)
    if not overwrite and path.exists():
        raise FileExistsError(f"refusing to overwrite existing file {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_name(path)
    try:
        yield tmp
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_bytes(path, data: bytes, *, overwrite: bool = True) -> None:
    """Write ``data`` to ``path`` atomically (see ``atomic_path``)."""
    with atomic_path(path, overwrite=overwrite) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path, text: str, *, overwrite: bool = True) -> None:
    atomic_write_bytes(path, text.encode("utf-8"), overwrite=overwrite)


__all__ = ["atomic_path", "atomic_write_bytes", "atomic_write_text", "tmp_name"]
