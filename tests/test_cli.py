"""The precond-bench command line: run, list, report, compare, and one clear message per bad input."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

pytest.importorskip("pyarrow")

import precond_core as pc
from precond_core import problems
from precond_core.bench import cli
from precond_core.bench.store import Store

ROOT = Path(__file__).resolve().parents[1]
GRID = """
[defaults]
eps = 1e-8
max_iters = 15
seeds = [0, 1]
threads = 1
[[problems]]
name = "logistic"
n_samples = 40
n_features = 6
[[methods]]
name = "gd"
[[methods]]
name = "newton"
"""


def snapshot(root: Path) -> dict:
    return {p: p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def run_cli(capsys, *argv):
    code = cli.main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture(scope="module")
def filled(tmp_path_factory):
    """A store with the 4 cells of GRID (shared by the read-only tests)."""
    d = tmp_path_factory.mktemp("cli")
    (d / "grid.toml").write_text(GRID)
    assert cli.main(["run", str(d / "grid.toml"), "--store", str(d / "store"), "--no-progress"]) == 0
    return d


def test_run_then_resume(filled, capsys):
    runs = Store(filled / "store").read_runs()
    assert len(runs) == 4 and set(runs["method"]) == {"gd", "newton"}
    before = snapshot(filled / "store")
    code, _, err = run_cli(capsys, "run", filled / "grid.toml", "--store", filled / "store", "--no-progress")
    assert code == 0 and "4 already stored" in err and "0 to run" in err
    assert snapshot(filled / "store") == before


def test_list(capsys):
    code, out, _ = run_cli(capsys, "list", "methods")
    assert code == 0 and [line.split()[0] for line in out.splitlines()] == pc.list_methods()
    code, out, _ = run_cli(capsys, "list", "problems")
    assert code == 0 and [line.split()[0] for line in out.splitlines()] == list(problems.list_problems())
    code, out, _ = run_cli(capsys, "list", "suites")
    assert code == 0 and {line.split()[0] for line in out.splitlines()} >= {"quick", "paper", "scaling", "full"}
    code, out, _ = run_cli(capsys, "list", "datasets")
    assert code == 0 and {"mushrooms", "heart_scale"} <= {line.split()[0] for line in out.splitlines()}


BAD = {
    "method": ('[[problems]]\nname = "one_d"\n[[methods]]\nname = "gd"\n[[methods]]\nname = "gdd"\n',
               ["[[methods]] #2", "'name'", "'gdd'"]),
    "problem": ('[[problems]]\nname = "one_dd"\n[[methods]]\nname = "gd"\n', ["[[problems]] #1", "'one_dd'"]),
    "dataset": ('[[problems]]\nname = "logistic"\ndataset = "mushroomz"\n[[methods]]\nname = "gd"\n',
                ["[[problems]] #1", "'dataset'", "'mushroomz'"]),
    "parameter": ('[[problems]]\nname = "one_d"\n[[methods]]\nname = "adam"\nbeta3 = 0.5\n',
                  ["[[methods]] #1", "'beta3'"]),
}


@pytest.mark.parametrize("kind", sorted(BAD))
def test_bad_grid_one_message_exit_2_store_untouched(filled, tmp_path, capsys, kind):
    text, needles = BAD[kind]
    bad = tmp_path / f"bad_{kind}.toml"
    bad.write_text(text)
    before = snapshot(filled / "store")
    code, out, err = run_cli(capsys, "run", bad, "--store", filled / "store", "--no-progress")
    assert code == 2 and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1 and str(bad) in err
    for needle in needles:
        assert needle in err
    assert snapshot(filled / "store") == before


def test_too_many_cells_needs_yes(tmp_path, capsys):
    (tmp_path / "g.toml").write_text(GRID)
    code, _, err = run_cli(capsys, "run", tmp_path / "g.toml", "--store", tmp_path / "s", "--max-cells", "3",
                           "--no-progress")
    assert code == 2 and "4 cells, more than --max-cells=3" in err and "--yes" in err
    assert not (tmp_path / "s").exists()
    code, _, _ = run_cli(capsys, "run", tmp_path / "g.toml", "--store", tmp_path / "s", "--max-cells", "3",
                         "--yes", "--no-progress")
    assert code == 0 and len(Store(tmp_path / "s").read_runs()) == 4


@pytest.mark.parametrize("damage", ["corrupt", "foreign"])
def test_damaged_store_clear_error_nothing_lost(filled, tmp_path, capsys, damage):
    import shutil

    store = tmp_path / "store"
    shutil.copytree(filled / "store", store)
    bad = store / "runs" / "part-zz-bad.parquet"
    if damage == "corrupt":
        bad.write_bytes(b"PAR1 this is not parquet PAR1")
    else:
        pd.DataFrame({"x": [1.0]}).to_parquet(bad)
    before = snapshot(store)
    for argv in (["run", filled / "grid.toml", "--store", store, "--rerun", "--no-progress"],
                 ["report", "--store", store, "--out", tmp_path / "r.html"],
                 ["compare", store, filled / "store"]):
        code, _, err = run_cli(capsys, *argv)
        assert code == 2 and "part-zz-bad.parquet" in err and "Traceback" not in err, argv
    assert snapshot(store) == before and not (tmp_path / "r.html").exists()


def test_report_without_results(tmp_path, capsys):
    code, _, err = run_cli(capsys, "report", "--store", tmp_path / "empty", "--out", tmp_path / "r.html")
    assert code == 2 and "no results" in err
    Store(tmp_path / "empty2").init()
    code, _, err = run_cli(capsys, "report", "--store", tmp_path / "empty2", "--out", tmp_path / "r.html")
    assert code == 2 and "no results" in err and not (tmp_path / "r.html").exists()


def _copy_with(src: Path, dst: Path, iters_changes=None, **changes):
    """A second store whose runs equal src's with some columns changed (iters copied, or changed by
    ``iters_changes(run_rows, iter_rows)``)."""
    runs, iters = Store(src).read()
    out = Store(dst)
    for rid, group in runs.groupby("run_id"):
        r = group.copy()
        for col, fn in changes.items():
            r[col] = fn(r)
        it = iters[iters["run_id"] == rid].copy()
        if iters_changes is not None:
            it = iters_changes(r, it)
        out.write(r, it)
    return runs


def test_compare_two_stores_flags_regressions(filled, tmp_path, capsys):
    """Newton's per-iteration step times made 10x slower in B: its cell (seeds pooled) is flagged on step time.
    (Two seeds of about 5 Newton steps each: on a shared VM their run medians differ by up to ~2.5x, and the
    bootstrap's interval of a 3x slowdown then reached below 1.1 in about one run of three.)"""
    def slower(r, it):
        if r["method"].iloc[0] == "newton":
            it["time_s"] = it["time_s"] * 10.0
        return it

    runs = _copy_with(filled / "store", tmp_path / "b", iters_changes=slower)
    code, out, _ = run_cli(capsys, "compare", filled / "store", tmp_path / "b")
    assert code == 0 and "2 matching cells, 1 flagged" in out and "noise level" in out
    rb, ib = Store(tmp_path / "b").read()
    table = cli.compare_tables(runs, rb, 1.1, iters_a=Store(filled / "store").read_iters(), iters_b=ib)
    newton = table[table["method_label"] == "newton"]
    assert newton["step_ratio"].tolist() == pytest.approx([10.0])
    assert newton["regression"].tolist() == ["step time"]
    assert (table.loc[table["method_label"] == "gd", "regression"] == "").all()
    code, _, _ = run_cli(capsys, "compare", filled / "store", tmp_path / "b", "--fail-on-regression")
    assert code == 1
    code, _, _ = run_cli(capsys, "compare", filled / "store", tmp_path / "b", "--fail-on-regression",
                         "--threshold", "20")
    assert code == 0


def test_compare_commits_in_one_store(filled, tmp_path, capsys):
    import shutil

    shutil.copytree(filled / "store", tmp_path / "s")
    _copy_with(filled / "store", tmp_path / "s", git_commit=lambda r: "beef" + "0" * 36,
               iters_to_eps=lambda r: r["iters_to_eps"] * 2)
    base = Store(filled / "store").read_runs()["git_commit"].iloc[0]
    code, out, err = run_cli(capsys, "compare", base[:8], "beef", "--store", tmp_path / "s")
    assert code == 0, err
    assert "2 matching cells, 1 flagged" in out  # newton's iteration counts changed (gd: eps not reached)
    code, _, err = run_cli(capsys, "compare", "0ddba11", "beef", "--store", tmp_path / "s")
    assert code == 2 and "0ddba11" in err
    _copy_with(filled / "store", tmp_path / "s", git_commit=lambda r: "beef1" + "0" * 35)
    code, _, err = run_cli(capsys, "compare", base[:8], "beef", "--store", tmp_path / "s")
    assert code == 2 and "ambiguous" in err and "beef000000" in err and "beef100000" in err
    code, _, err = run_cli(capsys, "compare", "", "beef", "--store", tmp_path / "s")
    assert code == 2 and "empty" in err


def test_compare_resolves_git_revisions(filled, tmp_path, capsys):
    """``compare HEAD <other>`` finds HEAD's full hash with git (the store records full hashes)."""
    import shutil

    base = Store(filled / "store").read_runs()["git_commit"].iloc[0]
    if cli._git_rev("HEAD") != base:
        pytest.skip("the fixture store was not recorded at this checkout's HEAD (not a git checkout?)")
    shutil.copytree(filled / "store", tmp_path / "s")
    _copy_with(filled / "store", tmp_path / "s", git_commit=lambda r: "beef" + "0" * 36)
    code, out, err = run_cli(capsys, "compare", "HEAD", "beef", "--store", tmp_path / "s")
    assert code == 0 and "2 matching cells" in out, err
    assert cli._git_rev("no-such-revision-anywhere") is None


def test_module_and_console_entry_points(filled, tmp_path):
    r = subprocess.run([sys.executable, "-m", "precond_core.bench", "list", "suites"], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "quick" in r.stdout
    r = subprocess.run([sys.executable, "-c", "import sys; from precond_core.cli import main; "
                        "sys.exit(main(['run', 'no_such_suite']))"], cwd=ROOT, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 2 and "unknown suite 'no_such_suite'" in r.stderr and "Traceback" not in r.stderr
