"""Sweep runner: grid files, validation, skipping, resume after Ctrl-C or SIGKILL."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

pytest.importorskip("pyarrow")

import precond_core as pc
from precond_core.bench import grid as G
from precond_core.bench.runner import SweepError, run_cell, run_sweep
from precond_core.bench.store import ITERS_COLUMNS, RUNS_COLUMNS, Store

ROOT = Path(__file__).resolve().parents[1]
GIT = ("0123456789abcdef0123456789abcdef01234567", False)  # fixed commit: tests do not depend on the checkout

TINY = """
[defaults]
eps = 1e-9
max_iters = 25
max_seconds = 30
seeds = [0, 1]
threads = 1

[[problems]]
name = "logistic"
n_samples = 60
n_features = 8
lam = 1e-2

[[problems]]
name = "one_d"

[[methods]]
name = "gd"

[[methods]]
name = "uniform_direction"
form = "raw"

[[methods]]
name = "adagrad_bma"
k = 2
"""
# one_d has n = 1: adagrad_bma(k=2) is skipped there -> 10 stored cells of 12
DET_RUNS = ["run_id", "cell_key", "problem", "method", "method_label", "n", "k", "seed", "stop_reason",
            "iterations", "iters_to_eps", "final_loss", "final_grad_norm", "f0", "state_bytes"]
DET_ITERS = ["run_id", "iter", "loss", "grad_norm", "n_grads", "n_hvps", "n_solves"]


def write(tmp_path, text, name="tiny.toml"):
    p = tmp_path / name
    p.write_text(text)
    return p


def det(store_dir):
    """Deterministic columns (no times), sorted, for comparing two sweeps."""
    runs, iters = Store(store_dir).read()
    r = runs[DET_RUNS].sort_values("run_id").reset_index(drop=True)
    i = iters[DET_ITERS].sort_values(["run_id", "iter"]).reset_index(drop=True)
    return r, i


def quiet_sweep(src, store, **kw):
    return run_sweep(src, store, progress=False, log=lambda m: None, git=GIT, **kw)


# -- grids ---------------------------------------------------------------------------------------------
def test_expansion_product_overrides_and_literal_lists(tmp_path):
    p = write(tmp_path, """
[defaults]
seeds = [0, 1, 2]
max_iters = 10
[[problems]]
name = "quadratic"
n = [10, 20]
[[methods]]
name = "adagrad_bma"
k = [1, 2]
variant = ["exact", "scaled"]
[[methods]]
name = "newton_bma"
blocks = [[3, 7]]
max_iters = 99
seeds = [5]
""")
    suite, cells = G.load_grid(p)
    assert suite == "tiny"
    assert len(cells) == 2 * (2 * 2 * 3 + 1)
    bma = [c for c in cells if c.method == "newton_bma"]
    assert {c.max_iters for c in bma} == {99} and {c.seed for c in bma} == {5}
    assert all(c.method_params["blocks"] == [3, 7] for c in bma)
    assert {(c.n, c.k) for c in cells if c.method == "adagrad_bma"} == {(10, 1), (10, 2), (20, 1), (20, 2)}
    assert len({c.run_id for c in cells}) == len(cells)


def test_run_id_is_suite_independent_and_stable(tmp_path):
    body = TINY
    _, a = G.load_grid(write(tmp_path, body, "one.toml"))
    _, b = G.load_grid(write(tmp_path, "[suite]\ndescription = 'x'\n" + body, "two.toml"))
    assert [c.run_id for c in a] == [c.run_id for c in b]
    assert {c.suite for c in a} == {"one"} and {c.suite for c in b} == {"two"}
    c = a[0]
    key = json.loads(c.cell_key)
    assert set(key) == {"problem", "problem_params", "method", "method_params", "n", "k", "device", "dtype",
                        "seed", "eps", "max_iters"}
    # the hash is of the canonical JSON only: recomputing it from the parsed key gives the same id
    import hashlib
    assert hashlib.sha256(G.canonical_json(key).encode()).hexdigest()[:16] == c.run_id


def test_bundled_suites_validate():
    names = G.list_suites()
    assert {"quick", "paper", "scaling", "full"} <= set(names)
    for name in names:
        suite, cells = G.load_grid(name)
        assert suite == name and cells
    # paper: the three forms of the uniform-direction estimate on mushrooms, and GD vs Newton on 500 x 100
    _, paper = G.load_grid("paper")
    forms = {c.method_params.get("form") for c in paper if c.dataset == "mushrooms" and c.method == "uniform_direction"}
    assert forms == {"raw", "symmetrized", "regularized"}
    assert {c.method for c in paper if c.problem_params.get("n_samples") == 500} == {"gd", "newton"}


@pytest.mark.parametrize("snippet, table, key", [
    ('[[problems]]\nname = "logistic"\n[[methods]]\nname = "gd"\n[[methods]]\nname = "nope"\n',
     "[[methods]] #2", "'name'"),
    ('[[problems]]\nname = "logistic"\n[[methods]]\nname = "adagrad_bma"\nkk = 3\n', "[[methods]] #1", "'kk'"),
    ('[[problems]]\nname = "nope"\n[[methods]]\nname = "gd"\n', "[[problems]] #1", "'name'"),
    ('[[problems]]\nname = "logistic"\nlamda = 1\n[[methods]]\nname = "gd"\n', "[[problems]] #1", "'lamda'"),
    ('[[problems]]\nname = "logistic"\ndataset = "no_such_data"\n[[methods]]\nname = "gd"\n',
     "[[problems]] #1", "'dataset'"),
    ('[defaults]\nepsilon = 1\n[[problems]]\nname = "logistic"\n[[methods]]\nname = "gd"\n', "[defaults]", "'epsilon'"),
    ('[defaults]\neps = 0\n[[problems]]\nname = "logistic"\n[[methods]]\nname = "gd"\n', "[defaults]", "'eps'"),
    ('[defaults]\ndtype = "float16"\n[[problems]]\nname = "logistic"\n[[methods]]\nname = "gd"\n', "[defaults]",
     "'dtype'"),
])
def test_bad_grid_names_file_table_and_key(tmp_path, snippet, table, key):
    p = write(tmp_path, snippet, "bad.toml")
    with pytest.raises(G.GridError) as exc:
        G.load_grid(p)
    msg = str(exc.value)
    assert str(p) in msg and table in msg and key in msg


def test_bad_toml_and_unknown_suite(tmp_path):
    with pytest.raises(G.GridError, match="not valid TOML"):
        G.load_grid(write(tmp_path, "[[problems]\nname=", "broken.toml"))
    with pytest.raises(G.GridError, match="unknown suite 'nosuchsuite'"):
        G.load_grid("nosuchsuite")
    with pytest.raises(G.GridError, match=r"needs at least one \[\[methods\]\]"):
        G.load_grid(write(tmp_path, '[[problems]]\nname = "one_d"\n', "nomethods.toml"))


# -- running -------------------------------------------------------------------------------------------
def test_cell_matches_direct_minimize():
    cell = G.Cell("logistic", {"n_samples": 60, "n_features": 8, "lam": 1e-2}, "uniform_direction",
                  {"form": "raw"}, seed=1, eps=1e-9, max_iters=25)
    res = run_cell(cell)
    prob = pc.problems.make_problem("logistic", dtype=torch.float64, device="cpu", seed=1, n_samples=60,
                                    n_features=8, lam=1e-2)
    tr = pc.minimize(prob, pc.make_method("uniform_direction", form="raw"), eps=1e-9, max_iters=25, seed=1)
    row = res.runs.iloc[0]
    np.testing.assert_array_equal(res.iters["loss"].to_numpy(), np.asarray(tr.losses))
    np.testing.assert_array_equal(res.iters["grad_norm"].to_numpy(), np.asarray(tr.grad_norms))
    np.testing.assert_array_equal(res.iters["n_hvps"].to_numpy(), np.asarray(tr.n_hvps))
    assert row.iterations == tr.iterations == len(res.iters) - 1 and row.stop_reason == tr.stop_reason
    assert row.f0 == tr.losses[0] and row.final_grad_norm == tr.grad_norms[-1]
    steps = np.diff(res.iters["time_s"].to_numpy())
    assert row.median_step_s == pytest.approx(np.median(steps))
    assert row.step_cost_grads == pytest.approx(row.median_step_s / row.grad_s)
    assert row.state_bytes > 0 and row.peak_mem_bytes > 0 and row.n == prob.n


def test_theory_bound_for_regularized_step_only():
    base = dict(problem="one_d", problem_params={}, method="uniform_direction", eps=1e-8, max_iters=50)
    reg = run_cell(G.Cell(method_params={"step": "regularized"}, **base)).runs.iloc[0]
    ada = run_cell(G.Cell(method_params={}, **base)).runs.iloc[0]
    assert np.isfinite(reg.theory_bound) and reg.theory_bound >= 1
    assert np.isnan(ada.theory_bound)


def test_sweep_tables_skips_and_resume(tmp_path):
    g = write(tmp_path, TINY)
    s = quiet_sweep(g, tmp_path / "st")
    assert len(s.stored) == 10 and len(s.skipped) == 2 and not s.failed
    assert all("k=2" in why for _, why in s.skipped)
    runs, iters = Store(tmp_path / "st").read()
    assert set(RUNS_COLUMNS) <= set(runs.columns) and set(ITERS_COLUMNS) <= set(iters.columns)
    assert runs["run_id"].is_unique and len(runs) == 10
    assert (iters.groupby("run_id").size().sort_index() == runs.set_index("run_id")["iterations"].sort_index() + 1).all()
    assert set(runs["git_commit"]) == {GIT[0]} and set(runs["suite"]) == {"tiny"}
    before = sorted(p.name for p in (tmp_path / "st" / "runs").iterdir())
    again = quiet_sweep(g, tmp_path / "st")
    assert again.stored == [] and again.already == 10
    assert sorted(p.name for p in (tmp_path / "st" / "runs").iterdir()) == before
    other_commit = run_sweep(g, tmp_path / "st", progress=False, log=lambda m: None, git=("f" * 40, True))
    assert len(other_commit.stored) == 10
    forced = quiet_sweep(g, tmp_path / "st", rerun=True)
    assert len(forced.stored) == 10 and len(Store(tmp_path / "st").read_runs()) == 30


def test_dense_and_capability_skips(tmp_path):
    info = pc.method_info("adagrad_full")
    g = write(tmp_path, f"""
[defaults]
max_iters = 2
[[sweep]]
[[sweep.problems]]
name = "scalable"
n = {info.max_n + 1}
[[sweep.problems]]
name = "one_d"
[[sweep.methods]]
name = "adagrad_full"
[[sweep]]
[[sweep.problems]]
name = "one_d"
[[sweep.methods]]
name = "kfac"
""")
    s = quiet_sweep(g, tmp_path / "st")
    reasons = sorted(r for _, r in s.skipped)
    assert len(s.stored) == 1 and len(reasons) == 2  # only adagrad_full on one_d runs
    assert str(info.max_n) in reasons[0] and "n=2049" in reasons[0]
    assert "kfac_factors" in reasons[1]
    assert Store(tmp_path / "st").read_runs()[["problem", "method"]].values.tolist() == [["one_d", "adagrad_full"]]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_absent_device_is_skipped_with_message(tmp_path):
    g = write(tmp_path, '[defaults]\ndevice = ["cpu", "cuda"]\nmax_iters = 3\n[[problems]]\nname = "one_d"\n'
                        '[[methods]]\nname = "gd"\n')
    msgs = []
    s = run_sweep(g, tmp_path / "st", progress=False, log=msgs.append, git=GIT)
    assert len(s.stored) == 1
    assert any("skip (device)" in m and "CUDA is not available" in m for m in msgs)
    assert set(Store(tmp_path / "st").read_runs()["device"]) == {"cpu"}


def test_max_cells_guard(tmp_path):
    g = write(tmp_path, TINY)
    with pytest.raises(SweepError, match="12 cells, more than --max-cells=5"):
        quiet_sweep(g, tmp_path / "st", max_cells=5)
    assert not (tmp_path / "st").exists()
    assert len(quiet_sweep(g, tmp_path / "st", max_cells=5, yes=True).stored) == 10


def test_keyboard_interrupt_mid_cell_leaves_nothing_partial(tmp_path, monkeypatch):
    g = write(tmp_path, TINY)
    real = pc.minimize
    calls = {"n": 0}

    def interrupt_third(*a, **kw):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(*a, **kw)

    monkeypatch.setattr(pc, "minimize", interrupt_third)
    with pytest.raises(KeyboardInterrupt):
        quiet_sweep(g, tmp_path / "st")
    monkeypatch.undo()
    files = [p for p in (tmp_path / "st").rglob("*") if p.is_file()]
    assert not [p for p in files if p.name.startswith(".")]
    assert len(list((tmp_path / "st" / "runs").iterdir())) == 2
    assert len(list((tmp_path / "st" / "iters").iterdir())) == 2
    s = quiet_sweep(g, tmp_path / "st")
    assert len(s.stored) == 8 and s.already == 2
    quiet_sweep(g, tmp_path / "ref")
    for a, b in zip(det(tmp_path / "st"), det(tmp_path / "ref")):
        pd.testing.assert_frame_equal(a, b)


SLOW = """
[defaults]
eps = 1e-12
max_iters = 400
seeds = [0, 1, 2, 3]
threads = 1
[[problems]]
name = "quadratic"
n = 200
cond = 1e4
[[methods]]
name = "gd"
[[methods]]
name = "adagrad_bma"
k = 4
"""


def test_sigkill_then_rerun_equals_uninterrupted(tmp_path):
    g = write(tmp_path, SLOW, "slow.toml")
    store = tmp_path / "killed"
    cmd = [sys.executable, "-m", "precond_core.bench", "run", str(g), "--store", str(store), "--no-progress"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    runs_dir = store / "runs"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if runs_dir.is_dir() and sum(1 for p in runs_dir.iterdir() if not p.name.startswith(".")) >= 2:
            break
        time.sleep(0.01)
    assert proc.poll() is None, "the sweep finished before it could be killed; make SLOW slower"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    n_before = len(Store(store).read_runs())
    assert 2 <= n_before < 8
    subprocess.run(cmd, cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    quiet_sweep(g, tmp_path / "whole")  # uninterrupted reference (in-process)
    (ra, ia), (rb, ib) = det(store), det(tmp_path / "whole")
    assert ra["run_id"].is_unique and len(ra) == 8
    pd.testing.assert_frame_equal(ra, rb)
    pd.testing.assert_frame_equal(ia, ib)
