"""Image sets: Fashion-MNIST idx-ubyte.gz and CIFAR-10 python batches (tiny files written by the tests)."""
import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

D = pytest.importorskip("precond_core.datasets")
from precond_core.datasets import images  # noqa: E402


@pytest.fixture(autouse=True)
def isolated(data_dir, tmp_path, monkeypatch, request):
    """The conftest's empty data directory; tiny-file tests must not see a system-wide installation."""
    if "real" not in request.node.name:
        monkeypatch.setattr(images, "DEBIAN_FASHION_DIR", tmp_path / "no-debian-files")


def write_idx(path, arr, code=0x08):
    head = bytes([0, 0, code, arr.ndim]) + struct.pack(">" + "I" * arr.ndim, *arr.shape)
    with gzip.open(path, "wb") as f:
        f.write(head + arr.astype(np.uint8).tobytes())


def tiny_fashion(folder, n=7, prefix="train", seed=0):
    rng = np.random.default_rng(seed)
    X = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    y = rng.integers(0, 10, size=n).astype(np.uint8)
    folder.mkdir(parents=True, exist_ok=True)
    write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", X)
    write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", y)
    return X, y


def test_fashion_mnist_from_tiny_idx_files(tmp_path, monkeypatch):
    X, y = tiny_fashion(tmp_path / "fm")
    monkeypatch.setenv("PRECOND_FASHION_MNIST_DIR", str(tmp_path / "fm"))
    ds = D.load_info("fashion_mnist", dtype=torch.float32)
    assert ds.A.shape == (7, 1, 28, 28) and ds.A.dtype == torch.float32 and ds.b.dtype == torch.int64
    torch.testing.assert_close(ds.A[:, 0], torch.from_numpy(X.astype(np.float32) / 255))
    assert ds.b.tolist() == y.tolist()
    A, _ = D.load("fashion_mnist", layout="flat")
    assert A.shape == (7, 784)
    with pytest.raises(D.DatasetUnavailable, match="t10k-images"):
        D.load("fashion_mnist", split="test")


def test_fashion_mnist_in_data_dir(data_dir):
    X, y = tiny_fashion(data_dir / "raw" / "fashion-mnist", n=3, prefix="t10k")
    A, b = D.load("fashion_mnist", split="test")
    assert A.shape == (3, 1, 28, 28) and b.tolist() == y.tolist()


def test_idx_rejects_bad_header_and_size(tmp_path):
    p = tmp_path / "x-idx1-ubyte.gz"
    with gzip.open(p, "wb") as f:
        f.write(bytes([0, 0, 0x08, 1]) + struct.pack(">I", 10) + bytes(9))   # 10 promised, 9 given
    with pytest.raises(D.DatasetFormatError, match="need 10 data bytes, the file has 9"):
        images.read_idx(p)
    with gzip.open(p, "wb") as f:
        f.write(b"\x01\x02\x03\x04")
    with pytest.raises(D.DatasetFormatError, match="not an IDX file"):
        images.read_idx(p)


@pytest.mark.skipif(not Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz").exists(),
                    reason="Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)")
def test_real_fashion_mnist_if_installed():
    A, b = D.load("fashion_mnist", split="test", dtype=torch.float32)
    assert A.shape == (10000, 1, 28, 28) and sorted(set(b.tolist())) == list(range(10))
    assert 0.0 <= float(A.min()) and float(A.max()) <= 1.0


def tiny_cifar(folder, n=4, seed=0):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        X = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        y = rng.integers(0, 10, size=n).tolist()
        with open(folder / name, "wb") as f:
            pickle.dump({b"batch_label": b"x", b"data": X, b"labels": y, b"filenames": [b"a"] * n}, f)
        out[name] = (X, y)
    return out


def test_cifar10_from_tiny_batches(data_dir):
    batches = tiny_cifar(data_dir / "raw" / "cifar-10-batches-py")
    A, b = D.load("cifar10")
    X = np.concatenate([batches[f"data_batch_{i}"][0] for i in range(1, 6)])
    y = sum((batches[f"data_batch_{i}"][1] for i in range(1, 6)), [])
    assert A.shape == (20, 3, 32, 32) and b.tolist() == y
    torch.testing.assert_close(A, torch.from_numpy(X.reshape(20, 3, 32, 32) / 255.0))
    At, bt = D.load("cifar10", split="test", layout="flat")
    assert At.shape == (4, 3072) and bt.tolist() == batches["test_batch"][1]
    assert D.available()["cifar10"]


def test_cifar10_unpickler_refuses_code(tmp_path, monkeypatch):
    folder = tmp_path / "c"
    tiny_cifar(folder)

    class Evil:
        def __reduce__(self):
            return (print, ("owned",))
    with open(folder / "test_batch", "wb") as f:
        pickle.dump({b"data": Evil(), b"labels": []}, f)
    monkeypatch.setenv("PRECOND_CIFAR10_DIR", str(folder))
    with pytest.raises(D.DatasetFormatError, match="builtins.print is not allowed"):
        D.load("cifar10", split="test")


def test_cifar10_missing_is_unavailable():
    with pytest.raises(D.DatasetUnavailable, match="cifar-10-batches-py"):
        D.load("cifar10")
    assert not D.available()["cifar10"]
