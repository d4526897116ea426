"""asv: ``precond_core.optim`` step cost beside ``torch.optim.Adagrad`` (defaults).

``OptimStep.time_step``: one ``optimizer.step()`` with gradients already set (no forward/backward), on the
large CNN's parameters (140,906 in 33 tensors) and on one flat float32 parameter of 10^7 elements.
``TrainStep.time_step``: one small-CNN training step (zero_grad, forward, backward, step) on a batch of
128 3-channel 32x32 inputs, for torch Adagrad, AdaGrad, AdaGradBMA, ``Hutchinson`` and ``UniformDirection``
(whose closure backward uses ``create_graph`` and whose step adds one HVP: the extra backward cost of the
HVP methods) and ``FisherSampled`` (b = 1 per-sample gradient by torch.func per step).

Run as a script for side-by-side ratios (medians of interleaved rounds, one process):
``PYTHONPATH=$PWD OMP_NUM_THREADS=1 python -m benchmarks.bench_optim``.
"""
from __future__ import annotations

import statistics
import time

import torch

OPTIMIZERS = ["torch_adagrad", "adagrad", "adagrad_bma", "adagrad_bma_scaled", "adagrad_bma_lu2018"]


def _make(name, params, model=None, loss_fn=None):
    from precond_core import optim
    if name == "torch_adagrad":
        return torch.optim.Adagrad(params)
    if name == "adagrad":
        return optim.AdaGrad(params)
    if name == "adagrad_bma":
        return optim.AdaGradBMA(params)
    if name == "adagrad_bma_scaled":
        return optim.AdaGradBMA(params, variant="scaled")
    if name == "adagrad_bma_lu2018":
        return optim.AdaGradBMA(params, variant="lu2018")
    if name == "hutchinson":
        return optim.Hutchinson(params)
    if name == "uniform_direction":
        return optim.UniformDirection(params, step="regularized", sigma=10.0)
    if name == "fisher_sampled":
        return optim.FisherSampled(params, step="regularized", sigma=10.0, model=model, loss_fn=loss_fn)
    raise ValueError(name)


def _params(case):
    from precond_core.models import large_cnn
    torch.manual_seed(0)
    if case == "large_cnn":
        ps = list(large_cnn(3).parameters())
    else:
        ps = [torch.nn.Parameter(torch.zeros(10 ** 7))]
    g = torch.Generator().manual_seed(1)
    for p in ps:
        p.grad = torch.randn(p.shape, generator=g)
    return ps


class OptimStep:
    params = [OPTIMIZERS, ["large_cnn", "flat_1e7"]]
    param_names = ["optimizer", "case"]
    number = 0             # asv picks the calls per sample (>= sample_time): a sub-millisecond step timed
    repeat = (3, 10, 5.0)  # one call at a time read 20-40% above pytest-benchmark's median
    timeout = 300

    def setup(self, optimizer, case):
        self.opt = _make(optimizer, _params(case))
        self.opt.step()           # state allocated outside the timed figure

    def time_step(self, optimizer, case):
        self.opt.step()


TRAIN_OPTIMIZERS = ["torch_adagrad", "adagrad", "adagrad_bma", "hutchinson", "uniform_direction", "fisher_sampled"]


def _train_fns(optimizer):
    """One small-CNN training step with ``optimizer``: zero_grad, forward, backward (with create_graph for
    the HVP optimizers, which then take one HVP each), step; the Fisher step adds b = 1 per-sample
    gradient by torch.func."""
    from precond_core.models import small_cnn
    torch.manual_seed(0)
    model = small_cnn(3)
    g = torch.Generator().manual_seed(2)
    X, y = torch.randn(128, 3, 32, 32, generator=g), torch.randint(0, 10, (128,), generator=g)
    loss_fn = torch.nn.functional.cross_entropy
    opt = _make(optimizer, model.parameters(), model, loss_fn)
    create_graph = getattr(opt, "create_graph", False)
    kw = {"inputs": X, "targets": y} if getattr(opt, "needs_batch", False) else {}

    def closure():
        opt.zero_grad()
        loss = loss_fn(model(X), y)
        loss.backward(create_graph=create_graph)
        return loss

    def step():
        opt.step(closure, **kw)
    step()
    return step


class TrainStep:
    params = [TRAIN_OPTIMIZERS]
    param_names = ["optimizer"]
    number = 1
    repeat = (3, 20, 5.0)
    timeout = 300

    def setup(self, optimizer):
        self.step = _train_fns(optimizer)

    def time_step(self, optimizer):
        self.step()


def _interleaved(fns: dict, rounds: int) -> dict:
    times = {k: [] for k in fns}
    for _ in range(rounds):
        for k, f in fns.items():
            t0 = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def main():
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}; medians of interleaved rounds")
    for case, rounds in (("large_cnn", 30), ("flat_1e7", 7)):
        opts = {k: _make(k, _params(case)) for k in OPTIMIZERS}
        for o in opts.values():
            o.step()
        med = _interleaved({k: o.step for k, o in opts.items()}, rounds)
        base = med["torch_adagrad"]
        print(f"step() on {case}: " + ", ".join(f"{k} {v * 1e3:.2f} ms ({v / base:.2f}x)" for k, v in med.items()))
    fns = {k: _train_fns(k) for k in TRAIN_OPTIMIZERS}
    med = _interleaved(fns, 20)
    base = med["torch_adagrad"]
    print("small-CNN training step (batch 128): "
          + ", ".join(f"{k} {v * 1e3:.2f} ms ({v / base:.2f}x)" for k, v in med.items()))


if __name__ == "__main__":
    main()
