"""Getting the raw LIBSVM file of a registry entry onto this machine, verified.

``fetch(name)`` downloads the canonical file (``url`` of the registry, or ``url=``, or the mirror base
``$PRECOND_DATA_URL`` + file name), streaming it into a temporary file in ``<data dir>/raw`` while
hashing it, with a tqdm progress bar; verifies its sha256; decompresses ``.bz2`` files; and moves
the result into place with ``os.replace``. Any failure (offline, HTTP error, truncated response,
checksum mismatch, corrupt archive) removes the temporary files, so nothing partial is left.

Checksums: the registry's ``sha256`` (of the file as distributed), else ``$PRECOND_SHA256_<NAME>``.
With neither, the file is refused after printing the checksum it got, unless ``trust_unverified=True``.
A verification record ``raw/<text file>.verified`` (one line: the text's sha256, then how it was
verified) lets a decompressed or trusted file be recognized later; a file whose content changed
no longer matches its record and is refused.
"""
from __future__ import annotations

import bz2
import hashlib
import os
import sys
import tempfile
from pathlib import Path

from .errors import ChecksumError, DatasetError, DatasetUnavailable
from .registry import Entry, _unlink, atomic_write_bytes, data_dir, registry, sha_env_var

CHUNK = 1 << 20


def raw_dir(override=None) -> Path:
    return data_dir(override) / "raw"


def manual_hint(entry: Entry, override=None) -> str:
    d = raw_dir(override)
    alt = f" (or the decompressed {entry.text_file})" if entry.compression else ""
    return (f"to use it, run precond_core.datasets.fetch({entry.name!r}) on a machine that is online, or download "
            f"{entry.url} by hand and put it at {d / entry.file}{alt}; the data directory is set by the environment "
            f"variable PRECOND_DATA_DIR (now {data_dir(override)})")


def _unverified_message(entry: Entry, path: Path, actual: str, override=None) -> str:
    return (f"no sha256 is recorded for {entry.name!r}, so {path.name} (sha256 {actual}) cannot be verified; "
            f"check that checksum against a trusted source, then set {sha_env_var(entry.name)}={actual} or pass "
            f"trust_unverified=True; the data directory is PRECOND_DATA_DIR (now {data_dir(override)})")


def _mismatch(entry: Entry, path: Path, expected: str, actual: str, override=None) -> ChecksumError:
    return ChecksumError(f"sha256 mismatch for {entry.name!r} ({path.name}): expected {expected}, got {actual}; "
                         + manual_hint(entry, override), path=path, expected=expected, actual=actual)


def _record_path(text_path: Path) -> Path:
    return text_path.with_name(text_path.name + ".verified")


def read_record(text_path: Path) -> str | None:
    try:
        return _record_path(text_path).read_text().split()[0]
    except (FileNotFoundError, IndexError):
        return None


def write_record(text_path: Path, text_sha: str, how: str) -> None:
    atomic_write_bytes(_record_path(text_path), f"{text_sha} {how}\n".encode())


def resolve_url(entry: Entry, url: str | None = None) -> str:
    if url:
        return url
    base = os.environ.get("PRECOND_DATA_URL")
    if base:
        return base.rstrip("/") + "/" + entry.file
    return entry.url


def _download(url: str, dest_dir: Path, label: str, progress: bool, timeout: float, hint: str = "") -> tuple[Path, str]:
    """Stream ``url`` into a temporary file in ``dest_dir``; return (temp path, sha256). Cleans up on error.

    Errors are ``DatasetUnavailable`` whose message ends with ``hint`` (how to place the file by hand)."""
    hint = "; " + hint if hint else ""
    import http.client
    import urllib.error
    import urllib.request

    dest_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest_dir, prefix=f".{label}.", suffix=".part")
    h = hashlib.sha256()
    try:
        with os.fdopen(fd, "wb") as out:
            try:
                resp = urllib.request.urlopen(url, timeout=timeout)
            except (urllib.error.URLError, OSError) as e:
                raise DatasetUnavailable(f"could not download {url}: {e}{hint}", path=label) from None
            with resp:
                total = resp.headers.get("Content-Length")
                total = int(total) if total and total.isdigit() else None
                bar = _progress_bar(total, label, progress)
                got = 0
                try:
                    while True:
                        try:
                            block = resp.read(CHUNK)
                        except http.client.IncompleteRead as e:
                            raise DatasetUnavailable(
                                f"download of {url} was truncated after {got + len(e.partial)} of {total} bytes{hint}",
                                path=label) from None
                        except OSError as e:
                            raise DatasetUnavailable(f"download of {url} failed after {got} bytes: {e}{hint}",
                                                     path=label) from None
                        if not block:
                            break
                        out.write(block)
                        h.update(block)
                        got += len(block)
                        if bar is not None:
                            bar.update(len(block))
                finally:
                    if bar is not None:
                        bar.close()
                if total is not None and got != total:
                    raise DatasetUnavailable(f"download of {url} was truncated after {got} of {total} bytes{hint}",
                                             path=label)
        return Path(tmp), h.hexdigest()
    except BaseException:
        _unlink(tmp)
        raise


def _progress_bar(total, label, progress):
    if not progress:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=label, file=sys.stderr)


def _decompress_into(src: Path, entry: Entry, dest: Path) -> str:
    """Decompress ``src`` (bz2) into ``dest`` atomically; return the sha256 of the text."""
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp")
    h = hashlib.sha256()
    try:
        with os.fdopen(fd, "wb") as out, bz2.open(src, "rb") as inp:
            while block := inp.read(CHUNK):
                out.write(block)
                h.update(block)
        os.replace(tmp, dest)
    except (OSError, EOFError, ValueError) as e:
        _unlink(tmp)
        raise DatasetError(f"cannot decompress {src.name} ({entry.compression}): {e}", path=src) from None
    except BaseException:
        _unlink(tmp)
        raise
    return h.hexdigest()


def install(entry: Entry, src: Path, actual: str, *, trust_unverified: bool, override=None,
            move: bool = True) -> Path:
    """Verify ``src`` (sha256 ``actual``) for ``entry`` and put its text into ``raw/``; return that path.

    ``src`` is removed when verification fails and ``move`` is true (a download's temporary file).
    """
    expected = entry.expected_sha256()
    rd = raw_dir(override)
    try:
        if expected and actual != expected:
            raise _mismatch(entry, src, expected, actual, override)
        if not expected and not trust_unverified:
            print(f"precond_core.datasets: {entry.name}: downloaded {src.name} has sha256 {actual}", file=sys.stderr)
            raise ChecksumError(_unverified_message(entry, Path(entry.file), actual, override), path=entry.file,
                                expected=None, actual=actual)
    except BaseException:
        if move:
            _unlink(src)
        raise
    how = f"{entry.file}:sha256={actual}:" + ("registry" if entry.sha256 else "user" if expected else "trusted")
    text = rd / entry.text_file
    try:
        if entry.compression:
            text_sha = _decompress_into(src, entry, text)
        else:
            if move:
                os.replace(src, text)
            text_sha = actual
    finally:
        if move and entry.compression:
            _unlink(src)
    if entry.compression or not entry.sha256:
        write_record(text, text_sha, how)
    return text


def fetch(name: str, *, url: str | None = None, data_dir=None, trust_unverified: bool = False,
          progress: bool = True, timeout: float = 60.0, force: bool = False) -> Path:
    """Download registry dataset ``name`` into ``<data dir>/raw`` and return the path of its LIBSVM text.

    An already present, verified file is returned without network traffic unless ``force``.
    Raises ``DatasetUnavailable`` (offline, HTTP error, truncated download) or ``ChecksumError``
    (wrong or unverifiable sha256); in every failure nothing is left in the data directory.
    """
    reg = registry()
    if name not in reg:
        raise ValueError(f"name must be a registered dataset, got {name!r}; registered: {sorted(reg)}")
    entry = reg[name]
    if entry.kind not in ("download", "encode", "shipped"):
        raise ValueError(f"dataset {name!r} has source {entry.source!r}, which is not fetched from a URL")
    if not force:
        from .core import _resolve_libsvm_raw

        try:
            return _resolve_libsvm_raw(entry, trust_unverified=trust_unverified, override=data_dir, download=False)[0]
        except DatasetUnavailable:  # missing, unverified or wrong: download a fresh copy
            pass
    the_url = resolve_url(entry, url)
    tmp, actual = _download(the_url, raw_dir(data_dir), entry.file, progress, timeout,
                            manual_hint(entry, data_dir))
    return install(entry, tmp, actual, trust_unverified=trust_unverified, override=data_dir)


__all__ = ["fetch", "raw_dir", "resolve_url", "install", "manual_hint"]
