"""Run a grid of cells with ``precond_core.minimize`` and append the results to a :class:`Store`.

``run_cell(cell)`` is a pure function of the cell (it builds the problem and the method, measures the
cost of one gradient, runs ``minimize`` and returns two small tables); the executors call it in-process
or on Dask workers. ``run_sweep`` plans (validation, device availability, resume), then writes each
result to the store as it arrives, so an interrupted sweep loses at most the cells in flight.

A grid's ``[[train]]`` tables (``bench/train.py``) run after its problem cells, through the same executor,
progress bar and resume rule (a training run stored for this commit and machine is not run again, unless
``rerun``): first every learning rate at the first seed, then, once a table's rate is chosen (lowest final
training loss, diverged runs excluded), its other seeds. Each run is one JSON file under ``<store>/train/``;
a run whose loss became NaN/inf is stored with status ``diverged`` and the sweep goes on.
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
    #: training: runs stored now, runs found stored, per-table results (``train.summary_lines``' input)
    trained: list[str] = dataclasses.field(default_factory=list)
    train_already: int = 0
    train_diverged: int = 0
    train_results: list[dict] = dataclasses.field(default_factory=list)

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


def plan_training(tables: list[dict], store_dir, *, git_commit: str, machine: str | None,
                  rerun: bool = False) -> tuple[int, int]:
    """``(to run, already stored)``: training runs of ``tables`` as far as known before training (the
    other seeds of a table count as to run until its learning rate is chosen from stored first-seed runs)."""
    from . import train as T

    todo = done = 0
    git = (git_commit, False)
    for t in tables:
        first = T.first_cells(t["base"], t["lrs"], t["seeds"])
        got = [None if rerun else T.stored_result(c, store_dir, git, machine) for c in first]
        done += sum(g is not None for g in got)
        todo += sum(g is None for g in got)
        if any(g is None for g in got):
            todo += len(t["seeds"]) - 1
            continue
        rest = T.rest_cells(t["base"], T.pick_lr(got), t["seeds"])
        n = sum(rerun or T.stored_result(c, store_dir, git, machine) is None for c in rest)
        todo, done = todo + n, done + len(rest) - n
    return todo, done


def run_training(tables: list[dict], store_dir, summary: SweepSummary, *, executor, git: tuple[str, bool],
                 machine: str | None, rerun: bool, bar=None, say: Callable[[str], None] = print) -> None:
    """The DeepOBS protocol over every table, each stage's runs mapped over ``executor``; results go into
    ``summary`` (``trained``, ``train_already``, ``train_diverged``, ``train_results``) and the store."""
    import functools

    from . import train as T

    def stage(cells: list[dict]) -> list[dict | None]:
        """Results of ``cells`` in order (stored ones read back; ``None`` for a failed run)."""
        out: dict[int, dict | None] = {}
        todo = []
        for i, c in enumerate(cells):
            old = None if rerun else T.stored_result(c, store_dir, git, machine)
            if old is not None:
                out[i] = old
                summary.train_already += 1
            else:
                todo.append((i, c))
        if not todo:
            return [out[i] for i in range(len(cells))]
        index = {T.cell_key(c): i for i, c in todo}
        label = {T.cell_key(c): _train_short(c) for _, c in todo}
        from .executors import LocalExecutor

        local = isinstance(executor, LocalExecutor)

        current = [""]

        def started(c):
            current[0] = label[T.cell_key(c)]
            if bar is not None:
                bar.set_postfix_str(current[0], refresh=True)

        def epoch(msg):  # per-epoch progress of an in-process run, on the bar: "... epoch 3/5: loss 0.71, ..."
            if bar is not None and " epoch " in msg:
                bar.set_postfix_str(f"{current[0]} epoch {msg.split(' epoch ', 1)[1]}", refresh=True)

        fn = functools.partial(T.train_cell_safe, progress=epoch) if local else T.train_cell_safe
        for res in executor.map(fn, [T.TrainCell(c) for _, c in todo], on_start=started):
            if isinstance(res, CellResult):  # the Dask executor's answer for a task that raised
                res = {"cell": res.cell, "error": res.error}
            cell, key = dict(res["cell"]), T.cell_key(res["cell"])
            if "error" in res:
                summary.failed.append((key, res["error"]))
                say(f"FAILED {label[key]}: {res['error']}")
                out[index[key]] = None
            else:
                T.store_result(store_dir, cell, res["result"], git, machine)
                out[index[key]] = T.stored_result(cell, store_dir)
                summary.trained.append(key)
                if res["result"]["run"]["status"] == "diverged":
                    summary.train_diverged += 1
            if bar is not None:
                bar.update(1)
        return [out.get(i) for i in range(len(cells))]

    firsts = [stage(T.first_cells(t["base"], t["lrs"], t["seeds"])) for t in tables]
    best = [T.pick_lr(f) for f in firsts]
    skipped_rest = sum(len(t["seeds"]) - 1 for t, b in zip(tables, best) if b is None)
    if bar is not None and skipped_rest:  # every lr of a table diverged: no other seeds to run
        bar.total = max(bar.n, bar.total - skipped_rest)
        bar.refresh()
    rests = [stage(T.rest_cells(t["base"], b, t["seeds"])) for t, b in zip(tables, best)]
    for t, f, b, r in zip(tables, firsts, best, rests):
        summary.train_results.append({"name": t["name"], "best_lr": b, "runs": f + r})


def _train_short(cell: dict) -> str:
    p = ",".join(f"{a}={v}" for a, v in sorted((cell.get("params") or {}).items()))
    return f"{cell['model']}/{cell['data']} {cell['optimizer']}{f'({p})' if p else ''} lr={cell['lr']} s{cell['seed']}"


def run_sweep(source, store_dir, *, executor=None, rerun: bool = False, max_cells: int = 2000,
              yes: bool = False, progress: bool = True, log: Callable[[str], None] | None = None,
              git: tuple[str, bool] | None = None, full: bool = False, train: str = "also") -> SweepSummary:
    """Run the grid ``source`` (suite name or TOML path, ``(suite, cells)``, or a :class:`~.grid.Plan`) into
    the store ``store_dir``.

    Cells already stored for the same git commit (and the same machine, for in-process execution) are
    skipped unless ``rerun``. More than ``max_cells`` cells to run raise :class:`SweepError` unless ``yes``.
    ``train``: ``"also"`` (the [[train]] tables after the problem cells), ``"only"`` or ``"no"``; ``full``
    applies the tables' --full settings (when ``source`` is read here).
    """
    from .executors import LocalExecutor
    from .grid import Plan, load_plan

    if train not in ("also", "only", "no"):
        raise ValueError(f"train must be 'also', 'only' or 'no', got {train!r}")
    log = log or _stderr
    executor = executor or LocalExecutor()
    plan_ = source if isinstance(source, Plan) else load_plan(source, full=full) \
        if not isinstance(source, tuple) else Plan(source[0], source[1], [])
    suite, cells, tables = plan_.suite, plan_.cells, plan_.train
    if train == "only":
        cells = []
    elif train == "no":
        tables = []
    store = Store(store_dir)
    store.validate()  # a damaged or foreign part stops the sweep before anything runs
    commit, dirty = git or git_info()
    machine = socket.gethostname() if getattr(executor, "same_machine", True) else None
    plan = plan_sweep(suite, cells, store, git_commit=commit, machine=machine, rerun=rerun)
    for c, why in plan.no_device:
        log(f"skip (device): {c.short()}: {why}")
    tables, no_dev = _tables_with_device(tables)
    for t, why in no_dev:
        log(f"skip (device): [[train]] {t['name']}: {why}")
    t_todo, t_done = plan_training(tables, store.path, git_commit=commit, machine=machine, rerun=rerun)
    if len(plan.todo) + t_todo > max_cells and not yes:
        raise SweepError(f"suite {suite!r} would run {len(plan.todo) + t_todo} cells, more than "
                         f"--max-cells={max_cells}; pass --yes to run them anyway, or raise --max-cells")
    trains = f"; training: {t_todo} run(s) to run, {t_done} stored" if tables or no_dev else ""
    log(f"suite {suite!r}: {len(plan.cells)} cells, {len(plan.done)} already stored for commit {commit[:10]}"
        f"{' (dirty)' if dirty else ''}, {len(plan.no_device)} without device, {len(plan.todo)} to run{trains} "
        f"-> store {store.path}")
    summary = SweepSummary(suite, already=len(plan.done))
    if not plan.todo and not tables:
        return summary
    store.init()
    t0 = time.perf_counter()
    bar = _progress(len(plan.todo) + t_todo, suite, progress) if plan.todo or t_todo else None
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
        if tables:
            run_training(tables, store.path, summary, executor=executor, git=(commit, dirty), machine=machine,
                         rerun=rerun, bar=bar, say=say)
    finally:
        if bar is not None:
            bar.close()
        summary.seconds = time.perf_counter() - t0
    for why, count in reasons.items():
        log(f"skipped {count} cell(s): {why}")
    trains = (f"; training: stored {len(summary.trained)} run(s) (diverged {summary.train_diverged}), "
              f"{summary.train_already} already stored" if tables else "")
    log(f"suite {suite!r}: stored {len(summary.stored)} (converged {summary.stop_reasons.get('converged', 0)}, "
        f"max_iters {summary.stop_reasons.get('max_iters', 0)}, diverged {summary.diverged}, timed out "
        f"{summary.timed_out}), skipped {len(summary.skipped)}, failed {len(summary.failed)}{trains} in "
        f"{summary.seconds:.1f} s")
    return summary


def _tables_with_device(tables: list[dict]) -> tuple[list[dict], list[tuple[dict, str]]]:
    ok, missing = [], []
    for t in tables:
        why = device_available(str(t["base"].get("device", "cpu")))
        (missing.append((t, why)) if why else ok.append(t))
    return ok, missing


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


__all__ = ["Cell", "CellResult", "run_cell", "run_cell_safe", "run_sweep", "plan_sweep", "plan_training",
           "run_training", "SweepPlan",
           "SweepSummary", "SweepError", "git_info", "machine_info", "check_applicable", "device_available"]
