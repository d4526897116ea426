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

    from precond_core.bench.grid import GridError, load_plan
    d = Path(T.__file__).resolve().parent.parent / "suites" / "train"
    quick = T.load_suite(d / "quick.toml")
    assert {t["base"]["optimizer"] for t in quick} >= {"adagrad", "adagrad_bma", "adagrad_full"}
    paper = T.load_suite(d / "paper_cnn.toml")
    small = {t["base"].get("params", {}).get("variant", "exact") for t in paper
             if t["base"]["model"] == "small_cnn" and t["base"]["optimizer"] == "adagrad_bma"}
    assert small == {"exact", "scaled", "lu2018"}
    full = T.load_suite(d / "paper_cnn.toml", full=True)
    assert full[0]["base"]["subset"] == "all" and paper[0]["base"]["subset"] == 10000
    # the paper grid carries the same [[train]] tables; paper_full holds them at the --full settings
    assert load_plan("paper", check_data=False).train == paper
    assert load_plan("paper", full=True, check_data=False).train == full == load_plan("paper_full", check_data=False).train
    bad = tmp_path / "bad.toml"
    bad.write_text('[[train]]\nmodel = "mlp"\ndata = "digits"\noptimizer = "adagrad"\nlrs = [0.1]\nfoo = 1\n')
    with pytest.raises(GridError, match=r"bad.toml: table \[\[train\]\] #1, key 'foo': unknown key"):
        T.load_suite(bad)


SUITE = """
[train_defaults]
model = "mlp"
data = "digits"
epochs = 2
batch_size = 64
subset = 512
seeds = [0, 1]

[[train]]
optimizer = "adagrad"
lrs = [0.001, 0.05]

[[train]]
optimizer = "adagrad_bma"
params = { variant = "lu2018" }
lrs = [0.05]
"""


def test_cli_train_then_report_section(tmp_path, capsys):
    """`precond-bench train FILE` stores the runs, a second call trains nothing, and the report's
    "Training networks" section shows the runs at the chosen learning rate (and the CNN claim reads them)."""
    from precond_core.bench.cli import main
    from precond_core.bench.report_training import section_training, training_summary

    suite = tmp_path / "t.toml"
    suite.write_text(SUITE)
    store = tmp_path / "store"
    assert main(["train", str(suite), "--store", str(store)]) == 0
    out = capsys.readouterr().out
    assert "adagrad#1: lr 0.05" in out or "adagrad#1: lr 0.001" in out
    files = sorted((store / "train").glob("*.json"))
    assert len(files) == 5  # adagrad: 2 lrs at seed 0 + the chosen lr at seed 1; lu2018: 2 seeds
    stamps = [f.stat().st_mtime_ns for f in files]
    assert main(["train", str(suite), "--store", str(store)]) == 0
    assert [f.stat().st_mtime_ns for f in sorted((store / "train").glob("*.json"))] == stamps

    runs, eps = T.load_training_tables(store)
    assert set(runs["method"]) == {"adagrad", "adagrad_bma(variant=lu2018)"}
    first = runs[(runs["method"] == "adagrad") & (runs["seed"] == 0)]
    best = first.loc[first["final_train_loss"].idxmin(), "lr"]
    assert set(runs.loc[runs["selected"] & (runs["method"] == "adagrad"), "lr"]) == {best}
    summary = training_summary(runs, eps)
    assert list(summary["seeds"]) == [2, 2]
    row = summary[summary["method"] == "adagrad"].iloc[0]
    final = eps[eps["run_id"].isin(runs.loc[runs["selected"] & (runs["method"] == "adagrad"), "run_id"])
                & (eps["epoch"] == 2)]
    assert row["test error"] == pytest.approx(final["test_error"].median())
    assert row["training rows"] == "512" and row["batch"] == "64"  # a reduced run says so in the report
    sec = section_training(store)
    assert sec.note is None and len(sec.figures) == 1
    # a store of training runs only still gets a report: the training chapter
    assert main(["report", "--store", str(store), "--out", str(tmp_path / "r.html")]) == 0
    html = (tmp_path / "r.html").read_text()
    assert "Training networks" in html and "5 training runs" in html


def test_cli_train_bad_suite(tmp_path, capsys):
    from precond_core.bench.cli import main

    assert main(["train", "no_such_suite", "--store", str(tmp_path)]) == 2
    assert "unknown training suite 'no_such_suite'" in capsys.readouterr().err
    bad = tmp_path / "bad.toml"
    bad.write_text(SUITE.replace('optimizer = "adagrad"', 'optimizer = "adagradd"'))
    assert main(["train", str(bad), "--store", str(tmp_path / "s")]) == 2
    assert not (tmp_path / "s").exists()  # nothing trained or written


@pytest.mark.parametrize("optimizer,params", [("uniform_direction", {"samples": 2}),
                                              ("fisher_sampled", {"b": 4}),
                                              ("hutchinson", {"damping": 0.1})])
def test_newton_like_optimizers_train(tmp_path, optimizer, params):
    # HVP optimizers get a create_graph closure, FisherSampled the minibatch; the loss goes down
    r = T.run_cell({**BASE, "optimizer": optimizer, "lr": 1.0 if optimizer != "hutchinson" else 0.05,
                    "params": params, "subset": 256}, tmp_path)
    assert r["run"]["status"] == "ok"
    assert r["epochs"][1]["train_loss"] < r["epochs"][0]["train_loss"]


def test_fisher_sampled_bad_params_refused_before_training():
    errs = T.check({**BASE, "optimizer": "fisher_sampled", "params": {"b": 0}})
    assert errs and errs[0][0] == "params" and "b" in errs[0][1]
