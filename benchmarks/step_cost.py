"""Cost of a step as a multiple of a gradient, side by side in one process, and its growth with n.

    python benchmarks/step_cost.py --n 10000 1000000 --repeat 7
    python benchmarks/step_cost.py --n 10000 100000 1000000 --methods gd lbfgs uniform_direction
    python benchmarks/step_cost.py --threads 1 --methods adagrad lbfgs lbfgs@fixed uniform_direction@fixed
    python benchmarks/step_cost.py --threads 1 --n 1e4 --burst 1 --methods gd adagrad_bma

A method written ``name@step`` runs with that step rule in its own lane (several rules side by side);
``name:k`` with k blocks (a block method, e.g. ``adagrad_bma:512``); both combine (``name:k@step``).

For every method and n (the skip rules of ``cases.py`` apply: a method with a size limit runs only up
to it), the median and mean seconds per ``Solver.step()`` and the median seconds per gradient on the
same problem, timed round-robin (each round: a burst of steps of every method, as many gradients and
HVPs; below n = 10^5 a burst is 10^5 / n (2 to 16) timed steps after one settling step, so that every
lane is timed in a loop of its own, as a user runs it, rather than right after the other lanes' work;
from n = 10^5 on, and with ``--burst 1``, one of each: ``burst_for``), their
ratios, the median and quartiles of the per-round ratios (each step over the gradient of its own round:
``round_ratio``, the figure that drift of a shared machine's speed moves least), and the oracle calls
per step. Every lane is timed in its method's steady state: it first runs
``cases.steady_warm`` untimed steps (the preconditioner's memory + 1, at least 1; for L-BFGS a full
memory of pairs, so the figure is not an average over memory fill levels), both when it is created and
when a lane is restarted (it converged, or it diverged: a fixed step too long for its preconditioner is
restarted before its gradient norm grows 1000-fold, so no step is timed on inf/NaN; the row counts
``diverged`` restarts); then, for each matrix-free method measured at two or more n, the
least-squares slope of log(seconds per step) against log(n) (1 means linear growth). The table is
printed and written to ``results/step_cost-<time>.csv`` and ``.json`` (``--out`` to choose the stem).
"""
from __future__ import annotations

import argparse
import copy
import csv
import json
import math
import os
import platform
import statistics
from dataclasses import dataclass, field
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make ``benchmarks`` importable from the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

import precond_core as pc  # noqa: E402
from precond_core import timing  # noqa: E402
from benchmarks import cases  # noqa: E402


RESTART_BELOW = 1e-6   # a solver whose gradient norm fell below this fraction of its first is restarted
RESTART_ABOVE = 1e3    # ... and one whose gradient norm grew by this factor or stopped being finite (diverged)


@dataclass
class _Lane:
    """One method's solver in the round-robin, with its timed steps' oracle counts and restarts."""
    solver: object
    g0: float
    steps: int = 0
    restarts: int = 0
    diverged: int = 0
    counts: dict = field(default_factory=dict)

    def restart_reason(self) -> str | None:
        """"converged" or "diverged" when the lane must start again before its next timed step, else None.
        A diverging lane (e.g. a fixed step too long for its preconditioner) would otherwise be timed on
        inf/NaN arithmetic, whose speed is not a step's."""
        gn, f = float(self.solver.g.norm()), float(self.solver.f)
        if gn <= RESTART_BELOW * self.g0:
            return "converged"
        if not (math.isfinite(gn) and math.isfinite(f)) or gn > RESTART_ABOVE * self.g0:
            return "diverged"
        return None

    def add(self, before: dict, after: dict) -> None:
        self.steps += 1
        for key in after:
            self.counts[key] = self.counts.get(key, 0) + after[key] - before[key]


def own_problem(problem):
    """A shallow copy of ``problem`` (the data tensors are shared, read-only) with its own forward-pass
    cache, so one lane's cached forward pass is never evicted by, nor reused for, another lane."""
    fresh = copy.copy(problem)
    cache = getattr(problem, "_cache", None)
    if cache is not None:
        fresh._cache = type(cache)()
    return fresh


def parse_lane(spec: str) -> tuple[str, int | None, str | None]:
    """(method, k, step) of a lane written ``name[:k][@step]``; ``ValueError`` naming the lane when k is not
    a positive integer."""
    head, _, step = spec.partition("@")
    name, sep, k = head.partition(":")
    if sep:
        if not k.isdigit() or int(k) < 1:
            raise ValueError(f"lane {spec!r}: the block count after ':' must be a positive integer, got {k!r}")
        return name, int(k), step or None
    return name, None, step or None


def make_lane_solver(method, n, device, family="scalable", step=None, warm=None, k=None):
    """``cases.make_solver`` on a problem object of the method's own (:func:`own_problem`), after ``warm``
    untimed steps (default ``cases.steady_warm``: the method's memory + 1, at least 1)."""
    cases.require_device(device)
    cases.check_size(method, n, k)
    problem = own_problem(cases.PROBLEM_FAMILIES[family](n, device, cases.SEED))
    m = cases.make_method(method, k, step)
    cases.check_compatible(problem, m)
    try:
        solver = pc.Solver(problem, m, seed=cases.SEED)
    except ValueError as exc:
        raise cases.Skip(f"{m.label} cannot run on this problem: {exc}") from None
    for _ in range(cases.steady_warm(solver) if warm is None else warm):
        solver.step()
    return solver


BURST_BELOW = 10 ** 5   # from this n on, one step per lane and round (``burst_for``)


def burst_for(n: int) -> int:
    """Timed steps per lane per round at size n (the default, ``--burst auto``): 1 from ``BURST_BELOW`` on,
    else 10^5 / n clipped to [2, 16]. Below that size a step costs tens to hundreds of microseconds, much of it Python
    and dispatch work whose speed depends on what the CPU caches hold: right after another lane's work
    (its data and code) the same work runs up to about 1.8x slower than in a loop of its own (measured at
    n = 10^4 on a 2 MiB-L2 VM: a block-mean refresh 81 us in a loop, 146 us after a 3 MB sweep). A burst
    times steps of a lane's own loop, the way a user runs one method; its first, settling step is not
    timed. With one step per round (``--burst 1``) every lane, and the gradient, is timed in the colder
    state, and the gradient slows more than the steps do: at n = 10^4 the ratios read 20-30% lower
    than in bursts (measured on that VM for gd, adagrad, adagrad_bma, uniform_direction and lbfgs)."""
    return 1 if n >= BURST_BELOW else max(2, min(16, BURST_BELOW // n))


def measure(methods, ns, device: str, repeat: int, log=print, family: str = "scalable",
            step: str | None = None, burst: int | str = "auto") -> list[dict]:
    """Rows (one per method and n that runs here) from round-robin timing: every round times ``burst``
    steps of each method (default "auto": ``burst_for(n)``; a burst of b > 1 first runs one untimed
    settling step, and a sample is the mean of its b timed steps), then as many gradients and HVPs
    alike, so all figures of a size are measured side by side and a change of load on a shared machine
    moves them together. One untimed round first; medians and means
    over ``repeat`` rounds. The solvers advance from the seeded start (each answer is checked first) and
    one whose gradient norm fell by ``1 / RESTART_BELOW`` starts again (untimed), so every timed step is
    in the working regime, not past convergence where line-search rules pay several evaluations; so does
    one that diverged (gradient norm up by ``RESTART_ABOVE`` or not finite: ``_Lane.restart_reason``),
    counted in the row's ``diverged``, so no step is timed on inf/NaN. Every
    lane runs on its own problem object (:func:`own_problem`), so no lane evicts another's cached
    forward pass, and the gradient timing clears its own cache first."""
    if burst != "auto" and (isinstance(burst, bool) or not isinstance(burst, int) or burst < 1):
        raise ValueError(f"burst must be a positive integer or 'auto', got {burst!r}")
    rows = []
    for n in ns:
        b = burst_for(n) if burst == "auto" else burst
        grad_fn, hvp_fn = cases.oracle_fns(n, device, family=family)
        lanes, lane_steps = {}, {}
        for method in methods:
            name, k, own_step = parse_lane(method)   # "lbfgs@fixed": this lane's own step rule; "adagrad_bma:512"
            lane_steps[method] = (name, own_step or step, k)
            try:
                solver = make_lane_solver(name, n, device, family=family, step=own_step or step, k=k)
                cases.check_step(solver)
            except cases.Skip as exc:
                log(f"  {method:20s} skipped: {exc}")
                continue
            lane = _Lane(solver, float(solver.g.norm()))
            if lane.restart_reason() == "diverged":       # not finite at the end of its warm-up
                log(f"  {method:20s} skipped: not finite after its {cases.steady_warm(solver)} warm-up steps")
                continue
            lanes[method] = lane
        samples = {m: [] for m in [*lanes, "(gradient)", "(hvp)"]}
        for r in range(repeat + 1):
            for m, lane in lanes.items():
                timed, total, settle = 0, 0.0, b > 1
                while timed < b:
                    why = lane.restart_reason()
                    if why is not None:   # converged or diverged: restart (untimed), then settle again
                        lane.solver = make_lane_solver(lane_steps[m][0], n, device, family=family,
                                                       step=lane_steps[m][1], k=lane_steps[m][2])
                        lane.restarts += 1
                        lane.diverged += why == "diverged"
                        settle = b > 1
                    c0 = lane.solver.counts
                    t0 = timing.now(device)
                    lane.solver.step()
                    t1 = timing.now(device)
                    if settle:
                        settle = False
                        continue
                    timed += 1
                    if r:  # round 0 warms up
                        total += t1 - t0
                        lane.add(c0, lane.solver.counts)
                if r:
                    samples[m].append(total / b)
            for name, fn in (("(gradient)", grad_fn), ("(hvp)", hvp_fn)):
                if b > 1:
                    fn()                      # settling call
                t0 = timing.now(device)
                for _ in range(b):
                    fn()
                if r:
                    samples[name].append((timing.now(device) - t0) / b)
        grad_s, hvp_s = statistics.median(samples["(gradient)"]), statistics.median(samples["(hvp)"])
        log(f"n={n}: gradient {grad_s:.3e} s, hvp {hvp_s:.3e} s ({hvp_s / grad_s:.2f} gradients); "
            + (f"bursts of {b} timed steps per lane and round, after one settling step" if b > 1 else
               "one step per lane and round"))
        for method, lane in lanes.items():
            step_s, mean_s = statistics.median(samples[method]), statistics.fmean(samples[method])
            rr = round_ratios(samples[method], samples["(gradient)"])
            row = {"method": lane_steps[method][0], "lane": method, "k": lane_steps[method][2], "step": lane.solver.method.params["step"], "problem": family, "device": device,
                   **cases.solver_info(lane.solver), "step_s": step_s, "grad_s": grad_s, "hvp_s": hvp_s,
                   "step_per_grad": step_s / grad_s, "mean_step_s": mean_s, "mean_step_per_grad": mean_s / grad_s,
                   "round_ratio": rr[0], "round_ratio_q1": rr[1], "round_ratio_q3": rr[2], "burst": b,
                   "restarts": lane.restarts, "diverged": lane.diverged,
                   **{f"{key}_per_step": val / lane.steps for key, val in lane.counts.items()}}
            rows.append(row)
            log(f"  {method:20s} {step_s:.3e} s/step = {row['step_per_grad']:8.2f} gradients, "
                f"mean {row['mean_step_per_grad']:.2f}, per round {rr[0]:.2f} [{rr[1]:.2f}, {rr[2]:.2f}] "
                f"(per step: {row['grads_per_step']:.2f} grads, {row['losses_per_step']:.2f} losses, "
                f"{row['hvps_per_step']:.2f} hvps, {row['sample_grads_per_step']:.2f} sample grads)"
                + (f"; diverged {lane.diverged} time(s), restarted" if lane.diverged else ""))
    return rows


def round_ratios(steps: list[float], grads: list[float]) -> tuple[float, float, float]:
    """(median, first quartile, third quartile) of step_r / gradient_r over rounds r, each step divided by
    the gradient timed in its own round: a change of the machine's speed between rounds cancels in each
    ratio, where the ratio of the two medians (``step_per_grad``) keeps the gradient median's own noise."""
    if len(steps) != len(grads) or not steps:
        raise ValueError(f"need one gradient per timed step, got {len(steps)} steps and {len(grads)} gradients")
    r = [s / g for s, g in zip(steps, grads)]
    if len(r) == 1:
        return r[0], r[0], r[0]
    q1, med, q3 = statistics.quantiles(r, n=4, method="inclusive")
    return med, q1, q3


def slopes(rows) -> dict:
    """{method: slope of log(step seconds) against log(n)} for matrix-free methods with >= 2 sizes."""
    out = {}
    for method in sorted({r.get("lane", r["method"]) for r in rows}):
        pts = [(r["n"], r["step_s"]) for r in rows if r.get("lane", r["method"]) == method and r["matrix_free"]]
        if len({n for n, _ in pts}) >= 2:
            out[method] = cases.loglog_slope([n for n, _ in pts], [s for _, s in pts])
    return out


def table(rows, fitted: dict) -> str:
    """Markdown table: one line per method, step / gradient at each n, and the fitted slope."""
    ns = sorted({r["n"] for r in rows})
    by = {(r.get("lane", r["method"]), r["n"]): r for r in rows}
    head = ("| method | " + " | ".join(f"step / grad, n = {n:.0e} (median; mean; per round)" for n in ns)
            + " | slope (log t vs log n) |")
    lines = [head, "|" + "---|" * (len(ns) + 2)]
    for method in sorted({r.get("lane", r["method"]) for r in rows}):
        cells = [f"{by[method, n]['step_per_grad']:.2f}; {by[method, n]['mean_step_per_grad']:.2f}; "
                 f"{by[method, n]['round_ratio']:.2f}" if (method, n) in by else "-" for n in ns]
        slope = f"{fitted[method]:.2f}" if method in fitted else "-"
        lines.append(f"| {method} | " + " | ".join(cells) + f" | {slope} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=float, nargs="+", default=[1e4, 1e6], help="problem sizes (default 1e4 1e6)")
    ap.add_argument("--methods", nargs="+", default=None, help="registry names (default: all)")
    ap.add_argument("--repeat", type=int, default=7, help="timed calls per median (default 7)")
    ap.add_argument("--device", default="cpu", choices=cases.DEVICES)
    ap.add_argument("--out", default=None, help="output stem (default results/step_cost-<time>)")
    ap.add_argument("--problem", default="scalable", choices=sorted(cases.PROBLEM_FAMILIES),
                    help="scalable: sparse logistic regression with n features (default); square: n samples x "
                         "n features at 1%% density (n = 10^4: the library's step-cost targets)")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    ap.add_argument("--burst", default="auto",
                    help="timed steps per lane and round, after one settling step when more than 1 (default "
                         "'auto': 1 from n = 10^5, else 10^5 / n in [2, 16]: each lane timed in a loop of its "
                         "own; see burst_for)")
    ap.add_argument("--step", default=None, help="run every method with this step rule where it takes it "
                    "(e.g. regularized: one evaluation per step, isolating the preconditioner's cost)")
    args = ap.parse_args(argv)
    if args.threads is not None:
        if args.threads < 1:
            ap.error(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    ns = [int(n) for n in args.n]
    if any(n < 1 for n in ns):
        ap.error(f"--n must be positive integers, got {args.n}")
    if args.repeat < 1:
        ap.error(f"--repeat must be >= 1, got {args.repeat}")
    if args.burst != "auto":
        if not args.burst.isdigit() or int(args.burst) < 1:
            ap.error(f"--burst must be a positive integer or 'auto', got {args.burst!r}")
        args.burst = int(args.burst)
    methods = args.methods or list(cases.methods())
    try:
        lanes = [parse_lane(m) for m in methods]
    except ValueError as exc:
        ap.error(str(exc))
    unknown = sorted({name for name, _, _ in lanes} - set(cases.methods()))
    if unknown:
        ap.error(f"unknown method(s) {unknown}; registered: {', '.join(cases.methods())}")
    no_blocks = [m for m, (name, k, _) in zip(methods, lanes) if k is not None and not pc.method_info(name).blocks]
    if no_blocks:
        ap.error(f"lane(s) {no_blocks}: a block count ':k' needs a block method")
    try:
        cases.require_device(args.device)
    except cases.Skip as exc:
        ap.error(str(exc))

    t0 = time.perf_counter()
    rows = measure(methods, ns, args.device, args.repeat, family=args.problem, step=args.step, burst=args.burst)
    fitted = slopes(rows)
    print()
    print(table(rows, fitted))
    stem = Path(args.out) if args.out else Path("results") / time.strftime("step_cost-%Y%m%d-%H%M%S")
    stem.parent.mkdir(parents=True, exist_ok=True)
    with open(stem.with_suffix(".csv"), "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]) if rows else ["method"])
        writer.writeheader()
        writer.writerows(rows)
    meta = {"command": " ".join([os.path.basename(sys.argv[0])] + (argv if argv is not None else sys.argv[1:])),
            "device": args.device, "device_name": pc.timing.device_name(args.device),
            "torch": torch.__version__, "precond_core": pc.__version__, "python": platform.python_version(),
            "threads": torch.get_num_threads(), "repeat": args.repeat, "burst": args.burst, "problem": args.problem, "step": args.step, "seconds": time.perf_counter() - t0}
    with open(stem.with_suffix(".json"), "w") as fh:
        json.dump({"meta": meta, "rows": rows, "slopes": fitted}, fh, indent=1)
    print(f"\nwrote {stem.with_suffix('.csv')} and {stem.with_suffix('.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
