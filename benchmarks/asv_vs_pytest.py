"""asv's median beside pytest-benchmark's for the same case: the cold gradient of the scalable problem, or
(``--optim``) one ``precond_core.optim`` step beside ``torch.optim.Adagrad`` (``bench_optim.OptimStep`` and
``test_optim_step.py::test_step``, gradients given, large CNN and a flat 10^7 parameter).

Runs ``asv run --python=same`` (into a temporary results folder, so the project's .asv/results is left
alone) and the pytest-benchmark file on the same cases in ``--rounds`` interleaved rounds (default 3): each
round runs both tools, asv first in even rounds and pytest-benchmark first in odd ones, each in a fresh
temporary folder (no round reads another's results). A round's ratio is asv's median over pytest-benchmark's
median of that round; per case it prints the median over rounds of each tool's median, the median of the
per-round ratios and their range, e.g. ``ratio 1.03 [0.91, 1.12] over 3 rounds``, and under the table
whether the tools agree within noise (every range contains 1.0) or disagree (every round's ratio above, or
every one below, 1). On a shared machine whose speed changes in bursts of seconds one round's ratio
can swing from 0.8 to 1.7; the range shows that spread. Not part of the test suite (a few minutes):

    python benchmarks/asv_vs_pytest.py [--n 1000 10000 100000] [--rounds 3] [--quick]
    python benchmarks/asv_vs_pytest.py --optim

``--quick`` runs asv with ``--quick`` (one sample per benchmark), the mode that misleads: compare its
ratio with the default one.
"""
from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import socket
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _strip_comments(text: str) -> str:
    return "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("//"))


def _env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
            "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}


def run_asv(bench: str, key, quick: bool, tmp: Path) -> dict:
    """{key(params): median} of the asv benchmark ``bench`` (``Class.method``); ``key`` maps one
    combination of its parameters to a case key, or None to drop it."""
    conf = json.loads(_strip_comments((ROOT / "asv.conf.json").read_text()))
    conf.update(results_dir=str(tmp / "asv-results"), html_dir=str(tmp / "asv-html"),
                benchmark_dir=str(ROOT / "benchmarks"), repo=str(ROOT))
    (tmp / "asv.conf.json").write_text(json.dumps(conf))
    machine = socket.gethostname()
    env = _env()
    subprocess.run(["asv", "machine", "--yes", "--machine", machine, "--config", str(tmp / "asv.conf.json")],
                   cwd=tmp, env=env, check=True, capture_output=True)
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    cmd = ["asv", "run", "--python=same", "--config", str(tmp / "asv.conf.json"), "--machine", machine,
           "--set-commit-hash", commit, "-b", bench.replace(".", r"\."), "--record-samples"]
    if quick:
        cmd.append("--quick")
    out = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"asv failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    medians: dict = {}
    for f in (tmp / "asv-results" / machine).glob("*.json"):
        if f.name == "machine.json":
            continue
        data = json.loads(f.read_text())
        cols = data.get("result_columns", [])
        for name, row in data.get("results", {}).items():
            if not name.endswith(bench):
                continue
            rec = dict(zip(cols, row))
            params = rec.get("params") or []
            combos = list(itertools.product(*params))
            for combo, val in zip(combos, rec.get("result") or []):
                k = key(tuple(c.strip("'\"") for c in combo))
                if k is not None and val is not None:
                    medians[k] = float(val)
    return medians


def run_pytest(path: str, kexpr: str, key, tmp: Path) -> dict:
    """{key(params dict): median} of the pytest-benchmark cases of ``path`` selected by ``-k kexpr``."""
    out_json = tmp / "pb.json"
    cmd = [sys.executable, "-m", "pytest", str(ROOT / path), "-q", "-p", "no:cacheprovider", "--benchmark-only",
           f"--benchmark-json={out_json}", "-k", kexpr]
    out = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"pytest-benchmark failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    medians = {}
    for b in json.loads(out_json.read_text())["benchmarks"]:
        k = key(b["params"])
        if k is not None:
            medians[k] = float(b["stats"]["median"])
    return medians


def _gradient_ids(ns: list[int]) -> str:
    return " or ".join(f"n1e{round(math.log10(n))}-cpu" if 10 ** round(math.log10(n)) == n else f"n{n}-cpu"
                       for n in ns)


def _gradient(ns: list[int], quick: bool):
    """(title, what, cases, asv runner, pytest runner) of the cold gradient at ``ns``; a runner takes the
    round's own temporary folder and returns {n: median}."""
    kexpr = f"test_gradient and ({_gradient_ids(ns)})"
    return ("cold gradient of scalable(n), cpu float64", "n", list(ns),
            lambda tmp: run_asv("OracleCost.time_gradient",
                                lambda c: int(c[0]) if c[1] == "cpu" and int(c[0]) in ns else None, quick, tmp),
            lambda tmp: run_pytest("benchmarks/test_step_cost.py", kexpr,
                                   lambda p: int(p["n"]) if p.get("device", "cpu") == "cpu" else None, tmp))


def _optim(quick: bool):
    """As ``_gradient``, for ``OptimStep.time_step`` / ``test_optim_step.py::test_step``."""
    sys.path.insert(0, str(ROOT))
    from benchmarks.bench_optim import OPTIMIZERS
    cases = [(o, c) for c in ("large_cnn", "flat_1e7") for o in OPTIMIZERS]
    return ("optimizer.step() with gradients given, cpu float32", "optimizer/case", cases,
            lambda tmp: run_asv("OptimStep.time_step", lambda c: (c[0], c[1]), quick, tmp),
            lambda tmp: run_pytest("benchmarks/test_optim_step.py", "test_step and not train",
                                   lambda p: (p["optimizer"], p["case"]), tmp))


def round_order(r: int) -> tuple[str, str]:
    """The tools in the order round ``r`` runs them: asv first in even rounds, pytest-benchmark first in odd."""
    return ("asv", "pytest") if r % 2 == 0 else ("pytest", "asv")


def _label(c) -> str:
    return "/".join(c) if isinstance(c, tuple) else str(c)


def _value(d: dict, c) -> float:
    """d[c] as a float, NaN when the case is missing or its median is not a positive finite number."""
    v = d.get(c)
    try:
        v = float(v)
    except (TypeError, ValueError):
        return math.nan
    return v if math.isfinite(v) and v > 0 else math.nan


def _median(xs: list[float]) -> float:
    xs = [x for x in xs if not math.isnan(x)]
    return statistics.median(xs) if xs else math.nan


def summarize(rounds: list[tuple[dict, dict]], cases) -> dict:
    """Per-case summary of ``rounds``, one ``(asv medians, pytest medians)`` pair of {case: seconds} per round.

    For each case: ``asv`` and ``pytest``, the median over rounds of that tool's median (rounds where the
    tool has the case); ``ratios``, the per-round asv / pytest (NaN where either tool lacks the case);
    ``ratio``, ``lo``, ``hi`` and ``rounds``, the median, min, max and count of the finite per-round ratios;
    ``verdict``: "agree" when [lo, hi] contains 1.0, "above" / "below" when every round's ratio is above /
    below 1, "one round" when a single ratio gives no spread to judge by, "none" when no round has both.
    The result is {"cases": {case: that dict}, "verdict": one line for all cases}."""
    per = {}
    for c in cases:
        xs = [_value(a, c) for a, _ in rounds]
        ys = [_value(p, c) for _, p in rounds]
        ratios = [x / y for x, y in zip(xs, ys)]
        ok = [r for r in ratios if not math.isnan(r)]
        lo, hi = (min(ok), max(ok)) if ok else (math.nan, math.nan)
        if not ok:
            verdict = "none"
        elif len(ok) == 1:
            verdict = "one round"
        elif lo <= 1.0 <= hi:
            verdict = "agree"
        else:
            verdict = "above" if lo > 1.0 else "below"
        per[c] = dict(asv=_median(xs), pytest=_median(ys), ratios=ratios, ratio=_median(ratios), lo=lo, hi=hi,
                      rounds=len(ok), verdict=verdict)
    groups = {v: [_label(c) for c in cases if per[c]["verdict"] == v]
              for v in ("agree", "above", "below", "one round", "none")}
    if groups["agree"] and len(groups["agree"]) == len(per):
        line = "tools agree within noise: every case's range of per-round ratios contains 1.0"
    elif groups["above"] or groups["below"]:
        parts = [f"{side} 1 for {', '.join(groups[side])}" for side in ("above", "below") if groups[side]]
        line = "tools disagree: every round's ratio is " + "; ".join(parts)
        if groups["agree"]:
            line += f" (agree within noise for {', '.join(groups['agree'])})"
    elif groups["agree"]:
        line = f"tools agree within noise for {', '.join(groups['agree'])}"
    else:
        line = "no verdict"
    if groups["one round"]:
        line += f"; one round only for {', '.join(groups['one round'])} (no spread: use --rounds 3 or more)"
    if groups["none"]:
        line += f"; no ratio for {', '.join(groups['none'])} (missing from every round)"
    return {"cases": per, "verdict": line}


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {v}")
    return v


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, nargs="+", default=[10**3, 10**4, 10**5])
    ap.add_argument("--optim", action="store_true", help="precond_core.optim steps instead of the gradient")
    ap.add_argument("--quick", action="store_true", help="asv --quick (one sample)")
    ap.add_argument("--rounds", type=_positive_int, default=3,
                    help="rounds of asv and pytest-benchmark, the first tool alternating (default 3)")
    a = ap.parse_args(argv)
    title, what, cases, asv_run, pb_run = _optim(a.quick) if a.optim else _gradient(a.n, a.quick)
    runners = {"asv": asv_run, "pytest": pb_run}
    rounds = []
    with tempfile.TemporaryDirectory() as d:
        for r in range(a.rounds):
            got = {}
            for tool in round_order(r):
                print(f"round {r + 1}/{a.rounds}: {tool}", file=sys.stderr, flush=True)
                tmp = Path(d) / f"round{r}-{tool}"  # fresh per round: no round reads another's results
                tmp.mkdir()
                got[tool] = runners[tool](tmp)
            rounds.append((got["asv"], got["pytest"]))
    s = summarize(rounds, cases)
    print(f"{title}, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '1')}{', asv --quick' if a.quick else ''}, "
          f"{a.rounds} round{'s' if a.rounds != 1 else ''} (first tool alternating)")
    width = max(len(what), *(len(_label(c)) for c in cases))
    print(f"{what:>{width}s} {'asv median':>12s} {'pytest-benchmark median':>24s}  asv / pytest: median [min, max]")
    for c in cases:
        e = s["cases"][c]
        print(f"{_label(c):>{width}s} {1e6 * e['asv']:10.1f}us {1e6 * e['pytest']:22.1f}us  "
              f"ratio {e['ratio']:.2f} [{e['lo']:.2f}, {e['hi']:.2f}] over {e['rounds']} round"
              f"{'s' if e['rounds'] != 1 else ''}")
    print(s["verdict"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
