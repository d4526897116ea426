"""pytest-benchmark: wall time of ``pc.minimize`` to the smallest eps, iterations to each eps in extra_info.

Same datasets, methods, eps and limits as the asv suite (``cases.py``). The run is timed once (one
round: a run to eps is long and its own figure); its trace is then checked (the last gradient norm is
the norm of the gradient at the returned iterate) before the figures are recorded.
"""
import pytest

from . import cases


@pytest.mark.parametrize("seed", cases.SEEDS, ids=lambda s: f"seed{s}")
@pytest.mark.parametrize("device", cases.DEVICES)
@pytest.mark.parametrize("method", cases.methods())
@pytest.mark.parametrize("dataset", cases.CONVERGENCE_DATASETS)
def test_convergence(benchmark, dataset, method, device, seed):
    try:
        problem, m = cases.convergence_case(dataset, method, device)
    except cases.Skip as exc:
        pytest.skip(str(exc))
    trace = benchmark.pedantic(cases.run_minimize, args=(problem, m, seed), rounds=1, iterations=1)
    cases.check_trace(problem, trace)
    benchmark.extra_info.update(cases.trace_info(trace))
