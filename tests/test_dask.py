"""The Dask executor: one task per cell on a LocalCluster, results written by the submitting process;
the tables equal those of an in-process run (deterministic columns)."""
from __future__ import annotations

import pandas as pd
import pytest

pytest.importorskip("pyarrow")
distributed = pytest.importorskip("distributed")

from precond_core.bench.executors import DaskExecutor, LocalExecutor, make_executor
from precond_core.bench.runner import run_sweep
from precond_core.bench.store import Store

GRID = """
[defaults]
eps = 1e-9
max_iters = 30
seeds = [0, 1]
threads = 1
[[problems]]
name = "logistic"
n_samples = 50
n_features = 7
[[problems]]
name = "one_d"
[[methods]]
name = "gd"
[[methods]]
name = "uniform_direction"
form = ["raw", "symmetrized"]
[[methods]]
name = "adagrad_bma"
k = 3
"""
GIT = ("feedfacefeedfacefeedfacefeedfacefeedface", False)
DET_RUNS = ["run_id", "cell_key", "problem", "method", "method_label", "n", "k", "seed", "stop_reason",
            "iterations", "iters_to_eps", "final_loss", "final_grad_norm", "f0", "state_bytes", "git_commit"]
DET_ITERS = ["run_id", "iter", "loss", "grad_norm", "n_grads", "n_hvps", "n_solves", "method_label", "seed"]


def det(store_dir):
    runs, iters = Store(store_dir).read()
    return (runs[DET_RUNS].sort_values("run_id").reset_index(drop=True),
            iters[DET_ITERS].sort_values(["run_id", "iter"]).reset_index(drop=True))


@pytest.fixture(scope="module")
def client():
    with distributed.LocalCluster(host="127.0.0.1", n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster, distributed.Client(cluster) as c:
        yield c


def test_dask_tables_equal_local_run(tmp_path, client):
    grid = tmp_path / "g.toml"
    grid.write_text(GRID)
    kw = dict(progress=False, log=lambda m: None, git=GIT)
    local = run_sweep(grid, tmp_path / "local", executor=LocalExecutor(), **kw)
    ex = DaskExecutor(client)
    with distributed.get_task_stream(client) as stream:
        remote = run_sweep(grid, tmp_path / "dask", executor=ex, **kw)
    ex.close()  # does not close a client it was given
    assert client.status == "running"
    assert len(local.stored) == len(remote.stored) == 14 and len(remote.skipped) == 2 and not remote.failed
    (rl, il), (rd, idk) = det(tmp_path / "local"), det(tmp_path / "dask")
    pd.testing.assert_frame_equal(rl, rd)
    pd.testing.assert_frame_equal(il, idk)
    # every cell was one task on the cluster's workers (16 cells: 14 stored, 2 skipped there)
    keys = [str(t["key"]) for t in stream.data]
    assert sum(k.startswith("cell-") for k in keys) == 16
    assert {t["worker"] for t in stream.data} <= set(client.scheduler_info()["workers"])
    # resume works the same way through the cluster
    again = run_sweep(grid, tmp_path / "dask", executor=DaskExecutor(client), **kw)
    assert again.stored == [] and again.already == 14


def test_failed_task_is_reported_not_stored(tmp_path, client):
    from precond_core.bench.grid import Cell

    def boom(cell):
        raise RuntimeError(f"worker failure on {cell.method}")

    cells = [Cell("one_d", {}, "gd", {}), Cell("one_d", {}, "newton", {})]
    out = list(DaskExecutor(client).map(boom, cells))
    assert sorted(r.error for r in out) == ["RuntimeError: worker failure on gd", "RuntimeError: worker failure on newton"]


def test_make_executor_arguments():
    assert isinstance(make_executor("local"), LocalExecutor)
    with pytest.raises(ValueError, match="--scheduler"):
        make_executor("dask", None)
    with pytest.raises(ValueError, match="'local' or 'dask'"):
        make_executor("ray")


def test_unreachable_scheduler_is_a_clear_error():
    with pytest.raises(RuntimeError, match="cannot connect to the Dask scheduler at 'tcp://127.0.0.1:9'"):
        DaskExecutor("tcp://127.0.0.1:9", timeout=1)
