"""Benchmark sweeps: grids (TOML suites), the runner, the results store and the command line.

Needs the ``bench`` extra (pandas, pyarrow, tqdm); importing ``precond_core`` itself does not import this.

- :func:`~precond_core.bench.grid.load_grid`, :class:`~precond_core.bench.grid.Cell`: suites as plain data;
- :func:`~precond_core.bench.runner.run_sweep`, :func:`~precond_core.bench.runner.run_cell`;
- :class:`~precond_core.bench.store.Store`, :func:`~precond_core.bench.store.load_tables`;
- :class:`~precond_core.bench.executors.LocalExecutor`, :class:`~precond_core.bench.executors.DaskExecutor`.
"""
from __future__ import annotations

_EXPORTS = {
    "Cell": "grid", "GridError": "grid", "load_grid": "grid", "list_suites": "grid",
    "run_sweep": "runner", "run_cell": "runner", "SweepError": "runner",
    "Store": "store", "StoreError": "store", "load_tables": "store", "latest_runs": "store",
    "RUNS_COLUMNS": "store", "ITERS_COLUMNS": "store",
    "LocalExecutor": "executors", "DaskExecutor": "executors",
}


def __getattr__(name):  # lazy: the submodules import pandas
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = list(_EXPORTS)
