import json

import pytest

from precond_core.bench import train as T

pytest.importorskip("sklearn")
pytest.importorskip("pandas")

BASE = {"model": "mlp", "data": "digits", "optimizer": "adagrad_bma", "lr": 0.05, "epochs": 2, "batch_size": 64,
        "subset": 512}


def test_cell_stored_resumed_and_loaded(tmp_path):
    r = T.run_cell(BASE, tmp_path)
    assert r["run"]["status"] == "ok" and len(r["epochs"]) == 2
    assert r["epochs"][1]["train_loss"] < r["epochs"][0]["train_loss"]
    files = list((tmp_path / "train").glob("*.json"))
    assert len(files) == 1
    mtime = files[0].stat().st_mtime_ns
    msgs = []
    T.run_cell(BASE, tmp_path, msgs.append)
    assert files[0].stat().st_mtime_ns == mtime and "skip" in msgs[0]
    runs, eps = T.load_training_tables(tmp_path)
    assert len(runs) == 1 and list(eps["epoch"]) == [1, 2]
    assert eps["train_loss"].iloc[-1] == r["run"]["final_train_loss"]


def test_diverged_stored_and_sweep_goes_on(tmp_path):
    cells = [{**BASE, "optimizer": "adagrad", "lr": 1e38, "epochs": 1}, {**BASE, "epochs": 1}]
    out = T.run_cells(cells, tmp_path, progress=None)
    assert [o["run"]["status"] for o in out] == ["diverged", "ok"]


def test_tune_picks_lowest_final_loss(tmp_path):
    res = T.tune_and_run({**BASE, "epochs": 1}, [1e-3, 0.05], [0, 1], tmp_path, progress=None)
    losses = {r["run"]["lr"]: r["run"]["final_train_loss"] for r in res["runs"] if r["run"]["seed"] == 0}
    assert res["best_lr"] == min(losses, key=losses.get)
    assert sorted(r["run"]["seed"] for r in res["runs"] if r["run"]["lr"] == res["best_lr"]) == [0, 1]


def test_bad_cells():
    with pytest.raises(ValueError, match="optimizer"):
        T.normalize({**BASE, "optimizer": "sgdx"})
    with pytest.raises(ValueError, match="lr"):
        T.normalize({**BASE, "lr": 0})
    with pytest.raises(ValueError, match="bogus"):
        T.normalize({**BASE, "bogus": 1})
    with pytest.raises(ValueError, match="model"):
        T.normalize({k: v for k, v in BASE.items() if k != "model"})


def test_bundled_training_suites_validate(tmp_path):
    from pathlib import Path
    d = Path(T.__file__).resolve().parent.parent / "suites" / "train"
    quick = T.load_suite(d / "quick.toml")
    assert {t["base"]["optimizer"] for t in quick} >= {"adagrad", "adagrad_bma", "adagrad_full"}
    paper = T.load_suite(d / "paper_cnn.toml")
    small = {t["base"].get("params", {}).get("variant", "exact") for t in paper
             if t["base"]["model"] == "small_cnn" and t["base"]["optimizer"] == "adagrad_bma"}
    assert small == {"exact", "scaled", "lu2018"}
    full = T.load_suite(d / "paper_cnn.toml", full=True)
    assert full[0]["base"]["subset"] == 60000 and paper[0]["base"]["subset"] == 5000
    bad = tmp_path / "bad.toml"
    bad.write_text('[[train]]\nmodel = "mlp"\ndata = "digits"\noptimizer = "adagrad"\nlrs = [0.1]\nfoo = 1\n')
    with pytest.raises(ValueError, match=r"bad.toml: \[\[train\]\] #1: unknown key\(s\) \['foo'\]"):
        T.load_suite(bad)
