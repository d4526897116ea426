"""Relative cost of the logistic-regression oracles: hvp / grad and loss_grad / grad (median of R runs).

Two problems: logistic_regression on sparse synthetic data, 10^4 samples x 10^4 features at 1% density
(100 nonzeros per row), and the scalable problem at n = 10^5 (10^4 samples, 20 nonzeros per row).
The four oracles are timed interleaved in one loop (same machine state for all), on a synchronized clock:
  grad(x), loss_grad(x), hvp(x', v) with x' a fresh tensor (no cached A x: three passes over A), and
  hvp(x, v) right after loss_grad(x) (A x reused from the cache: two passes).

    .venv/bin/python benchmarks/bench_oracles.py [--reps 20] [--device cpu] [--dtype float64]
"""
from __future__ import annotations

import argparse
import statistics

import torch

from precond_core.problems import logistic_regression, scalable
from precond_core.synthetic import sparse_logistic_data
from precond_core.timing import now


def measure(prob, reps: int, seed: int = 0) -> dict:
    dev = prob.device
    g = torch.Generator().manual_seed(seed)
    x = (0.1 * torch.randn(prob.n, generator=g, dtype=torch.float64)).to(dtype=prob.dtype, device=dev)
    v = torch.randn(prob.n, generator=g, dtype=torch.float64).to(dtype=prob.dtype, device=dev)
    fresh = [x.clone() for _ in range(reps + 2)]
    t = {"grad": [], "loss_grad": [], "hvp": [], "hvp_after_loss_grad": []}
    for r in range(reps + 2):  # the first two rounds are warm-up
        xg = x.clone()
        t0 = now(dev); prob.grad(xg); t1 = now(dev)
        xl = x.clone()
        t2 = now(dev); prob.loss_grad(xl); t3 = now(dev)
        t4 = now(dev); prob.hvp(xl, v); t5 = now(dev)
        t6 = now(dev); prob.hvp(fresh[r], v); t7 = now(dev)
        if r >= 2:
            t["grad"].append(t1 - t0); t["loss_grad"].append(t3 - t2)
            t["hvp_after_loss_grad"].append(t5 - t4); t["hvp"].append(t7 - t6)
    return {k: statistics.median(vs) for k, vs in t.items()}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float64", choices=["float32", "float64"])
    a = ap.parse_args(argv)
    dtype = getattr(torch, a.dtype)
    A, b = sparse_logistic_data(10**4, n_samples=10**4, nnz_per_row=100, seed=0, dtype=dtype, device=a.device)
    probs = {"logistic 1e4 x 1e4, 1% dense": logistic_regression(A, b, 1e-3),
             "scalable n=1e5": scalable(10**5, seed=0, dtype=dtype, device=a.device)}
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, device {a.device}, {a.dtype}, "
          f"median of {a.reps}")
    print(f"{'problem':32s} {'nnz':>9s} {'grad ms':>8s} {'loss_grad/grad':>15s} {'hvp/grad':>9s} "
          f"{'hvp(cached)/grad':>17s}")
    for name, p in probs.items():
        m = measure(p, a.reps)
        print(f"{name:32s} {p.design.nnz:9d} {1e3 * m['grad']:8.3f} {m['loss_grad'] / m['grad']:15.2f} "
              f"{m['hvp'] / m['grad']:9.2f} {m['hvp_after_loss_grad'] / m['grad']:17.2f}")


if __name__ == "__main__":
    main()
