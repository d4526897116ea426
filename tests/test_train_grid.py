"""[[train]] tables in grid files: run by the sweep runner and `precond-bench run`, validated by --dry-run,
diverged runs stored; CIFAR-10 read from python batches written here in the original format."""
import json
import pickle

import numpy as np
import pytest

from precond_core.bench import train as T
from precond_core.bench.cli import main
from precond_core.bench.grid import GridError, load_plan
from precond_core.bench.runner import run_sweep

pytest.importorskip("sklearn")
pytest.importorskip("pandas")

GIT = ("0123456789abcdef0123456789abcdef01234567", False)
TRAIN = """
[train_defaults]
model = "mlp"
data = "digits"
epochs = 1
batch_size = 64
subset = 256

[[train]]
name = "diag"
optimizer = "adagrad"
lrs = [1e38, 0.05]
seeds = [0, 1]

[[train]]
name = "bma"
optimizer = "adagrad_bma"
params = { variant = "scaled" }
lrs = [0.05]
"""
PROBLEMS = """
[defaults]
max_iters = 5
seeds = [0]

[[problems]]
name = "one_d"

[[methods]]
name = "gd"
"""


def write(tmp_path, text, name="g.toml"):
    p = tmp_path / name
    p.write_text(text)
    return p


def sweep(src, store, **kw):
    return run_sweep(src, store, progress=False, log=lambda m: None, **{"git": GIT, **kw})


def files(store):
    return sorted((store / "train").glob("*.json"))


def test_mixed_grid_runs_both_kinds_and_resumes(tmp_path):
    g = write(tmp_path, PROBLEMS + TRAIN)
    store = tmp_path / "store"
    s = sweep(g, store)
    assert len(s.stored) == 1  # the problem cell, in the parquet store
    # diag: 2 lrs at seed 0 (lr 1e38 diverges), then seed 1 at 0.05; bma: one lr at seed 0
    assert len(s.trained) == 4 and s.train_diverged == 1 and not s.failed
    res = {r["name"]: r for r in s.train_results}
    assert res["diag"]["best_lr"] == 0.05 and res["bma"]["best_lr"] == 0.05
    status = sorted((r["run"]["lr"], r["run"]["seed"], r["run"]["status"]) for r in res["diag"]["runs"])
    assert status == [(0.05, 0, "ok"), (0.05, 1, "ok"), (1e38, 0, "diverged")]
    diverged = [r for r in res["diag"]["runs"] if r["run"]["status"] == "diverged"][0]
    assert np.isnan(diverged["run"]["final_train_loss"]) and diverged["run"]["git_commit"] == GIT[0]
    assert any("diverged" in line for line in T.summary_lines(s.train_results))
    stamps = [f.stat().st_mtime_ns for f in files(store)]
    assert len(stamps) == 4
    again = sweep(g, store)  # same commit: nothing runs
    assert again.stored == [] and again.trained == [] and again.train_already == 4 and again.already == 1
    assert [f.stat().st_mtime_ns for f in files(store)] == stamps
    assert len(sweep(g, store, train="only", rerun=True).trained) == 4  # --rerun trains again
    other = sweep(g, store, train="only", git=("f" * 40, True))  # another commit: trained again
    assert len(other.trained) == 4 and other.stored == []
    runs, eps = T.load_training_tables(store)
    assert len(runs) == 4 and set(runs["git_commit"]) == {"f" * 40}
    only_problems = sweep(g, tmp_path / "s2", train="no")
    assert len(only_problems.stored) == 1 and not (tmp_path / "s2" / "train").exists()


def test_cli_run_and_train_alias(tmp_path, capsys):
    g = write(tmp_path, TRAIN)
    store = tmp_path / "store"
    assert main(["run", str(g), "--store", str(store), "--dry-run"]) == 0
    out, err = capsys.readouterr()
    assert "train diag: mlp on digits, adagrad" in out and "training: 2 table(s), 0 run(s) stored, 4 to run" in err
    assert not store.exists()
    assert main(["run", str(g), "--store", str(store), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "diag: lr 0.05" in out and "1 diverged run(s)" in out
    assert len(files(store)) == 4 and (store / "store.json").is_file()
    assert main(["train", str(g), "--store", str(store), "--dry-run"]) == 0
    assert "4 run(s) stored, 0 to run" in capsys.readouterr().err
    # a grid with problems only has nothing for --only-train
    p = write(tmp_path, PROBLEMS, "p.toml")
    assert main(["run", str(p), "--store", str(tmp_path / "s3"), "--only-train"]) == 2
    assert "no [[train]] tables" in capsys.readouterr().err


@pytest.mark.parametrize("edit, where", [
    (('lrs = [0.05]', 'lrs = [0.05]\nepochz = 2'), "table [[train]] #2, key 'epochz': unknown key (did you mean 'epochs'?)"),
    (('optimizer = "adagrad"', 'optimizer = "adagradd"'), "table [[train]] #1, key 'optimizer'"),
    (('lrs = [1e38, 0.05]', 'lrs = [0.0, 0.05]'), "table [[train]] #1, key 'lrs': must be a finite number > 0"),
    (('lrs = [0.05]', 'lrs = []'), "table [[train]] #2, key 'lrs'"),
    (('data = "digits"', 'data = "cifar"'), "table [[train]] #1, key 'data': must be one of"),
    (('params = { variant = "scaled" }', 'params = { variant = "nope" }'), "table [[train]] #2, key 'params'"),
    (('subset = 256', 'subset = -3'), "table [[train]] #1, key 'subset'"),
    (('[train_defaults]', '[train_defaults]\nfoo = 1'), "table [train_defaults], key 'foo'"),
    (('[train_defaults]', '[defaults]'), "table [defaults], keys ['batch_size', 'data', 'epochs', 'model', 'subset']: "
                                         "settings of the [[train]] tables go in [train_defaults]"),
])
def test_dry_run_names_file_table_key(tmp_path, capsys, edit, where):
    g = write(tmp_path, TRAIN.replace(*edit))
    assert main(["run", str(g), "--store", str(tmp_path / "st"), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert f"{g}: {where}" in err, err
    assert main(["train", str(g), "--store", str(tmp_path / "st")]) == 2
    assert not (tmp_path / "st").exists()  # nothing trained or written


def test_full_settings_and_per_table_full(tmp_path):
    text = TRAIN.replace('[[train]]\nname = "bma"', '[train_full]\nepochs = 3\nseeds = [0, 1, 2]\n\n[[train]]\nname = "bma"') \
        .replace('lrs = [0.05]', 'lrs = [0.05]\nfull = { epochs = 7 }')
    g = write(tmp_path, text)
    red = {t["name"]: t for t in load_plan(g).train}
    full = {t["name"]: t for t in load_plan(g, full=True).train}
    assert red["diag"]["base"]["epochs"] == 1 and red["diag"]["seeds"] == [0, 1]
    assert full["diag"]["base"]["epochs"] == 3 and full["diag"]["seeds"] == [0, 1, 2]
    assert full["bma"]["base"]["epochs"] == 7 and "full" not in full["bma"]["base"]


# -- CIFAR-10 ---------------------------------------------------------------------------------------------
def write_cifar(folder, n=24, seed=0):
    """Six batches in the "CIFAR-10 python version" format: pickled dicts with bytes keys, data uint8
    (n, 3072) in channel-major (R, G, B planes of 32 x 32) order, labels a list of ints."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    out = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, size=n)]
        d = {b"batch_label": name.encode(), b"labels": labels, b"data": data,
             b"filenames": [f"img_{i}.png".encode() for i in range(n)]}
        with open(folder / name, "wb") as fh:
            pickle.dump(d, fh, protocol=2)
        out[name] = (data, labels)
    return out


def test_cifar10_from_data_path_and_env(tmp_path, monkeypatch):
    import torch

    raw = write_cifar(tmp_path / "dl" / "cifar-10-batches-py")
    (Xtr, ytr), (Xte, yte) = T.load_data("cifar10", "small_cnn", None, 0, torch.float64, "cpu",
                                         str(tmp_path / "dl"))  # the folder holding cifar-10-batches-py
    assert Xtr.shape == (5 * 24, 3, 32, 32) and Xte.shape == (24, 3, 32, 32)
    want = np.concatenate([raw[f"data_batch_{i}"][0] for i in range(1, 6)]).reshape(-1, 3, 32, 32) / 255.0
    assert torch.equal(Xtr, torch.tensor(want)) and ytr.tolist() == sum((raw[f"data_batch_{i}"][1] for i in range(1, 6)), [])
    assert Xte[3, 1, 0, 5].item() == raw["test_batch"][0][3, 1024 + 5] / 255.0 and yte.tolist() == raw["test_batch"][1]
    cell = {"model": "small_cnn", "data": "cifar10", "data_path": str(tmp_path / "dl" / "cifar-10-batches-py"),
            "optimizer": "adagrad_bma", "lr": 0.05, "epochs": 1, "batch_size": 32, "subset": 64}
    res = T.run_cell(cell, tmp_path / "store")
    from precond_core.models import small_cnn
    n3, n1 = (sum(p.numel() for p in small_cnn(c).parameters()) for c in (3, 1))
    assert res["run"]["status"] == "ok" and res["run"]["n_params"] == n3 == n1 + 2 * 27  # 3 input channels
    assert res["run"]["data_path"] == cell["data_path"]
    # the key does not depend on where the data lies; the environment variable is the fallback
    moved = {k: v for k, v in cell.items() if k != "data_path"}
    assert T.cell_key(moved) == T.cell_key(cell)
    monkeypatch.setenv("PRECOND_CIFAR10_DIR", str(tmp_path / "dl" / "cifar-10-batches-py"))
    assert T.data_problem("cifar10") is None
    assert T.train_cell({**moved, "model": "mlp"})["run"]["status"] == "ok"


def test_cifar10_absent_names_path_and_fetch(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("PRECOND_CIFAR10_DIR", raising=False)
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError, match="CIFAR-10 not found") as exc:
        T.find_cifar10(str(missing))
    msg = str(exc.value)
    assert str(missing) in msg and "https://www.cs.toronto.edu/~kriz/cifar.html" in msg and "data_path" in msg
    # partly there: the missing batch is named
    write_cifar(tmp_path / "part", n=2)
    (tmp_path / "part" / "data_batch_3").unlink()
    assert "missing data_batch_3" in T.data_problem("cifar10", str(tmp_path / "part"))
    g = write(tmp_path, TRAIN.replace('data = "digits"', f'data = "cifar10"\ndata_path = "{missing}"'))
    assert main(["run", str(g), "--store", str(tmp_path / "st"), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert f"{g}: table [[train]] #1, key 'data_path': CIFAR-10 not found" in err and str(missing) in err
    with pytest.raises(GridError):
        load_plan(g)
    assert load_plan(g, check_data=False).train  # the format itself is fine


def test_cifar10_bad_batch_is_refused(tmp_path):
    folder = tmp_path / "c"
    write_cifar(folder, n=2)
    with open(folder / "data_batch_2", "wb") as fh:
        pickle.dump({b"data": np.zeros((2, 10), np.uint8), b"labels": [0, 1]}, fh, protocol=2)
    import torch
    from precond_core.datasets.errors import DatasetFormatError
    with pytest.raises(DatasetFormatError, match="data_batch_2"):
        T.load_data("cifar10", "mlp", None, 0, torch.float32, "cpu", str(folder))


def test_stored_result_of_another_machine_or_unreadable_is_trained_again(tmp_path):
    cell = {"model": "mlp", "data": "digits", "optimizer": "adagrad", "lr": 0.05, "batch_size": 64, "subset": 128}
    T.run_cell(cell, tmp_path, git=GIT, machine="a")
    assert T.stored_result(cell, tmp_path, GIT, "a") is not None
    assert T.stored_result(cell, tmp_path, GIT, "b") is None
    assert T.stored_result(cell, tmp_path, ("1" * 40, False), "a") is None
    T.result_path(tmp_path, cell).write_text("{not json")
    assert T.stored_result(cell, tmp_path) is None
    assert T.run_cell(cell, tmp_path)["run"]["status"] == "ok"  # trained again, file replaced
    assert json.loads(T.result_path(tmp_path, cell).read_text())["run"]["key"] == T.cell_key(cell)


def test_cuda_table_runs_there_or_is_skipped_with_a_message(tmp_path):
    import torch

    g = write(tmp_path, TRAIN.replace('subset = 256', 'subset = 256\ndevice = "cuda"'))
    lines = []
    s = run_sweep(g, tmp_path / "st", progress=False, log=lines.append, git=GIT)
    if torch.cuda.is_available():
        assert len(s.trained) == 4 and {r["run"]["device"] for r in s.train_results[0]["runs"]} == {"cuda"}
    else:
        assert s.trained == [] and sum("skip (device): [[train]]" in m for m in lines) == 2


def test_training_runs_as_dask_tasks(tmp_path):
    """Each training run is one task on the cluster; results written by the submitting process, equal to an
    in-process run's, and resumed the same way."""
    distributed = pytest.importorskip("distributed")
    from precond_core.bench.executors import DaskExecutor

    g = write(tmp_path, TRAIN)
    local = sweep(g, tmp_path / "local")
    with distributed.LocalCluster(host="127.0.0.1", n_workers=1, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster, distributed.Client(cluster) as client:
        with distributed.get_task_stream(client) as stream:
            remote = sweep(g, tmp_path / "dask", executor=DaskExecutor(client))
        assert sum(str(t["key"]).startswith("cell-") for t in stream.data) == 4
        again = sweep(g, tmp_path / "dask", executor=DaskExecutor(client))
    assert len(remote.trained) == 4 and remote.train_diverged == 1 and not remote.failed
    assert again.trained == [] and again.train_already == 4

    def finals(s):
        return {(r["run"]["key"]): (r["run"]["status"], r["run"]["final_train_loss"])
                for t in s.train_results for r in t["runs"]}
    fl, fr = finals(local), finals(remote)
    assert fl.keys() == fr.keys()
    for k in fl:
        assert fl[k][0] == fr[k][0]
        assert fl[k][1] == pytest.approx(fr[k][1], rel=1e-5, nan_ok=True)
