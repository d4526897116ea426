import pytest
import torch

# Tests check answers, not speed: one intra-op thread keeps them fast and stable on a shared machine.
torch.set_num_threads(1)

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(params=DEVICES)
def device(request):
    return request.param


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    """An empty data directory for precond_core.datasets, with every data environment variable cleared."""
    d = tmp_path / "data"
    monkeypatch.setenv("PRECOND_DATA_DIR", str(d))
    for var in ("PRECOND_DOWNLOAD", "PRECOND_DATA_URL", "PRECOND_REGISTRY", "PRECOND_FASHION_MNIST_DIR",
                "PRECOND_CIFAR10_DIR"):
        monkeypatch.delenv(var, raising=False)
    return d
