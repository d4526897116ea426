"""The one case registry of the benchmark suites: grids, skip rules, seeded builders, measurements.

The asv suite (``bench_*.py``), the pytest-benchmark suite (``test_*.py``) and ``step_cost.py`` all
read their grids and build their data here, so a point of a grid is the same problem, method and seed
in all three. Builders of read-only data are cached per process (``functools.lru_cache``); a
``Solver`` holds mutable state and is built fresh for every case.

Grids (the default is small enough for ``asv run --quick --python=same`` on a 2-core machine; the
larger grid is opt-in through ``PRECOND_BENCH_GRID=large``, never the default):

- cost per step: every registered method over ``N_STEP`` on the scalable synthetic problem
  (``pc.problems.scalable``: sparse logistic regression whose gradient costs O(n)); block methods also
  over ``K_GRID`` block counts at ``N_BLOCK``;
- memory: the same methods over ``N_MEMORY``;
- convergence: iterations and time to ``EPS_GRID`` (float64) on ``CONVERGENCE_DATASETS`` (the LIBSVM sets
  of the dataset registry are skipped when their files are not on this machine).

Skip rules (:class:`Skip` is a ``NotImplementedError``, which asv reports as a skipped benchmark when
raised in ``setup``; the pytest suite turns it into ``pytest.skip``): a device that is not present, a
dataset that is not on this machine, a method whose size limit (``method_info(name).max_n``) is below n
or whose needs the problem lacks (``precond_core.solver.check_compatible``), a block count k > n, and
in the default grid, for methods with a size limit, n > ``DEFAULT_MAX_N_LIMITED`` (only the matrix-free
methods run at the largest n) or blocks of more than ``DEFAULT_MAX_BLOCK_SIZE`` coordinates.
"""
from __future__ import annotations

import functools
import itertools
import math
import os
import statistics
from pathlib import Path

import torch

import precond_core as pc
from precond_core import timing

# -- grids -----------------------------------------------------------------------------------------
GRID_ENV = "PRECOND_BENCH_GRID"
GRID = os.environ.get(GRID_ENV, "default").strip().lower() or "default"
if GRID not in ("default", "large"):
    raise ValueError(f"{GRID_ENV} must be 'default' or 'large', got {os.environ.get(GRID_ENV)!r}")
LARGE = GRID == "large"

DEVICES = ("cpu", "cuda")
DTYPE = torch.float64
SEED = 0
SEEDS = (0, 1, 2) if LARGE else (0,)

N_STEP = (10**2, 10**3, 10**4, 10**5, 10**6) + ((10**7,) if LARGE else ())
N_BLOCK = (10**3, 10**4, 10**6) if LARGE else (10**3, 10**4)
K_GRID = (1, 8, 64, 512)
N_MEMORY = N_STEP
#: in the default grid, methods with a size limit (dense n x n state or work growing faster than n)
#: run up to this n; the matrix-free methods run over the whole of N_STEP
DEFAULT_MAX_N_LIMITED = 10**4
#: in the default grid, size-limited block methods (dense blocks: a k = 1 block-diagonal Hessian at
#: n = 10^4 takes about 30 s a step on 2 cores) run only where a block has at most this many coordinates
DEFAULT_MAX_BLOCK_SIZE = 4096

#: asv's per-benchmark timeout (seconds); the large grid's steps at n = 10^7 take minutes
TIMEOUT = 1800 if LARGE else 300

EPS_GRID = (1e-4, 1e-6)
#: the synthetic set of the block-mean talk (500 samples x 100 features), then the LIBSVM sets
SYNTHETIC_LOGREG = "logreg_500x100"
CORE_DATASETS = ("mushrooms", "heart_scale", SYNTHETIC_LOGREG)


REGISTRY_ENV = "PRECOND_REGISTRY"
#: asv builds each commit into a virtual environment from a wheel, which does not carry the repository's
#: datasets/ folder; the suite then points the library at the registry of the checkout it belongs to
CHECKOUT_REGISTRY = Path(__file__).resolve().parent.parent / "datasets" / "registry.toml"
if REGISTRY_ENV not in os.environ and CHECKOUT_REGISTRY.is_file():
    os.environ[REGISTRY_ENV] = str(CHECKOUT_REGISTRY)


def libsvm_sets() -> tuple[str, ...]:
    """The binary LIBSVM sets of the dataset registry that are downloaded on demand (run when present)."""
    import precond_core.datasets as ds
    try:
        entries = ds.registry()
    except ds.DatasetError:  # no registry (a build of the library without one): only the core sets
        return ()
    return tuple(sorted(name for name, e in entries.items()
                        if e.task == "binary" and e.kind == "download" and name not in CORE_DATASETS))


CONVERGENCE_DATASETS = CORE_DATASETS + libsvm_sets()
LAM = 1e-3                      # ridge coefficient of every logistic-regression problem here
CONVERGENCE_MAX_ITERS = 2000 if LARGE else 500
CONVERGENCE_MAX_SECONDS = 120.0 if LARGE else 10.0


def n_id(n: int) -> str:
    """Test id of a size: ``n1e4`` for 10^4 (unique as a substring, so ``-k n1e2`` selects n = 100 only)."""
    e = round(math.log10(n))
    return f"n1e{e}" if 10**e == n else f"n{n}"


def methods() -> tuple[str, ...]:
    """Every registered method (the suites cover them all)."""
    return tuple(pc.list_methods())


def block_methods() -> tuple[str, ...]:
    """Registered methods that take a block count ``k``."""
    return tuple(m for m in methods() if pc.method_info(m).blocks)


def is_matrix_free(method: str) -> bool:
    """True when the method has no size limit: no n x n state and O(n) work per step besides oracles."""
    info = pc.method_info(method)
    return not info.dense and info.max_n is None


# -- skips -------------------------------------------------------------------------------------------
class Skip(NotImplementedError):
    """A case that cannot run here; asv reports it as skipped, the pytest suite skips it."""


def require_device(device: str) -> torch.device:
    if device not in DEVICES:
        raise ValueError(f"device must be one of {DEVICES}, got {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise Skip("no CUDA device on this machine")
    return torch.device(device)


def check_size(method: str, n: int, k: int | None = None) -> None:
    """Raise :class:`Skip` when ``method`` does not run at size n (and block count k) in this grid."""
    info = pc.method_info(method)
    if info.max_n is not None and n > info.max_n:
        raise Skip(f"{method} is limited to n <= {info.max_n} (n={n})")
    if info.max_n is not None and not LARGE and n > DEFAULT_MAX_N_LIMITED:
        raise Skip(f"{method} runs up to n={DEFAULT_MAX_N_LIMITED} in the default grid "
                   f"({GRID_ENV}=large for more), n={n}")
    if k is not None:
        if not info.blocks:
            raise ValueError(f"method {method!r} takes no block count k")
        if k > n:
            raise Skip(f"k={k} blocks > n={n}")
        if info.max_n is not None and not LARGE and -(-n // k) > DEFAULT_MAX_BLOCK_SIZE:
            raise Skip(f"{method} runs blocks of up to {DEFAULT_MAX_BLOCK_SIZE} coordinates in the default grid "
                       f"({GRID_ENV}=large for more), n={n}, k={k}")


def check_compatible(problem, method) -> None:
    """The library's compatibility test (size limit, problem capabilities) as a :class:`Skip`."""
    try:
        pc.solver.check_compatible(problem, method)
    except ValueError as exc:
        raise Skip(str(exc)) from None


# -- problems ----------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=4)
def scalable_problem(n: int, device: str = "cpu", seed: int = SEED):
    """``pc.problems.scalable``: sparse logistic regression with n features (a gradient costs O(n)), float64."""
    return pc.problems.scalable(n, seed=seed, lam=LAM, dtype=DTYPE, device=require_device(device))


@functools.lru_cache(maxsize=2)
def square_problem(n: int, device: str = "cpu", seed: int = SEED):
    """Sparse logistic regression with n samples and n features at 1 % density (n / 100 nonzeros per
    row): at n = 10^4 the 10^4 x 10^4 problem on which the library's step-cost targets are stated."""
    A, b = pc.synthetic.sparse_logistic_data(n, n_samples=n, nnz_per_row=max(1, n // 100), seed=seed,
                                             dtype=DTYPE, device=require_device(device))
    return pc.problems.logistic_regression(A, b, lam=LAM)


PROBLEM_FAMILIES = {"scalable": scalable_problem, "square": square_problem}


@functools.lru_cache(maxsize=None)
def dataset_problem(name: str, device: str = "cpu"):
    """Logistic regression (float64, ``LAM``) on a named data set; :class:`Skip` when it is absent."""
    dev = require_device(device)
    if name == SYNTHETIC_LOGREG:
        A, b = pc.synthetic.logistic_data(n_samples=500, n_features=100, seed=SEED, dtype=DTYPE, device=dev)
    else:
        A, b = load_dataset(name, dev)
    return pc.problems.logistic_regression(A, b, lam=LAM)


def load_dataset(name: str, device: torch.device):
    """(A, b) of a registered binary data set, labels in {-1, +1}; :class:`Skip` when not on this machine."""
    import precond_core.datasets as ds  # imported lazily, as the library does
    try:
        return ds.load(name, dtype=DTYPE, device=device, download=False)
    except ds.DatasetUnavailable as exc:
        raise Skip(f"dataset {name!r} is not on this machine: {exc}") from None


def random_point(problem, seed: int = SEED, scale: float = 0.1) -> torch.Tensor:
    """A seeded point x ~ N(0, scale^2 I) on the problem's device and dtype (oracle timings use it)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(problem.n, generator=g, dtype=torch.float64).mul_(scale)
    return x.to(dtype=problem.dtype, device=problem.device)


@functools.lru_cache(maxsize=4)
def oracle_point(n: int, device: str = "cpu", seed: int = SEED, family: str = "scalable"):
    """(problem, x, v): the problem of the family (default: scalable), a seeded point and direction."""
    problem = PROBLEM_FAMILIES[family](n, device, seed)
    return problem, random_point(problem, seed), random_point(problem, seed + 1, scale=1.0)


# -- solvers -----------------------------------------------------------------------------------------
def make_method(method: str, k: int | None = None, step: str | None = None):
    """The registry method, with ``k`` blocks and the step rule ``step`` where given; ``Skip`` when the
    method does not take that step rule."""
    kw = {} if k is None else {"k": k}
    if step is not None:
        if step not in pc.method_info(method).steps:
            raise Skip(f"method {method!r} does not take step={step!r} (allowed: {pc.method_info(method).steps})")
        kw["step"] = step
    return pc.make_method(method, **kw)


def steady_warm(solver) -> int:
    """Untimed steps that bring ``solver`` to its method's steady state: the preconditioner's memory + 1
    (a limited-memory method such as L-BFGS then holds a full memory of pairs, as in a long run; timing
    it earlier would average the cheap steps of a partly filled memory), at least 1 (lazy allocations and
    first-call work)."""
    return max(1, int(getattr(solver.method.preconditioner, "memory", 0) or 0) + 1)


def make_solver(method: str, n: int, device: str = "cpu", k: int | None = None, seed: int = SEED,
                warm: int | None = None, family: str = "scalable", step: str | None = None):
    """A ``pc.Solver`` of ``method`` on the scalable problem of size n, after ``warm`` steps (default
    :func:`steady_warm`: the method's steady state, e.g. a full L-BFGS memory).

    The warm-up steps run lazy allocations and first-call work outside the timed region.
    """
    require_device(device)
    check_size(method, n, k)
    problem = PROBLEM_FAMILIES[family](n, device, seed)
    m = make_method(method, k, step)
    check_compatible(problem, m)
    try:
        solver = pc.Solver(problem, m, seed=seed)
    except ValueError as exc:            # e.g. a regularized step without a known sigma on this problem
        raise Skip(f"{m.label} cannot run on this problem: {exc}") from None
    for _ in range(steady_warm(solver) if warm is None else warm):
        solver.step()
    return solver


def synchronized(fn, device: str):
    """``fn`` followed by a device synchronize on a GPU, so a timer sees finished work (``fn`` on a CPU)."""
    if torch.device(device).type != "cuda":
        return fn

    def call():
        fn()
        timing.synchronize(device)
    return call


def step_fn(solver, device: str):
    """The timed body of a step: one ``solver.step()``, synchronized."""
    return synchronized(solver.step, device)


def fresh_step(method: str, n: int, device: str = "cpu", k: int | None = None):
    """``(setup, target)`` for pytest-benchmark's ``pedantic``: ``setup`` builds the solver afresh (seeded
    start, :func:`steady_warm` warm steps) and ``target`` times its next step. Every round then times the same step of
    the working regime; a solver stepped over and over would reach the optimum, where steps of
    line-search rules cost several evaluations and no run of a user spends its time."""
    def setup():
        return (make_solver(method, n, device, k),), {}

    def target(solver):
        solver.step()
        timing.synchronize(device)

    return setup, target


def oracle_fns(n: int, device: str = "cpu", seed: int = SEED, family: str = "scalable"):
    """Timed bodies ``(gradient, hvp)``: ``grad(x)`` with the problem's forward cache cleared first, so
    every call pays a full gradient (a cached forward pass would time half of one), and ``hvp(x, v)``
    as a method calls it, right after the gradient at x (the cached forward pass is reused). Both are
    synchronized and called once here, so first-call work (thread pools, allocator) is not timed.
    """
    problem, x, v = oracle_point(n, device, seed, family)

    def cold_gradient():
        problem.clear_cache()
        return problem.grad(x)

    gradient = synchronized(cold_gradient, device)
    hvp = synchronized(functools.partial(problem.hvp, x, v), device)
    gradient(), hvp()
    return gradient, hvp


# -- reference checks (run before anything is timed) ----------------------------------------------
def _rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.linalg.vector_norm(a - b) / torch.linalg.vector_norm(b).clamp_min(1e-300))


def check_gradient(problem, x: torch.Tensor, v: torch.Tensor, rtol: float = 1e-6) -> float:
    """Check grad(x) against a central difference along u = v / ||v||.

    Error measure: |grad(x) . u - (f(x + h u) - f(x - h u)) / (2 h)| / ||grad(x)||, h = 1e-4; returned.
    """
    u = v / torch.linalg.vector_norm(v)
    h = 1e-4
    fd = float(problem.loss(x + h * u) - problem.loss(x - h * u)) / (2 * h)
    g = problem.grad(x)
    err = abs(float(torch.dot(g, u)) - fd) / max(float(torch.linalg.vector_norm(g)), 1e-300)
    if not err <= rtol:
        raise AssertionError(f"gradient of {problem!r} disagrees with a central difference: rel. error {err:.2e}")
    return err


def check_hvp(problem, x: torch.Tensor, v: torch.Tensor, rtol: float = 1e-5) -> float:
    """Check hvp(x, v) against (grad(x + h v) - grad(x - h v)) / (2 h); return the relative error."""
    h = 1e-4 / max(float(torch.linalg.vector_norm(v)), 1e-300)
    fd = (problem.grad(x + h * v) - problem.grad(x - h * v)) / (2 * h)
    err = _rel_err(problem.hvp(x, v), fd)
    if not err <= rtol:
        raise AssertionError(f"hvp of {problem!r} disagrees with a difference of gradients: rel. error {err:.2e}")
    return err


def check_step(solver) -> None:
    """Check a solver after a step: finite x, and f, g equal to the problem's loss and gradient at x."""
    p = solver.problem
    if not bool(torch.isfinite(solver.x).all()):
        raise AssertionError(f"{solver.method.label}: non-finite iterate after {solver.iteration} steps")
    f, g = p.loss(solver.x), p.grad(solver.x)
    if abs(float(solver.f - f)) > 1e-10 * max(1.0, abs(float(f))):
        raise AssertionError(f"{solver.method.label}: solver.f={float(solver.f)!r} but loss(x)={float(f)!r}")
    err = _rel_err(solver.g, g)
    if not err <= 1e-10:
        raise AssertionError(f"{solver.method.label}: solver.g differs from grad(x), rel. error {err:.2e}")


# -- convergence ---------------------------------------------------------------------------------------
def convergence_case(dataset: str, method: str, device: str = "cpu"):
    """(problem, method) of a convergence point; :class:`Skip` when it cannot run here."""
    problem = dataset_problem(dataset, device)
    m = make_method(method)
    check_compatible(problem, m)
    return problem, m


def run_minimize(problem, method, seed: int = SEED):
    """``pc.minimize`` down to min(EPS_GRID) within the grid's iteration and time limits."""
    return pc.minimize(problem, method, eps=min(EPS_GRID), max_iters=CONVERGENCE_MAX_ITERS,
                       max_seconds=CONVERGENCE_MAX_SECONDS, seed=seed)


def check_trace(problem, trace) -> None:
    """Check a trace against the problem: its last gradient norm is ||grad(x)|| at its final iterate."""
    gn = float(torch.linalg.vector_norm(problem.grad(trace.x)))
    last = float(trace.grad_norms[-1])
    if math.isfinite(gn) and abs(gn - last) > 1e-8 * max(1.0, gn):
        raise AssertionError(f"{trace.method} on {problem.name}: trace ends at ||g||={last!r}, "
                             f"but ||grad(x)||={gn!r}")


def eps_key(eps: float) -> str:
    return f"{eps:g}"


def trace_info(trace) -> dict:
    """Plain data of a run (pytest-benchmark's extra_info, asv's setup_cache): iterations and seconds to
    each eps of EPS_GRID (``None`` when not reached, keyed by :func:`eps_key`), and how the run ended."""
    return {"iters_to_eps": {eps_key(eps): trace.iters_to(eps) for eps in EPS_GRID},
            "time_to_eps": {eps_key(eps): trace.time_to(eps) for eps in EPS_GRID},
            "stop_reason": trace.stop_reason, "iterations": trace.iterations,
            "state_bytes": int(trace.state_bytes), "final_grad_norm": float(trace.grad_norms[-1])}


@functools.lru_cache(maxsize=None)
def convergence_run(dataset: str, method: str, device: str = "cpu", seed: int = SEED) -> dict:
    """:func:`trace_info` of one checked run of a convergence point; cached so every eps reads one run."""
    problem, m = convergence_case(dataset, method, device)
    trace = run_minimize(problem, m, seed)
    check_trace(problem, trace)
    return trace_info(trace)


def convergence_table(datasets, devices=DEVICES, seeds=SEEDS) -> dict:
    """{(dataset, method, device, seed): :func:`convergence_run`, or the reason it was skipped (a str)}."""
    out = {}
    for key in itertools.product(datasets, methods(), devices, seeds):
        try:
            out[key] = convergence_run(*key)
        except Skip as exc:
            out[key] = str(exc)
    return out


def result_or_skip(entry):
    """An entry of :func:`convergence_table`: the result, or :class:`Skip` with the recorded reason."""
    if isinstance(entry, str):
        raise Skip(entry)
    return entry


def or_nan(value) -> float:
    """asv's value for 'not reached': NaN (shown as n/a)."""
    return float("nan") if value is None else float(value)


# -- measurements shared by the pytest suite and step_cost.py -------------------------------------------
TARGET_SECONDS = 0.5   # timed rounds per pytest-benchmark case fill about this long
MIN_ROUNDS, MAX_ROUNDS = 3, 100


def rounds_for(seconds_per_call: float) -> int:
    """Rounds that fill about TARGET_SECONDS, clipped to [MIN_ROUNDS, MAX_ROUNDS]."""
    return int(min(MAX_ROUNDS, max(MIN_ROUNDS, TARGET_SECONDS / max(seconds_per_call, 1e-9))))


def median_seconds(fn, device: str = "cpu", repeat: int = 7, warmup: int = 1) -> float:
    """Median of ``repeat`` synchronized wall times of ``fn()`` after ``warmup`` untimed calls."""
    return statistics.median(timing.time_call(fn, device=device, repeat=repeat, warmup=warmup))


def solver_info(solver) -> dict:
    """Plain-data figures of a solver (pytest-benchmark's extra_info, the step-cost table)."""
    return {"label": solver.method.label, "n": solver.problem.n, "state_bytes": int(solver.state_bytes),
            "matrix_free": is_matrix_free(solver.method.name)}


def step_cost_row(method: str, n: int, device: str = "cpu", k: int | None = None, repeat: int = 7,
                  grad_seconds: float | None = None, family: str = "scalable", step: str | None = None) -> dict:
    """One row of the step-cost table: median seconds per step and per gradient, their ratio, the mean
    (amortized) step over the same timed steps (a step rule with retries has a bimodal step time, which
    the median hides), and the oracle calls per step (gradients, HVPs, ...), measured in this process
    after the reference check."""
    solver = make_solver(method, n, device, k, family=family, step=step)
    check_step(solver)
    counts0, iter0 = solver.counts, solver.iteration
    samples = timing.time_call(step_fn(solver, device), device=device, repeat=repeat, warmup=1)
    step_s = statistics.median(samples)
    steps = solver.iteration - iter0
    if grad_seconds is None:
        grad_seconds = median_seconds(oracle_fns(n, device, family=family)[0], device, repeat)
    return {"method": method, "step": solver.method.params["step"], "problem": family, "k": k, "device": device, **solver_info(solver),
            "step_s": step_s, "grad_s": grad_seconds, "step_per_grad": step_s / grad_seconds,
            "mean_step_s": statistics.fmean(samples), "mean_step_per_grad": statistics.fmean(samples) / grad_seconds,
            **{f"{key}_per_step": (val - counts0[key]) / steps for key, val in solver.counts.items()}}


def loglog_slope(ns, seconds) -> float:
    """Least-squares slope of log(seconds) against log(n)."""
    xs = [math.log(n) for n in ns]
    ys = [math.log(s) for s in seconds]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    if len(xs) < 2 or sxx == 0:
        raise ValueError(f"a slope needs at least two distinct n, got {list(ns)}")
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx
