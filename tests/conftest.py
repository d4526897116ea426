import pytest
import torch

# Tests check answers, not speed: one intra-op thread keeps them fast and stable on a shared machine.
torch.set_num_threads(1)

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(params=DEVICES)
def device(request):
    return request.param
