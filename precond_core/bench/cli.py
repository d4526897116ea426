"""``precond-bench`` / ``python -m precond_core.bench``: run, report, list and compare benchmark results.

User errors (unknown suite, method or parameter, a store that cannot be read, no results; for compare:
no cell in common, stores from different machines without --allow-different-machines) print their
message on stderr (a grid file: every problem found, one per line) and exit with status 2; a sweep with
failed cells exits 1, and so does compare with --fail-on-regression when a cell is flagged; Ctrl-C exits
130 after the finished cells are stored.
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from .grid import GridError
from .store import StoreError

EXIT_OK, EXIT_FAIL, EXIT_USAGE, EXIT_INTERRUPT = 0, 1, 2, 130
COMPARE_METRICS = ("median_step_s", "time_to_eps", "iters_to_eps", "state_bytes")


class UserError(Exception):
    """Reported as one line on stderr with exit status 2."""


def default_store() -> Path:
    """``results/store/`` at the project root (the repository holding this package), else in the current
    directory (``results/`` also receives other outputs, e.g. the step-cost tables)."""
    root = Path(__file__).resolve().parents[2]
    return (root if (root / "pyproject.toml").is_file() else Path.cwd()) / "results" / "store"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="precond-bench", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("run", help="run a suite (quick, paper, scaling, full) or a grid TOML file",
                       description="Runs a grid's problem cells, then its [[train]] tables (networks trained "
                                   "with the DeepOBS learning-rate rule), into one store; cells and training runs "
                                   "already stored for this commit are skipped.")
    r.add_argument("grid", metavar="SUITE_OR_TOML")
    _run_options(r)
    kind = r.add_mutually_exclusive_group()
    kind.add_argument("--only-train", action="store_true", help="run the grid's [[train]] tables only")
    kind.add_argument("--no-train", action="store_true", help="skip the grid's [[train]] tables")

    rep = sub.add_parser("report", help="build the HTML report from a store")
    rep.add_argument("--store", type=Path, default=None)
    rep.add_argument("--out", type=Path, default=Path("reports/latest/index.html"))

    ls = sub.add_parser("list", help="list methods, problems, datasets or suites")
    ls.add_argument("what", choices=("methods", "problems", "datasets", "suites"))

    tr = sub.add_parser("train", help="train networks: the [[train]] tables of a training suite or grid "
                                      "(`run SUITE --only-train`)",
                        description="Runs every [[train]] table of a training suite (suites/train/*.toml), or of "
                                    "any grid (e.g. paper): the learning-rate grid at the first seed, the best by "
                                    "final training loss, then the other seeds; each run stored as one file under "
                                    "<store>/train/ (a run stored for this commit is skipped, so an interrupted "
                                    "suite resumes). The same as `precond-bench run SUITE --only-train`.")
    tr.add_argument("suite", help="a TOML file, a bundled training suite (" + ", ".join(
        sorted(p.stem for p in (Path(__file__).resolve().parent.parent / "suites" / "train").glob("*.toml")))
        + ") or a bundled grid with [[train]] tables (paper)")
    _run_options(tr)

    st = sub.add_parser("store", help="check a results store for unreadable or orphaned parts, or repair it")
    st.add_argument("action", choices=("check", "repair"),
                    help="check: list bad parts (exit 1 when any); repair: move them to quarantine/ in the store")
    st.add_argument("--store", type=Path, default=None)

    c = sub.add_parser("compare", help="noise-aware ratios B/A per matching cell between two commits or stores",
                       description="Ratios B/A per cell (seeds pooled) with bootstrap intervals; a regression is "
                                   "flagged only when the whole interval lies above --threshold, iteration counts "
                                   "on CPU are compared exactly. Exit status: 0 done (also with flagged cells "
                                   "unless --fail-on-regression), 1 flagged cells with --fail-on-regression, "
                                   "2 bad input (no common cell, different machines without "
                                   "--allow-different-machines, unreadable store).")
    c.add_argument("a", metavar="A", help="git commit (hash prefix or revision such as HEAD~1) in --store, "
                                          "or a store directory")
    c.add_argument("b", metavar="B", help="git commit (hash prefix or revision) in --store, or a store directory")
    c.add_argument("--store", type=Path, default=None)
    c.add_argument("--threshold", type=float, default=1.1,
                   help="flag a regression when the whole interval of B/A lies above this (default 1.1)")
    c.add_argument("--fail-on-regression", action="store_true", help="exit 1 when a cell is flagged")
    c.add_argument("--allow-different-machines", action="store_true",
                   help="compare runs made on different machines (refused by default: times are not comparable)")
    c.add_argument("--seed", type=int, default=0, help="seed of the bootstrap (default 0)")
    return p


def _run_options(r) -> None:
    r.add_argument("--store", type=Path, default=None, help="results store directory (default: results/store/)")
    r.add_argument("--yes", action="store_true", help="run even when more than --max-cells cells")
    r.add_argument("--max-cells", type=int, default=2000, help="refuse larger sweeps without --yes (default 2000)")
    r.add_argument("--executor", choices=("local", "dask"), default="local")
    r.add_argument("--scheduler", default=None, help="Dask scheduler address (tcp://host:8786) or 'local'")
    r.add_argument("--rerun", action="store_true", help="run cells already stored for this commit again")
    r.add_argument("--no-progress", action="store_true", help="no progress bar")
    r.add_argument("--dry-run", action="store_true", help="validate and print the plan, run nothing")
    r.add_argument("--full", action="store_true",
                   help="[[train]] tables at their --full settings ([train_full], each table's full = {...}): "
                        "the talk's scale")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return {"run": cmd_run, "report": cmd_report, "list": cmd_list, "compare": cmd_compare,
                "store": cmd_store, "train": cmd_train}[args.command](args)
    except (UserError, GridError, StoreError) as exc:
        print(f"precond-bench {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"precond-bench {args.command}: interrupted; finished cells are stored, run again to resume",
              file=sys.stderr)
        return EXIT_INTERRUPT


# -- run ------------------------------------------------------------------------------------------------
def cmd_run(args) -> int:
    from .executors import make_executor
    from .grid import load_plan
    from .runner import SweepError, git_info, plan_sweep, plan_training, run_sweep
    from .store import Store
    from .train import first_cells, summary_lines

    if args.max_cells < 0:
        raise UserError(f"--max-cells must be >= 0, got {args.max_cells}")
    store_dir = args.store or default_store()
    which = "only" if getattr(args, "only_train", False) else "no" if getattr(args, "no_train", False) else "also"
    source = args.grid if args.command == "run" else _train_source(args.suite)
    # validates everything (all problems at once, problems and [[train]] tables) before anything runs
    plan = load_plan(source, full=args.full)
    if which == "only":
        plan.cells = []
        if not plan.train:
            raise UserError(f"{source}: no [[train]] tables to run")
    elif which == "no":
        plan.train = []
    if args.dry_run:
        import socket

        store = Store(store_dir)
        store.validate()  # what a real run checks first (read only)
        commit, _ = git_info()
        sp = plan_sweep(plan.suite, plan.cells, store, git_commit=commit, machine=socket.gethostname(),
                        rerun=args.rerun)
        for c in sp.todo:
            print(f"{c.run_id}  {c.short()}")
        for t in plan.train:
            first = first_cells(t["base"], t["lrs"], t["seeds"])
            params = t["base"].get("params") or {}
            print(f"train {t['name']}: {first[0]['model']} on {first[0]['data']}, {t['base']['optimizer']}"
                  f"{' ' + str(params) if params else ''}, lrs {t['lrs']} at seed {t['seeds'][0]}, then seeds "
                  f"{t['seeds'][1:]} at the best; epochs {t['base'].get('epochs', 1)}, subset "
                  f"{t['base'].get('subset') or 'all'}")
        t_todo, t_done = plan_training(plan.train, store.path, git_commit=commit, machine=socket.gethostname(),
                                       rerun=args.rerun)
        print(f"{len(sp.cells)} cells, {len(sp.done)} stored, {len(sp.no_device)} without device, "
              f"{len(sp.todo)} to run" + (f"; training: {len(plan.train)} table(s), {t_done} run(s) stored, "
                                          f"{t_todo} to run" if plan.train else ""), file=sys.stderr)
        return EXIT_OK
    try:
        executor = make_executor(args.executor, args.scheduler)
    except (ValueError, RuntimeError) as exc:
        raise UserError(str(exc)) from None
    try:
        summary = run_sweep(plan, store_dir, executor=executor, rerun=args.rerun,
                            max_cells=args.max_cells, yes=args.yes, progress=not args.no_progress)
    except SweepError as exc:
        raise UserError(str(exc)) from None
    finally:
        executor.close()
    for line in summary_lines(summary.train_results):
        print(line)
    if summary.failed:
        print(f"precond-bench {args.command}: {len(summary.failed)} cell(s) failed (not stored; run again to "
              "retry):", file=sys.stderr)
        for rid, err in summary.failed[:20]:
            print(f"  {rid}: {err}", file=sys.stderr)
        return EXIT_FAIL
    return EXIT_OK


# -- train ----------------------------------------------------------------------------------------------
def _train_source(name: str):
    from . import train

    return train.resolve_suite(name)


def cmd_train(args) -> int:
    """``precond-bench train SUITE``: ``run SUITE --only-train`` (a training suite's name is looked up in
    suites/train/ first)."""
    args.only_train, args.no_train = True, False
    return cmd_run(args)


# -- report ---------------------------------------------------------------------------------------------
def cmd_report(args) -> int:
    from .store import Store

    store_dir = args.store or default_store()
    store = Store(store_dir)
    if not store.path.is_dir():
        raise UserError(f"no results: store {store.path} does not exist; run `precond-bench run quick` first")
    from .train import training_files
    if store.read_runs().empty and not training_files(store.path):  # also checks every part
        raise UserError(f"no results in store {store.path}; run `precond-bench run quick --store {store.path}` first")
    from . import report

    try:
        out = report.build_report(store.path, args.out)
    except report.ReportError as exc:
        raise UserError(str(exc)) from None
    print(f"report written to {out or args.out}")
    return EXIT_OK


# -- list -----------------------------------------------------------------------------------------------
def cmd_list(args) -> int:
    rows: list[tuple[str, str]] = []
    if args.what == "methods":
        import precond_core as pc

        for name in pc.list_methods():
            info = pc.method_info(name)
            flags = []
            if getattr(info, "blocks", False):
                flags.append("blocks k")
            if getattr(info, "dense", False):
                flags.append(f"dense, n <= {getattr(info, 'max_n', '?')}")
            if getattr(info, "needs", ()):
                flags.append("needs " + ",".join(info.needs))
            allp = info.all_params() if hasattr(info, "all_params") else (getattr(info, "params", {}) or {})
            params = ", ".join(f"{a}={v!r}" for a, v in {"step": info.step, **allp}.items())
            steps = "steps " + "|".join(getattr(info, "steps", ()) or ())
            rows.append((name, f"{getattr(info, 'summary', '')}  [{'; '.join(flags + [steps])}]  ({params})"))
    elif args.what == "problems":
        from precond_core import problems

        for name in problems.list_problems():
            info = problems.problem_info(name)
            rows.append((name, _describe(info)))
    elif args.what == "datasets":
        from .grid import list_dataset_names

        names = list_dataset_names()
        if names is None:
            raise UserError("this precond_core has no dataset registry")
        try:
            from precond_core.datasets.registry import registry as _registry

            reg = _registry()
        except Exception:
            reg = {}
        from .grid import dataset_availability, fetch_command

        avail = dataset_availability()
        for name in names:
            e = reg.get(name)
            desc = f"{e.task}, {e.n_samples} x {e.n_features}, {e.license}" if e else ""
            a = avail.get(name)
            if a is not None and a:
                where = a.where or ""
                size = _size_text(where)
                desc += f"  [on disk: {where}{', ' + size if size else ''}]"
            elif a is not None:
                kind = getattr(e, "kind", "") if e else ""
                fetch = f"; fetch: {fetch_command(name)}" if kind == "download" else ""
                desc += f"  [not on disk{fetch}]"
            rows.append((name, desc))
    else:
        from .grid import list_suites

        rows = list(list_suites().items())
    width = max((len(r[0]) for r in rows), default=0)
    for name, desc in rows:
        print(f"{name:<{width}}  {desc}".rstrip())
    return EXIT_OK


def _size_text(where: str) -> str:
    p = Path(where) if where else None
    try:
        if p is None or not p.exists():
            return ""
        size = p.stat().st_size if p.is_file() else sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
    except OSError:
        return ""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return ""


# -- store ----------------------------------------------------------------------------------------------
def cmd_store(args) -> int:
    from .store import Store

    store = Store(args.store or default_store())
    if not store.path.is_dir():
        raise UserError(f"store {store.path} does not exist")
    if args.action == "check":
        bad = store.check_parts()
        for p, why in bad:
            print(f"{p}: {why}")
        print(f"{len(bad)} bad part(s) in {store.path}" + ("; `precond-bench store repair` moves them to "
                                                          "quarantine/" if bad else ""), file=sys.stderr)
        return EXIT_FAIL if bad else EXIT_OK
    qdir, moved = store.repair()
    for p, why in moved:
        print(f"{p}: {why}")
    print(f"moved {len(moved)} part(s) to {qdir}; the next run redoes those cells" if moved
          else f"nothing to repair in {store.path}", file=sys.stderr)
    return EXIT_OK


def _describe(info) -> str:
    if isinstance(info, str):
        return info
    if isinstance(info, dict):
        summ, params = info.get("summary", ""), info.get("params", {})
    else:
        summ, params = getattr(info, "summary", ""), getattr(info, "params", {})
    ptxt = ", ".join(f"{a}={v!r}" for a, v in params.items()) if isinstance(params, dict) else ", ".join(params or ())
    return f"{summ}  ({ptxt})" if ptxt else str(summ)


# -- compare --------------------------------------------------------------------------------------------
def _git_rev(spec: str) -> str | None:
    """The full hash of a git revision (``HEAD~1``, a branch, a tag) in the current repository, or None."""
    import subprocess

    try:
        out = subprocess.run(["git", "rev-parse", "--verify", "--quiet", f"{spec}^{{commit}}"],
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def _load_side(spec: str, store_dir: Path | None):
    """(label, runs, iters) of one side: a store directory, or a commit in ``store_dir``."""
    from .store import Store, latest_runs

    if not spec.strip():
        raise UserError("A and B must be git commits (prefixes) or store directories, got an empty string")
    p = Path(spec)
    if p.is_dir():
        store = Store(p)
        if not (store.exists() or store.runs_dir.is_dir()):
            raise UserError(f"{p} is a directory but not a results store (no store.json)")
        runs = latest_runs(store.read_runs())
        if runs.empty:
            raise UserError(f"no results in store {p}")
        return str(p), runs, _side_iters(store, runs)
    store = Store(store_dir or default_store())
    if not store.path.is_dir():
        raise UserError(f"{spec!r} is not a store directory, and store {store.path} does not exist")
    runs = latest_runs(store.read_runs())
    commits = sorted(set(runs["git_commit"])) if len(runs) else []
    match = [c for c in commits if c.startswith(spec)] or [c for c in commits if c == _git_rev(spec)]
    if not match:
        raise UserError(f"{spec!r} is neither a store directory nor a commit in {store.path} "
                        f"(stored commits: {[c[:10] for c in commits]})")
    if len(match) > 1:
        raise UserError(f"commit prefix {spec!r} is ambiguous in {store.path}: {[c[:10] for c in match]}")
    runs = runs[runs["git_commit"] == match[0]]
    return match[0][:10], runs, _side_iters(store, runs)


def _side_iters(store, runs):
    """The iterations of ``runs`` (same run_id and commit; of repeated executions the newest, stored last)."""
    iters = store.read_iters()
    if iters.empty:
        return iters
    if "git_commit" in iters:
        iters = iters[iters["git_commit"].isin(set(runs["git_commit"]))]
    iters = iters[iters["run_id"].isin(set(runs["run_id"]))]
    return iters.drop_duplicates(["run_id", "iter"], keep="last")


def compare_tables(runs_a, runs_b, threshold: float = 1.1, iters_a=None, iters_b=None, seed: int = 0):
    """The per-cell comparison table of :func:`precond_core.bench.compare.compare_runs`."""
    from .compare import compare_runs

    return compare_runs(runs_a, iters_a, runs_b, iters_b, threshold=threshold, seed=seed).table


def _fmt_ci(r, lo, hi, status) -> str:
    if not math.isfinite(r):
        return status or "-"
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return f"{r:.3g} ({status})"
    mark = {"regression": " !", "improvement": " +"}.get(status, "")
    return f"{r:.3g} [{lo:.3g}, {hi:.3g}]{mark}"


def cmd_compare(args) -> int:
    import pandas as pd

    from .compare import INSUFFICIENT, MIN_RUNS_EPS, compare_runs, format_noise

    if not (math.isfinite(args.threshold) and args.threshold > 1):
        raise UserError(f"--threshold must be a ratio > 1, got {args.threshold}")
    la, ra, ia = _load_side(args.a, args.store)
    lb, rb, ib = _load_side(args.b, args.store)
    ma, mb = sorted(set(map(str, ra["machine"]))), sorted(set(map(str, rb["machine"])))
    if ma != mb and not args.allow_different_machines:
        raise UserError(f"A ({la}) was measured on {ma}, B ({lb}) on {mb}: times from different machines are "
                        "not comparable; pass --allow-different-machines to compare anyway")
    cmp = compare_runs(ra, ia, rb, ib, threshold=args.threshold, seed=args.seed)
    table = cmp.table
    if table.empty:
        raise UserError(f"no cell is present in both {la} and {lb} (cells are matched by their grid key "
                        "without the seed: problem, parameters, method, n, k, device, dtype, eps, max_iters)")
    print(f"compare B/A: A = {la} (machine {', '.join(ma)}), B = {lb} (machine {', '.join(mb)})"
          + ("  ** DIFFERENT MACHINES: times are not comparable **" if ma != mb else ""))
    print(f"ratio of medians B/A [{int(0.95 * 100)}% bootstrap interval, seed {args.seed}]; regression (!) only "
          f"when the whole interval lies above {args.threshold:g}; iterations to eps compared exactly on CPU")
    print(format_noise(cmp.noise))
    show = pd.DataFrame({
        "problem": [f"{p}{'/' + d if isinstance(d, str) and d else ''}" for p, d in zip(table["problem"], table["dataset"])],
        "method": table["method_label"], "n": table["n"], "k": table["k"].astype(object).where(table["k"].notna(), "-"),
        "eps": table["eps"].map(lambda v: f"{v:g}"), "runs A/B": table["runs"],
        "step time": [_fmt_ci(*v) for v in zip(table["step_ratio"], table["step_lo"], table["step_hi"], table["step"])],
        "time to eps": [_fmt_ci(*v) for v in zip(table["tte_ratio"], table["tte_lo"], table["tte_hi"],
                                                 table["time_to_eps"])],
        "iters to eps": table["iters_to_eps"],
        "state": table["state_ratio"].map(lambda v: f"{v:.3g}" if math.isfinite(v) else "-"),
        "regression": table["regression"]})
    with pd.option_context("display.max_rows", None, "display.width", 250, "display.max_columns", None,
                           "display.max_colwidth", 60):
        print(show.to_string(index=False))
    one_run = int((table["time_to_eps"] == INSUFFICIENT).sum())
    if one_run:
        print(f"{one_run} cell(s) have fewer than {MIN_RUNS_EPS} runs with eps reached on a side: their time to "
              f"eps says \"{INSUFFICIENT}\" and is never flagged (run more seeds to compare it)")
    n_reg = cmp.n_flagged
    print(f"{len(table)} matching cells, {n_reg} flagged")
    return EXIT_FAIL if (n_reg and args.fail_on_regression) else EXIT_OK


__all__ = ["main", "build_parser", "compare_tables", "default_store", "UserError"]
