"""Benchmark suites of precond_core: asv (``bench_*.py``) and pytest-benchmark (``test_*.py``).

Both read their grids and build their data through :mod:`benchmarks.cases`; see ``benchmarks/README.md``.
"""
