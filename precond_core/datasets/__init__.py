"""Real and synthetic data for precond_core benchmarks (import this subpackage explicitly; it is not
imported by ``import precond_core``).

- ``load(name_or_path, **options) -> (A, b)`` and ``load_info(...) -> Dataset`` (with the label map,
  checksum, source and license); ``available()`` says what is registered and usable here;
- ``load_or_skip(name, runner="pytest"|"asv")`` for benchmarks: a missing data set skips with the message;
- ``fetch(name)`` downloads a large LIBSVM set from its canonical address, sha256-verified;
- ``synthetic(kind, **params)`` calls the seeded generators of ``precond_core.synthetic``;
- errors: ``DatasetError`` (a ``ValueError``), ``DatasetFormatError`` (file:line),
  ``DatasetUnavailable`` (skip benchmarks on it), ``ChecksumError``.

The registry is ``datasets/registry.toml``; the data directory is ``$PRECOND_DATA_DIR``
(default ``~/.cache/precond_core``). libsvm-official, scipy, scikit-learn and tqdm are imported only
inside the functions that need them. See ``datasets/README.md``.
"""
from .core import SYNTHETIC, Availability, Dataset, available, load, load_info, load_or_skip, synthetic
from .errors import ChecksumError, DatasetError, DatasetFormatError, DatasetUnavailable
from .download import fetch
from .mushroom import encode_mushrooms, encode_mushrooms_file
from .registry import Entry, data_dir, registry

__all__ = ["load", "load_info", "load_or_skip", "available", "fetch", "synthetic", "registry", "data_dir", "Dataset", "Entry",
           "Availability", "DatasetError", "DatasetFormatError", "DatasetUnavailable", "ChecksumError",
           "encode_mushrooms", "encode_mushrooms_file", "SYNTHETIC"]
