"""pytest-benchmark: ``precond_core.optim`` beside ``torch.optim.Adagrad`` (the cases of ``bench_optim.py``).

``test_step``: one ``optimizer.step()`` with gradients set, on the large CNN's parameters and on one flat
float32 parameter of 10^7 elements; ``test_train_step``: one small-CNN training step (forward, backward,
step). Before timing, every case's first step is checked: the parameters moved and stayed finite. Run:

    OMP_NUM_THREADS=1 pytest benchmarks/test_optim_step.py --benchmark-only --benchmark-group-by=param:case
"""
import pytest
import torch

from . import bench_optim as bo


@pytest.mark.parametrize("case", ["large_cnn", "flat_1e7"])
@pytest.mark.parametrize("optimizer", bo.OPTIMIZERS)
def test_step(benchmark, optimizer, case):
    params = bo._params(case)
    before = [p.detach().clone() for p in params]
    opt = bo._make(optimizer, params)
    opt.step()                       # state allocated outside the timed figure
    assert all(torch.isfinite(p).all() for p in params)
    assert any(not torch.equal(p, q) for p, q in zip(params, before))
    benchmark.extra_info["threads"] = torch.get_num_threads()
    benchmark.pedantic(opt.step, rounds=10 if case == "flat_1e7" else 50, warmup_rounds=1, iterations=1)


@pytest.mark.parametrize("optimizer", bo.TRAIN_OPTIMIZERS)
def test_train_step(benchmark, optimizer):
    step = bo._train_fns(optimizer)     # builds model, data and optimizer and takes one step
    benchmark.extra_info["threads"] = torch.get_num_threads()
    benchmark.pedantic(step, rounds=20, warmup_rounds=1, iterations=1)
