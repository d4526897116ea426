"""Image data sets for neural-network problems: Fashion-MNIST (idx-ubyte files) and CIFAR-10 (python batches).

Both return ``X`` of shape (N, C, H, W) with values in [0, 1] (uint8 / 255) and ``y`` int64 in 0..9.
Memory: N*C*H*W uint8 bytes while reading plus the output tensor in the requested dtype.

- Fashion-MNIST (Xiao, Rasul and Vollgraf 2017, MIT): ``{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]``
  looked up in ``$PRECOND_FASHION_MNIST_DIR``, ``<data dir>/raw/fashion-mnist`` and
  ``/usr/share/datasets/fashion-mnist`` (Debian package ``dataset-fashion-mnist``).
- CIFAR-10 (Krizhevsky 2009), "CIFAR-10 python version": folder ``cifar-10-batches-py`` with
  ``data_batch_1..5`` and ``test_batch``, looked up in ``$PRECOND_CIFAR10_DIR`` and
  ``<data dir>/raw/cifar-10-batches-py``. The batches are pickles; they are read by an unpickler
  that allows only the builtins and numpy array reconstruction they contain, so a crafted file
  cannot run code.
"""
from __future__ import annotations

import gzip
import io
import os
import pickle
from pathlib import Path

import numpy as np

from .errors import DatasetFormatError, DatasetUnavailable
from .registry import data_dir

DEBIAN_FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
               0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}
SPLITS = ("train", "test")


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (``.gz`` or plain): magic ``00 00 <type> <ndim>``, ndim big-endian uint32
    dimensions, then the data in C order. Raises ``DatasetFormatError`` on a bad header or size."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = bytearray(f.read())  # writable, so torch.from_numpy can share it
    except (OSError, EOFError) as e:
        raise DatasetFormatError(f"cannot read IDX file: {e}", path=path) from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise DatasetFormatError(f"not an IDX file (magic bytes {bytes(raw[:4]).hex()!r})", path=path)
    ndim = raw[3]
    head = 4 + 4 * ndim
    if len(raw) < head:
        raise DatasetFormatError("truncated IDX header", path=path)
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dt = np.dtype(_IDX_DTYPES[raw[2]])
    expected = int(np.prod(dims, dtype=np.int64)) * dt.itemsize
    if len(raw) - head != expected:
        raise DatasetFormatError(f"IDX dims {dims} need {expected} data bytes, the file has {len(raw) - head}",
                                 path=path)
    return np.frombuffer(raw, dtype=dt, offset=head).reshape(dims)


def fashion_mnist_dirs(override=None) -> list[Path]:
    dirs = []
    if os.environ.get("PRECOND_FASHION_MNIST_DIR"):
        dirs.append(Path(os.environ["PRECOND_FASHION_MNIST_DIR"]))
    dirs += [data_dir(override) / "raw" / "fashion-mnist", DEBIAN_FASHION_DIR]
    return dirs


def _find(dirs: list[Path], stem: str) -> Path | None:
    for d in dirs:
        for name in (stem + ".gz", stem):
            if (d / name).is_file():
                return d / name
    return None


def load_fashion_mnist(split: str = "train", override=None) -> tuple[np.ndarray, np.ndarray, Path]:
    """Return (images uint8 (N, 1, 28, 28), labels int64 (N,), folder) for ``split``."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    prefix = "train" if split == "train" else "t10k"
    dirs = fashion_mnist_dirs(override)
    img = _find(dirs, f"{prefix}-images-idx3-ubyte")
    lab = _find(dirs, f"{prefix}-labels-idx1-ubyte")
    if img is None or lab is None:
        raise DatasetUnavailable(
            f"Fashion-MNIST {split} files ({prefix}-images-idx3-ubyte.gz, {prefix}-labels-idx1-ubyte.gz) not found in "
            f"{', '.join(map(str, dirs))}; install them with 'apt-get install dataset-fashion-mnist' or put them in "
            f"one of these folders (PRECOND_FASHION_MNIST_DIR or PRECOND_DATA_DIR/raw/fashion-mnist)",
            path="fashion_mnist")
    X, y = read_idx(img), read_idx(lab)
    if X.ndim != 3 or y.ndim != 1 or X.shape[0] != y.shape[0]:
        raise DatasetFormatError(f"images {X.shape} and labels {y.shape} do not match (expected (N, H, W) and (N,))",
                                 path=img)
    if y.size and (y.min() < 0 or y.max() > 9):
        raise DatasetFormatError(f"labels must be in 0..9, got range {y.min()}..{y.max()}", path=lab)
    return X[:, None, :, :], y.astype(np.int64), img.parent


class _SafeUnpickler(pickle.Unpickler):
    _ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
                ("numpy._core.multiarray", "scalar"), ("builtins", "bytes"), ("_codecs", "encode")}

    def find_class(self, module, name):
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a CIFAR-10 batch")


def read_cifar_batch(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Read one CIFAR-10 python batch: dict with b'data' (N, 3072) uint8 and b'labels' (N,)."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            d = _SafeUnpickler(io.BytesIO(f.read()), encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as e:
        raise DatasetFormatError(f"not a CIFAR-10 python batch: {e}", path=path) from None
    if not isinstance(d, dict) or b"data" not in d or b"labels" not in d:
        raise DatasetFormatError("not a CIFAR-10 python batch: expected a dict with b'data' and b'labels'", path=path)
    X = np.asarray(d[b"data"])
    y = np.asarray(d[b"labels"], dtype=np.int64)
    if X.dtype != np.uint8 or X.ndim != 2 or X.shape[1] != 3072 or X.shape[0] != y.shape[0]:
        raise DatasetFormatError(f"data must be uint8 (N, 3072) with N labels, got {X.dtype} {X.shape} and "
                                 f"{y.shape[0]} labels", path=path)
    if y.size and (y.min() < 0 or y.max() > 9):
        raise DatasetFormatError(f"labels must be in 0..9, got range {y.min()}..{y.max()}", path=path)
    return X.reshape(-1, 3, 32, 32), y


def cifar10_dirs(override=None) -> list[Path]:
    dirs = []
    if os.environ.get("PRECOND_CIFAR10_DIR"):
        dirs.append(Path(os.environ["PRECOND_CIFAR10_DIR"]))
    dirs.append(data_dir(override) / "raw" / "cifar-10-batches-py")
    return dirs


def load_cifar10(split: str = "train", override=None) -> tuple[np.ndarray, np.ndarray, Path]:
    """Return (images uint8 (N, 3, 32, 32), labels int64 (N,), folder) for ``split``."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    dirs = cifar10_dirs(override)
    for d in dirs:
        if all((d / n).is_file() for n in names):
            parts = [read_cifar_batch(d / n) for n in names]
            return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]), d
    raise DatasetUnavailable(
        f"CIFAR-10 {split} batches ({', '.join(names)}) not found in {', '.join(map(str, dirs))}; download "
        "cifar-10-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html and extract its folder "
        "cifar-10-batches-py there (PRECOND_CIFAR10_DIR or PRECOND_DATA_DIR/raw)", path="cifar10")
