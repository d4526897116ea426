"""Run a grid of cells with ``precond_core.minimize`` and append the results to a :class:`Store`.

``run_cell(cell)`` is a pure function of the cell (it builds the problem and the method, measures the
cost of one gradient, runs ``minimize`` and returns two small tables); the executors call it in-process
or on Dask workers. ``run_sweep`` plans (validation, device availability, resume), then writes each
result to the store as it arrives, so an interrupted sweep loses at most the cells in flight.
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import math
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from .grid import Cell
from .store import Store

PROJECT_ROOT = Path(__file__).resolve().parents[2]


@dataclasses.dataclass
class CellResult:
    """What one cell returns: ``runs`` (one-row DataFrame) and ``iters``, or ``skipped`` / ``error`` text."""

    cell: Cell
    runs: pd.DataFrame | None = None
    iters: pd.DataFrame | None = None
    skipped: str | None = None
    error: str | None = None


class SweepError(RuntimeError):
    """A sweep that cannot start (too many cells without confirmation, bad store, ...)."""


# -- environment ---------------------------------------------------------------------------------------
def git_info(root: str | os.PathLike | None = None) -> tuple[str, bool]:
    """``(commit sha, dirty)`` of the repository at ``root`` (``("unknown", True)`` outside git)."""
    root = str(root or PROJECT_ROOT)
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                             timeout=10).stdout.strip()
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                                capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "unknown", True
    if not sha or len(sha) < 7:
        return "unknown", True
    return sha, bool(status.stdout.strip()) or status.returncode != 0


def machine_info(device: str = "cpu") -> dict:
    """Host name, CPU and GPU model, torch and precond_core versions of the process that runs a cell."""
    import torch

    from precond_core import timing

    gpu = ""
    if torch.cuda.is_available():
        try:
            gpu = torch.cuda.get_device_name(torch.device(device) if device.startswith("cuda") else 0)
        except Exception:  # pragma: no cover - odd driver states
            gpu = "cuda"
    return {"machine": socket.gethostname(), "cpu": timing.device_name("cpu"), "gpu": gpu,
            "torch_version": torch.__version__, "precond_version": precond_version()}


def precond_version() -> str:
    try:
        import precond_core

        v = getattr(precond_core, "__version__", None)
        if v:
            return str(v)
    except ImportError:  # pragma: no cover
        pass
    try:
        from importlib.metadata import version

        return version("precond_core")
    except Exception:
        return "unknown"


# -- one cell ------------------------------------------------------------------------------------------
def _np(seq) -> np.ndarray:
    import torch

    if isinstance(seq, torch.Tensor):
        return seq.detach().cpu().double().numpy()
    return np.asarray([float(v) for v in seq], dtype=np.float64)


def _theory_bound(problem, method, eps: float, x0, f0: float, g0_norm: float) -> float:
    """The talk's K for the regularized step (``theory.bound_for_run``) when its constants are known, else NaN."""
    if getattr(method, "params", {}).get("step") != "regularized":
        return math.nan
    try:
        from precond_core import theory

        k = theory.bound_for_run(problem, method, x0, eps, f0, g0_norm)
    except (ImportError, AttributeError, ValueError, NotImplementedError, ArithmeticError, TypeError):
        return math.nan
    return math.nan if k is None else float(k)


def check_applicable(cell: Cell, problem, method=None) -> str | None:
    """Reason why the method cannot run on this problem (``None`` when it can): a dense method above its
    ``max_n``, a capability the problem lacks, or more blocks than coordinates."""
    import precond_core as pc

    method = method or pc.make_method(cell.method, **cell.method_params)
    try:
        from precond_core.solver import check_compatible
    except ImportError:  # pragma: no cover - older library
        check_compatible = None
    if check_compatible is not None:
        try:
            check_compatible(problem, method)
        except ValueError as exc:
            return str(exc)
    else:  # pragma: no cover
        info = pc.method_info(cell.method)
        if info.max_n is not None and problem.n > info.max_n:
            return f"{cell.method} is limited to n <= {info.max_n}; n={problem.n}"
    k = cell.method_params.get("k")
    if k is not None and k > problem.n:
        return f"k={k} blocks > n={problem.n}"
    return None


def _needs_constants(method) -> bool:
    """Whether the method's step rule reads a problem constant (lr = 1/L, M of the regularized step); the
    others never compute them (an estimate of L is a power iteration over the data)."""
    rule = getattr(method, "step_rule", None)
    return any(hasattr(rule, a) and getattr(rule, a) is None for a in ("lr", "M"))


def gradient_seconds(problem, x0, device, repeat: int = 11, warmup: int = 3) -> float:
    """Median synchronized time of ``problem.grad(x0)`` with the problem's forward cache cleared before each
    call (so every call pays a full gradient), after ``warmup`` calls."""
    from precond_core import timing

    def cold_gradient():
        problem.clear_cache()
        return problem.grad(x0)

    return statistics.median(timing.time_call(cold_gradient, device=device, repeat=repeat, warmup=warmup))


def run_cell(cell: Cell) -> CellResult:
    """Build, measure and run one cell; return its runs row and iters rows (no git columns yet).

    Measured besides ``minimize``: ``grad_s``, the median of 11 synchronized timings of ``problem.grad(x0)``
    (after 3 warm-up calls), so that a step costs ``step_cost_grads = median_step_s / grad_s`` gradients, and
    ``setup_s``: the method's set-up, timed by ``minimize`` before its iteration clock starts (so
    ``time_to_eps`` excludes it; ``time_to_eps + setup_s`` includes it); ``constants_s``: the problem's
    constants (L, M, f*), computed once before anything is timed; ``peak_mem_bytes``: the CUDA
    caching allocator's peak during the cell on a GPU, the peak resident set
    size of the whole process so far on CPU (a process-wide high-water mark, not a per-cell figure).
    """
    import torch

    import precond_core as pc
    from precond_core import timing
    from precond_core.problems import make_problem

    t_start = time.perf_counter()
    dtype = getattr(torch, cell.dtype)
    pparams = dict(cell.problem_params)
    pseed = pparams.pop("seed", cell.seed)
    problem = make_problem(cell.problem, dtype=dtype, device=cell.device, seed=pseed, **pparams)
    method = pc.make_method(cell.method, **cell.method_params)
    why = check_applicable(cell, problem, method)
    if why:
        return CellResult(cell, skipped=why)

    old_threads = torch.get_num_threads()
    if cell.threads is not None:
        torch.set_num_threads(cell.threads)
    try:
        threads = torch.get_num_threads()
        x0 = problem.x0()
        t_const = time.perf_counter()
        if _needs_constants(method):  # L, M, f* once per problem, cached with it, outside every timed figure
            problem.constants()
        constants_s = time.perf_counter() - t_const
        grad_s = gradient_seconds(problem, x0, cell.device)
        if cell.device.startswith("cuda"):
            timing.cuda_reset_peak(cell.device)
        trace = pc.minimize(problem, method, eps=cell.eps, max_iters=cell.max_iters,
                            max_seconds=cell.max_seconds, seed=cell.seed)
    finally:
        if cell.threads is not None:
            torch.set_num_threads(old_threads)
    peak = timing.peak_memory_bytes(cell.device)
    wall = time.perf_counter() - t_start

    losses, gnorms, times = _np(trace.losses), _np(trace.grad_norms), _np(trace.times)
    n_iter = len(losses)
    counts = {c: _np(getattr(trace, c)).astype(np.int64)
              for c in ("n_grads", "n_hvps", "n_solves", "n_losses", "n_sample_grads")}
    summary = trace.summary()
    median_step = summary["median_step_s"]
    label = getattr(method, "label", cell.method)
    k = getattr(method, "params", {}).get("k", cell.k) if getattr(pc.method_info(cell.method), "blocks", False) \
        else cell.k
    n = int(problem.n)
    ident = {"problem": cell.problem, "method": cell.method, "method_label": label, "n": n,
             "k": None if k is None else int(k), "device": cell.device, "dtype": cell.dtype, "seed": cell.seed}
    resolved = {a: v for a, v in getattr(method, "params", {}).items()}
    from precond_core.problems.registry import provenance
    if getattr(getattr(method, "step_rule", None), "sigma_source", None):   # regularized step: where sigma came from
        resolved["sigma_source"] = method.step_rule.sigma_source
    runs = {
        **provenance(cell.problem, cell.problem_params),
        "run_id": cell.run_id, "cell_key": cell.cell_key,
        "problem": cell.problem, "problem_params": json.dumps(cell.problem_params, sort_keys=True),
        "dataset": cell.dataset, "method": cell.method,
        "method_params": json.dumps(cell.method_params, sort_keys=True),
        "method_params_resolved": json.dumps(resolved, sort_keys=True, default=str),
        "method_label": label, "n": n, "k": ident["k"], "n_samples": int(getattr(problem, "n_samples", 0) or 0),
        "device": cell.device, "dtype": cell.dtype, "seed": cell.seed, "eps": cell.eps,
        "max_iters": cell.max_iters, "threads": threads,
        "max_seconds": math.nan if cell.max_seconds is None else float(cell.max_seconds),
        "stop_reason": str(trace.stop_reason), "iterations": int(trace.iterations),
        "iters_to_eps": float(summary["iters_to_eps"]), "time_to_eps": float(summary["time_to_eps"]),
        "final_grad_norm": float(gnorms[-1]), "final_loss": float(losses[-1]),
        "min_grad_norm": float(np.nanmin(gnorms)) if np.isfinite(gnorms).any() else math.nan,
        "median_step_s": median_step, "grad_s": float(grad_s),
        "step_cost_grads": median_step / grad_s if grad_s > 0 else math.nan,
        "state_bytes": int(trace.state_bytes or 0), "peak_mem_bytes": int(peak),
        "peak_mem_kind": "cuda_allocator" if cell.device.startswith("cuda") else "process_peak_rss",
        "wall_s": wall, "theory_bound": _theory_bound(problem, method, cell.eps, x0, float(losses[0]), float(gnorms[0])), "f0": float(losses[0]),
        "n_grads": int(counts["n_grads"][-1]), "n_hvps": int(counts["n_hvps"][-1]),
        "n_solves": int(counts["n_solves"][-1]), "n_losses": int(counts["n_losses"][-1]),
        "n_sample_grads": int(counts["n_sample_grads"][-1]),
        "setup_s": float(getattr(trace, "setup_s", 0.0)), "constants_s": float(constants_s),
        **{f"{c[2:]}_per_step": (float(counts[c][-1] - counts[c][0]) / (n_iter - 1) if n_iter > 1 else math.nan)
           for c in ("n_grads", "n_hvps", "n_losses", "n_sample_grads")},  # oracle calls per step, x0 and set-up off
        **machine_info(cell.device),
        "timestamp": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="microseconds"),
        "suite": cell.suite,
    }
    iters = pd.DataFrame({"run_id": cell.run_id, "iter": np.arange(n_iter, dtype=np.int64), "loss": losses,
                          "grad_norm": gnorms, "time_s": times, **counts,
                          **{c: [v] * n_iter for c, v in ident.items()}})
    return CellResult(cell, runs=pd.DataFrame([runs]), iters=iters)


def run_cell_safe(cell: Cell) -> CellResult:
    """``run_cell`` with library errors turned into ``CellResult.error`` (KeyboardInterrupt passes)."""
    try:
        return run_cell(cell)
    except Exception as exc:  # a failing cell must not stop the sweep; it is reported and not stored
        return CellResult(cell, error=f"{type(exc).__name__}: {exc}")


# -- the sweep ----------------------------------------------------------------------------------------
@dataclasses.dataclass
class SweepPlan:
    suite: str
    cells: list[Cell]          # every cell of the grid
    todo: list[Cell]           # those to run now
    done: list[Cell]           # already stored for this commit (and machine)
    no_device: list[tuple[Cell, str]]


@dataclasses.dataclass
class SweepSummary:
    suite: str
    stored: list[str] = dataclasses.field(default_factory=list)
    already: int = 0
    skipped: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    failed: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    seconds: float = 0.0
    stop_reasons: dict = dataclasses.field(default_factory=dict)  # stored cells per stop reason

    @property
    def diverged(self) -> int:
        return self.stop_reasons.get("diverged", 0)

    @property
    def timed_out(self) -> int:
        return self.stop_reasons.get("timeout", 0)


def device_available(device: str) -> str | None:
    import torch

    kind = device.split(":")[0]
    if kind == "cpu":
        return None
    if kind == "cuda":
        if not torch.cuda.is_available():
            return "CUDA is not available on this machine"
        idx = int(device.split(":")[1]) if ":" in device else 0
        if idx >= torch.cuda.device_count():
            return f"{device} absent ({torch.cuda.device_count()} CUDA device(s))"
        return None
    if kind == "mps":
        mps = getattr(torch.backends, "mps", None)
        return None if mps is not None and mps.is_available() else "MPS is not available on this machine"
    return f"unknown device {device!r}"


def plan_sweep(suite: str, cells: list[Cell], store: Store, *, git_commit: str, machine: str | None,
               rerun: bool = False, check_devices: bool = True) -> SweepPlan:
    no_device = []
    runnable = []
    for c in cells:
        why = device_available(c.device) if check_devices else None
        (no_device.append((c, why)) if why else runnable.append(c))
    done_ids = set() if rerun else store.done_ids(git_commit=git_commit, machine=machine)
    todo = [c for c in runnable if c.run_id not in done_ids]
    done = [c for c in runnable if c.run_id in done_ids]
    return SweepPlan(suite, cells, todo, done, no_device)


def run_sweep(source, store_dir, *, executor=None, rerun: bool = False, max_cells: int = 2000,
              yes: bool = False, progress: bool = True, log: Callable[[str], None] | None = None,
              git: tuple[str, bool] | None = None) -> SweepSummary:
    """Run the grid ``source`` (suite name or TOML path, or ``(suite, cells)``) into the store ``store_dir``.

    Cells already stored for the same git commit (and the same machine, for in-process execution) are
    skipped unless ``rerun``. More than ``max_cells`` cells to run raise :class:`SweepError` unless ``yes``.
    """
    from .executors import LocalExecutor
    from .grid import load_grid

    log = log or _stderr
    executor = executor or LocalExecutor()
    suite, cells = load_grid(source) if not isinstance(source, tuple) else source
    store = Store(store_dir)
    store.validate()  # a damaged or foreign part stops the sweep before anything runs
    commit, dirty = git or git_info()
    machine = socket.gethostname() if getattr(executor, "same_machine", True) else None
    plan = plan_sweep(suite, cells, store, git_commit=commit, machine=machine, rerun=rerun)
    for c, why in plan.no_device:
        log(f"skip (device): {c.short()}: {why}")
    if len(plan.todo) > max_cells and not yes:
        raise SweepError(f"suite {suite!r} would run {len(plan.todo)} cells, more than --max-cells={max_cells}; "
                         "pass --yes to run them anyway, or raise --max-cells")
    log(f"suite {suite!r}: {len(plan.cells)} cells, {len(plan.done)} already stored for commit {commit[:10]}"
        f"{' (dirty)' if dirty else ''}, {len(plan.no_device)} without device, {len(plan.todo)} to run "
        f"-> store {store.path}")
    summary = SweepSummary(suite, already=len(plan.done))
    if not plan.todo:
        return summary
    store.init()
    t0 = time.perf_counter()
    bar = _progress(len(plan.todo), suite, progress)
    say = (lambda m: bar.write(m, file=sys.stderr)) if bar is not None else log
    reasons: dict[str, int] = {}
    try:
        def started(cell: Cell) -> None:
            if bar is not None:
                bar.set_postfix_str(_short(cell), refresh=True)

        for res in executor.map(run_cell_safe, seed_major(plan.todo), on_start=started):
            cell = res.cell
            if res.error:
                summary.failed.append((cell.run_id, res.error))
                say(f"FAILED {cell.short()}: {res.error}")
            elif res.skipped:
                summary.skipped.append((cell.run_id, res.skipped))
                if res.skipped not in reasons:  # each reason once; the counts come at the end
                    say(f"skip: {res.skipped} ({cell.short()})")
                reasons[res.skipped] = reasons.get(res.skipped, 0) + 1
            else:
                runs = res.runs.assign(git_commit=commit, git_dirty=dirty)
                iters = res.iters.assign(git_commit=commit)
                store.write(runs, iters)
                summary.stored.append(cell.run_id)
                why = str(runs["stop_reason"].iloc[0])
                summary.stop_reasons[why] = summary.stop_reasons.get(why, 0) + 1
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
        summary.seconds = time.perf_counter() - t0
    for why, count in reasons.items():
        log(f"skipped {count} cell(s): {why}")
    log(f"suite {suite!r}: stored {len(summary.stored)} (converged {summary.stop_reasons.get('converged', 0)}, "
        f"max_iters {summary.stop_reasons.get('max_iters', 0)}, diverged {summary.diverged}, timed out "
        f"{summary.timed_out}), skipped {len(summary.skipped)}, failed {len(summary.failed)} in "
        f"{summary.seconds:.1f} s")
    return summary


def seed_major(cells: list[Cell]) -> list[Cell]:
    """The cells ordered by seed (stable otherwise): the seeds of one cell, the samples ``compare`` pools,
    are run apart in time, so a burst of load from other processes slows one sample, not all of them."""
    seeds = {s: i for i, s in enumerate(dict.fromkeys(c.seed for c in cells))}
    return sorted(cells, key=lambda c: seeds[c.seed])


def _short(cell: Cell) -> str:
    extra = ",".join(f"{a}={v}" for a, v in sorted(cell.method_params.items()))
    prob = cell.dataset or cell.problem
    n = f" n={cell.n}" if cell.n is not None else ""
    return f"{prob}{n} {cell.method}({extra}) s{cell.seed}"


def _progress(total: int, desc: str, enabled: bool):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="cell", file=sys.stderr, dynamic_ncols=True, mininterval=0.5)


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


__all__ = ["Cell", "CellResult", "run_cell", "run_cell_safe", "run_sweep", "plan_sweep", "SweepPlan",
           "SweepSummary", "SweepError", "git_info", "machine_info", "check_applicable", "device_available"]
