"""The results store: atomic append-only parts, schema checks, clear errors on damaged or foreign files."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("pyarrow")

from precond_core.bench import store as st
from precond_core.bench.store import ITERS_COLUMNS, RUNS_COLUMNS, Store, StoreError


def fake_cell(run_id: str, n_iter: int = 4, commit: str = "c0", machine: str = "m0", k=None):
    """Tables with every schema column, values derived from run_id (no library needed)."""
    seed = int(run_id[-1], 16)
    runs = {c: "x" for c in RUNS_COLUMNS}
    runs.update(run_id=run_id, cell_key=json.dumps({"id": run_id}), n=10, k=k, seed=seed, eps=1e-6, max_iters=50,
                iterations=n_iter - 1, iters_to_eps=float("nan"), time_to_eps=float("nan"), final_grad_norm=0.5,
                final_loss=1.0, median_step_s=1e-3, grad_s=5e-4, step_cost_grads=2.0, state_bytes=80,
                peak_mem_bytes=1 << 20, wall_s=0.1, theory_bound=float("nan"), f0=2.0, git_commit=commit,
                git_dirty=False, machine=machine, timestamp=f"2026-01-01T00:00:0{seed}+00:00")
    it = pd.DataFrame({"run_id": run_id, "iter": np.arange(n_iter), "loss": np.linspace(2, 1, n_iter),
                       "grad_norm": np.geomspace(1, 0.5, n_iter), "time_s": np.arange(n_iter) * 1e-3,
                       "n_grads": np.arange(n_iter) + 1, "n_hvps": 0, "n_solves": 0, "problem": "p",
                       "method": "m", "method_label": "m()", "n": 10, "k": k, "device": "cpu",
                       "dtype": "float64", "seed": seed})
    return pd.DataFrame([runs]), it


def snapshot(root):
    return {p: p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_roundtrip_and_layout(tmp_path):
    s = Store(tmp_path / "res")
    names = [s.write(*fake_cell("a" * 15 + "1", k=4)), s.write(*fake_cell("b" * 15 + "2"))]
    assert json.loads((tmp_path / "res" / "store.json").read_text())["schema_version"] == st.SCHEMA_VERSION
    for sub in ("runs", "iters"):
        assert sorted(p.name for p in (tmp_path / "res" / sub).iterdir()) == sorted(names)
    runs, iters = s.read()
    assert list(runs["run_id"]) == ["a" * 15 + "1", "b" * 15 + "2"]
    assert set(RUNS_COLUMNS) <= set(runs.columns) and set(ITERS_COLUMNS) <= set(iters.columns)
    assert str(runs["k"].dtype) == "Int64" and runs["k"].iloc[0] == 4 and pd.isna(runs["k"].iloc[1])
    assert runs["git_dirty"].dtype == bool and runs["n"].dtype == np.int64
    assert len(iters) == 8 and iters.groupby("run_id").size().tolist() == [4, 4]
    np.testing.assert_allclose(iters["loss"].iloc[:4], np.linspace(2, 1, 4))


def test_append_only_never_rewrites(tmp_path):
    s = Store(tmp_path)
    s.write(*fake_cell("0" * 16))
    before = snapshot(tmp_path)
    s.write(*fake_cell("0" * 16))  # the same run again (e.g. --rerun): a new pair of parts
    after = snapshot(tmp_path)
    assert all(after[p] == b for p, b in before.items())
    assert len(after) == len(before) + 2
    assert len(s.read_runs()) == 2 and len(st.latest_runs(s.read_runs())) == 1


def test_done_ids_by_commit_and_machine(tmp_path):
    s = Store(tmp_path)
    s.write(*fake_cell("0" * 15 + "1", commit="c1", machine="m1"))
    s.write(*fake_cell("0" * 15 + "2", commit="c2", machine="m1"))
    s.write(*fake_cell("0" * 15 + "3", commit="c1", machine="m2"))
    assert s.done_ids("c1", "m1") == {"0" * 15 + "1"}
    assert s.done_ids("c1") == {"0" * 15 + "1", "0" * 15 + "3"}
    assert s.done_ids() == {"0" * 15 + c for c in "123"}
    assert Store(tmp_path / "none").done_ids("c1") == set()


@pytest.mark.parametrize("damage", ["corrupt", "foreign"])
def test_bad_part_names_the_file_and_is_kept(tmp_path, damage):
    s = Store(tmp_path)
    s.write(*fake_cell("0" * 16))
    bad = tmp_path / "runs" / "part-bad.parquet"
    if damage == "corrupt":
        good = next((tmp_path / "runs").glob("part-2*.parquet")).read_bytes()
        bad.write_bytes(good[: len(good) // 2])
    else:
        pd.DataFrame({"a": [1, 2], "b": ["x", "y"]}).to_parquet(bad)
    before = snapshot(tmp_path)
    with pytest.raises(StoreError, match="part-bad.parquet"):
        s.read_runs()
    with pytest.raises(StoreError, match="part-bad.parquet"):
        s.done_ids("c0")
    assert snapshot(tmp_path) == before


def test_orphan_iters_part_is_ignored(tmp_path):
    s = Store(tmp_path)
    name = s.write(*fake_cell("0" * 16))
    runs, iters = fake_cell("1" * 16)
    st._atomic_write_parquet(st.normalize(iters), tmp_path / "iters" / name.replace("0" * 16, "1" * 16))
    assert set(s.read_iters()["run_id"]) == {"0" * 16}
    assert s.done_ids() == {"0" * 16}


def test_interrupt_during_write_leaves_nothing(tmp_path, monkeypatch):
    s = Store(tmp_path)
    s.write(*fake_cell("0" * 16))
    before = snapshot(tmp_path)
    real = pd.DataFrame.to_parquet

    def half_then_interrupt(self, path, *a, **kw):
        real(self.iloc[:1], path, *a, **kw)  # a temp file exists when the interrupt arrives
        raise KeyboardInterrupt

    monkeypatch.setattr(pd.DataFrame, "to_parquet", half_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        s.write(*fake_cell("1" * 16))
    monkeypatch.undo()
    assert snapshot(tmp_path) == before  # no temp file, no partial part
    assert not [p for p in tmp_path.rglob(".tmp-*")]
    assert s.done_ids() == {"0" * 16}


def test_marker_checks(tmp_path):
    (tmp_path / "store.json").write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(StoreError, match="store.json"):
        Store(tmp_path).read_runs()
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(StoreError, match="not a results store"):
        Store(other).write(*fake_cell("0" * 16))
    assert sorted(p.name for p in other.iterdir()) == ["notes.txt"]
    newer = tmp_path / "newer"
    newer.mkdir()
    (newer / "store.json").write_text(json.dumps({"format": st.FORMAT, "schema_version": 999}))
    with pytest.raises(StoreError, match="schema version 999"):
        Store(newer).read_runs()


def test_write_rejects_tables_without_schema_columns(tmp_path):
    runs, iters = fake_cell("0" * 16)
    with pytest.raises(ValueError, match="final_loss"):
        Store(tmp_path).write(runs.drop(columns=["final_loss"]), iters)
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").iterdir())


def test_empty_store_reads_empty(tmp_path):
    runs, iters = Store(tmp_path / "nothing").read()
    assert runs.empty and iters.empty and list(runs.columns) == RUNS_COLUMNS
