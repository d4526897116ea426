"""The HTML report: built from a store filled by real sweeps of the library, checked against the tables."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

pd = pytest.importorskip("pandas")
pytest.importorskip("pyarrow")
pytest.importorskip("seaborn")
pytest.importorskip("jinja2")

from precond_core.bench import report as rp  # noqa: E402
from precond_core.bench.grid import Cell  # noqa: E402
from precond_core.bench.runner import run_sweep  # noqa: E402
from precond_core.bench.store import Store, load_tables  # noqa: E402

COMMIT_A, COMMIT_B = "a1" * 20, "b2" * 20
SECTION_TITLES = [
    "Leaderboard: which method reaches eps fastest",
    "Runs and environment",
    "Convergence: gradient norm against iteration and wall time",
    "Cost scaling with n: time per step and state memory",
    "Block count k: iterations and time to eps",
    "Time to eps and performance profile",
    "CPU vs CUDA",
    "Measured iterations beside the talk's iteration bound",
    "The talks' claims",
    "Training networks",
    "History over commits: results store",
    "History over commits: asv",
    "History over saved runs: pytest-benchmark",
]


def sweep_cells() -> list[Cell]:
    """Tiny problems: scalable logistic at n = 100 and 1000, the 1D function, a quadratic with a diverging GD."""
    cells = []
    common = dict(eps=1e-5, max_iters=25, max_seconds=5.0, suite="report-test")
    for prob, pp in [("scalable", {"n": 100}), ("scalable", {"n": 1000}), ("one_d", {}), ("quadratic", {"n": 20})]:
        for meth, mp in [("gd", {}), ("adagrad_bma", {"k": 2}), ("adagrad_bma", {"k": 4}), ("newton", {})]:
            if "k" in mp and prob != "scalable":
                continue
            for seed in (0, 1):
                cells.append(Cell(prob, pp, meth, mp, seed=seed, **common))
    cells.append(
        Cell("quadratic", {"n": 20}, "gd", {"lr": 1e6, "step": "fixed"}, seed=0, **{**common, "max_iters": 200})
    )  # overflows to inf: a diverged run
    return cells


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("store")
    cells = sweep_cells()
    quiet = dict(progress=False, log=lambda m: None)
    s1 = run_sweep(("report-test", cells), d, git=(COMMIT_A, False), **quiet)
    assert not s1.failed, s1.failed
    # a second commit re-measures part of the grid: the store then holds a history
    again = [c for c in cells if c.problem == "scalable" and c.method in ("gd", "newton")]
    s2 = run_sweep(("report-test", again), d, git=(COMMIT_B, True), **quiet)
    assert not s2.failed and len(s2.stored) == len(again)
    return d


def current(runs: pd.DataFrame) -> pd.DataFrame:
    """Newest execution per run_id, as the report documents."""
    return runs.sort_values("timestamp", kind="stable").drop_duplicates("run_id", keep="last")


# -- real history files -----------------------------------------------------------------------------
ASV_BENCH = {
    "name": "bench_steps.StepCost.time_step",
    "version": "v1",
    "params": [["'gd'", "'adam'"], ["100", "1000"]],
    "param_names": ["method", "n"],
    "unit": "seconds",
    "type": "time",
}
ASV_TRACK = {
    "name": "bench_steps.Memory.track_state_bytes",
    "version": "v1",
    "params": [],
    "param_names": [],
    "unit": "bytes",
    "type": "track",
}


def asv_values(i: int) -> dict[str, list]:
    """Per commit i: the step time grows with n and with i; the None entry is a failed benchmark."""
    return {
        ASV_BENCH["name"]: [1e-4 * (1 + i), 1e-3 * (1 + i), 2e-4 * (1 + i), None],
        ASV_TRACK["name"]: [800.0 + 8 * i],
    }


def write_asv_results(root: Path, commits: list[str]) -> None:
    """Result files written by asv's own Results.save (API version 2) plus its benchmarks.json."""
    asv_results = pytest.importorskip("asv.results")
    from asv import util
    from asv.runner import BenchmarkResult

    util.write_json(str(root / "benchmarks.json"), {b["name"]: b for b in (ASV_BENCH, ASV_TRACK)}, api_version=2)
    for i, commit in enumerate(commits):
        res = asv_results.Results(
            {"machine": "testbox", "python": "3.11"},
            {},
            commit,
            1_700_000_000_000 + i * 86_400_000,
            "3.11",
            "virtualenv-py3.11",
            {},
        )
        for bench in (ASV_BENCH, ASV_TRACK):
            vals = asv_values(i)[bench["name"]]
            res.add_result(
                bench,
                BenchmarkResult(
                    result=vals,
                    samples=[None] * len(vals),
                    number=[None] * len(vals),
                    errcode=0,
                    stderr="",
                    profile=None,
                ),
            )
        res.save(str(root))


PB_TEST = """
def test_step(benchmark):
    benchmark.extra_info["state_bytes"] = 123
    benchmark.pedantic(sum, args=(range(200),), rounds=3, iterations=1)

def test_grad(benchmark):
    benchmark.pedantic(sorted, args=(list(range(50)),), rounds=3, iterations=1)
"""


def write_pytest_benchmarks(repo: Path, storage: Path) -> list[str]:
    """Two commits of a tiny git repository, each benchmarked with pytest-benchmark --benchmark-autosave."""
    pytest.importorskip("pytest_benchmark")
    repo.mkdir()
    git = ["git", "-c", "user.email=t@example.invalid", "-c", "user.name=t", "-c", "commit.gpgsign=false"]
    env = {**os.environ, "GIT_CONFIG_NOSYSTEM": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True, env=env)
    (repo / "test_pb.py").write_text(PB_TEST)
    shas = []
    for i in range(2):
        (repo / "version.txt").write_text(str(i))
        subprocess.run(git + ["add", "."], cwd=repo, check=True, env=env)
        subprocess.run(git + ["commit", "-q", "-m", f"c{i}"], cwd=repo, check=True, env=env)
        shas.append(
            subprocess.run(
                ["git", "rev-parse", "HEAD"], cwd=repo, check=True, env=env, capture_output=True, text=True
            ).stdout.strip()
        )
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "pytest",
                "-q",
                "-p",
                "no:cacheprovider",
                "-c",
                os.devnull,
                "--rootdir",
                str(repo),
                "test_pb.py",
                f"--benchmark-storage=file://{storage}",
                "--benchmark-autosave",
            ],
            cwd=repo,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert out.returncode == 0, out.stdout + out.stderr
    return shas


@pytest.fixture(scope="module")
def history(tmp_path_factory):
    root = tmp_path_factory.mktemp("hist")
    asv_dir, pb_dir = root / "asv-results", root / "benchmarks"
    write_asv_results(asv_dir, ["1" * 40, "2" * 40])
    shas = write_pytest_benchmarks(root / "repo", pb_dir)
    return asv_dir, pb_dir, shas


@pytest.fixture(scope="module")
def built(store_dir, history, tmp_path_factory):
    asv_dir, pb_dir, _ = history
    out = tmp_path_factory.mktemp("out") / "sub" / "report.html"
    path = rp.build_report(store_dir, out, asv_results_dir=asv_dir, benchmark_dir=pb_dir, title="test report")
    return path, path.read_text(encoding="utf-8")


# -- HTML helpers ----------------------------------------------------------------------------------
class _Tables(HTMLParser):
    """Collect <table id=...> contents as lists of rows of cell texts; count <img> and h2 texts."""

    def __init__(self):
        super().__init__()
        self.tables, self.h2, self.imgs, self.urls = {}, [], [], []
        self._table = self._row = self._cell = None
        self._in_h2 = False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        for key in ("src", "href"):
            if key in a:
                self.urls.append(a[key])
        if tag == "table":
            self._table = self.tables.setdefault(a.get("id", f"anon{len(self.tables)}"), [])
        elif tag == "tr" and self._table is not None:
            self._row = []
            self._table.append(self._row)
        elif tag in ("td", "th") and self._row is not None:
            self._cell = []
        elif tag == "img":
            self.imgs.append(a)
        elif tag == "h2":
            self._in_h2, self._h2 = True, []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self._row.append("".join(self._cell).strip())
            self._cell = None
        elif tag == "table":
            self._table = None
        elif tag == "h2":
            self._in_h2 = False
            self.h2.append("".join(self._h2).strip())

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)
        if self._in_h2:
            self._h2.append(data)


def parse(html: str) -> _Tables:
    p = _Tables()
    p.feed(html)
    return p


def table_frame(parsed: _Tables, table_id: str) -> pd.DataFrame:
    rows = parsed.tables[table_id]
    return pd.DataFrame(rows[1:], columns=rows[0])


# -- tests -----------------------------------------------------------------------------------------
def test_report_is_self_contained_with_every_section(built):
    path, html = built
    assert path.is_file() and path.name == "report.html"
    assert not [p for p in path.parent.iterdir() if p.name != "report.html"], "temporary file left behind"
    parsed = parse(html)
    assert parsed.h2 == SECTION_TITLES
    assert "http://" not in html and "https://" not in html
    assert all(u.startswith(("data:image/png;base64,", "#")) for u in parsed.urls), parsed.urls
    assert "Content-Security-Policy" in html and "default-src 'none'" in html


def test_one_img_per_generated_figure(built, store_dir, history):
    _, html = built
    parsed = parse(html)
    n_declared = int(re.search(r'<body data-figures="(\d+)"', html).group(1))
    assert len(parsed.imgs) == n_declared
    # the figures expected from the data, section by section
    runs = current(load_tables(store_dir)[0]).fillna({"dataset": ""})
    groups = runs.groupby(["problem", "dataset", "device", "dtype"])
    conv = sum(math.ceil(g[["n", "problem_params"]].drop_duplicates().shape[0] / 4) for _, g in groups)
    scaling = sum(g["n"].nunique() >= 2 for _, g in groups)
    blocks = sum(g["k"].notna().any() for _, g in groups)
    profile = int(runs["method_label"].nunique() >= 2)
    theory = int((np.isfinite(runs["theory_bound"]) & runs["iters_to_eps"].notna()).any())
    store_hist = 1  # scalable was re-measured at a second commit
    asv_dir, _, _ = history
    from precond_core.bench import claims as _claims   # the talks' claims chapter: one img per claim figure
    _r, _it = load_tables(store_dir)
    claim_figs = sum(len(c.figures) for c in _claims.evaluate_claims(*rp.current_runs(rp._normalize_runs(_r), _it))[0])
    expected = (
        conv + scaling + blocks + profile + theory + store_hist + 2 + 1 + claim_figs
    )  # asv: 2 benchmarks; pytest-benchmark: 1 group
    assert n_declared == expected
    for a in parsed.imgs:
        assert a["src"].startswith("data:image/png;base64,") and len(a["src"]) > 2000 and a.get("alt")


def test_header_shows_environment_and_diverged_runs(built, store_dir):
    _, html = built
    parsed = parse(html)
    runs = current(load_tables(store_dir)[0])
    env = dict(table_frame(parsed, "table-environment").values.tolist())
    assert env["runs (newest execution of each)"] == str(len(runs))
    assert COMMIT_A[:10] in env["commits"] and COMMIT_B[:10] in env["commits"] and "(dirty)" in env["commits"]
    assert env["torch"] == str(runs["torch_version"].iloc[0])
    stops = table_frame(parsed, "table-stop-reasons").set_index("method")
    assert int(stops.loc["total", "total"]) == len(runs)
    n_div = int((runs["stop_reason"] == "diverged").sum())
    assert n_div >= 1, "the sweep has a GD with lr=1e6 on a quadratic, which must diverge"
    assert int(stops.loc["total", "diverged"]) == n_div
    assert len(table_frame(parsed, "table-diverged")) == n_div
    assert f"{n_div} of {len(runs)} runs diverged." in html


def test_slope_table_matches_least_squares_on_runs(built, store_dir):
    _, html = built
    shown = table_frame(parse(html), "table-slopes")
    runs = current(load_tables(store_dir)[0])
    checked = 0
    for label, g in runs[runs["problem"] == "scalable"].groupby("method_label"):
        g = g[g["median_step_s"] > 0]
        slope = np.polyfit(np.log10(g["n"].astype(float)), np.log10(g["median_step_s"]), 1)[0]
        row = shown[(shown["problem"] == "scalable") & (shown["method_label"] == label)]
        assert len(row) == 1, label
        assert float(row["time slope"].iloc[0]) == pytest.approx(slope, rel=1e-3, abs=1e-3)
        mem = g[g["state_bytes"] > 0]
        mslope = np.polyfit(np.log10(mem["n"].astype(float)), np.log10(mem["state_bytes"].astype(float)), 1)[0]
        assert float(row["memory slope"].iloc[0]) == pytest.approx(mslope, rel=1e-3, abs=1e-3)
        checked += 1
    assert checked == 4  # gd, adagrad_bma k=2 and k=4, newton
    newton = shown[(shown["problem"] == "scalable") & (shown["method_label"] == "newton")]
    assert float(newton["memory slope"].iloc[0]) == pytest.approx(2.0, abs=0.01)  # dense n x n state


def test_performance_profile_is_a_monotone_fraction(store_dir):
    runs = current(load_tables(store_dir)[0])
    prof = rp.performance_profile(runs)
    assert set(prof["method_label"]) == set(runs["method_label"])
    assert prof["fraction"].between(0, 1).all()
    for _, g in prof.groupby("method_label"):
        g = g.sort_values("tau")
        assert (np.diff(g["fraction"].to_numpy()) >= 0).all()
        assert g["tau"].iloc[0] == 1.0
    # rho(1) = share of instances where the method has the smallest median time (ties count for all)
    t = (
        runs.assign(t=runs["time_to_eps"].fillna(np.inf))
        .groupby(["problem", "problem_params", "n", "device", "dtype", "eps", "method_label"])["t"]
        .median()
        .unstack()
        .fillna(np.inf)
    )
    best = t.min(axis=1)
    for label in t.columns:
        wins = ((t[label] == best) & np.isfinite(best)).mean()
        got = prof[(prof["method_label"] == label) & (prof["tau"] == 1.0)]["fraction"].iloc[0]
        assert got == pytest.approx(wins)


def test_performance_profile_small_case():
    # two instances, two methods: A best on p1, B 4x slower there; on p2 only B solves
    runs = pd.DataFrame(
        {
            "problem": ["p1", "p1", "p2", "p2"],
            "problem_params": "{}",
            "n": 10,
            "device": "cpu",
            "dtype": "float64",
            "eps": 1e-6,
            "method_label": ["A", "B", "A", "B"],
            "time_to_eps": [1.0, 4.0, np.nan, 2.0],
        }
    )
    prof = rp.performance_profile(runs, taus=np.array([1.0, 2.0, 4.0, 8.0]))
    a = prof[prof["method_label"] == "A"]["fraction"].tolist()
    b = prof[prof["method_label"] == "B"]["fraction"].tolist()
    assert a == [0.5, 0.5, 0.5, 0.5]  # solves p1 only, as the best
    assert b == [0.5, 0.5, 1.0, 1.0]  # best on p2; within 4x of A on p1


def test_empty_store_is_a_clear_error(tmp_path):
    missing = tmp_path / "nothing-here"
    with pytest.raises(rp.ReportError, match=re.escape(str(missing))):
        rp.build_report(missing, tmp_path / "r.html")
    empty = tmp_path / "empty-store"
    Store(empty).init()
    with pytest.raises(rp.ReportError, match="holds no runs") as exc:
        rp.build_report(empty, tmp_path / "r.html")
    assert str(empty) in str(exc.value)
    assert not (tmp_path / "r.html").exists()


def test_sections_without_data_are_omitted_with_a_note(built):
    _, html = built
    # CPU-only sweep: the device comparison says what to run
    assert re.search(r'<section id="devices">\s*<h2>CPU vs CUDA</h2>\s*<p class="note">Omitted: no CUDA runs', html)


def test_asv_parser_reads_real_result_files(history):
    asv_dir, _, _ = history
    df = rp.read_asv_results(asv_dir)
    assert set(df["commit"]) == {"1" * 40, "2" * 40}
    for i, commit in enumerate(["1" * 40, "2" * 40]):
        sub = df[(df["commit"] == commit) & (df["benchmark"] == ASV_BENCH["name"])].set_index("params")["value"]
        want = asv_values(i)[ASV_BENCH["name"]]
        combos = [f"method={m.strip(chr(39))}, n={n}" for m in ASV_BENCH["params"][0] for n in ASV_BENCH["params"][1]]
        assert dict(sub) == {c: v for c, v in zip(combos, want) if v is not None}  # the failed one is dropped
        track = df[(df["commit"] == commit) & (df["benchmark"] == ASV_TRACK["name"])]
        assert track["value"].tolist() == asv_values(i)[ASV_TRACK["name"]] and track["unit"].iloc[0] == "bytes"
    assert (df["date"].diff().dropna() >= pd.Timedelta(0)).all() or df["date"].notna().all()
    assert rp.read_asv_results(asv_dir / "missing").empty


def test_pytest_benchmark_parser_reads_saved_runs(history):
    _, pb_dir, shas = history
    df = rp.read_pytest_benchmarks(pb_dir)
    assert sorted(df["commit"].unique()) == sorted(shas)
    assert sorted(df["run"].unique()) == [1, 2]
    assert set(df["name"]) == {"test_step", "test_grad"} and len(df) == 4
    assert ((df["min"] <= df["median"]) & (df["median"] > 0)).all()
    step = df[df["name"] == "test_step"]
    assert all(json.loads(e) == {"state_bytes": 123} for e in step["extra_info"])
    # the medians are pytest-benchmark's own
    for path in pb_dir.glob("*/*.json"):
        saved = json.loads(path.read_text())
        for b in saved["benchmarks"]:
            row = df[(df["file"] == path.name) & (df["name"] == b["name"])]
            assert row["median"].iloc[0] == b["stats"]["median"]
    assert rp.read_pytest_benchmarks(pb_dir / "missing").empty


def test_history_tables_in_report(built, history):
    _, html = built
    parsed = parse(html)
    asv_tab = table_frame(parsed, "table-asv")
    row = asv_tab[(asv_tab["benchmark"] == ASV_BENCH["name"]) & (asv_tab["params"] == "method=gd, n=1000")]
    assert float(row["first"].iloc[0]) == pytest.approx(asv_values(0)[ASV_BENCH["name"]][1], rel=1e-3)
    assert float(row["last"].iloc[0]) == pytest.approx(asv_values(1)[ASV_BENCH["name"]][1], rel=1e-3)
    store_hist = table_frame(parsed, "table-store-history")
    assert {COMMIT_A[:10], COMMIT_B[:10]} <= set(store_hist.columns)
    pb = table_frame(parsed, "table-pytest-benchmark")
    assert set(pb["name"]) == {"test_step", "test_grad"} and set(pb["runs"]) == {"2"}


def test_theory_section_uses_the_bound_column(store_dir):
    runs, iters = load_tables(store_dir)
    runs = current(runs).copy()
    # the talk's K with sigma = 0 (exact Hessian) from the problem's constants and each run's f0, g0, eps
    from precond_core import theory
    from precond_core.problems import make_problem

    prob = make_problem("one_d")
    g0 = iters[iters["iter"] == 0].drop_duplicates("run_id").set_index("run_id")["grad_norm"]
    one_d = runs["problem"] == "one_d"
    runs.loc[one_d, "theory_bound"] = [
        theory.iteration_bound(f0 - prob.f_star, prob.M, 0.0, eps, g0[rid])
        for f0, eps, rid in zip(runs.loc[one_d, "f0"], runs.loc[one_d, "eps"], runs.loc[one_d, "run_id"])
    ]
    sec = rp.section_theory(rp._normalize_runs(runs), rp.F.palette(runs["method_label"]))
    assert sec.note is None and len(sec.figures) == 1
    tab = [b for b in sec.blocks if isinstance(b, rp.Table)][0].frame
    assert len(tab) == int(one_d.sum())
    np.testing.assert_allclose(tab["measured/bound"], tab["iters_to_eps"] / tab["theory_bound"])
    runs["theory_bound"] = np.nan
    assert rp.section_theory(rp._normalize_runs(runs), {}).note.startswith("no run has a finite theory_bound")


def test_strip_k():
    assert rp.strip_k("adagrad_bma(k=8,variant=exact)") == "adagrad_bma(variant=exact)"
    assert rp.strip_k("newton_bma(k=4)") == "newton_bma"
    assert rp.strip_k("x(a=1,k=4)") == "x(a=1)"
    assert rp.strip_k("gd") == "gd"


def test_device_section_compares_cpu_and_cuda(store_dir):
    # the same runs relabelled as CUDA runs that take half the time per step: ratio 0.5 for every method
    runs = current(load_tables(store_dir)[0])
    cuda = runs.assign(device="cuda:0", run_id=runs["run_id"] + "-cuda", median_step_s=runs["median_step_s"] / 2)
    both = rp._normalize_runs(pd.concat([runs, cuda], ignore_index=True))
    sec = rp.section_devices(both)
    assert sec.note is None
    n_groups = runs.fillna({"dataset": ""}).groupby(["problem", "dataset", "dtype"]).ngroups
    assert len(sec.figures) == n_groups
    tab = [b for b in sec.blocks if isinstance(b, rp.Table)][0].frame
    assert len(tab) == runs.groupby(["problem", "n", "method_label"]).ngroups
    np.testing.assert_allclose(tab["cuda/cpu"], 0.5)
    assert rp.section_devices(rp._normalize_runs(runs)).note.startswith("no CUDA runs")
