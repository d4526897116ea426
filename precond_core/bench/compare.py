"""Noise-aware comparison of two sets of stored runs (``precond-bench compare``, the report's history).

A *cell* here is a grid cell without its seed: the seeds (and repeated executions) of a cell are the
samples of its distribution. Per cell and metric:

- ``step_s``: the per-iteration step times (differences of the iters table's ``time_s``) of every run of
  the cell. The ratio B/A of the medians gets a percentile bootstrap interval that resamples runs and,
  within each drawn run, its iterations (so run-to-run drift widens the interval), widened to a Welch t
  interval on the runs' median step times where that is wider, with 3 or more runs a side (with few runs
  the bootstrap understates the drift between runs that a shared machine's bursts of load cause); at least
  ``MIN_RUNS_STEP`` runs per side with ``MIN_STEPS`` step times each, else "insufficient data".
- ``time_to_eps`` (iteration clock, set-up excluded) and ``state_bytes``: one value per run; ratio of
  medians with a bootstrap over runs, at least ``MIN_RUNS_EPS`` runs per side.
- ``iters_to_eps``: on CPU with fixed seeds an iteration count is deterministic, so it is compared exactly,
  seed by seed; any change is flagged (runs that stopped on their time limit excepted). On other devices
  it is treated like a time.

A regression is flagged only when the whole interval lies above ``threshold`` (an improvement when it
lies below ``1 / threshold``). Pure pandas / numpy; the seeded bootstrap makes the output reproducible.
"""
from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

MIN_STEPS = 5       # step times a run needs to count as a sample of its step time
MIN_RUNS_STEP = 2   # runs per side for an interval on the step time
MIN_RUNS_EPS = 3    # runs per side for an interval on a per-run figure (time to eps)
MIN_RUNS_WELCH = 3  # runs per side from which the step-time interval is widened by a t interval on run medians
N_BOOT = 2000
LEVEL = 0.95
INSUFFICIENT = "insufficient data"

IDENT = ["problem", "dataset", "method_label", "n", "k", "dtype", "device", "eps"]


def group_key(cell_key: str) -> str:
    """The cell key without its seed (seeds are samples of one distribution)."""
    try:
        d = json.loads(cell_key)
    except (TypeError, ValueError):
        return str(cell_key)
    if isinstance(d, dict):
        d.pop("seed", None)
    return json.dumps(d, sort_keys=True, separators=(",", ":"), default=str)


def step_times(iters: pd.DataFrame) -> dict[str, np.ndarray]:
    """run_id -> its per-iteration step times (seconds), from the cumulative ``time_s`` of the iters table."""
    out: dict[str, np.ndarray] = {}
    if iters is None or iters.empty:
        return out
    for rid, g in iters.sort_values(["run_id", "iter"], kind="stable").groupby("run_id", sort=False):
        t = g["time_s"].to_numpy(dtype=np.float64)
        d = np.diff(t)
        out[str(rid)] = d[np.isfinite(d)]
    return out


def _median_boot(samples: list[np.ndarray], reps: int, rng: np.random.Generator) -> np.ndarray:
    """``reps`` bootstrap medians of the pooled samples: runs drawn with replacement, then, within each
    drawn run, as many of its values as the longest run has (each run weighs the same)."""
    R = len(samples)
    m = max(len(s) for s in samples)
    pad = np.full((R, m), np.nan)
    lens = np.array([len(s) for s in samples])
    for i, s in enumerate(samples):
        pad[i, :len(s)] = s
    runs = rng.integers(0, R, size=(reps, R))
    idx = np.floor(rng.random((reps, R, m)) * lens[runs][..., None]).astype(np.int64)
    vals = pad[runs[..., None], idx]
    return np.median(vals.reshape(reps, -1), axis=1)


def _t_quantile(p: float, df: float) -> float:
    """Student's t quantile (Cornish-Fisher expansion around the normal quantile): within 3.5% of the exact
    value for df >= 2 (3% narrow at df = 2, exact to 1e-3 from df = 5); Welch's df with ``MIN_RUNS_WELCH``
    = 3 runs a side is at least 2."""
    z = statistics.NormalDist().inv_cdf(p)
    return (z + (z ** 3 + z) / (4 * df) + (5 * z ** 5 + 16 * z ** 3 + 3 * z) / (96 * df ** 2)
            + (3 * z ** 7 + 19 * z ** 5 + 17 * z ** 3 - 15 * z) / (384 * df ** 3))


def welch_log_interval(a: list[np.ndarray], b: list[np.ndarray], level: float = LEVEL) -> tuple[float, float]:
    """Interval on the ratio B/A from the runs' own medians (one value per run): Welch's t interval on the
    difference of the mean log run medians, exponentiated. With a few runs per side it reflects run-to-run
    drift (a shared machine's bursts of load move whole runs) that the bootstrap of so few runs
    understates. (nan, nan) with fewer than ``MIN_RUNS_WELCH`` runs a side (a t interval from two values per
    side has a t quantile near 4 to 13 and would flag nothing but huge changes; such comparisons keep the
    bootstrap's interval and should be read as indicative)."""
    la = np.log([np.median(x) for x in a if len(x)])
    lb = np.log([np.median(x) for x in b if len(x)])
    if la.size < MIN_RUNS_WELCH or lb.size < MIN_RUNS_WELCH or not (np.isfinite(la).all() and np.isfinite(lb).all()):
        return math.nan, math.nan
    va, vb = la.var(ddof=1) / la.size, lb.var(ddof=1) / lb.size
    se = math.sqrt(va + vb)
    d = float(lb.mean() - la.mean())
    if se == 0:
        return math.exp(d), math.exp(d)
    df = se ** 4 / (va ** 2 / (la.size - 1) + vb ** 2 / (lb.size - 1))
    h = _t_quantile(1 - (1 - level) / 2, max(df, 2.0)) * se
    return math.exp(d - h), math.exp(d + h)


def ratio_ci(a: list[np.ndarray], b: list[np.ndarray], *, reps: int = N_BOOT, level: float = LEVEL,
             seed: int = 0) -> tuple[float, float, float]:
    """(ratio of pooled medians B/A, interval low, interval high): the union of the run-then-sample
    bootstrap interval and the Welch interval on the runs' medians (``welch_log_interval``), so that
    neither the spread within runs nor the drift between them is understated."""
    rng = np.random.default_rng(seed)
    ma, mb = float(np.median(np.concatenate(a))), float(np.median(np.concatenate(b)))
    if not (ma > 0 and math.isfinite(ma) and math.isfinite(mb)):
        return math.nan, math.nan, math.nan
    ba, bb = _median_boot(a, reps, rng), _median_boot(b, reps, rng)
    with np.errstate(divide="ignore", invalid="ignore"):
        r = bb / ba
    r = r[np.isfinite(r)]
    if r.size == 0:
        return mb / ma, math.nan, math.nan
    q = (1 - level) / 2
    lo, hi = np.quantile(r, [q, 1 - q])
    wlo, whi = welch_log_interval(a, b, level)
    if math.isfinite(wlo) and math.isfinite(whi):
        lo, hi = min(lo, wlo), max(hi, whi)
    return mb / ma, float(lo), float(hi)


@dataclass
class Verdict:
    ratio: float = math.nan
    lo: float = math.nan
    hi: float = math.nan
    status: str = ""        # "regression", "improvement", "same", "insufficient data", "n/a"
    note: str = ""


def judge(ratio: float, lo: float, hi: float, threshold: float) -> str:
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return INSUFFICIENT
    if lo > threshold:
        return "regression"
    if hi < 1.0 / threshold:
        return "improvement"
    return "same"


@dataclass
class Comparison:
    table: pd.DataFrame                       # one row per common cell
    noise: dict = field(default_factory=dict)
    machines_a: list = field(default_factory=list)
    machines_b: list = field(default_factory=list)
    threshold: float = 1.1

    @property
    def n_flagged(self) -> int:
        return int((self.table["regression"] != "").sum()) if len(self.table) else 0


def _run_values(runs: pd.DataFrame, col: str) -> np.ndarray:
    if col not in runs:
        return np.array([])
    v = pd.to_numeric(runs[col], errors="coerce").to_numpy(dtype=np.float64)
    return v


def _per_run_verdict(va: np.ndarray, vb: np.ndarray, threshold: float, seed: int) -> Verdict:
    fa, fb = va[np.isfinite(va)], vb[np.isfinite(vb)]
    if len(fa) == 0 or len(fb) == 0:
        return Verdict(status="n/a", note="not reached" if len(fa) or len(fb) else "")
    ratio = float(np.median(fb) / np.median(fa)) if np.median(fa) > 0 else math.nan
    if len(fa) < MIN_RUNS_EPS or len(fb) < MIN_RUNS_EPS:
        return Verdict(ratio, status=INSUFFICIENT, note=f"{len(fa)} vs {len(fb)} runs")
    r, lo, hi = ratio_ci([np.array([v]) for v in fa], [np.array([v]) for v in fb], seed=seed)
    return Verdict(r, lo, hi, judge(r, lo, hi, threshold))


def _exact_iters(ra: pd.DataFrame, rb: pd.DataFrame) -> tuple[str, str]:
    """Seed-by-seed comparison of iterations to eps: ("" or "changed", detail)."""
    def by_seed(runs):
        out = {}
        for _, r in runs.sort_values("timestamp", kind="stable").iterrows():
            out[int(r["seed"])] = (float(r["iters_to_eps"]), str(r["stop_reason"]))
        return out

    sa, sb = by_seed(ra), by_seed(rb)
    changed = []
    for s in sorted(set(sa) & set(sb)):
        (ia, why_a), (ib, why_b) = sa[s], sb[s]
        if "timeout" in (why_a, why_b):
            continue
        same = (math.isnan(ia) and math.isnan(ib)) or ia == ib
        if not same:
            fmt = lambda v: "not reached" if math.isnan(v) else str(int(v))  # noqa: E731
            changed.append(f"seed {s}: {fmt(ia)} -> {fmt(ib)}")
    return ("changed" if changed else ""), "; ".join(changed)


def compare_runs(runs_a: pd.DataFrame, iters_a: pd.DataFrame, runs_b: pd.DataFrame, iters_b: pd.DataFrame,
                 threshold: float = 1.1, seed: int = 0) -> Comparison:
    """Compare every cell present on both sides (cells matched by ``cell_key`` without the seed)."""
    if not threshold > 1.0:
        raise ValueError(f"threshold must be > 1 (a ratio B/A), got {threshold!r}")
    ra, rb = runs_a.copy(), runs_b.copy()
    ra["_group"] = ra["cell_key"].map(group_key)
    rb["_group"] = rb["cell_key"].map(group_key)
    st_a, st_b = step_times(iters_a), step_times(iters_b)
    common = sorted(set(ra["_group"]) & set(rb["_group"]))
    rows, spreads, point_ratios, widths = [], [], [], []
    for gi, gk in enumerate(common):
        ga, gb = ra[ra["_group"] == gk], rb[rb["_group"] == gk]
        first = ga.iloc[0]
        row = {c: first.get(c) for c in IDENT}
        row["runs"] = f"{len(ga)}/{len(gb)}"
        flags = []
        # step time
        sa = [st_a[r] for r in ga["run_id"] if r in st_a and len(st_a[r]) >= MIN_STEPS]
        sb = [st_b[r] for r in gb["run_id"] if r in st_b and len(st_b[r]) >= MIN_STEPS]
        for side in (sa, sb):
            if len(side) >= 2:
                meds = np.array([np.median(s) for s in side])
                if np.median(meds) > 0:
                    spreads.append(float(np.median(np.abs(meds / np.median(meds) - 1))))
        if sa and sb:
            if len(sa) >= MIN_RUNS_STEP and len(sb) >= MIN_RUNS_STEP:
                r, lo, hi = ratio_ci(sa, sb, seed=seed + gi)
                v = Verdict(r, lo, hi, judge(r, lo, hi, threshold))
                if math.isfinite(r):
                    point_ratios.append(r)
                if math.isfinite(lo) and math.isfinite(hi):
                    widths.append(hi / lo)
            else:
                r = float(np.median(np.concatenate(sb)) / np.median(np.concatenate(sa)))
                v = Verdict(r, status=INSUFFICIENT, note=f"{len(sa)} vs {len(sb)} runs")
        else:
            v = Verdict(status=INSUFFICIENT, note=f"fewer than {MIN_STEPS} step times")
        row.update(step_ratio=v.ratio, step_lo=v.lo, step_hi=v.hi, step=v.status)
        if v.status == "regression":
            flags.append("step time")
        # time to eps (iteration clock)
        v = _per_run_verdict(_run_values(ga, "time_to_eps"), _run_values(gb, "time_to_eps"), threshold, seed + gi)
        row.update(tte_ratio=v.ratio, tte_lo=v.lo, tte_hi=v.hi, time_to_eps=v.status or v.note)
        if v.status == "regression":
            flags.append("time to eps")
        # iterations to eps
        if str(first.get("device", "cpu")).startswith("cpu"):
            status, detail = _exact_iters(ga, gb)
            row["iters_to_eps"] = detail or "same"
            if status:
                flags.append("iterations")
        else:
            v = _per_run_verdict(_run_values(ga, "iters_to_eps"), _run_values(gb, "iters_to_eps"), threshold,
                                 seed + gi)
            row["iters_to_eps"] = v.status
            if v.status == "regression":
                flags.append("iterations")
        # state bytes (deterministic)
        ba, bb = np.median(_run_values(ga, "state_bytes")), np.median(_run_values(gb, "state_bytes"))
        row["state_ratio"] = float(bb / ba) if ba > 0 else (1.0 if ba == bb else math.nan)
        if ba > 0 and bb / ba > threshold:
            flags.append("state bytes")
        row["regression"] = ", ".join(flags)
        row["group_key"] = gk
        rows.append(row)
    cols = IDENT + ["runs", "step_ratio", "step_lo", "step_hi", "step", "tte_ratio", "tte_lo", "tte_hi",
                    "time_to_eps", "iters_to_eps", "state_ratio", "regression", "group_key"]
    table = pd.DataFrame(rows, columns=cols)
    noise = noise_summary(point_ratios, widths, spreads)
    return Comparison(table, noise, sorted(set(map(str, runs_a.get("machine", [])))),
                      sorted(set(map(str, runs_b.get("machine", [])))), threshold)


def noise_summary(point_ratios, widths, spreads) -> dict:
    """The measured noise: spread of the step-time ratios B/A over cells, median interval width, and the
    spread between repeated runs of one cell within one side."""
    out = {"cells_with_interval": len(widths)}
    if point_ratios:
        q1, med, q3 = np.quantile(point_ratios, [0.25, 0.5, 0.75])
        out.update(ratio_median=float(med), ratio_q1=float(q1), ratio_q3=float(q3))
    if widths:
        out["ci_halfwidth"] = float(np.median(np.sqrt(widths)) - 1)   # +-x in ratio terms (geometric)
    if spreads:
        out["run_spread"] = float(np.median(spreads))
    return out


def format_noise(noise: dict) -> str:
    if "ratio_median" not in noise and "run_spread" not in noise:
        return "noise level: not measurable (no cell has repeated runs with step times on both sides)"
    parts = []
    if "run_spread" in noise:
        parts.append(f"repeated runs of one cell differ by {100 * noise['run_spread']:.1f}% (median |run median "
                     f"/ cell median - 1|)")
    if "ratio_median" in noise:
        parts.append(f"step-time ratio B/A over {noise['cells_with_interval']} cells: median "
                     f"{noise['ratio_median']:.3f}, quartiles [{noise['ratio_q1']:.3f}, {noise['ratio_q3']:.3f}]")
    if "ci_halfwidth" in noise:
        parts.append(f"median {int(LEVEL * 100)}% interval +-{100 * noise['ci_halfwidth']:.1f}%")
    return "noise level: " + "; ".join(parts)


__all__ = ["compare_runs", "Comparison", "ratio_ci", "judge", "group_key", "step_times", "format_noise",
           "INSUFFICIENT", "MIN_STEPS", "MIN_RUNS_STEP", "MIN_RUNS_EPS"]
