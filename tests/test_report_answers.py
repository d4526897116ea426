"""The report answers first: the leaderboard per problem instance, step cost in gradients and the
overhead-aware scaling fit, built without a runtime warning."""
from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("pyarrow")
pytest.importorskip("jinja2")
pytest.importorskip("seaborn")

from precond_core.bench import report as R  # noqa: E402
from precond_core.bench.grid import Cell  # noqa: E402
from precond_core.bench.runner import run_sweep  # noqa: E402


def test_overhead_fit_recovers_c0_c1_s():
    n = np.array([1e3, 1e4, 1e5, 1e6])
    rows = [{"problem": "p", "dataset": "", "device": "cpu", "dtype": "float64", "method_label": "m", "n": v,
             "median_step_s": 1e-4 + 2e-9 * v} for v in n]
    rows += [{"problem": "p", "dataset": "", "device": "cpu", "dtype": "float64", "method_label": "flat", "n": v,
              "median_step_s": 3e-3} for v in n]
    fit = R.fit_overhead_power(pd.DataFrame(rows)).set_index("method_label")
    assert fit.loc["m", "s"] == pytest.approx(1.0)
    assert fit.loc["m", "c0"] == pytest.approx(1e-4, rel=1e-6) and fit.loc["m", "c1"] == pytest.approx(2e-9, rel=1e-6)
    assert fit.loc["m", "dominated_from"] == 1e6  # 2e-9 n >= 10 * 1e-4 from n = 5e5 on: the point 1e6
    assert (fit.loc["m", "n_min"], fit.loc["m", "n_max"], fit.loc["m", "points"]) == (1000, 1000000, 4)
    assert fit.loc["flat", "c0"] == pytest.approx(3e-3) and math.isnan(fit.loc["flat", "dominated_from"])
    # a straight log-log fit over the same range reads the first group as sub-linear
    ll = R.fit_loglog_slopes(pd.DataFrame(rows)).set_index("method_label")
    assert ll.loc["m", "slope"] < 0.8


def _runs(times: dict[str, list[float]], eps=1e-6, problem="p"):
    rows = []
    for m, ts in times.items():
        for s, t in enumerate(ts):
            rows.append({"problem": problem, "problem_params": "{}", "dataset": "", "n": 10, "device": "cpu",
                         "dtype": "float64", "eps": eps, "method_label": m, "seed": s, "run_id": f"{m}{s}",
                         "time_to_eps": t, "setup_s": 0.5, "iters_to_eps": 7.0 if t == t else math.nan,
                         "step_cost_grads": 2.0, "state_bytes": 80, "stop_reason": "converged" if t == t else "max_iters",
                         "median_step_s": 1e-3, "iterations": 7})
    return R._normalize_runs(pd.DataFrame(rows))


def test_leaderboard_ranks_by_median_with_margin_interval():
    runs = pd.concat([_runs({"fast": [1.0, 1.1, 0.9], "slow": [2.0, 2.2, 1.8], "never": [math.nan] * 3}),
                      _runs({"a": [math.nan] * 2, "b": [math.nan] * 2}, eps=1e-30, problem="cost")])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sec = R.section_leaderboard(runs)
    lb = sec.blocks[0].frame
    assert sec.blocks[0].table_id == "table-leaderboard"
    assert lb["method"].tolist() == ["fast", "slow", "never"] and lb["rank"].tolist() == [1, 2, 3]
    assert lb["time to eps (s)"].tolist()[:2] == [1.0, 2.0] and math.isinf(lb["time to eps (s)"].iloc[2])
    assert lb["q1 (s)"].tolist()[:2] == [0.9, 1.8] and lb["q3 (s)"].tolist()[:2] == [1.1, 2.2]
    assert lb["with set-up (s)"].tolist()[:2] == [1.5, 2.5]
    assert lb["reached"].tolist() == ["3/3", "3/3", "0/3"]
    margin = lb["margin over next"].iloc[0]
    assert margin.startswith("2x [") and "over slow" in margin
    lo, hi = (float(v) for v in margin.split("[")[1].split("]")[0].split(","))
    assert lo <= 2.0 <= hi
    assert all("eps=1e-06" in v for v in lb["problem instance"])  # the eps is in every row's instance
    cost = next(b for b in sec.blocks if b.table_id == "table-cost-only").frame
    assert cost["problem instance"].tolist() == ["cost n=10 cpu/float64 eps=1e-30"]
    stops = next(b for b in sec.blocks if b.table_id == "table-stop-reasons-per-instance").frame.set_index(
        "problem instance")
    assert stops.loc["p n=10 cpu/float64 eps=1e-06", "converged"] == 6
    assert stops.loc["p n=10 cpu/float64 eps=1e-06", "max_iters"] == 3


def test_leaderboard_says_insufficient_data_with_one_seed():
    sec = R.section_leaderboard(_runs({"fast": [1.0], "slow": [3.0]}))
    assert "insufficient data" in sec.blocks[0].frame["margin over next"].iloc[0]


def test_report_builds_without_runtime_warnings(tmp_path):
    cells = [Cell("scalable", {"n": n}, m, {}, seed=s, eps=1e-30, max_iters=6, suite="t")
             for n in (100, 300, 1000) for m in ("gd", "adagrad") for s in (0, 1)]
    cells += [Cell("logistic", {"n_samples": 40, "n_features": 5}, m, {}, seed=s, eps=1e-6, max_iters=50, suite="t")
              for m in ("gd", "newton", "lbfgs") for s in (0, 1, 2)]
    for commit in ("a" * 40, "b" * 40):  # the same code at two "commits": the history compares them
        summary = run_sweep(("t", cells), tmp_path / "store", git=(commit, False), progress=False, log=lambda m: None)
        assert not summary.failed and len(summary.stored) == len(cells)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        page = R.build_report(tmp_path / "store", tmp_path / "site" / "index.html", asv_results_dir=tmp_path / "x",
                              benchmark_dir=tmp_path / "x")
    html = page.read_text()
    for tid in ("table-leaderboard", "table-step-cost", "table-overhead-fit", "table-stop-reasons-per-instance",
                "table-commit-compare"):
        assert f'id="{tid}"' in html, tid
    assert html.index('id="table-leaderboard"') < html.index("<img")
    assert "bbbbbbbbbb (B) against aaaaaaaaaa (A)" in html and "noise level" in html
    body = html.split('id="table-commit-compare"')[1].split("</table>")[0]
    assert "changed" not in body and "seed " not in body  # same code: iteration counts identical
