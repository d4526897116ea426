"""The report section "Training": networks trained by ``precond-bench train`` (``bench/train.py``).

Tables from ``train.load_training_tables(store_dir)``, restricted to the runs at each configuration's
chosen learning rate (the DeepOBS rule, ``selected``):
- ``training_summary``: per (model, data, method): learning rate, seeds, epochs, training rows used
  (``subset``; "all") and batch size (so a reduced run says so), final training loss (mean over
  the training set, and the talk's per-epoch sum of minibatch losses), final test error (medians over
  seeds), median optimizer step time, diverged runs of that configuration at any learning rate;
- ``training_curves``: per (model, data, method, epoch) the median and min/max over seeds of the training
  loss, test error and cumulative step time, drawn against epochs and wall time;
- the talk's CIFAR-10 values (``precond_core/reference/talk_figures.toml``) beside ours, with a note that
  our data set differs when it does.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from . import figures as F

REFERENCE_MODELS = {"small_cnn": "small_cnn", "large_cnn": "large_cnn"}
# talk's method names in the reference file -> our optimizer labels
REFERENCE_METHODS = {"adagrad_diag": "adagrad", "adagrad_bma": "adagrad_bma", "adagrad_full": "adagrad_full"}
KEYS = ["model", "data", "method"]


def training_summary(train_runs: pd.DataFrame, epochs: pd.DataFrame) -> pd.DataFrame:
    sel = train_runs[train_runs["selected"]]
    last = epochs.sort_values("epoch").groupby("run_id").tail(1).set_index("run_id")
    rows = []
    for key, g in sel.groupby(KEYS, sort=True):
        e = last.reindex(g["run_id"]).dropna(subset=["epoch"])
        allr = train_runs[(train_runs[KEYS] == pd.Series(key, index=KEYS)).all(axis=1)]
        rows.append({**dict(zip(KEYS, key)), "lr": g["lr"].iloc[0], "seeds": len(g),
                     "epochs": int(e["epoch"].max()) if len(e) else 0,
                     "training rows": _values(g, "subset", "all"), "batch": _values(g, "batch_size", ""),
                     "train loss (mean)": e["train_loss_mean"].median(),
                     "train loss (epoch sum)": e["train_loss_sum"].median(),
                     "test error": e["test_error"].median(),
                     "training step (ms, median)": 1e3 * epochs[epochs["run_id"].isin(g["run_id"])]["step_s_median"].median(),
                     "diverged runs": int((allr["status"] == "diverged").sum())})
    return pd.DataFrame(rows)


def _values(g: pd.DataFrame, col: str, missing) -> str:
    """The distinct values of ``col`` in ``g`` as text (``missing`` for None/NaN: e.g. every training row)."""
    if col not in g:
        return ""
    vals = sorted({missing if v is None or (isinstance(v, float) and np.isnan(v)) else str(int(v))
                   for v in g[col]}, key=str)
    return ", ".join(map(str, vals))


def training_curves(train_runs: pd.DataFrame, epochs: pd.DataFrame) -> pd.DataFrame:
    e = epochs[epochs["run_id"].isin(train_runs.loc[train_runs["selected"], "run_id"])]
    if e.empty:
        return pd.DataFrame()
    agg = e.groupby([*KEYS, "epoch"])[["train_loss_mean", "test_error", "wall_s"]]
    lo, hi = agg.min().add_suffix("_lo"), agg.max().add_suffix("_hi")
    return pd.concat([agg.median(), lo, hi], axis=1).reset_index()


def curves_figure(curves: pd.DataFrame, title: str):
    labels = sorted(curves["method"].unique())
    colours = F.palette(labels)
    fig, axes = F._figure(1, 3)
    panels = [("epoch", "train_loss_mean", "training loss (full set, mean)"),
              ("wall_s", "train_loss_mean", "training loss (full set, mean)"),
              ("epoch", "test_error", "test error")]
    for ax, (x, y, ylabel) in zip(axes[0], panels):
        for m in labels:
            g = curves[curves["method"] == m].sort_values("epoch")
            ax.plot(g[x], g[y], marker="o", ms=3, color=colours[m], label=m)
            ax.fill_between(g[x], g[f"{y}_lo"], g[f"{y}_hi"], color=colours[m], alpha=0.15, linewidth=0)
        ax.set_xlabel("epoch" if x == "epoch" else "training step time, cumulative (s)")
        ax.set_ylabel(ylabel)
        ax.set_title(title, fontsize=9)
    F._legend(axes[0][-1])
    return fig


def reference_table(reference: dict | None, summary: pd.DataFrame) -> pd.DataFrame:
    """The talk's final values beside ours (same model and method kind), one row per (model, method)."""
    talk = (reference or {}).get("block_mean_talk") or {}
    rows = []
    for model in REFERENCE_MODELS:
        t = talk.get(model) or {}
        for kind, ours in REFERENCE_METHODS.items():
            if kind not in (t.get("train_loss_sum") or {}):
                continue
            s = summary[(summary["model"] == model) & (summary["method"] == ours)]
            rows.append({"model": model, "method": kind, "talk epochs": t.get("epochs"),
                         "talk train loss (epoch sum)": t["train_loss_sum"][kind],
                         "talk test error": (t.get("test_error") or {}).get(kind),
                         "our data": ", ".join(sorted(s["data"].unique())) if len(s) else "not run",
                         "our epochs": s["epochs"].iloc[0] if len(s) else None,
                         "our train loss (epoch sum)": s["train loss (epoch sum)"].iloc[0] if len(s) else None,
                         "our test error": s["test error"].iloc[0] if len(s) else None})
    return pd.DataFrame(rows)


def section_training(store_dir):
    from .claims import load_reference
    from .report import HOW_TO, Section, _fig, _table
    sec = Section("training", "Training networks")
    try:
        from .train import load_training_tables
        runs, epochs = load_training_tables(store_dir) if store_dir is not None else (pd.DataFrame(), pd.DataFrame())
    except (OSError, ValueError, KeyError) as exc:
        sec.note = f"training results could not be read: {type(exc).__name__}: {exc}"
        return sec
    if runs.empty or epochs.empty or not runs["selected"].any():
        sec.note = HOW_TO["training"]
        return sec
    summary = training_summary(runs, epochs)
    curves = training_curves(runs, epochs)
    sec.intro = ("Runs at each configuration's chosen learning rate (lowest final training loss at the first "
                 "seed, then the other seeds at it); medians over seeds, bands from min to max. Wall time is "
                 "the training steps' cumulative time: each is opt.step(closure), the closure's forward and backward "
                 "passes included (evaluation excluded).")
    for (model, data), g in curves.groupby(["model", "data"], sort=True):
        sec.blocks.append(_fig(f"{model} on {data}: training loss against epochs and step time, test error",
                               curves_figure(g, f"{model} on {data}")))
    sec.blocks.append(_table("Final values per optimizer and the median time of one training step (forward, backward, update)",
                             summary, "table-training"))
    reference, msg = load_reference()
    ref = reference_table(reference, summary)
    if len(ref):
        other = sorted(set(summary["data"]) - {"cifar10"})
        note = (f"; our runs use {', '.join(other)}, not CIFAR-10, and fewer epochs: compare orderings, "
                "not values" if other else "")
        sec.blocks.append(_table(f"The talk's CIFAR-10 values ({msg}) beside ours{note}", ref, "table-training-reference"))
    return sec
