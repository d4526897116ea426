"""Training cells: a model, a data set and a ``precond_core.optim`` optimizer trained for some epochs.

A cell is a plain dict: ``model`` (``mlp`` | ``small_cnn`` | ``large_cnn``), ``data`` (``digits`` |
``fashion_mnist`` | ``cifar10``, with ``data_path`` optional for CIFAR-10), ``optimizer`` (a key of
``OPTIMIZERS``) with ``params`` (its keyword arguments), ``lr``, ``epochs``, ``batch_size``, ``seed``,
``subset`` (training rows used, ``None`` or ``"all"`` = all), ``device``, ``dtype``. ``run_cell`` trains
it and writes one JSON file under ``<store>/train/`` with a row per run and a row per epoch (full-data
training loss mean after the epoch; ``loss_sum``, the sum of the epoch's minibatch losses as the talk plots
it; test error; cumulative wall time of the training steps; median optimizer step time). The file is
written atomically and a stored cell is skipped, so an interrupted sweep resumes (with ``git`` /
``machine`` given, as the sweep runner passes them, a file stored for another commit or machine is
trained again). A NaN/inf loss stops the cell, which is stored with ``status = "diverged"``; the sweep
goes on with the next cell. Grid files hold training cells as ``[[train]]`` tables (``grid.load_plan``),
run by ``runner.run_sweep``.

Learning rates (the DeepOBS protocol): ``tune_and_run`` trains every lr of a small log grid with the
first seed, picks the lr with the lowest final training loss (diverged runs excluded), then trains the
remaining seeds at that lr. ``load_training_tables(store_dir)`` returns ``(train_runs, epochs)`` as
pandas DataFrames.

CIFAR-10 (``data = "cifar10"``): the "CIFAR-10 python version" folder ``cifar-10-batches-py`` with
``data_batch_1`` .. ``data_batch_5`` and ``test_batch``, read from ``data_path`` (that folder or the one
holding it), else ``$PRECOND_CIFAR10_DIR``, else ``<data dir>/raw/cifar-10-batches-py``
(``precond_core.datasets.images``). Absent, the error names every folder looked in and how to fetch it.
The images keep their 3 channels and 32 x 32 size; Fashion-MNIST is padded from 28 x 28 to 32 x 32.
"""
from __future__ import annotations

import hashlib
import json
import math
import statistics
import sys
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
    "uniform_direction": lambda ps, lr, **kw: _optim().UniformDirection(ps, lr=lr, **kw),
    "fisher_sampled": lambda ps, lr, **kw: _optim().FisherSampled(ps, lr=lr, **kw),
}
NEEDS_MODEL = {"fisher_sampled"}   # built with model= and loss_fn=, stepped with the minibatch


def make_optimizer(name: str, model, lr, params: dict, loss_fn=torch.nn.functional.cross_entropy):
    """The optimizer ``name`` of ``OPTIMIZERS`` over ``model``'s parameters with keyword ``params``."""
    extra = {"model": model, "loss_fn": loss_fn} if name in NEEDS_MODEL else {}
    return OPTIMIZERS[name](model.parameters(), lr, **params, **extra)
DEFAULTS = {"params": {}, "epochs": 1, "batch_size": 128, "seed": 0, "subset": None, "device": "cpu",
            "dtype": "float32"}
MODELS = ("mlp", "small_cnn", "large_cnn")
DATA = ("digits", "fashion_mnist", "cifar10")
KEYS = {"model", "data", "optimizer", "lr", "data_path", *DEFAULTS}
#: not part of a cell's identity: where the data was read from
NOT_IN_KEY = ("data_path",)


def _optim():
    from .. import optim
    return optim


def _hint(word, candidates) -> str:
    import difflib
    close = difflib.get_close_matches(str(word), [str(c) for c in candidates], n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _posint(v) -> bool:
    return not isinstance(v, bool) and isinstance(v, int) and v >= 1


def check(cell: dict) -> list[tuple[str, str]]:
    """Every problem of a training cell as ``(key, message)`` pairs (empty when it can run).

    The optimizer is also built on a small dummy parameter with ``params``, so an unknown or bad
    optimizer parameter is found before anything trains.
    """
    if not isinstance(cell, dict):
        return [("", f"a training cell must be a table, got {type(cell).__name__}")]
    errs = []
    for k in sorted(set(cell) - KEYS):
        errs.append((k, f"unknown key{_hint(k, KEYS)}; allowed: {sorted(KEYS)}"))
    for k in ("model", "data", "optimizer", "lr"):
        if k not in cell:
            errs.append((k, "missing (no default)"))
    c = {**DEFAULTS, **cell}
    if "model" in c and c["model"] not in MODELS:
        errs.append(("model", f"must be one of {list(MODELS)}, got {c['model']!r}{_hint(c['model'], MODELS)}"))
    if "data" in c and c["data"] not in DATA:
        errs.append(("data", f"must be one of {list(DATA)}, got {c['data']!r}{_hint(c['data'], DATA)}"))
    if "data_path" in c and not (isinstance(c["data_path"], str) and c["data_path"]):
        errs.append(("data_path", f"must be a folder path (a string), got {c['data_path']!r}"))
    if "lr" in c and (isinstance(c["lr"], bool) or not isinstance(c["lr"], (int, float)) or not c["lr"] > 0
                      or not math.isfinite(c["lr"])):
        errs.append(("lr", f"must be a finite number > 0, got {c['lr']!r}"))
    for k in ("epochs", "batch_size"):
        if not _posint(c[k]):
            errs.append((k, f"must be a positive integer, got {c[k]!r}"))
    if not (c["subset"] is None or c["subset"] == "all" or _posint(c["subset"])):
        errs.append(("subset", f"must be a positive integer or \"all\", got {c['subset']!r}"))
    if isinstance(c["seed"], bool) or not isinstance(c["seed"], int) or c["seed"] < 0:
        errs.append(("seed", f"must be a non-negative integer, got {c['seed']!r}"))
    if c["dtype"] not in ("float32", "float64"):
        errs.append(("dtype", f"must be float32 or float64, got {c['dtype']!r}"))
    if not isinstance(c["device"], str) or c["device"].split(":")[0] not in ("cpu", "cuda", "mps"):
        errs.append(("device", f"{c['device']!r} is not allowed; use 'cpu', 'cuda' or 'cuda:<i>'"))
    if not isinstance(c["params"], dict):
        errs.append(("params", f"must be a table of the optimizer's keyword arguments, got {c['params']!r}"))
    if "optimizer" in c:
        if c["optimizer"] not in OPTIMIZERS:
            errs.append(("optimizer", f"must be one of {sorted(OPTIMIZERS)}, got {c['optimizer']!r}"
                                      f"{_hint(c['optimizer'], OPTIMIZERS)}"))
        elif isinstance(c["params"], dict) and not any(k in ("lr", "params", "optimizer") for k, _ in errs):
            try:
                make_optimizer(c["optimizer"], torch.nn.Linear(3, 4), c["lr"], c["params"])
            except (TypeError, ValueError) as exc:
                errs.append(("params", f"optimizer {c['optimizer']!r} refuses {c['params']}: {exc}"))
    return errs


def normalize(cell: dict) -> dict:
    """Fill defaults and check the keys; ``ValueError`` naming the (first) bad key."""
    errs = check(cell)
    if errs:
        key, msg = errs[0]
        raise ValueError(f"training cell, key {key!r}: {msg}" if key else msg)
    out = {**DEFAULTS, **cell}
    if out["subset"] == "all":
        out["subset"] = None
    return out


def cell_key(cell: dict) -> str:
    """The cell's identity: a hash of its normalized settings (without ``data_path``)."""
    c = {k: v for k, v in normalize(cell).items() if k not in NOT_IN_KEY}
    return hashlib.sha1(json.dumps(c, sort_keys=True, default=str).encode()).hexdigest()[:16]


def cifar10_folders(data_path=None) -> list[Path]:
    """Where CIFAR-10 is looked for: ``data_path`` (the ``cifar-10-batches-py`` folder or the folder holding
    it) when given, else ``$PRECOND_CIFAR10_DIR`` and ``<data dir>/raw/cifar-10-batches-py``."""
    if data_path:
        p = Path(data_path).expanduser()
        return [p, p / "cifar-10-batches-py"]
    from ..datasets.images import cifar10_dirs
    return cifar10_dirs()


CIFAR10_FILES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
CIFAR10_FETCH = ("download cifar-10-python.tar.gz (the \"CIFAR-10 python version\") from "
                 "https://www.cs.toronto.edu/~kriz/cifar.html and extract it (tar xzf cifar-10-python.tar.gz) "
                 "so that the folder cifar-10-batches-py holds data_batch_1 .. data_batch_5 and test_batch; "
                 "point data_path (in the grid) or PRECOND_CIFAR10_DIR at it")


def find_cifar10(data_path=None) -> Path:
    """The folder holding all six CIFAR-10 python batches; ``FileNotFoundError`` naming every folder looked in,
    the files missing and how to fetch them."""
    dirs = cifar10_folders(data_path)
    names = CIFAR10_FILES["train"] + CIFAR10_FILES["test"]
    for d in dirs:
        if all((d / n).is_file() for n in names):
            return d
    missing = {str(d): [n for n in names if not (d / n).is_file()] for d in dirs}
    where = "; ".join(f"{d} (missing {', '.join(m) if len(m) < len(names) else 'all six batches'})"
                      for d, m in missing.items())
    src = f"data_path = {str(data_path)!r}" if data_path else "PRECOND_CIFAR10_DIR and the data directory"
    raise FileNotFoundError(f"CIFAR-10 not found (looked in {src}: {where}); {CIFAR10_FETCH}")


def data_problem(data: str, data_path=None) -> str | None:
    """Why the data set ``data`` cannot be read on this machine (``None`` when it can), without reading it."""
    if data == "digits":
        try:
            import sklearn  # noqa: F401
        except ImportError:
            return "data 'digits' needs scikit-learn (pip install scikit-learn)"
        return None
    if data == "fashion_mnist":
        from ..datasets.images import _find, fashion_mnist_dirs
        dirs = fashion_mnist_dirs()
        stems = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                 "t10k-labels-idx1-ubyte")
        if all(_find(dirs, st) is not None for st in stems):
            return None
        return (f"Fashion-MNIST not found in {', '.join(map(str, dirs))}; install it with "
                "'apt-get install dataset-fashion-mnist' or put the four idx-ubyte(.gz) files in one of these "
                "folders (PRECOND_FASHION_MNIST_DIR or PRECOND_DATA_DIR/raw/fashion-mnist)")
    if data == "cifar10":
        try:
            find_cifar10(data_path)
        except FileNotFoundError as exc:
            return str(exc)
    return None


def load_data(name: str, model: str, subset, seed: int, dtype, device, data_path=None):
    """(train, test) pairs of tensors; images padded to 32x32 (one channel; CIFAR-10: three) for the CNNs."""
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
    elif name == "cifar10":
        from ..datasets.images import read_cifar_batch
        folder = find_cifar10(data_path)
        parts = {s: [read_cifar_batch(folder / n) for n in names] for s, names in CIFAR10_FILES.items()}
        Xtr, ytr = (np.concatenate([p[i] for p in parts["train"]]) for i in (0, 1))
        Xte, yte = parts["test"][0]
        scale = np.float32(255.0) if dtype == torch.float32 else np.float64(255.0)  # 50,000 x 3072 images
        Xtr, Xte = Xtr / scale, Xte / scale
        pad = 0
    else:
        raise ValueError(f"data must be one of {list(DATA)}, got {name!r}")
    if subset is not None:
        idx = np.random.default_rng(seed).permutation(len(ytr))[:subset]
        Xtr, ytr = Xtr[idx], ytr[idx]

    def conv(X, y):
        X = torch.tensor(X, dtype=dtype)
        if model != "mlp" and pad:
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
    (Xtr, ytr), test = load_data(c["data"], c["model"], c["subset"], c["seed"], dtype, c["device"],
                                 c.get("data_path"))
    model = build_model(c["model"], tuple(Xtr.shape[1:])).to(c["device"], dtype)
    loss_fn = torch.nn.functional.cross_entropy
    prob = module_problem(model, loss_fn, (Xtr, ytr), test, batch_size=c["batch_size"], seed=c["seed"])
    opt = make_optimizer(c["optimizer"], model, c["lr"], c["params"], loss_fn)
    hvp = getattr(opt, "create_graph", False)        # HVP optimizers: backward(create_graph=True)
    batch = getattr(opt, "needs_batch", False)       # FisherSampled: per-sample gradients of the minibatch
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
            loss = opt.step(closure, inputs=Xb, targets=yb) if batch else opt.step(closure)
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


def result_path(store_dir, cell: dict) -> Path:
    return Path(store_dir) / "train" / f"{cell_key(cell)}.json"


def stored_result(cell: dict, store_dir, git=None, machine=None) -> dict | None:
    """The stored result of ``cell`` (``None`` when absent, unreadable, or stored for another commit than
    ``git[0]`` or another machine than ``machine``, when those are given)."""
    path = result_path(store_dir, cell)
    if not path.is_file():
        return None
    try:
        res = json.loads(path.read_text())
        run = res["run"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if git is not None and run.get("git_commit") != git[0]:
        return None
    if machine is not None and run.get("machine") != machine:
        return None
    return res


def store_result(store_dir, cell: dict, res: dict, git=None, machine=None) -> Path:
    """Write ``res`` (from ``train_cell``) atomically to ``<store>/train/<key>.json`` with the commit and machine."""
    import datetime as _dt
    import socket
    res = {**res, "run": {**res["run"], "git_commit": git[0] if git else None,
                          "git_dirty": bool(git[1]) if git else None, "machine": machine or socket.gethostname(),
                          "timestamp": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}}
    path = result_path(store_dir, cell)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(res, sort_keys=True))
    return path


class TrainCell(dict):
    """A training cell as an executor's task: the dict with a ``run_id`` (its key), as the executors expect."""

    @property
    def run_id(self) -> str:
        return cell_key(self)


def train_cell_safe(cell: dict, progress=None) -> dict:
    """``{"cell", "result"}``, or ``{"cell", "error"}`` when training raised (KeyboardInterrupt passes): what the
    sweep runner maps over its executor."""
    try:
        return {"cell": dict(cell), "result": train_cell(dict(cell), progress)}
    except Exception as exc:  # a failing cell must not stop the sweep; it is reported and not stored
        return {"cell": dict(cell), "error": f"{type(exc).__name__}: {exc}"}


def run_cell(cell: dict, store_dir, progress=None, *, git=None, machine=None, rerun: bool = False) -> dict:
    """Train and store a cell unless it is stored (for ``git``'s commit and ``machine`` when given; never with
    ``rerun``); then return the stored result."""
    old = None if rerun else stored_result(cell, store_dir, git, machine)
    if old is not None:
        if progress:
            progress(f"skip {result_path(store_dir, cell).name} (stored)")
        return old
    res = train_cell(cell, progress)
    store_result(store_dir, cell, res, git, machine)
    return json.loads(result_path(store_dir, cell).read_text())


def run_cells(cells, store_dir, progress=print, **kw) -> list:
    return [run_cell(c, store_dir, progress, **kw) for c in cells]


def first_cells(base: dict, lrs, seeds) -> list[dict]:
    """The DeepOBS protocol's first stage: every learning rate at the first seed."""
    return [{**base, "lr": lr, "seed": list(seeds)[0]} for lr in lrs]


def pick_lr(results) -> float | None:
    """The learning rate of the lowest final training loss among the non-diverged ``results`` (``None``: all
    diverged or failed); ties go to the earlier result."""
    ok = [(r["run"]["final_train_loss"], i, r["run"]["lr"]) for i, r in enumerate(results)
          if r is not None and r["run"]["status"] == "ok" and math.isfinite(r["run"]["final_train_loss"])]
    return min(ok)[2] if ok else None


def rest_cells(base: dict, best_lr, seeds) -> list[dict]:
    """The second stage: the other seeds at the chosen learning rate (none when no lr was chosen)."""
    return [] if best_lr is None else [{**base, "lr": best_lr, "seed": s} for s in list(seeds)[1:]]


def tune_and_run(base: dict, lrs, seeds, store_dir, progress=print, **kw) -> dict:
    """DeepOBS protocol: the lr grid at ``seeds[0]``, best by final training loss, then the other seeds."""
    seeds, lrs = list(seeds), list(lrs)
    if not seeds or not lrs:
        raise ValueError("lrs and seeds must be non-empty")
    first = run_cells(first_cells(base, lrs, seeds), store_dir, progress, **kw)
    best = pick_lr(first)
    rest = run_cells(rest_cells(base, best, seeds), store_dir, progress, **kw)
    return {"best_lr": best, "runs": first + rest}


def method_label(optimizer: str, params) -> str:
    """``optimizer`` plus its non-empty parameters, e.g. ``adagrad_bma(variant=scaled)``."""
    p = json.loads(params) if isinstance(params, str) else dict(params or {})
    return optimizer + ("(" + ",".join(f"{k}={v}" for k, v in sorted(p.items())) + ")" if p else "")


def training_files(store_dir) -> list:
    """The stored training runs of a results store (one JSON file per run under ``<store>/train/``), sorted."""
    return sorted((Path(store_dir) / "train").glob("*.json"))


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
    for p in training_files(store_dir):
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
# [[train]] tables in grid files (precond_core.bench.grid reads them; the sweep runner runs them)
# --------------------------------------------------------------------------------------------------
TABLE_KEYS = KEYS - {"lr", "seed"} | {"lrs", "seeds", "name", "full"}


def load_suite(path, full: bool = False) -> list[dict]:
    """The [[train]] tables of a grid file -> list of ``{"name", "base", "lrs", "seeds"}``, with
    ``[train_defaults]`` (and, when ``full``, ``[train_full]`` and each table's ``full``) applied.
    ``GridError`` (a ``ValueError``) naming the file, the table and the key; see ``grid.load_plan``."""
    from .grid import load_plan
    return load_plan(path, full=full, check_data=False).train


def run_suite(path, store_dir, full: bool = False, progress=print) -> list[dict]:
    """Tune and run every [[train]] table of the file (resumable through the store)."""
    res = []
    for t in load_suite(path, full):
        r = tune_and_run(t["base"], t["lrs"], t["seeds"], store_dir, progress)
        if progress:
            progress(f"{t['name']}: best lr {r['best_lr']}")
        res.append({"name": t["name"], **r})
    return res


SUITES_DIR = Path(__file__).resolve().parent.parent / "suites" / "train"


def resolve_suite(name) -> Path:
    """A TOML path, the name of a bundled training suite (``suites/train/``), or of a bundled grid
    (``suites/``, e.g. ``paper``); ``GridError`` listing the bundled ones."""
    from .grid import SUITES_DIR as GRIDS, GridError, resolve_grid_path
    try:
        return resolve_grid_path(name, SUITES_DIR, "training suite")
    except GridError:
        try:
            return resolve_grid_path(name, GRIDS, "suite")
        except GridError:
            pass
        raise


def summary_lines(results) -> list[str]:
    """One line per [[train]] table: chosen lr, medians over seeds of the final loss and test error."""
    out = []
    for r in results:
        rows = [x["run"] for x in r["runs"] if x is not None and x["run"]["lr"] == r["best_lr"]
                and x["run"]["status"] == "ok"]
        vals = sorted(x["final_train_loss"] for x in rows)
        errs = sorted(x["final_test_error"] for x in rows)
        diverged = sum(x is not None and x["run"]["status"] == "diverged" for x in r["runs"])
        failed = sum(x is None for x in r["runs"])
        tail = f"; {diverged} diverged run(s)" + (f", {failed} failed" if failed else "")
        if vals:
            out.append(f"{r['name']}: lr {r['best_lr']}, final train loss median {statistics.median(vals):.4f} "
                       f"(range {vals[0]:.4f}..{vals[-1]:.4f}), test error median {statistics.median(errs):.4f} "
                       f"over {len(vals)} seed(s){tail}")
        else:
            out.append(f"{r['name']}: no learning rate finished without diverging ({len(r['runs'])} run(s)){tail}")
    return out


def main(argv=None):
    """``python -m precond_core.bench.train SUITE``: the same as ``precond-bench train SUITE``."""
    from .cli import main as cli_main
    return cli_main(["train", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    raise SystemExit(main())
