"""One self-contained HTML performance report from the results store and the benchmark histories.

``build_report(store_dir, out_path)`` reads the tidy ``runs`` and ``iters`` tables of the results store,
the asv result files (``.asv/results/<machine>/<commit>-<env>.json``) and pytest-benchmark's saved runs
(``.benchmarks/<machine-id>/NNNN_<name>.json``), and writes one HTML page (jinja2 template
``templates/report.html.j2``) whose figures are base64 PNG images and whose tables are
``DataFrame.to_html``; the page loads nothing from outside (a Content-Security-Policy forbids it).

Statistics shown (all computed here from the stored tables, never typed in):

- convergence: per iteration, the median and the 25-75 % quantile band over seeds of the gradient norm,
  against the iteration and against the median wall time;
- cost scaling: per (problem, dataset, device, dtype, method_label) the least-squares line
  ``log10 y = slope * log10 n + intercept`` over all runs, y = ``median_step_s`` or ``state_bytes``
  (runs with y <= 0 or non-finite are left out; at least two distinct n are needed);
- Dolan-More performance profile: a problem is an instance (problem, problem_params, n, device, dtype,
  eps); t[p, m] = median over seeds of ``time_to_eps`` with unsolved seeds (and methods not run on p)
  counted as +inf; r[p, m] = t[p, m] / min_m t[p, m] (inf when no method solved p);
  rho_m(tau) = |{p : r[p, m] <= tau}| / |P|.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd

from . import figures as F
from .._atomic import atomic_write_text

__all__ = [
    "ReportError",
    "build_report",
    "collect_sections",
    "load_tables",
    "read_asv_results",
    "read_pytest_benchmarks",
    "fit_loglog_slopes",
    "fit_overhead_power",
    "section_leaderboard",
    "time_to_eps_matrix",
    "performance_profile",
    "convergence_bands",
    "strip_k",
    "current_runs",
    "instance_labels",
    "render_html",
]

INSTANCE_KEYS = ["problem", "problem_params", "n", "device", "dtype", "eps"]
SCALING_KEYS = ["problem", "dataset", "device", "dtype"]
MAX_FIGURES_PER_SECTION = 12
MAX_TABLE_ROWS = 300

# What to run when a section has no data (``precond-bench``: precond_core/bench/cli.py; suites in precond_core/suites).
HOW_TO = {
    "runs": "run a sweep first, e.g. `precond-bench run quick --store <dir>`",
    "scaling": "sweep at least two values of n, e.g. `precond-bench run scaling --store <dir>`",
    "blocks": "sweep a method that takes a block count k, e.g. `precond-bench run quick` (adagrad_bma, k = 1, 4, 16)",
    "profile": "sweep at least one problem with two or more methods",
    "devices": 'no CUDA runs in the store (or no CPU runs): run a suite with `device = ["cpu", "cuda"]` '
    "(e.g. `precond-bench run scaling`) on a machine with a GPU",
    "theory": "no run has a finite theory_bound: run the regularized step on a problem with known constants, "
    "e.g. `precond-bench run paper` (the 1D function)",
    "store_history": "the store holds runs of a single commit: run the same suite again after committing a change",
    "asv": "no asv results: run `asv machine --yes` then `asv run` (or `asv run --quick`) in the repository",
    "pytest_benchmark": "no saved pytest-benchmark runs: run `pytest benchmarks --benchmark-only --benchmark-autosave`",
    "training": "no training runs in the store: run `precond-bench train quick --store <dir>` (digits MLP, a few "
    "minutes) or `precond-bench train paper_cnn --store <dir>` (the talk's CNNs, reduced)",
}


class ReportError(Exception):
    """The report cannot be built (no results in the store, unreadable store)."""


# ---------------------------------------------------------------------------------------------------
# reading


def load_tables(store_dir: str | os.PathLike) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Return (runs, iters) of the results store at ``store_dir`` (newest execution of each run kept).

    Raises ``ReportError`` naming ``store_dir`` when it does not exist, cannot be read or holds no runs.
    """
    from .store import StoreError, latest_runs
    from .store import load_tables as read_store

    store_dir = Path(store_dir)
    if not store_dir.is_dir():
        raise ReportError(f"results store {str(store_dir)!r} does not exist: {HOW_TO['runs']}")
    try:
        runs, iters = read_store(store_dir)
    except (StoreError, OSError, ValueError) as exc:
        raise ReportError(f"cannot read the results store {str(store_dir)!r}: {exc}") from exc
    if runs is None or len(runs) == 0:
        raise ReportError(f"results store {str(store_dir)!r} holds no runs: {HOW_TO['runs']}")
    runs = latest_runs(runs)
    if iters is None:
        iters = pd.DataFrame(columns=["run_id", "iter", "grad_norm", "time_s"])
    return _normalize_runs(runs), iters


def _normalize_runs(runs: pd.DataFrame) -> pd.DataFrame:
    runs = runs.copy()
    for col in (
        "dataset",
        "problem_params",
        "method_params",
        "git_commit",
        "machine",
        "cpu",
        "gpu",
        "torch_version",
        "precond_version",
        "suite",
    ):
        if col not in runs:
            runs[col] = None
    for col in (
        "iters_to_eps",
        "time_to_eps",
        "median_step_s",
        "grad_s",
        "step_cost_grads",
        "state_bytes",
        "peak_mem_bytes",
        "theory_bound",
        "eps",
        "final_grad_norm",
        "wall_s",
        "setup_s",
        "n_grads",
        "n_hvps",
        "n_losses",
        "n_sample_grads",
        "iterations",
    ):
        if col in runs:
            runs[col] = pd.to_numeric(runs[col], errors="coerce").astype(float)
        else:
            runs[col] = np.nan
    runs["dataset"] = runs["dataset"].astype(object).where(runs["dataset"].notna(), "")
    runs["problem_params"] = runs["problem_params"].astype(object).where(runs["problem_params"].notna(), "{}")
    if "k" not in runs:
        runs["k"] = pd.array([pd.NA] * len(runs), dtype="Int64")
    runs["k"] = pd.to_numeric(runs["k"], errors="coerce").astype("Int64")
    runs["device_type"] = runs["device"].astype(str).str.split(":").str[0]
    return runs


def _asv_param_names(results_dir: Path) -> dict[str, dict]:
    path = results_dir / "benchmarks.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return {k: v for k, v in data.items() if isinstance(v, dict)}


def read_asv_results(results_dir: str | os.PathLike = ".asv/results") -> pd.DataFrame:
    """Flatten asv result files into one row per (machine, commit, benchmark, parameter combination).

    asv (API version 2) writes ``<results_dir>/<machine>/<commit[:8]>-<env>.json`` with ``commit_hash``,
    ``date`` (ms since the epoch), ``result_columns`` (``["result", "params", ...]``) and ``results``
    mapping a benchmark name to a row in that column order; for a parameterized benchmark ``result`` is a
    flat list over ``itertools.product(*params)``. Version 1 files (``results[name]`` a number or
    ``{"result": [...], "params": [...]}``) are read too. Missing directories give an empty frame;
    unreadable files are skipped. Columns: ``machine, commit, date, env_name, benchmark, params, value, unit``.
    """
    import itertools

    cols = ["machine", "commit", "date", "env_name", "benchmark", "params", "value", "unit"]
    results_dir = Path(results_dir)
    if not results_dir.is_dir():
        return pd.DataFrame(columns=cols)
    meta = _asv_param_names(results_dir)
    rows = []
    for path in sorted(results_dir.glob("*/*.json")):
        if path.name == "machine.json":
            continue
        try:
            d = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if not isinstance(d, dict) or "results" not in d or "commit_hash" not in d:
            continue
        columns = d.get("result_columns") or ["result", "params"]
        date = pd.to_datetime(d.get("date"), unit="ms", utc=True, errors="coerce") if d.get("date") else pd.NaT
        for name, entry in (d.get("results") or {}).items():
            if isinstance(entry, list) and int(d.get("version", 2)) >= 2:
                rec = dict(zip(columns, entry))
            elif isinstance(entry, dict):
                rec = entry
            else:
                rec = {"result": entry, "params": []}
            values, params = rec.get("result"), rec.get("params") or []
            if values is None:
                continue
            if not isinstance(values, list):
                values = [values]
            names = (meta.get(name) or {}).get("param_names") or [f"p{i}" for i in range(len(params))]
            combos = list(itertools.product(*params)) if params else [()]
            for combo, value in zip(combos, values):
                try:
                    value = float(value)
                except (TypeError, ValueError):
                    continue
                label = ", ".join(f"{nm}={str(v).strip(chr(39))}" for nm, v in zip(names, combo))
                rows.append(
                    {
                        "machine": path.parent.name,
                        "commit": str(d["commit_hash"]),
                        "date": date,
                        "env_name": d.get("env_name", ""),
                        "benchmark": name,
                        "params": label,
                        "value": value,
                        "unit": (meta.get(name) or {}).get("unit", ""),
                    }
                )
    return pd.DataFrame(rows, columns=cols)


def read_pytest_benchmarks(benchmark_dir: str | os.PathLike = ".benchmarks") -> pd.DataFrame:
    """Flatten pytest-benchmark's saved runs into one row per (saved run, benchmark).

    pytest-benchmark ``--benchmark-save``/``--benchmark-autosave`` writes
    ``<benchmark_dir>/<machine-id>/NNNN_<name>.json`` with ``commit_info`` (``id``, ``time``, ``dirty``),
    ``datetime`` and ``benchmarks``: a list of ``{"name", "fullname", "group", "stats": {"median", "mean",
    "min", "stddev", "rounds", ...}, "extra_info"}``. Missing directories give an empty frame.
    Columns: ``machine, run, file, commit, commit_time, dirty, datetime, group, name, fullname, median,
    mean, min, stddev, rounds, extra_info`` (``extra_info`` as a JSON string).
    """
    cols = [
        "machine",
        "run",
        "file",
        "commit",
        "commit_time",
        "dirty",
        "datetime",
        "group",
        "name",
        "fullname",
        "median",
        "mean",
        "min",
        "stddev",
        "rounds",
        "extra_info",
    ]
    benchmark_dir = Path(benchmark_dir)
    if not benchmark_dir.is_dir():
        return pd.DataFrame(columns=cols)
    rows = []
    for path in sorted(benchmark_dir.glob("*/*.json")):
        m = re.match(r"(\d+)_", path.name)
        try:
            d = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if not isinstance(d, dict) or not isinstance(d.get("benchmarks"), list):
            continue
        ci = d.get("commit_info") or {}
        for b in d["benchmarks"]:
            st = b.get("stats") or {}
            if "median" not in st:
                continue
            rows.append(
                {
                    "machine": path.parent.name,
                    "run": int(m.group(1)) if m else -1,
                    "file": path.name,
                    "commit": str(ci.get("id") or "unknown"),
                    "commit_time": pd.to_datetime(ci.get("time"), utc=True, errors="coerce"),
                    "dirty": bool(ci.get("dirty", False)),
                    "datetime": pd.to_datetime(d.get("datetime"), utc=True, errors="coerce"),
                    "group": b.get("group") or "",
                    "name": b.get("name", ""),
                    "fullname": b.get("fullname", ""),
                    "median": float(st["median"]),
                    "mean": float(st.get("mean", np.nan)),
                    "min": float(st.get("min", np.nan)),
                    "stddev": float(st.get("stddev", np.nan)),
                    "rounds": st.get("rounds"),
                    "extra_info": json.dumps(b.get("extra_info") or {}, sort_keys=True),
                }
            )
    return pd.DataFrame(rows, columns=cols)


# ---------------------------------------------------------------------------------------------------
# statistics


def _params_text(s: str) -> str:
    try:
        d = json.loads(s) if isinstance(s, str) else {}
    except ValueError:
        return str(s)
    if not isinstance(d, dict):
        return str(d)
    return ",".join(f"{k}={v}" for k, v in sorted(d.items()))


def instance_labels(runs: pd.DataFrame) -> pd.Series:
    """A readable label per run for its problem instance (problem, problem_params, n, device, dtype, eps)."""
    base = runs["problem"].astype(str) + np.where(
        runs["dataset"].astype(str) != "", "[" + runs["dataset"].astype(str) + "]", ""
    )
    n_params = runs.groupby(["problem", "dataset", "n"], dropna=False)["problem_params"].transform("nunique")
    params = np.where(n_params > 1, " " + runs["problem_params"].map(_params_text), "")
    multi_eps = runs["eps"].nunique(dropna=False) > 1
    eps = (" eps=" + runs["eps"].map(lambda e: f"{e:g}")) if multi_eps else ""
    return (
        base
        + params
        + " n="
        + runs["n"].astype(str)
        + " "
        + runs["device"].astype(str)
        + "/"
        + runs["dtype"].astype(str)
        + eps
    )


def convergence_bands(iters: pd.DataFrame, q: tuple[float, float] = (0.25, 0.75)) -> pd.DataFrame:
    """Median and quantile band over seeds, per (panel, method_label, iter).

    ``iters`` must have ``panel, method_label, iter, grad_norm, time_s, seed``. Returns columns
    ``panel, method_label, iter, gn_med, gn_lo, gn_hi, time_med, n_seeds``.
    """
    g = iters.groupby(["panel", "method_label", "iter"], sort=True)
    out = pd.DataFrame(
        {
            "gn_med": g["grad_norm"].median(),
            "gn_lo": g["grad_norm"].quantile(q[0]),
            "gn_hi": g["grad_norm"].quantile(q[1]),
            "time_med": g["time_s"].median(),
            "n_seeds": g["grad_norm"].size(),
        }
    ).reset_index()
    return out


def fit_loglog_slopes(
    runs: pd.DataFrame, y: str = "median_step_s", by: Iterable[str] = (*SCALING_KEYS, "method_label")
) -> pd.DataFrame:
    """Least-squares fit of ``log10 y = slope * log10 n + intercept`` over all runs of each group ``by``.

    Runs with non-finite or non-positive ``y`` are left out; groups with fewer than two distinct n give
    no row. Returns ``*by, metric, slope, intercept, n_min, n_max, points``.
    """
    by = list(by)
    rows = []
    ok = runs[np.isfinite(runs[y].astype(float)) & (runs[y].astype(float) > 0) & (runs["n"].astype(float) > 0)]
    for key, g in ok.groupby(by, sort=True, dropna=False):
        if g["n"].nunique() < 2:
            continue
        slope, intercept = np.polyfit(np.log10(g["n"].astype(float)), np.log10(g[y].astype(float)), 1)
        rows.append(
            {
                **dict(zip(by, key)),
                "metric": y,
                "slope": float(slope),
                "intercept": float(intercept),
                "n_min": int(g["n"].min()),
                "n_max": int(g["n"].max()),
                "points": len(g),
            }
        )
    return pd.DataFrame(rows, columns=[*by, "metric", "slope", "intercept", "n_min", "n_max", "points"])


def fit_overhead_power(
    runs: pd.DataFrame, y: str = "median_step_s", by: Iterable[str] = (*SCALING_KEYS, "method_label"),
    exponents: np.ndarray | None = None,
) -> pd.DataFrame:
    """Fit ``t(n) = c0 + c1 n^s`` (c0, c1 >= 0) to the per-n medians of ``y`` of each group ``by``.

    Least squares in relative error (each point weighs 1 / t^2), ``s`` on a grid (0 to 3 by 0.01) with the
    best non-negative (c0, c1) for each ``s``. Needs three or more distinct n. ``c0`` is the fixed
    per-step overhead, ``s`` the slope where the n-dependent part dominates; ``dominated_from`` is the
    smallest fitted n where ``c1 n^s >= 10 c0`` (NaN: the overhead dominates over the whole fitted
    range, and ``s`` says little). Returns ``*by, metric, c0, c1, s, n_min, n_max, points, dominated_from,
    max_rel_err``.
    """
    by = list(by)
    exps = np.round(np.arange(0.0, 3.0001, 0.01), 2) if exponents is None else np.asarray(exponents, float)
    cols = [*by, "metric", "c0", "c1", "s", "n_min", "n_max", "points", "dominated_from", "max_rel_err"]
    rows = []
    v = runs[y].astype(float)
    ok = runs[np.isfinite(v) & (v > 0) & (runs["n"].astype(float) > 0)]
    for key, g in ok.groupby(by, sort=True, dropna=False):
        med = g.groupby("n")[y].median()
        if len(med) < 3:
            continue
        n, t = med.index.to_numpy(dtype=float), med.to_numpy(dtype=float)
        w = 1.0 / t
        best = None
        for e in exps:
            X = np.stack([np.ones_like(n), n ** e], axis=1) * w[:, None]
            rhs = t * w
            cands = []
            if e > 0:  # at s = 0 both terms are the constant: the overhead alone below
                coef = np.linalg.lstsq(X, rhs, rcond=None)[0]
                if (coef >= 0).all():
                    cands.append(coef)
            for j in (0, 1):  # one term only (the boundary of c >= 0)
                c = float(X[:, j] @ rhs / (X[:, j] @ X[:, j]))
                cands.append(np.array([c, 0.0]) if j == 0 else np.array([0.0, c]))
            for c in cands:
                err = float(np.sum((X @ c - rhs) ** 2))
                if best is None or err < best[0] - 1e-15:
                    best = (err, float(e), float(max(c[0], 0.0)), float(max(c[1], 0.0)))
        _, e, c0, c1 = best
        model = c0 + c1 * n ** e
        dom = n[c1 * n ** e >= 10 * c0]
        rows.append({**dict(zip(by, key)), "metric": y, "c0": c0, "c1": c1, "s": e, "n_min": int(n.min()),
                     "n_max": int(n.max()), "points": len(n), "dominated_from": float(dom.min()) if dom.size else np.nan,
                     "max_rel_err": float(np.max(np.abs(model / t - 1)))})
    return pd.DataFrame(rows, columns=cols)


def time_to_eps_matrix(runs: pd.DataFrame) -> pd.DataFrame:
    """t[p, m]: median over seeds of ``time_to_eps`` per instance p and method_label m, unsolved = inf.

    Index: the instance keys (``INSTANCE_KEYS``); columns: method labels. A method not run on an
    instance gets +inf too (it did not solve it).
    """
    t = runs.assign(_t=runs["time_to_eps"].astype(float).fillna(np.inf))
    med = t.groupby([*INSTANCE_KEYS, "method_label"], dropna=False)["_t"].median()
    return med.unstack("method_label").fillna(np.inf)


def performance_profile(runs: pd.DataFrame, taus: np.ndarray | None = None) -> pd.DataFrame:
    """Dolan-More profile rho_m(tau) = fraction of instances with t[p, m] <= tau * min_m t[p, m].

    Instances that no method solved are left out (they would lower every curve alike and hide the
    comparison; e.g. fixed-iteration cost sweeps run with an unreachable eps). ``taus`` default: 200 points log-spaced from 1 to 1.1 x the largest finite ratio (at least 10).
    Returns columns ``method_label, tau, fraction`` (fraction in [0, 1], non-decreasing in tau).
    """
    t = time_to_eps_matrix(runs).to_numpy(dtype=float)
    t = t[np.isfinite(t.min(axis=1))]
    best = t.min(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.where(np.isfinite(best), t / best, np.inf)
    finite = ratio[np.isfinite(ratio)]
    if taus is None:
        top = max(10.0, 1.1 * float(finite.max())) if finite.size else 10.0
        taus = np.unique(np.concatenate([[1.0], np.logspace(0, math.log10(top), 200)]))
    labels = time_to_eps_matrix(runs).columns
    rows = []
    for j, lab in enumerate(labels):
        frac = (ratio[:, j][None, :] <= np.asarray(taus)[:, None]).mean(axis=1)
        rows += [{"method_label": lab, "tau": float(tt), "fraction": float(f)} for tt, f in zip(taus, frac)]
    return pd.DataFrame(rows, columns=["method_label", "tau", "fraction"])


def strip_k(label: str) -> str:
    """``adagrad_bma(k=8,variant=exact)`` -> ``adagrad_bma(variant=exact)``; ``newton_bma(k=4)`` -> ``newton_bma``."""
    s = re.sub(r"(?<=[(,])k=[^,)]*,?", "", str(label))
    s = s.replace(",)", ")")
    return s[:-2] if s.endswith("()") else s


# ---------------------------------------------------------------------------------------------------
# sections


@dataclass
class Figure:
    caption: str
    png: str  # base64 PNG


@dataclass
class Table:
    caption: str
    frame: pd.DataFrame
    table_id: str
    html: str = ""


@dataclass
class Section:
    id: str
    title: str
    blocks: list = field(default_factory=list)
    note: str | None = None  # set when the section is omitted: what to run to get it
    intro: str = ""
    warn: bool = False  # intro shown as a warning (diverged runs)

    @property
    def figures(self) -> list[Figure]:
        return [b for b in self.blocks if isinstance(b, Figure)]


def _fig(caption: str, fig) -> Figure:
    return Figure(caption, F.to_png_base64(fig))


def _fmt(v, digits: int = 4):
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    if isinstance(v, (float, np.floating)):
        if math.isinf(v):
            return "inf"
        return f"{v:.{digits}g}"
    return v


def _table(caption: str, frame: pd.DataFrame, table_id: str, floats: str = "{:.4g}") -> Table:
    shown = frame.head(MAX_TABLE_ROWS)
    html = shown.to_html(
        index=False,
        classes=["data", "table"],
        table_id=table_id,
        na_rep="",
        float_format=lambda v: "inf" if np.isinf(v) else floats.format(v),
        border=0,
        escape=True,
    )
    if len(frame) > MAX_TABLE_ROWS:
        caption = f"{caption} (first {MAX_TABLE_ROWS} of {len(frame)} rows)"
    text_cols = [i + 1 for i, c in enumerate(shown.columns) if not pd.api.types.is_numeric_dtype(shown[c])]
    if text_cols:  # numbers right-aligned (the default), text left-aligned
        sel = ", ".join(f"#{table_id} td:nth-child({i}), #{table_id} th:nth-child({i})" for i in text_cols)
        html = f"<style>{sel} {{ text-align: left; }}</style>\n{html}"
    return Table(caption, frame, table_id, html)


def _short(commit) -> str:
    s = str(commit) if commit is not None and not (isinstance(commit, float) and math.isnan(commit)) else "unknown"
    return s[:10]


def _uniq(series: pd.Series) -> str:
    vals = [str(v) for v in series.dropna().unique() if str(v) not in ("", "nan", "None")]
    return ", ".join(sorted(vals)) if vals else "(not recorded)"


def _per_step(runs: pd.DataFrame, col: str) -> pd.Series:
    """Oracle calls per step: the runner's ``<oracle>_per_step`` (counts at x0 and in the set-up left out),
    else, for older stores, the final count / iterations."""
    per = f"{col[2:]}_per_step"
    it = runs["iterations"].astype(float)
    rough = runs[col].astype(float) / it.where(it > 0)
    if per in runs:
        return pd.to_numeric(runs[per], errors="coerce").astype(float).fillna(rough)
    return rough


def section_leaderboard(runs: pd.DataFrame) -> Section:
    """Per problem instance (problem, parameters, n, dtype, device, eps): the methods ranked by median time
    to eps over seeds, with quartiles, the time with the method's set-up, iterations, step cost in
    gradients, state bytes and the margin of the winner over the runner-up (bootstrap interval)."""
    from .compare import INSUFFICIENT, MIN_RUNS_EPS, ratio_ci

    sec = Section("leaderboard", "Leaderboard: which method reaches eps fastest")
    if runs.empty:
        sec.note = HOW_TO["runs"]
        return sec
    r = runs.assign(_inst=instance_labels(runs).where(lambda v: v.str.contains("eps="),
                                                     instance_labels(runs) + runs["eps"].map(lambda e: f" eps={e:g}")))
    rows, cost_only, stops = [], [], []
    for inst, g in r.groupby("_inst", sort=True):
        stops.append({"problem instance": inst, **g["stop_reason"].value_counts().to_dict()})
        if g["time_to_eps"].notna().sum() == 0:
            cost_only.append(inst)
            continue
        entries = []
        for lab, m in g.groupby("method_label", sort=True):
            t = m["time_to_eps"].to_numpy(dtype=float)
            reached = np.isfinite(t)
            med = float(np.median(np.where(reached, t, np.inf)))
            q1, q3 = (np.quantile(np.where(reached, t, np.inf), [0.25, 0.75], method="inverted_cdf")
                      if len(t) else (np.nan, np.nan))  # no interpolation: inf (not reached) stays inf
            setup = m["setup_s"].to_numpy(dtype=float) if "setup_s" in m else np.full(len(m), np.nan)
            with_setup = float(np.median(np.where(reached, t + np.nan_to_num(setup), np.inf)))
            entries.append({
                "problem instance": inst, "method": lab, "_t": t[reached], "_med": med,
                "time to eps (s)": med, "q1 (s)": float(q1), "q3 (s)": float(q3),
                "with set-up (s)": with_setup if np.isfinite(setup).any() else np.nan,
                "reached": f"{int(reached.sum())}/{len(t)}",
                "iterations": float(np.median(np.where(np.isfinite(m["iters_to_eps"]), m["iters_to_eps"], np.inf))),
                "step cost (gradients)": float(m["step_cost_grads"].median()),
                "state bytes": float(m["state_bytes"].median()),
            })
        entries.sort(key=lambda e: (e["_med"], e["method"]))
        for rank, e in enumerate(entries, 1):
            e["rank"] = rank
            e["margin over next"] = ""
        if len(entries) >= 2 and np.isfinite(entries[0]["_med"]):
            w, ru = entries[0], entries[1]
            if not np.isfinite(ru["_med"]):
                w["margin over next"] = f"only method to reach eps ({ru['method']} next)"
            elif len(w["_t"]) >= MIN_RUNS_EPS and len(ru["_t"]) >= MIN_RUNS_EPS:
                ratio, lo, hi = ratio_ci([np.array([v]) for v in w["_t"]], [np.array([v]) for v in ru["_t"]], seed=0)
                w["margin over next"] = f"{ratio:.3g}x [{lo:.3g}, {hi:.3g}] over {ru['method']}"
            else:
                w["margin over next"] = (f"{ru['_med'] / w['_med']:.3g}x over {ru['method']} ({INSUFFICIENT}: "
                                         f"fewer than {MIN_RUNS_EPS} seeds reached eps)")
        rows += entries
    cols = ["problem instance", "rank", "method", "time to eps (s)", "q1 (s)", "q3 (s)", "with set-up (s)", "reached",
            "iterations", "step cost (gradients)", "state bytes", "margin over next"]
    if rows:
        sec.blocks.append(_table(
            "Per problem instance (problem, n, device/dtype, eps): methods ranked by the median over seeds of the "
            "time to eps on the iteration clock (set-up excluded; 'with set-up' adds the method's set-up, e.g. a "
            "power iteration for sigma); quartiles over seeds; inf: the median seed did not reach eps; margin: "
            "runner-up's time / winner's, ratio of medians with a 95% bootstrap interval over seeds",
            pd.DataFrame(rows)[cols], "table-leaderboard"))
    else:
        sec.intro = "No method reached eps on any instance (all cells are step-cost sweeps)."
    st = pd.DataFrame(stops).fillna(0)
    for c in st.columns[1:]:
        st[c] = st[c].astype(int)
    sec.blocks.append(_table("Stop reasons per problem instance (runs)", st, "table-stop-reasons-per-instance"))
    if cost_only:
        sec.blocks.append(_table(
            "Step-cost instances (eps never reached by design; not ranked here and not counted as unsolved in the "
            "performance profile)", pd.DataFrame({"problem instance": cost_only}), "table-cost-only"))
    return sec


def section_header(runs: pd.DataFrame, iters: pd.DataFrame, all_runs: pd.DataFrame | None = None) -> Section:
    sec = Section("runs", "Runs and environment")
    all_runs = runs if all_runs is None else all_runs
    commits = (
        all_runs.groupby("git_commit", dropna=False)
        .agg(
            dirty=("git_dirty", "max") if "git_dirty" in all_runs else ("run_id", "size"),
            runs=("run_id", "size"),
        )
        .reset_index()
        if "git_commit" in all_runs
        else pd.DataFrame()
    )
    commit_text = (
        ", ".join(
            f"{_short(r.git_commit)}{' (dirty)' if 'git_dirty' in all_runs and bool(r.dirty) else ''} [{r.runs} runs]"
            for r in commits.itertuples()
        )
        if len(commits)
        else "(not recorded)"
    )
    ts = (
        pd.to_datetime(all_runs["timestamp"], utc=True, errors="coerce")
        if "timestamp" in all_runs
        else pd.Series(dtype="datetime64[ns, UTC]")
    )
    span = f"{ts.min():%Y-%m-%d %H:%M} to {ts.max():%Y-%m-%d %H:%M} UTC" if ts.notna().any() else "(not recorded)"
    env = pd.DataFrame(
        [
            ("machine", _uniq(runs["machine"])),
            ("CPU", _uniq(runs["cpu"])),
            ("GPU", _uniq(runs["gpu"])),
            ("torch", _uniq(runs["torch_version"])),
            ("precond_core", _uniq(runs["precond_version"])),
            ("commits", commit_text),
            ("suites", _uniq(runs["suite"])),
            ("runs (newest execution of each)", str(len(runs))),
            ("stored executions", str(len(all_runs))),
            ("iteration rows", str(len(iters))),
            ("problems", _uniq(runs["problem"])),
            ("methods", str(runs["method_label"].nunique())),
            ("devices", _uniq(runs["device"])),
            ("dtypes", _uniq(runs["dtype"])),
            ("seeds", _uniq(runs["seed"].astype(str))),
            ("recorded", span),
        ],
        columns=["field", "value"],
    )
    sec.blocks.append(_table("Environment of the stored runs", env, "table-environment"))
    stops = pd.crosstab(runs["method_label"], runs["stop_reason"], margins=True, margins_name="total")
    stops = stops.reset_index().rename(columns={"method_label": "method"})
    stops.columns.name = None
    sec.blocks.append(_table("Stop reasons per method (number of runs)", stops, "table-stop-reasons"))
    div = runs[runs["stop_reason"].astype(str) == "diverged"]
    if len(div):
        cols = [
            c
            for c in (
                "run_id",
                "problem",
                "dataset",
                "n",
                "method_label",
                "device",
                "dtype",
                "seed",
                "iterations",
                "final_grad_norm",
                "final_loss",
            )
            if c in div
        ]
        sec.blocks.append(_table(f"Diverged runs: {len(div)} of {len(runs)}", div[cols], "table-diverged"))
    sec.intro = f"{len(div)} of {len(runs)} runs diverged." if len(div) else "No run diverged."
    sec.warn = bool(len(div))
    return sec


def section_convergence(runs: pd.DataFrame, iters: pd.DataFrame, colours) -> Section:
    sec = Section("convergence", "Convergence: gradient norm against iteration and wall time")
    if iters is None or iters.empty:
        sec.note = "the store holds no per-iteration rows: run a sweep that records iterations"
        return sec
    meta = runs[
        ["run_id", "problem", "dataset", "problem_params", "n", "device", "dtype", "eps", "method_label"]
    ].copy()
    meta["panel"] = instance_labels(runs).to_numpy()
    it = iters[["run_id", "iter", "grad_norm", "time_s"] + (["seed"] if "seed" in iters else [])].merge(
        meta, on="run_id", how="inner"
    )
    it = it[np.isfinite(it["grad_norm"].astype(float)) & (it["grad_norm"].astype(float) > 0)]
    if it.empty:
        sec.note = "no finite positive gradient norms in the iteration table"
        return sec
    bands = convergence_bands(it)
    panels = meta.drop_duplicates("panel").sort_values(["problem", "dataset", "device", "dtype", "n"])
    count = 0
    for key, grp in panels.groupby(SCALING_KEYS, sort=True, dropna=False):
        rows = [(r.panel, float(r.eps)) for r in grp.itertuples()]
        for start in range(0, len(rows), 4):
            if count >= MAX_FIGURES_PER_SECTION:
                break
            chunk = rows[start : start + 4]
            fig = F.convergence(bands[bands["panel"].isin([p for p, _ in chunk])], chunk, colours)
            sec.blocks.append(
                _fig(f"{key[0]}: median gradient norm over seeds with the 25-75 % band; dotted line: eps", fig)
            )
            count += 1
    sec.intro = (
        "Lines: median over seeds at each iteration; band: 25 % to 75 % quantiles; right: against the median wall time."
    )
    return sec


def section_scaling(runs: pd.DataFrame, colours) -> Section:
    sec = Section("scaling", "Cost scaling with n: time per step and state memory")
    ts = fit_loglog_slopes(runs, "median_step_s")
    ms = fit_loglog_slopes(runs, "state_bytes")
    if ts.empty and ms.empty:
        sec.note = HOW_TO["scaling"]
        return sec
    slopes = pd.concat([ts, ms], ignore_index=True)
    count = 0
    for key, g in runs.groupby(SCALING_KEYS, sort=True, dropna=False):
        if g["n"].nunique() < 2 or count >= MAX_FIGURES_PER_SECTION:
            continue
        pts = g.groupby(["method_label", "n"])[["median_step_s", "state_bytes"]].median().reset_index()
        sl = slopes
        for k, v in zip(SCALING_KEYS, key):
            sl = sl[sl[k] == v]
        title = f"{key[0]}{'[' + key[1] + ']' if key[1] else ''} {key[2]}/{key[3]}"
        fig = F.loglog_scaling(
            pts,
            sl,
            [("median_step_s", "median time per step (s)"), ("state_bytes", "state memory (bytes)")],
            colours,
            title,
        )
        sec.blocks.append(
            _fig(f"{title}: per-n medians over seeds (points) and the least-squares fit over all runs (dashed)", fig)
        )
        count += 1
    tab = ts.rename(columns={"slope": "time slope", "points": "time runs"})[
        [*SCALING_KEYS, "method_label", "n_min", "n_max", "time slope", "time runs"]
    ]
    mem = ms.rename(columns={"slope": "memory slope"})[[*SCALING_KEYS, "method_label", "memory slope"]]
    tab = tab.merge(mem, on=[*SCALING_KEYS, "method_label"], how="outer").sort_values([*SCALING_KEYS, "method_label"])
    sec.blocks.append(
        _table(
            "Fitted slopes of log10(median_step_s) and log10(state_bytes) against log10(n), "
            "least squares over all runs",
            tab,
            "table-slopes",
            floats="{:.4f}",
        )
    )
    fits = fit_overhead_power(runs, "median_step_s")
    if not fits.empty:
        ft = fits[[*SCALING_KEYS, "method_label", "c0", "s", "c1", "n_min", "n_max", "points", "dominated_from",
                   "max_rel_err"]].rename(columns={"c0": "overhead c0 (s)", "s": "slope s", "dominated_from":
                                                   "n with c1 n^s >= 10 c0 from", "max_rel_err": "max rel. error"})
        sec.blocks.append(_table(
            "Fit of the median time per step t(n) = c0 + c1 n^s over the fitted range n_min..n_max (per-n medians, "
            "relative least squares, c0, c1 >= 0): c0 is the fixed per-step overhead; the slope s means something "
            "only from the n where c1 n^s >= 10 c0 (empty: the overhead dominates the whole range)",
            ft, "table-overhead-fit", floats="{:.4g}"))
    cost = runs.assign(
        **{"grads/step": _per_step(runs, "n_grads"), "hvps/step": _per_step(runs, "n_hvps"),
           "losses/step": _per_step(runs, "n_losses"), "sample grads/step": _per_step(runs, "n_sample_grads")})
    multi_n = cost.groupby(SCALING_KEYS, dropna=False)["n"].transform("nunique") > 1
    cost = cost[multi_n]
    if len(cost):
        ct = (cost.groupby([*SCALING_KEYS, "eps", "method_label", "n"], dropna=False)
              .agg(step_s=("median_step_s", "median"), grad_s=("grad_s", "median"),
                   step_cost_grads=("step_cost_grads", "median"), state_bytes=("state_bytes", "median"),
                   **{c: (c, "median") for c in ("grads/step", "hvps/step", "losses/step", "sample grads/step")})
              .reset_index()
              .rename(columns={"step_s": "median step (s)", "grad_s": "gradient (s)",
                               "step_cost_grads": "step / gradient"}))
        sec.blocks.append(_table(
            "Cost of a step in gradients: median step time / the time of one full gradient measured in the same "
            "process just before the run (cache cleared before each timed gradient), state bytes, and oracle "
            "calls per step (the calls at x0 and in the method's set-up left out)",
            ct, "table-step-cost", floats="{:.4g}"))
    sec.intro = ("A slope of 1 means cost linear in n, 2 quadratic; runs with zero state are left out of the memory "
                 "fit. The straight log-log slopes above are fitted over the whole range, where a fixed per-step "
                 "overhead can dominate small n: read them with the overhead fit below.")
    return sec


def section_blocks(runs: pd.DataFrame, colours) -> Section:
    sec = Section("blocks", "Block count k: iterations and time to eps")
    kr = runs[runs["k"].notna()].copy()
    if kr.empty:
        sec.note = HOW_TO["blocks"]
        return sec
    kr["method_label_nok"] = kr["method_label"].map(strip_k)
    kr["_it"] = kr["iters_to_eps"].fillna(np.inf)
    kr["_t"] = kr["time_to_eps"].fillna(np.inf)
    agg = (
        kr.groupby([*SCALING_KEYS, "eps", "method_label_nok", "n", "k"], dropna=False)
        .agg(
            iters_to_eps=("_it", "median"),
            time_to_eps=("_t", "median"),
            median_step_s=("median_step_s", "median"),
            final_grad_norm=("final_grad_norm", "median"),
            solved=("iters_to_eps", lambda s: int(s.notna().sum())),
            seeds=("run_id", "size"),
        )
        .reset_index()
    )
    agg["k"] = agg["k"].astype(int)
    plot = agg.replace([np.inf], np.nan)
    nok_colours = F.palette(agg["method_label_nok"])
    count = 0
    for key, g in plot.groupby([*SCALING_KEYS, "eps"], sort=True, dropna=False):
        if count >= MAX_FIGURES_PER_SECTION:
            break
        title = f"{key[0]}{'[' + key[1] + ']' if key[1] else ''} {key[2]}/{key[3]} eps={key[4]:g}"
        sec.blocks.append(
            _fig(
                f"{title}: medians over seeds against k (seeds that did not reach eps count as infinite; "
                "no point: the median seed did not reach eps)",
                F.block_count(g, nok_colours, title),
            )
        )
        count += 1
    sec.blocks.append(
        _table(
            "Iterations and time to eps, time per step and final gradient norm against k "
            "(medians over seeds; inf: the median seed did not reach eps)",
            agg.rename(columns={"method_label_nok": "method"}),
            "table-blocks",
        )
    )
    return sec


def section_profile(runs: pd.DataFrame, colours) -> Section:
    sec = Section("profile", "Time to eps and performance profile")
    ttm = time_to_eps_matrix(runs)
    solved = (
        runs.assign(_s=runs["time_to_eps"].notna())
        .groupby([*INSTANCE_KEYS, "method_label"], dropna=False)["_s"]
        .agg(["sum", "size"])
    )
    labels = runs.assign(_l=instance_labels(runs)).groupby(INSTANCE_KEYS, dropna=False)["_l"].first()
    cells = {}
    for lab in ttm.columns:
        col = []
        for inst in ttm.index:
            if (*inst, lab) in solved.index:
                s, n = solved.loc[(*inst, lab)]
                t = ttm.loc[inst, lab]
                col.append(f"{t:.3g} s ({s}/{n})" if np.isfinite(t) else f"not reached ({s}/{n})")
            else:
                col.append("not run")
        cells[lab] = col
    table = pd.DataFrame(cells, index=[labels.loc[i] for i in ttm.index])
    table.index.name = "problem instance"
    sec.blocks.append(
        _table(
            "Time to eps: median over seeds (seeds that reached eps / seeds)", table.reset_index(), "table-time-to-eps"
        )
    )
    if ttm.shape[1] < 2:
        sec.note = None
        sec.intro = "A performance profile needs two or more methods: " + HOW_TO["profile"] + "."
        return sec
    prof = performance_profile(runs)
    n_solved = int(np.isfinite(ttm.to_numpy(dtype=float).min(axis=1)).sum())
    unsolved = ttm.shape[0] - n_solved
    sec.blocks.insert(
        0,
        _fig(
            f"Fraction of the {n_solved} problem instances solved by at least one method that each method solves "
            "within a factor tau of the fastest"
            + (f" ({unsolved} instance(s) that no method solved are left out)" if unsolved else ""),
            F.performance_profile(prof, colours, n_solved),
        ),
    )
    at = prof.groupby("method_label")["fraction"].agg(**{"rho(1)": "first", "rho(max tau)": "last"}).reset_index()
    sec.blocks.append(
        _table(
            "Performance profile: fraction of instances where the method is fastest (tau = 1) and solved at all",
            at,
            "table-profile",
        )
    )
    sec.intro = (
        "A problem instance is (problem, problem_params, n, device, dtype, eps); the time is the median over seeds, "
        "unsolved or not run counts as infinite."
    )
    return sec


def section_devices(runs: pd.DataFrame) -> Section:
    sec = Section("devices", "CPU vs CUDA")
    types = set(runs["device_type"].astype(str))
    if not ({"cpu", "cuda"} <= types):
        sec.note = HOW_TO["devices"]
        return sec
    r = runs[runs["device_type"].isin(["cpu", "cuda"])]
    keys = ["problem", "dataset", "n", "dtype", "method_label"]
    med = r.groupby([*keys, "device_type"], dropna=False)["median_step_s"].median().unstack("device_type")
    med = med.dropna(subset=["cpu", "cuda"]).reset_index()
    if med.empty:
        sec.note = "no (problem, n, dtype, method) was run on both CPU and CUDA: run the same sweep on both devices"
        return sec
    med["cuda/cpu"] = med["cuda"] / med["cpu"]
    count = 0
    for key, g in med.groupby(["problem", "dataset", "dtype"], sort=True, dropna=False):
        if count >= MAX_FIGURES_PER_SECTION:
            break
        n = int(g["n"].max())
        g = g[g["n"] == n]
        long = g.melt(
            id_vars=["method_label"], value_vars=["cpu", "cuda"], var_name="device", value_name="median_step_s"
        )
        title = f"{key[0]}{'[' + key[1] + ']' if key[1] else ''} n={n} {key[2]}"
        sec.blocks.append(
            _fig(f"{title}: median time per step, CPU and CUDA side by side", F.device_comparison(long, title))
        )
        count += 1
    sec.blocks.append(
        _table(
            "Median time per step (s) per device and the cuda/cpu ratio (below 1: CUDA faster)",
            med.rename(columns={"cpu": "cpu median_step_s", "cuda": "cuda median_step_s"}),
            "table-devices",
        )
    )
    return sec


def section_theory(runs: pd.DataFrame, colours) -> Section:
    sec = Section("theory", "Measured iterations beside the talk's iteration bound")
    t = runs[np.isfinite(runs["theory_bound"]) & (runs["theory_bound"] > 0)]
    if t.empty:
        sec.note = HOW_TO["theory"]
        return sec
    pts = t[t["iters_to_eps"].notna()]
    if len(pts):
        sec.blocks.append(
            _fig(
                "One point per run that reached eps; below the dashed line the run beat the bound",
                F.theory_vs_measured(pts, colours),
            )
        )
    tab = t[["run_id", "problem", "n", "method_label", "seed", "stop_reason", "iters_to_eps", "theory_bound"]].copy()
    tab["measured/bound"] = tab["iters_to_eps"] / tab["theory_bound"]
    sec.blocks.append(
        _table("Iterations to eps against the bound K per run (empty: eps not reached)", tab, "table-theory")
    )
    return sec


def section_store_history(runs: pd.DataFrame, colours=None, iters: pd.DataFrame | None = None) -> Section:
    sec = Section("store-history", "History over commits: results store")
    if "git_commit" not in runs or runs["git_commit"].nunique() < 2:
        sec.note = HOW_TO["store_history"]
        return sec
    r = runs.assign(_ts=pd.to_datetime(runs["timestamp"], utc=True, errors="coerce") if "timestamp" in runs else pd.NaT)
    order = r.groupby("git_commit")["_ts"].min().sort_values(kind="stable")
    pos = {c: i for i, c in enumerate(order.index)}
    ticks = [_short(c) for c in order.index]
    keys = [*SCALING_KEYS, "n", "method_label"]
    med = r.groupby([*keys, "git_commit"], dropna=False)["median_step_s"].median().reset_index()
    med["position"] = med["git_commit"].map(pos)
    count = 0
    for key, g in med.groupby(SCALING_KEYS, sort=True, dropna=False):
        multi = g.groupby("n")["git_commit"].nunique()
        multi = multi[multi >= 2]
        if multi.empty or count >= MAX_FIGURES_PER_SECTION:
            continue
        n = int(multi.index.max())
        g = g[g["n"] == n]
        title = f"{key[0]}{'[' + key[1] + ']' if key[1] else ''} n={n} {key[2]}/{key[3]}"
        sec.blocks.append(
            _fig(
                f"{title}: median time per step per method over commits (oldest first)",
                F.history(
                    g,
                    x="position",
                    y="median_step_s",
                    hue="method_label",
                    xticklabels=ticks,
                    ylabel="median time per step (s)",
                    colours=colours,
                    title=title,
                ),
            )
        )
        count += 1
    if not sec.blocks:
        sec.note = "no (problem, n, method) was run at two or more commits: " + HOW_TO["store_history"]
        return sec
    wide = med.assign(commit=med["git_commit"].map(_short)).pivot_table(
        index=keys, columns="commit", values="median_step_s", aggfunc="median", dropna=False
    )
    wide = wide[[t for t in ticks if t in wide.columns]]
    wide = wide[wide.notna().sum(axis=1) >= 2].reset_index()  # only what was measured at two or more commits
    wide.columns.name = None
    sec.blocks.append(_table("Median time per step (s) per commit (oldest first)", wide, "table-store-history"))
    if iters is not None and "git_commit" in iters and len(order) >= 2:
        sec.blocks.append(_commit_comparison(r, iters, order.index[-2], order.index[-1]))
    return sec


def _commit_comparison(runs: pd.DataFrame, iters: pd.DataFrame, old: str, new: str) -> Table:
    """The newest commit against the one before, with ``precond-bench compare``'s statistics."""
    from .compare import compare_runs, format_noise

    def side(c):
        rr = runs[runs["git_commit"] == c].sort_values("timestamp", kind="stable").drop_duplicates("run_id", keep="last")
        it = iters[(iters["git_commit"] == c) & iters["run_id"].isin(set(rr["run_id"]))]
        return rr, it.drop_duplicates(["run_id", "iter"], keep="last")

    (ra, ia), (rb, ib) = side(old), side(new)
    cmp = compare_runs(ra, ia, rb, ib)
    t = cmp.table

    def ci(r, lo, hi, status):
        if not np.isfinite(r):
            return status
        return f"{r:.3g} [{lo:.3g}, {hi:.3g}]" if np.isfinite(lo) and np.isfinite(hi) else f"{r:.3g} ({status})"

    frame = pd.DataFrame({
        "problem": t["problem"], "dataset": t["dataset"], "method": t["method_label"], "n": t["n"],
        "eps": t["eps"], "runs": t["runs"],
        "step time B/A": [ci(*v) for v in zip(t["step_ratio"], t["step_lo"], t["step_hi"], t["step"])],
        "time to eps B/A": [ci(*v) for v in zip(t["tte_ratio"], t["tte_lo"], t["tte_hi"], t["time_to_eps"])],
        "iterations": t["iters_to_eps"], "flagged": t["regression"]})
    return _table(
        f"{_short(new)} (B) against {_short(old)} (A), as `precond-bench compare` computes it: ratio of medians "
        f"with a 95% bootstrap interval, flagged only when the whole interval lies above {cmp.threshold:g}; "
        f"{cmp.n_flagged} of {len(t)} cells flagged; {format_noise(cmp.noise)}",
        frame, "table-commit-compare")


def section_asv(asv: pd.DataFrame) -> Section:
    sec = Section("asv-history", "History over commits: asv")
    if asv.empty:
        sec.note = HOW_TO["asv"]
        return sec
    asv = asv.copy()
    asv["series"] = np.where(asv["machine"].nunique() > 1, asv["machine"] + " ", "") + asv["params"].replace(
        "", "(no params)"
    )
    order = asv.groupby("commit")["date"].min().sort_values(kind="stable")
    pos = {c: i for i, c in enumerate(order.index)}
    ticks = [_short(c) for c in order.index]
    asv["position"] = asv["commit"].map(pos)
    count = 0
    for name, g in asv.groupby("benchmark", sort=True):
        if count >= MAX_FIGURES_PER_SECTION:
            break
        unit = g["unit"].iloc[0] or "value"
        sec.blocks.append(
            _fig(
                f"asv benchmark {name} over commits (oldest first)",
                F.history(
                    g, x="position", y="value", hue="series", xticklabels=ticks, ylabel=unit, title=name, logy=True
                ),
            )
        )
        count += 1
    first = asv.sort_values("position").groupby(["benchmark", "params", "machine"])
    summ = first.agg(
        commits=("commit", "nunique"), first=("value", "first"), last=("value", "last"), unit=("unit", "first")
    ).reset_index()
    summ["last/first"] = summ["last"] / summ["first"]
    sec.blocks.append(_table("asv: first and latest value per benchmark and parameters", summ, "table-asv"))
    sec.intro = (
        "asv and pytest-benchmark time the same bodies (benchmarks/cases.py); a full `asv run` and pytest-benchmark "
        "agree on the median (`python benchmarks/asv_vs_pytest.py` prints both for the gradient). A result of "
        "`asv run --quick` is one call (number = 1, repeat = 1, no warm-up: asv's quick mode), a cold first call "
        "that can read several times slower than the medians of pytest-benchmark: do not compare the two then."
    )
    return sec


def section_pytest_benchmark(pb: pd.DataFrame) -> Section:
    sec = Section("pytest-benchmark-history", "History over saved runs: pytest-benchmark")
    if pb.empty:
        sec.note = HOW_TO["pytest_benchmark"]
        return sec
    pb = pb.sort_values(["datetime", "machine", "run"], kind="stable").copy()
    runs_order = pb.drop_duplicates(["machine", "run", "file"])[["machine", "run", "file", "commit"]].reset_index(
        drop=True
    )
    pos = {(r.machine, r.file): i for i, r in enumerate(runs_order.itertuples())}
    ticks = [f"{r.run:04d} {_short(r.commit)[:7]}" for r in runs_order.itertuples()]
    pb["position"] = [pos[(m, f)] for m, f in zip(pb["machine"], pb["file"])]
    count = 0
    for group, g in pb.groupby("group", sort=True):
        if count >= MAX_FIGURES_PER_SECTION:
            break
        title = f"group {group}" if group else "pytest-benchmark"
        sec.blocks.append(
            _fig(
                f"{title}: median time per saved run (oldest first)",
                F.history(
                    g, x="position", y="median", hue="name", xticklabels=ticks, ylabel="median time (s)", title=title
                ),
            )
        )
        count += 1
    summ = (
        pb.groupby(["machine", "name"])
        .agg(
            runs=("run", "nunique"),
            first=("median", "first"),
            last=("median", "last"),
            extra_info=("extra_info", "last"),
        )
        .reset_index()
    )
    summ["last/first"] = summ["last"] / summ["first"]
    sec.blocks.append(_table("pytest-benchmark: first and latest median per benchmark", summ, "table-pytest-benchmark"))
    return sec


def current_runs(runs: pd.DataFrame, iters: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The newest execution of each run_id (by timestamp) and its iteration rows.

    Iteration rows carry no commit, so for a run_id stored more than once the rows of the newest part
    (the store reads parts oldest first) are kept: rows with ``iter`` up to the newest ``iterations``,
    the last row per (run_id, iter).
    """
    order = ["timestamp"] if "timestamp" in runs else []
    cur = runs.sort_values(order, kind="stable") if order else runs
    cur = cur.drop_duplicates("run_id", keep="last").reset_index(drop=True)
    if iters is None or iters.empty:
        return cur, iters
    if len(cur) < len(runs) and "iterations" in cur:
        last = cur.set_index("run_id")["iterations"]
        keep = iters["iter"].to_numpy() <= iters["run_id"].map(last).fillna(np.inf).to_numpy()
        iters = iters[keep].drop_duplicates(["run_id", "iter"], keep="last").reset_index(drop=True)
    return cur, iters


def collect_sections(
    runs: pd.DataFrame, iters: pd.DataFrame, asv: pd.DataFrame | None = None, pb: pd.DataFrame | None = None,
    store_dir: str | os.PathLike | None = None,
) -> list[Section]:
    """Build every section (figures rendered, tables as frames + HTML) from the tables.

    ``store_dir`` (optional) is where chapters that read further tables of the store (training runs) look.

    The store history uses every stored commit; all other sections use the newest execution of each
    run_id (``current_runs``), so a run repeated at a later commit is counted once.
    """
    runs = _normalize_runs(runs) if "device_type" not in runs else runs
    all_iters = iters
    current, iters = current_runs(runs, iters)
    colours = F.palette(runs["method_label"].astype(str))  # all commits: one colour per label everywhere
    from .claims import section_claims  # these two import this module's Section/Figure/Table
    from .report_training import section_training
    return [
        section_leaderboard(current),
        section_header(current, iters, runs),
        section_convergence(current, iters, colours),
        section_scaling(current, colours),
        section_blocks(current, colours),
        section_profile(current, colours),
        section_devices(current),
        section_theory(current, colours),
        section_claims(current, iters, store_dir=store_dir),
        section_training(store_dir),
        section_store_history(runs, colours, all_iters),
        section_asv(asv if asv is not None else pd.DataFrame()),
        section_pytest_benchmark(pb if pb is not None else pd.DataFrame()),
    ]


def render_html(sections: list[Section], title: str) -> str:
    """Render the sections with the jinja2 template (autoescaped; tables and images inserted as markup)."""
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(Path(__file__).parent / "templates")),
        autoescape=jinja2.select_autoescape(["html", "j2"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["code"] = _code_markup
    tpl = env.get_template("report.html.j2")
    n_fig = sum(len(s.figures) for s in sections)
    return tpl.render(
        title=title,
        sections=sections,
        n_figures=n_fig,
        Figure=Figure,
        Table=Table,
        generated=_dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    )


def _code_markup(text: str):
    """Escape ``text`` and show `backticked` spans as <code>."""
    import markupsafe

    escaped = str(markupsafe.escape(text))
    return markupsafe.Markup(re.sub(r"`([^`]+)`", r"<code>\1</code>", escaped))


def build_report(
    store_dir: str | os.PathLike,
    out_path: str | os.PathLike,
    *,
    asv_results_dir: str | os.PathLike = ".asv/results",
    benchmark_dir: str | os.PathLike = ".benchmarks",
    title: str | None = None,
) -> Path:
    """Write the HTML report of the results store ``store_dir`` to ``out_path`` (atomically) and return its path.

    Raises ``ReportError`` naming ``store_dir`` when the store holds no runs. asv and pytest-benchmark
    histories are read from ``asv_results_dir`` and ``benchmark_dir`` when they exist (sections are
    omitted with a note otherwise).
    """
    from .train import training_files
    try:
        runs, iters = load_tables(store_dir)
    except ReportError:
        if not training_files(store_dir):
            raise
        runs = None          # a store of training runs only: the training chapter and the benchmark histories
    asv = read_asv_results(asv_results_dir)
    pb = read_pytest_benchmarks(benchmark_dir)
    if runs is None:
        from .report_training import section_training
        sections = [section_training(store_dir), section_asv(asv if asv is not None else pd.DataFrame()),
                    section_pytest_benchmark(pb if pb is not None else pd.DataFrame())]
        default_title = f"precond_core training report ({len(training_files(store_dir))} training runs)"
    else:
        sections = collect_sections(runs, iters, asv, pb, store_dir=store_dir)
        default_title = f"precond_core performance report ({len(runs)} runs)"
    out = Path(out_path)
    html = render_html(sections, title or default_title)
    atomic_write_text(out, html)
    return out
