"""Error classes of the data layer (all are ``ValueError`` subclasses).

- ``DatasetError``: base class; ``.path`` names the file (or dataset) concerned.
- ``DatasetFormatError``: a malformed input file; ``.line`` is the 1-based line (``None`` for a
  whole-file problem such as an empty file or a wrong shape). No dataset or cache entry is produced.
- ``DatasetUnavailable``: the data is not on this machine (offline, not fetched, package absent).
  Benchmarks catch it and skip with its message.
- ``ChecksumError``: a file whose sha256 differs from the expected one (``.expected``, ``.actual``);
  a subclass of ``DatasetUnavailable`` because the data cannot be used either.
"""
from __future__ import annotations


class DatasetError(ValueError):
    def __init__(self, message: str, *, path=None, line: int | None = None):
        self.path = None if path is None else str(path)
        self.line = line
        where = ""
        if self.path is not None:
            where = f"{self.path}:{line}: " if line is not None else f"{self.path}: "
        super().__init__(where + message)
        self.reason = message


class DatasetFormatError(DatasetError):
    """Malformed data file: the message starts with ``path:line:``."""


class DatasetUnavailable(DatasetError):
    """The dataset cannot be used on this machine; the message says how to get it."""


class ChecksumError(DatasetUnavailable):
    def __init__(self, message: str, *, path=None, expected: str | None = None, actual: str | None = None):
        self.expected = expected
        self.actual = actual
        super().__init__(message, path=path)


__all__ = ["DatasetError", "DatasetFormatError", "DatasetUnavailable", "ChecksumError"]
