"""Training cells: a model, a data set and a ``precond_core.optim`` optimizer trained for some epochs.

A cell is a plain dict: ``model`` (``mlp`` | ``small_cnn`` | ``large_cnn``), ``data`` (``digits`` |
``fashion_mnist``), ``optimizer`` (a key of ``OPTIMIZERS``) with ``params`` (its keyword arguments),
``lr``, ``epochs``, ``batch_size``, ``seed``, ``subset`` (training rows used, ``None`` = all),
``device``, ``dtype``. ``run_cell`` trains it and writes one JSON file under ``<store>/train/`` with a row
per run and a row per epoch (full-data training loss mean after the epoch; ``loss_sum``, the sum of the
epoch's minibatch losses as the talk plots it; test error; cumulative wall time of the training steps;
median optimizer step time). The file is written atomically and a cell whose file exists is skipped,
so an interrupted sweep resumes. A NaN/inf loss stops the cell, which is stored with
``status = "diverged"``; ``run_cells`` goes on with the next cell.

Learning rates (the DeepOBS protocol): ``tune_and_run`` trains every lr of a small log grid with the
first seed, picks the lr with the lowest final training loss (diverged runs excluded), then trains the
remaining seeds at that lr. ``load_training_tables(store_dir)`` returns ``(train_runs, epochs)`` as
pandas DataFrames.
"""
from __future__ import annotations

import hashlib
import json
import math
import statistics
import time
from pathlib import Path

import torch

from .._atomic import atomic_write_text

OPTIMIZERS = {
    "torch_adagrad": lambda ps, lr, **kw: torch.optim.Adagrad(ps, lr=lr, **kw),
    "adagrad": lambda ps, lr, **kw: _optim().AdaGrad(ps, lr=lr, **kw),
    "adagrad_full": lambda ps, lr, **kw: _optim().AdaGradFull(ps, lr=lr, **kw),
    "adagrad_bma": lambda ps, lr, **kw: _optim().AdaGradBMA(ps, lr=lr, **kw),
    "block_diag_adagrad": lambda ps, lr, **kw: _optim().BlockDiagAdaGrad(ps, lr=lr, **kw),
    "hutchinson": lambda ps, lr, **kw: _optim().Hutchinson(ps, lr=lr, **kw),
}
DEFAULTS = {"params": {}, "epochs": 1, "batch_size": 128, "seed": 0, "subset": None, "device": "cpu",
            "dtype": "float32"}
KEYS = {"model", "data", "optimizer", "lr", *DEFAULTS}


def _optim():
    from .. import optim
    return optim


def normalize(cell: dict) -> dict:
    """Fill defaults and check the keys; ``ValueError`` naming the bad key."""
    if not isinstance(cell, dict):
        raise ValueError(f"a training cell must be a table, got {type(cell).__name__}")
    unknown = sorted(set(cell) - KEYS)
    if unknown:
        raise ValueError(f"unknown key(s) {unknown} in training cell; allowed: {sorted(KEYS)}")
    for k in ("model", "data", "optimizer", "lr"):
        if k not in cell:
            raise ValueError(f"training cell needs {k!r}")
    out = {**DEFAULTS, **cell}
    if out["model"] not in ("mlp", "small_cnn", "large_cnn"):
        raise ValueError(f"model must be mlp, small_cnn or large_cnn, got {out['model']!r}")
    if out["optimizer"] not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {sorted(OPTIMIZERS)}, got {out['optimizer']!r}")
    if isinstance(out["lr"], bool) or not isinstance(out["lr"], (int, float)) or not out["lr"] > 0:
        raise ValueError(f"lr must be a number > 0, got {out['lr']!r}")
    for k in ("epochs", "batch_size"):
        if isinstance(out[k], bool) or not isinstance(out[k], int) or out[k] < 1:
            raise ValueError(f"{k} must be a positive integer, got {out[k]!r}")
    if out["dtype"] not in ("float32", "float64"):
        raise ValueError(f"dtype must be float32 or float64, got {out['dtype']!r}")
    return out


def cell_key(cell: dict) -> str:
    return hashlib.sha1(json.dumps(normalize(cell), sort_keys=True, default=str).encode()).hexdigest()[:16]


def load_data(name: str, model: str, subset, seed: int, dtype, device):
    """(train, test) pairs of tensors; images padded to 32x32 with one channel for the CNNs."""
    import numpy as np
    if name == "digits":
        from sklearn.datasets import load_digits
        X, y = load_digits(return_X_y=True)
        X = (X / 16.0).reshape(-1, 1, 8, 8)
        pad = 12
        n_test = 297
        Xtr, ytr, Xte, yte = X[n_test:], y[n_test:], X[:n_test], y[:n_test]
    elif name == "fashion_mnist":
        from ..datasets.images import load_fashion_mnist
        Xtr, ytr, _ = load_fashion_mnist("train")
        Xte, yte, _ = load_fashion_mnist("test")
        Xtr, Xte = Xtr / 255.0, Xte / 255.0
        pad = 2
    else:
        raise ValueError(f"data must be digits or fashion_mnist, got {name!r}")
    if subset is not None:
        idx = np.random.default_rng(seed).permutation(len(ytr))[:subset]
        Xtr, ytr = Xtr[idx], ytr[idx]

    def conv(X, y):
        X = torch.tensor(X, dtype=dtype)
        if model != "mlp":
            X = torch.nn.functional.pad(X, (pad, pad, pad, pad))
        return X.to(device), torch.tensor(y, dtype=torch.int64).to(device)
    return conv(Xtr, ytr), conv(Xte, yte)


def build_model(name: str, in_shape):
    from ..models import MLP, large_cnn, small_cnn
    if name == "mlp":
        return MLP([int(torch.tensor(in_shape).prod()), 32, 10])
    return (small_cnn if name == "small_cnn" else large_cnn)(in_shape[0])


def train_cell(cell: dict, progress=None) -> dict:
    """Train one cell; returns ``{"run": {...}, "epochs": [...]}`` (not stored)."""
    from ..problems.module import module_problem
    c = normalize(cell)
    dtype = getattr(torch, c["dtype"])
    torch.manual_seed(c["seed"])
    (Xtr, ytr), test = load_data(c["data"], c["model"], c["subset"], c["seed"], dtype, c["device"])
    model = build_model(c["model"], tuple(Xtr.shape[1:])).to(c["device"], dtype)
    loss_fn = torch.nn.functional.cross_entropy
    prob = module_problem(model, loss_fn, (Xtr, ytr), test, batch_size=c["batch_size"], seed=c["seed"])
    opt = OPTIMIZERS[c["optimizer"]](model.parameters(), c["lr"], **c["params"])
    hvp = c["optimizer"] == "hutchinson"
    steps_per_epoch = max(1, prob.n_samples // prob.batch_size)
    epochs, status, wall = [], "ok", 0.0

    def sync():
        if str(c["device"]).startswith("cuda"):
            torch.cuda.synchronize()

    def flat():
        return torch.cat([p.detach().reshape(-1) for p in model.parameters()])

    for ep in range(1, c["epochs"] + 1):
        loss_sum, step_times = 0.0, []
        for _ in range(steps_per_epoch):
            Xb, yb = prob.Xb, prob.yb

            def closure():
                opt.zero_grad()
                loss = loss_fn(model(Xb), yb)
                loss.backward(create_graph=hvp)
                return loss
            sync()
            t0 = time.perf_counter()
            loss = opt.step(closure)
            sync()
            dt = time.perf_counter() - t0
            step_times.append(dt)
            wall += dt
            lv = float(loss.detach())
            prob.next_batch()
            if not math.isfinite(lv):
                status = "diverged"
                break
            loss_sum += lv
        if status == "diverged":
            break
        x = flat()
        tl = prob.train_loss(x)
        if not math.isfinite(tl):
            status = "diverged"
            break
        row = {"epoch": ep, "train_loss": tl, "loss_sum": loss_sum, "test_error": prob.test_error(x),
               "wall_s": wall, "step_s_median": statistics.median(step_times)}
        epochs.append(row)
        if progress:
            progress(f"{c['optimizer']} lr={c['lr']} seed={c['seed']} epoch {ep}/{c['epochs']}: "
                     f"loss {tl:.4f}, test error {row['test_error']:.4f}")
    run = {**{k: (json.dumps(v, sort_keys=True) if k == "params" else v) for k, v in c.items()},
           "key": cell_key(c), "status": status, "n_params": prob.n,
           "final_train_loss": epochs[-1]["train_loss"] if epochs and status == "ok" else float("nan"),
           "final_test_error": epochs[-1]["test_error"] if epochs and status == "ok" else float("nan"),
           "wall_s": wall}
    return {"run": run, "epochs": epochs}


def run_cell(cell: dict, store_dir, progress=None) -> dict:
    """Train and store a cell unless its file exists (then return the stored result)."""
    path = Path(store_dir) / "train" / f"{cell_key(cell)}.json"
    if path.exists():
        if progress:
            progress(f"skip {path.name} (stored)")
        return json.loads(path.read_text())
    res = train_cell(cell, progress)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(res, sort_keys=True))
    return res


def run_cells(cells, store_dir, progress=print) -> list:
    return [run_cell(c, store_dir, progress) for c in cells]


def tune_and_run(base: dict, lrs, seeds, store_dir, progress=print) -> dict:
    """DeepOBS protocol: the lr grid at ``seeds[0]``, best by final training loss, then the other seeds."""
    seeds = list(seeds)
    if not seeds or not list(lrs):
        raise ValueError("lrs and seeds must be non-empty")
    res = {lr: run_cell({**base, "lr": lr, "seed": seeds[0]}, store_dir, progress) for lr in lrs}
    ok = {lr: r["run"]["final_train_loss"] for lr, r in res.items() if r["run"]["status"] == "ok"}
    if not ok:
        return {"best_lr": None, "runs": list(res.values())}
    best = min(ok, key=ok.get)
    rest = [run_cell({**base, "lr": best, "seed": s}, store_dir, progress) for s in seeds[1:]]
    return {"best_lr": best, "runs": list(res.values()) + rest}


def method_label(optimizer: str, params) -> str:
    """``optimizer`` plus its non-empty parameters, e.g. ``adagrad_bma(variant=scaled)``."""
    p = json.loads(params) if isinstance(params, str) else dict(params or {})
    return optimizer + ("(" + ",".join(f"{k}={v}" for k, v in sorted(p.items())) + ")" if p else "")


def load_training_tables(store_dir):
    """(train_runs, epochs) DataFrames from ``<store_dir>/train/*.json`` (empty frames when none).

    ``train_runs``: one row per run with ``run_id`` (the cell key), ``method`` (optimizer label),
    ``selected`` (True for the runs at the learning rate the DeepOBS rule picks for that configuration:
    the lowest final training loss at the first seed, diverged runs excluded) and the cell's fields.
    ``epochs``: one row per epoch with ``run_id``, ``method``, ``epoch``, ``train_loss_mean`` (full
    training set after the epoch), ``train_loss_sum`` (the sum of the epoch's minibatch losses, the talk's
    quantity), ``test_error``, ``wall_s`` and ``step_s_median``.
    """
    import pandas as pd
    runs, eps = [], []
    for p in sorted((Path(store_dir) / "train").glob("*.json")):
        d = json.loads(p.read_text())
        r = d["run"]
        label = method_label(r["optimizer"], r.get("params"))
        runs.append({**r, "run_id": r["key"], "method": label})
        for e in d["epochs"]:
            eps.append({"run_id": r["key"], "key": r["key"], "method": label, "optimizer": r["optimizer"],
                        "model": r["model"], "data": r["data"], "lr": r["lr"], "seed": r["seed"],
                        "params": r["params"], **e, "train_loss_mean": e["train_loss"],
                        "train_loss_sum": e["loss_sum"]})
    runs, eps = pd.DataFrame(runs), pd.DataFrame(eps)
    if len(runs):
        config = [c for c in ("model", "data", "method", "epochs", "batch_size", "subset", "device", "dtype")
                  if c in runs]
        runs["selected"] = False
        for _, g in runs.groupby(config, dropna=False):
            first = g[(g["seed"] == g["seed"].min()) & (g["status"] == "ok")]
            if len(first):
                best = first.loc[first["final_train_loss"].idxmin(), "lr"]
                runs.loc[g.index[g["lr"] == best], "selected"] = True
    return runs, eps


# --------------------------------------------------------------------------------------------------
# suites: TOML files with [defaults], optional [full] (overrides for --full) and [[train]] tables
# --------------------------------------------------------------------------------------------------
TABLE_KEYS = KEYS - {"lr", "seed"} | {"lrs", "seeds", "name"}


def load_suite(path, full: bool = False) -> list[dict]:
    """[[train]] tables -> list of ``{"name", "base", "lrs", "seeds"}``; ``ValueError`` names file and table."""
    import tomllib
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ValueError(f"{path}: {exc}") from None
    unknown = set(data) - {"suite", "defaults", "full", "train"}
    if unknown:
        raise ValueError(f"{path}: unknown top-level table(s) {sorted(unknown)}")
    defaults = {**data.get("defaults", {}), **(data.get("full", {}) if full else {})}
    out = []
    for i, t in enumerate(data.get("train", []), 1):
        t = {**defaults, **t}
        bad = sorted(set(t) - TABLE_KEYS)
        if bad:
            raise ValueError(f"{path}: [[train]] #{i}: unknown key(s) {bad}; allowed: {sorted(TABLE_KEYS)}")
        lrs, seeds = t.pop("lrs", None), t.pop("seeds", [0])
        name = t.pop("name", f"{t.get('optimizer')}#{i}")
        if not lrs:
            raise ValueError(f"{path}: [[train]] #{i}: 'lrs' must be a non-empty list")
        try:
            normalize({**t, "lr": lrs[0], "seed": seeds[0]})
        except ValueError as exc:
            raise ValueError(f"{path}: [[train]] #{i}: {exc}") from None
        out.append({"name": name, "base": t, "lrs": list(lrs), "seeds": list(seeds)})
    if not out:
        raise ValueError(f"{path}: no [[train]] tables")
    return out


def run_suite(path, store_dir, full: bool = False, progress=print) -> list[dict]:
    """Tune and run every [[train]] table of the suite (resumable through the store)."""
    res = []
    for t in load_suite(path, full):
        r = tune_and_run(t["base"], t["lrs"], t["seeds"], store_dir, progress)
        if progress:
            progress(f"{t['name']}: best lr {r['best_lr']}")
        res.append({"name": t["name"], **r})
    return res


SUITES_DIR = Path(__file__).resolve().parent.parent / "suites" / "train"


def resolve_suite(name) -> Path:
    """A TOML path, or the name of a bundled training suite; ``ValueError`` listing the bundled ones."""
    from .grid import resolve_grid_path
    return resolve_grid_path(name, SUITES_DIR, "training suite")


def summary_lines(results) -> list[str]:
    """One line per [[train]] table: chosen lr, medians over seeds of the final loss and test error."""
    out = []
    for r in results:
        rows = [x["run"] for x in r["runs"] if x["run"]["lr"] == r["best_lr"]]
        vals = sorted(x["final_train_loss"] for x in rows)
        errs = sorted(x["final_test_error"] for x in rows)
        diverged = sum(x["run"]["status"] == "diverged" for x in r["runs"])
        if vals:
            out.append(f"{r['name']}: lr {r['best_lr']}, final train loss median {statistics.median(vals):.4f} "
                       f"(range {vals[0]:.4f}..{vals[-1]:.4f}), test error median {statistics.median(errs):.4f} "
                       f"over {len(vals)} seed(s); {diverged} diverged run(s)")
        else:
            out.append(f"{r['name']}: every learning rate diverged ({diverged} run(s))")
    return out


def main(argv=None):
    import argparse
    ap = argparse.ArgumentParser(prog="python -m precond_core.bench.train",
                                 description="run a training suite (precond_core/suites/train/*.toml)")
    ap.add_argument("suite", help="a TOML file, or the name of a bundled training suite (quick, paper_cnn)")
    ap.add_argument("--store", default="results/store")
    ap.add_argument("--full", action="store_true", help="apply the suite's [full] settings")
    a = ap.parse_args(argv)
    for line in summary_lines(run_suite(resolve_suite(a.suite), a.store, a.full)):
        print(line)


if __name__ == "__main__":
    main()
