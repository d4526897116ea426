"""Per-sample gradients of ``from_function`` against one full gradient, side by side in one process.

    OMP_NUM_THREADS=1 python benchmarks/from_function_samples.py --samples 20000 --features 500 --b 8

The problem is L2-free logistic regression written as a user's torch function (dense data, float64). Timed
round-robin (each round: one full gradient ``problem.grad(x)``, then b per-sample gradients by each path;
a fresh random index set per round, drawn before the clock starts), median over rounds:

- ``vmap_grad``: ``from_function(sample_loss=..., data=...)``: ``torch.func.vmap(torch.func.grad(...))``
  over the b samples only;
- ``vmap_vjp``: ``from_function(fun, x0, per_sample)``: one forward of the per-sample losses and
  ``torch.func.vmap`` of its vector-Jacobian product over b unit vectors;
- ``jacrev`` (``--jacrev``): the full Jacobian by ``torch.func.jacrev`` then b rows (what the problem
  did before; slow).

Printed: seconds per call and the ratio to one full gradient (target: vmap_grad <= 3 at b = 8).
"""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from precond_core import timing  # noqa: E402
from precond_core.problems import from_function  # noqa: E402


def build(S: int, n: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(S, n, generator=g, dtype=torch.float64) / n ** 0.5
    y = torch.where(torch.rand(S, generator=g, dtype=torch.float64) < 0.5, -1.0, 1.0).to(torch.float64)

    def sample_loss(x, a, yi):
        return torch.nn.functional.softplus(-yi * torch.dot(a, x))

    def per_sample(x):
        return torch.nn.functional.softplus(-y * (A @ x))

    def fun(x):
        return per_sample(x).mean()

    x0 = torch.zeros(n, dtype=torch.float64)
    return (from_function(fun, x0, sample_loss=sample_loss, data=(A, y)),
            from_function(fun, x0, per_sample), A, y)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--samples", type=int, default=20000)
    ap.add_argument("--features", type=int, default=500)
    ap.add_argument("--b", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--jacrev", action="store_true", help="also time the full-Jacobian path")
    args = ap.parse_args(argv)
    p_grad, p_vjp, A, y = build(args.samples, args.features)
    x = torch.full((args.features,), 0.01, dtype=torch.float64)
    gen = torch.Generator().manual_seed(1)
    calls = {
        "full_gradient": lambda idx: p_grad.grad(x),
        "vmap_grad": lambda idx: p_grad.per_sample_grads(x, idx),
        "vmap_vjp": lambda idx: p_vjp.per_sample_grads(x, idx),
    }
    if args.jacrev:
        calls["jacrev"] = lambda idx: torch.func.jacrev(p_vjp.per_sample)(x)[idx]
    ref = p_vjp.per_sample_grads(x, torch.arange(args.b))
    assert torch.allclose(p_grad.per_sample_grads(x, torch.arange(args.b)), ref, rtol=1e-10, atol=1e-14)
    for f in calls.values():  # warm-up
        f(torch.arange(args.b))
    times = {k: [] for k in calls}
    for _ in range(args.rounds):
        idx = torch.randint(0, args.samples, (args.b,), generator=gen)
        for k, f in calls.items():
            times[k].append(timing.time_call(lambda: f(idx), device="cpu", repeat=1, warmup=0)[0])
    base = statistics.median(times["full_gradient"])
    print(f"S={args.samples} n={args.features} b={args.b} threads={torch.get_num_threads()} rounds={args.rounds}")
    for k, ts in times.items():
        med = statistics.median(ts)
        print(f"{k:14s} {med:.3e} s  {med / base:8.3f} x full gradient")
    return 0


if __name__ == "__main__":
    sys.exit(main())
