"""precond_core: preconditioned and second-order optimization methods, matrix-free, on CPU and GPU.

Public entry points::

    import precond_core as pc
    prob = pc.problems.logistic_regression(A, b, lam=1e-3)
    trace = pc.minimize(prob, pc.make_method("uniform_direction", delta=0.01), eps=1e-6, seed=0)
    pc.list_methods()

Importing this package needs torch and numpy only; ``precond_core.datasets`` (LIBSVM loading) and
``precond_core.bench`` (sweeps, results store, report) import their extra dependencies lazily.
"""
from __future__ import annotations

import importlib

from . import operators, preconditioners, problems, steps, theory, timing
from .problems.base import partition
from .registry import Method, MethodInfo, list_methods, make_method, method_info
from .solver import Solver, Trace, minimize

__version__ = "0.1.0"

_LAZY = {"datasets", "synthetic", "bench"}


def __getattr__(name):
    if name in _LAZY:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'precond_core' has no attribute {name!r}")


__all__ = ["operators", "preconditioners", "problems", "steps", "theory", "timing", "partition", "Method",
           "MethodInfo", "list_methods", "make_method", "method_info", "Solver", "Trace", "minimize", "__version__"]
