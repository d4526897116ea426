"""A small demo: minimize the block-mean talk's logistic regression (500 x 100) with several methods.

    python -m precond_core.demo
"""
from __future__ import annotations

import precond_core as pc

METHODS = [("gd", {"step": "armijo"}), ("newton", {}), ("lbfgs", {}), ("adagrad", {"lr": 0.5}),
           ("adagrad_bma", {"k": 10, "lr": 0.5}), ("hutchinson", {}), ("fisher_sampled", {"b": 1}),
           ("uniform_direction", {"form": "regularized", "delta": 0.01})]


def main(eps: float = 1e-6, max_iters: int = 300) -> list:
    A, b = pc.synthetic.logistic_data(n_samples=500, n_features=100, seed=0)
    prob = pc.problems.logistic_regression(A, b, lam=1e-3)
    print(f"logistic regression, 500 samples x 100 features, lam=1e-3, eps={eps:g}")
    print(f"{'method':40s} {'stop':10s} {'iters':>6s} {'|grad|':>9s} {'time s':>8s} {'grads':>6s} {'hvps':>6s} {'state B':>9s}")
    traces = []
    for name, params in METHODS:
        tr = pc.minimize(prob, pc.make_method(name, **params), eps=eps, max_iters=max_iters, seed=0)
        traces.append(tr)
        print(f"{tr.label:40s} {tr.stop_reason:10s} {tr.iterations:6d} {tr.grad_norms[-1]:9.2e} "
              f"{tr.times[-1]:8.3f} {tr.n_grads[-1]:6d} {tr.n_hvps[-1]:6d} {tr.state_bytes:9d}")
    return traces


if __name__ == "__main__":
    main()
