"""Drawing functions for the HTML report: each takes tidy pandas tables and returns a matplotlib Figure.

Figures are built with ``matplotlib.figure.Figure`` on an Agg canvas (no ``pyplot`` state, no GUI backend),
styled with seaborn, and turned into base64 PNG by :func:`to_png_base64`. Nothing here computes a
statistic that the report shows in a table: the aggregations live in ``report.py`` and are passed in,
so a figure and its table always show the same numbers.
"""

from __future__ import annotations

import base64
import io
import math
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

STYLE = "whitegrid"
PANEL_W, PANEL_H = 5.4, 3.6


def _method(label: str) -> str:
    return str(label).split("(", 1)[0]


_DASHES = ("-", "--", ":", "-.", (0, (5, 1)), (0, (3, 1, 1, 1, 1, 1)), (0, (1, 3)), (0, (6, 2, 1, 2)))


def palette(labels: Sequence[str]) -> dict[str, tuple]:
    """A colour per method (the label up to its parameters), the same in every figure: variants of one
    method (``adagrad_bma(k=4)``, ``adagrad_bma(k=16)``) share a hue and differ by line style."""
    labels = sorted({str(x) for x in labels})
    methods = sorted({_method(lab) for lab in labels})
    if len(methods) <= 10:
        colours = sns.color_palette("tab10", max(len(methods), 1))
    elif len(methods) <= 20:   # tab20's dark shades first, then the light ones: neighbours stay distinct
        t20 = sns.color_palette("tab20", 20)
        colours = [t20[i] for i in range(0, 20, 2)] + [t20[i] for i in range(1, 20, 2)]
    else:
        colours = sns.color_palette("husl", len(methods))
    by_method = {m: colours[i] for i, m in enumerate(methods)}
    return {lab: by_method[_method(lab)] for lab in labels}


def line_styles(labels: Sequence[str]) -> dict:
    """A line style per label: the variants of one method (sorted) get solid, dashed, dotted, ..."""
    out, seen = {}, {}
    for lab in sorted({str(x) for x in labels}):
        i = seen.get(_method(lab), 0)
        seen[_method(lab)] = i + 1
        out[lab] = _DASHES[i % len(_DASHES)]
    return out


def to_png_base64(fig: Figure, dpi: int = 90) -> str:
    """Encode a figure as a base64 PNG string (for ``<img src="data:image/png;base64,...">``)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _figure(nrows: int, ncols: int, *, sharex=False, sharey=False, w=PANEL_W, h=PANEL_H):
    with sns.axes_style(STYLE):
        fig = Figure(figsize=(w * ncols, h * nrows), layout="constrained")
        FigureCanvasAgg(fig)  # off-screen Agg canvas; pyplot and GUI backends are never touched
        axes = fig.subplots(nrows, ncols, squeeze=False, sharex=sharex, sharey=sharey)
    return fig, axes


def _legend(ax, title=None, **kw):
    """The axes' legend outside the axes (right of it unless ``loc``/``bbox_to_anchor`` say otherwise), so it
    never covers data; the constrained layout and ``bbox_inches="tight"`` make room for it."""
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        if "loc" not in kw:
            kw.update(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0)
        ax.legend(handles, labels, title=title, fontsize="small", title_fontsize="small", **kw)


def convergence(bands: pd.DataFrame, panels: Sequence[tuple[str, float]], colours: Mapping[str, tuple]) -> Figure:
    """Gradient norm against iteration (left) and wall time (right), one row per problem instance.

    ``bands`` has columns ``panel, method_label, iter, time_med, gn_med, gn_lo, gn_hi, n_seeds``
    (median and quantile band over seeds, see ``report.convergence_bands``); ``panels`` lists
    (panel label, eps) in row order.
    """
    fig, axes = _figure(len(panels), 2)
    styles = line_styles(colours)
    for row, (panel, eps) in enumerate(panels):
        sub = bands[bands["panel"] == panel]
        for xcol, ax in (("iter", axes[row, 0]), ("time_med", axes[row, 1])):
            for label, g in sub.groupby("method_label", sort=True):
                g = g.sort_values("iter")
                if xcol == "time_med":  # log time axis: the starting point (time 0) has no place on it
                    g = g[g["time_med"] > 0]
                c = colours.get(str(label))
                ax.plot(g[xcol], g["gn_med"], color=c, lw=1.6, ls=styles.get(str(label), "-"), label=str(label))
                ax.fill_between(g[xcol], g["gn_lo"], g["gn_hi"], color=c, alpha=0.2, lw=0)
            if eps is not None and np.isfinite(eps) and eps > 0:
                ax.axhline(eps, color="0.3", ls=":", lw=1)
            ax.set_yscale("log")
            if xcol == "time_med" and (sub["time_med"] > 0).any():
                ax.set_xscale("log")
            ax.set_xlabel("iteration" if xcol == "iter" else "wall time (s, median over seeds, log)")
            ax.set_ylabel("gradient norm")
            has_eps = eps is not None and np.isfinite(eps) and "eps=" not in str(panel)
            ax.set_title(f"{panel} eps={eps:g}" if has_eps else panel, fontsize="medium")
        _legend(axes[row, -1])
    return fig


def loglog_scaling(
    points: pd.DataFrame,
    slopes: pd.DataFrame,
    metrics: Sequence[tuple[str, str]],
    colours: Mapping[str, tuple],
    title: str,
) -> Figure:
    """Log-log plots of per-n medians with the fitted line ``log10 y = slope * log10 n + intercept``.

    ``points``: columns ``method_label, n, <metric>`` (median over seeds); ``slopes``: one row per
    (metric, method_label) with ``metric, method_label, slope, intercept``. ``metrics`` lists
    (column, axis label), one panel each.
    """
    fig, axes = _figure(1, len(metrics))
    styles, marks = line_styles(points["method_label"]), variant_markers(points["method_label"])
    for ax, (col, ylabel) in zip(axes[0], metrics):
        for label, g in points.groupby("method_label", sort=True):
            g = g[(g[col] > 0) & np.isfinite(g[col])].sort_values("n")
            if g.empty:
                continue
            c = colours.get(str(label))
            fit = slopes[(slopes["metric"] == col) & (slopes["method_label"] == label)]
            legend = str(label)
            if not fit.empty:
                s, b = float(fit["slope"].iloc[0]), float(fit["intercept"].iloc[0])
                legend = f"{label}: slope {s:.2f}"
                ns = np.array([g["n"].min(), g["n"].max()], dtype=float)
                ax.plot(ns, 10 ** (s * np.log10(ns) + b), color=c, lw=1.2, ls=styles.get(str(label), "--"))
            ax.plot(g["n"], g[col], marks.get(str(label), "o"), color=c, label=legend, ms=5)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("n (parameters)")
        ax.set_ylabel(ylabel)
        ax.set_title(title, fontsize="medium")
        _legend(ax, loc="upper center", bbox_to_anchor=(0.5, -0.3), borderaxespad=0.0)  # below: panels side by side
    return fig


def variant_markers(labels) -> dict:
    """A marker per label: the variants of one method (sorted) get o, s, D, ^, ... (their colour is shared)."""
    seen: dict[str, int] = {}
    out = {}
    for lab in sorted({str(v) for v in labels}):
        i = seen.get(_method(lab), 0)
        seen[_method(lab)] = i + 1
        out[lab] = "osD^vP*X"[i % 8]
    return out


def block_count(points: pd.DataFrame, colours: Mapping[str, tuple], title: str) -> Figure:
    """Iterations to eps, time to eps and median time per step against the block count k.

    ``points``: columns ``method_label_nok, n, k, iters_to_eps, time_to_eps, median_step_s`` (medians
    over seeds, NaN where the median seed did not reach eps); one line per (method, n).
    """
    panels = (
        ("iters_to_eps", "iterations to eps"),
        ("time_to_eps", "time to eps (s)"),
        ("median_step_s", "median time per step (s)"),
    )
    fig, axes = _figure(1, len(panels), w=4.4)
    ns = sorted(points["n"].unique())
    styles = {n: ("-", "--", ":", "-.")[i % 4] for i, n in enumerate(ns)}
    markers = variant_markers(points["method_label_nok"])  # variants (exact / scaled) share a hue; n: line style
    for ax, (col, ylabel) in zip(axes[0], panels):
        for (label, n), g in points.groupby(["method_label_nok", "n"], sort=True):
            g = g.sort_values("k")
            ax.plot(
                g["k"],
                g[col],
                ls=styles[n],
                marker=markers[str(label)],
                color=colours.get(str(label)),
                label=f"{label}, n={n}",
                ms=4,
                lw=1.3,
            )
        ax.set_xscale("log", base=2)
        if not np.isfinite(points[col].astype(float)).any():
            ax.text(
                0.5, 0.5, "no median run reached eps", transform=ax.transAxes, ha="center", va="center", color="0.35"
            )
            ax.set_yticks([])
        elif col != "iters_to_eps" and (points[col] > 0).any():
            ax.set_yscale("log")
        ax.set_xlabel("block count k")
        ax.set_ylabel(ylabel)
        ax.set_title(title, fontsize="medium")
    _legend(axes[0, -1])
    return fig


def performance_profile(profile: pd.DataFrame, colours: Mapping[str, tuple], n_problems: int) -> Figure:
    """Dolan-More profile: fraction of problems solved within a factor tau of the best, tau log axis.

    ``profile``: columns ``method_label, tau, fraction`` (see ``report.performance_profile``).
    """
    fig, axes = _figure(1, 1, w=7.5, h=4.2)
    ax = axes[0, 0]
    styles = line_styles(colours)
    for label, g in profile.groupby("method_label", sort=True):
        g = g.sort_values("tau")
        ax.step(g["tau"], g["fraction"], where="post", color=colours.get(str(label)), label=str(label), lw=1.6,
                ls=styles.get(str(label), "-"))
    ax.set_xscale("log")
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("tau (time to eps / best time to eps)")
    ax.set_ylabel(f"fraction of {n_problems} problems")
    ax.set_title("performance profile (time to eps)", fontsize="medium")
    _legend(ax)
    return fig


def device_comparison(table: pd.DataFrame, title: str) -> Figure:
    """Median step time per method, CPU and CUDA bars side by side (log scale).

    ``table``: columns ``method_label, device, median_step_s``.
    """
    labels = sorted(table["method_label"].astype(str).unique())
    devices = sorted(table["device"].astype(str).unique())
    fig, axes = _figure(1, 1, w=max(6.0, 0.7 * len(labels) + 2), h=4.0)
    ax = axes[0, 0]
    width = 0.8 / len(devices)
    colours = sns.color_palette("Set2", len(devices))
    x = np.arange(len(labels))
    for i, dev in enumerate(devices):
        d = table[table["device"].astype(str) == dev].set_index("method_label")["median_step_s"]
        vals = [float(d.get(lab, np.nan)) for lab in labels]
        ax.bar(x + (i - (len(devices) - 1) / 2) * width, vals, width, label=dev, color=colours[i])
    ax.set_xticks(x, labels, rotation=30, ha="right", fontsize="small")
    ax.set_yscale("log")
    ax.set_ylabel("median time per step (s)")
    ax.set_title(title, fontsize="medium")
    _legend(ax, title="device")
    return fig


def history(
    frame: pd.DataFrame,
    *,
    x: str,
    y: str,
    hue: str,
    xticklabels: Sequence[str] | None,
    ylabel: str,
    title: str,
    logy: bool = True,
    max_lines: int = 12,
    colours: Mapping[str, tuple] | None = None,
) -> Figure:
    """Value over commits or saved runs: one line per ``hue``, x is an ordinal position.

    ``frame``: columns ``x`` (int position), ``y``, ``hue``; ``xticklabels[i]`` labels position i.
    """
    fig, axes = _figure(1, 1, w=8.0, h=4.0)
    ax = axes[0, 0]
    hues = sorted(frame[hue].astype(str).unique())[:max_lines]
    colours = {**palette(hues), **(colours or {})}
    for h in hues:
        g = frame[frame[hue].astype(str) == h].sort_values(x)
        ax.plot(g[x], g[y], "o-", color=colours[h], label=h, ms=4, lw=1.3)
    if xticklabels is not None:
        ax.set_xticks(range(len(xticklabels)), list(xticklabels), rotation=30, ha="right", fontsize="small")
    if logy and (frame[y] > 0).all():
        ax.set_yscale("log")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize="medium")
    _legend(ax, loc="center left", bbox_to_anchor=(1.01, 0.5))
    return fig


def theory_vs_measured(table: pd.DataFrame, colours: Mapping[str, tuple]) -> Figure:
    """Measured iterations to eps against the talk's bound K, log-log, with the line y = x.

    ``table``: columns ``method_label, theory_bound, iters_to_eps`` (one point per run).
    """
    fig, axes = _figure(1, 1, w=6.5, h=4.5)
    ax = axes[0, 0]
    for label, g in table.groupby("method_label", sort=True):
        ax.plot(
            g["theory_bound"],
            g["iters_to_eps"].clip(lower=1),
            "o",
            color=colours.get(str(label)),
            label=str(label),
            ms=5,
            alpha=0.8,
        )
    vals = pd.concat([table["theory_bound"], table["iters_to_eps"].clip(lower=1)])
    lo, hi = float(vals.min()), float(vals.max())
    lo, hi = 10 ** math.floor(math.log10(max(lo, 1.0))), 10 ** math.ceil(math.log10(max(hi, 1.0)) + 1e-9)
    ax.plot([lo, hi], [lo, hi], color="0.4", ls="--", lw=1, label="measured = bound")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("theory bound K (iterations)")
    ax.set_ylabel("measured iterations to eps")
    ax.set_title("measured iterations vs the talk's bound", fontsize="medium")
    _legend(ax)
    return fig
