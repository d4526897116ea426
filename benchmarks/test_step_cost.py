"""pytest-benchmark: seconds per step of every method, per gradient and per HVP; state bytes.

Same grid and data as the asv suite (``cases.py``). Every answer is checked against a reference before
it is timed (the solver's f and g against the problem's loss and gradient at its iterate; the gradient
against a central difference; the HVP against a difference of gradients). Run:

    pytest benchmarks --benchmark-only                 # time
    pytest benchmarks --benchmark-disable -k "n1e2"    # run each body once, untimed (smoke test)
"""
import pytest

from . import cases

WARMUP_ROUNDS = 1


def _case(fn, *args, **kwargs):
    """Build a case, turning the registry's skip into pytest's."""
    try:
        return fn(*args, **kwargs)
    except cases.Skip as exc:
        pytest.skip(str(exc))


def _time(benchmark, fn, device):
    """``benchmark.pedantic`` with warm-up rounds and about ``cases.TARGET_SECONDS`` of timed rounds."""
    rounds = cases.rounds_for(cases.median_seconds(fn, device, repeat=1, warmup=0))
    benchmark.extra_info["rounds"] = rounds
    return benchmark.pedantic(fn, rounds=rounds, warmup_rounds=WARMUP_ROUNDS, iterations=1)


def _time_fresh(benchmark, probe, fresh, device):
    """``benchmark.pedantic`` over rounds that each time one step of a freshly built solver (``fresh`` =
    ``cases.fresh_step``: setup untimed); ``probe`` (a step of the checked solver) sizes the rounds."""
    setup, target = fresh
    rounds = cases.rounds_for(cases.median_seconds(probe, device, repeat=1, warmup=0))
    benchmark.extra_info["rounds"] = rounds
    return benchmark.pedantic(target, setup=setup, rounds=rounds, warmup_rounds=WARMUP_ROUNDS, iterations=1)


@pytest.mark.parametrize("device", cases.DEVICES)
@pytest.mark.parametrize("n", cases.N_STEP, ids=cases.n_id)
@pytest.mark.parametrize("method", cases.methods())
def test_step(benchmark, method, n, device):
    solver = _case(cases.make_solver, method, n, device)
    cases.check_step(solver)
    benchmark.extra_info.update(cases.solver_info(solver))
    _time_fresh(benchmark, cases.step_fn(solver, device), cases.fresh_step(method, n, device), device)


@pytest.mark.parametrize("device", cases.DEVICES)
@pytest.mark.parametrize("n", cases.N_BLOCK, ids=cases.n_id)
@pytest.mark.parametrize("k", cases.K_GRID, ids=lambda k: f"k{k}")
@pytest.mark.parametrize("method", cases.block_methods())
def test_block_step(benchmark, method, k, n, device):
    solver = _case(cases.make_solver, method, n, device, k=k)
    cases.check_step(solver)
    benchmark.extra_info.update(cases.solver_info(solver))
    _time_fresh(benchmark, cases.step_fn(solver, device), cases.fresh_step(method, n, device, k), device)


@pytest.mark.parametrize("device", cases.DEVICES)
@pytest.mark.parametrize("n", cases.N_STEP, ids=cases.n_id)
def test_gradient(benchmark, n, device):
    problem, x, v = _case(cases.oracle_point, n, device)
    benchmark.extra_info["rel_error"] = cases.check_gradient(problem, x, v)
    _time(benchmark, cases.oracle_fns(n, device)[0], device)


@pytest.mark.parametrize("device", cases.DEVICES)
@pytest.mark.parametrize("n", cases.N_STEP, ids=cases.n_id)
def test_hvp(benchmark, n, device):
    problem, x, v = _case(cases.oracle_point, n, device)
    benchmark.extra_info["rel_error"] = cases.check_hvp(problem, x, v)
    _time(benchmark, cases.oracle_fns(n, device)[1], device)
