"""Append-only results store: tidy pandas tables written as Parquet parts.

Layout of a store directory::

    store.json                         {"format": "precond_core.bench.store", "schema_version": 1}
    runs/part-<UTC timestamp>-<run_id>.parquet    one row per finished cell
    iters/part-<UTC timestamp>-<run_id>.parquet   one row per (run, iteration) of that cell

Each finished cell adds one pair of parts with the same file name. A part is written under a hidden
temporary name (``.tmp-...``) and then ``os.replace``'d, so a reader never sees half a file; the iters part
is renamed first and the runs part last, so a cell counts as stored exactly when both its runs part and
its iters part exist (an iters part without its runs part, left by a process killed between the two
renames, and a runs part whose iters part is missing, are ignored on reading and the cell is run again).
Existing parts are never rewritten or deleted.

Reading concatenates the parts; a part that cannot be read or lacks the schema's columns raises
:class:`StoreError` naming the file (the file is left where it is). ``Store.check_parts()`` lists every
unreadable or orphaned part; ``Store.repair()`` moves them into ``quarantine/<UTC timestamp>/`` inside
the store (nothing is deleted), so that the next run redoes those cells (``precond-bench store check``
and ``store repair``).
"""
from __future__ import annotations

import datetime as _dt
import json
import os
from pathlib import Path

import pandas as pd
from .._atomic import atomic_path, atomic_write_bytes

SCHEMA_VERSION = 1
FORMAT = "precond_core.bench.store"

#: columns every runs part has (more may follow)
RUNS_COLUMNS = [
    "run_id", "cell_key", "problem", "problem_params", "dataset", "method", "method_params", "method_label",
    "n", "k", "device", "dtype", "seed", "eps", "max_iters", "stop_reason", "iterations", "iters_to_eps",
    "time_to_eps", "final_grad_norm", "final_loss", "median_step_s", "grad_s", "step_cost_grads",
    "state_bytes", "peak_mem_bytes", "wall_s", "theory_bound", "f0", "git_commit", "git_dirty", "machine",
    "cpu", "gpu", "torch_version", "precond_version", "timestamp", "suite",
]
#: columns every iters part has (more may follow)
ITERS_COLUMNS = [
    "run_id", "iter", "loss", "grad_norm", "time_s", "n_grads", "n_hvps", "n_solves",
    "problem", "method", "method_label", "n", "k", "device", "dtype", "seed",
]

_INT = ["n", "seed", "max_iters", "iterations", "state_bytes", "peak_mem_bytes", "n_grads", "n_hvps",
        "n_solves", "iter", "threads"]
_FLOAT = ["eps", "iters_to_eps", "time_to_eps", "final_grad_norm", "final_loss", "median_step_s", "grad_s",
          "step_cost_grads", "wall_s", "theory_bound", "f0", "loss", "grad_norm", "time_s", "max_seconds",
          "min_grad_norm"]


class StoreError(RuntimeError):
    """The store (or one of its files) cannot be used; the message names the file."""


def normalize(df: pd.DataFrame) -> pd.DataFrame:
    """Fixed dtypes so that parts concatenate cleanly: ints int64, k nullable Int64, floats float64."""
    df = df.copy()
    for c in _INT:
        if c in df:
            df[c] = df[c].astype("int64")
    for c in _FLOAT:
        if c in df:
            df[c] = pd.to_numeric(df[c], errors="coerce").astype("float64")
    if "k" in df:
        df["k"] = pd.array([None if pd.isna(v) else int(v) for v in df["k"]], dtype="Int64")
    if "git_dirty" in df:
        df["git_dirty"] = df["git_dirty"].astype(bool)
    return df


class Store:
    """A results directory. ``Store(path).write(runs_df, iters_df)`` appends one cell's tables."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.runs_dir = self.path / "runs"
        self.iters_dir = self.path / "iters"

    # -- layout ----------------------------------------------------------------------------------
    def exists(self) -> bool:
        return (self.path / "store.json").is_file()

    def check(self) -> None:
        """Raise :class:`StoreError` unless ``path`` is a store of this schema version (or does not exist)."""
        marker = self.path / "store.json"
        if self.path.exists() and not self.path.is_dir():
            raise StoreError(f"store path {str(self.path)!r} exists and is not a directory")
        if not marker.exists():
            if self.path.is_dir():
                foreign = sorted(p.name for p in self.path.iterdir()
                                 if p.name not in ("runs", "iters") and not p.name.startswith("."))
                if foreign:
                    raise StoreError(f"{self.path} has no store.json and holds other files ({foreign[:5]}): "
                                     "not a results store; choose another --store")
            return
        try:
            meta = json.loads(marker.read_text())
        except (OSError, ValueError) as exc:
            raise StoreError(f"{marker}: unreadable store marker ({exc}); the store was left untouched") from None
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise StoreError(f"{marker}: not a precond_core results store marker")
        if meta.get("schema_version") != SCHEMA_VERSION:
            raise StoreError(f"{marker}: schema version {meta.get('schema_version')!r}, this code reads version "
                             f"{SCHEMA_VERSION}; use a new --store directory")

    def init(self) -> None:
        """Create the directories and the marker (idempotent; checks an existing marker)."""
        self.check()
        self.runs_dir.mkdir(parents=True, exist_ok=True)
        self.iters_dir.mkdir(parents=True, exist_ok=True)
        marker = self.path / "store.json"
        if not marker.exists():
            atomic_write_bytes(marker, json.dumps({"format": FORMAT, "schema_version": SCHEMA_VERSION},
                                                   indent=1).encode())

    # -- writing ---------------------------------------------------------------------------------
    def write(self, runs: pd.DataFrame, iters: pd.DataFrame) -> str:
        """Append one cell: its runs rows and iters rows. Returns the part file name."""
        if runs.empty:
            raise ValueError("runs must have at least one row")
        missing = [c for c in RUNS_COLUMNS if c not in runs]
        missing_i = [c for c in ITERS_COLUMNS if c not in iters]
        if missing or missing_i:
            raise ValueError(f"cannot store tables lacking columns: runs {missing}, iters {missing_i}")
        self.init()
        run_id = str(runs["run_id"].iloc[0])
        stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
        name = f"part-{stamp}-{run_id}.parquet"
        _atomic_write_parquet(normalize(iters), self.iters_dir / name)
        _atomic_write_parquet(normalize(runs), self.runs_dir / name)  # last: marks the cell as stored
        return name

    # -- reading ---------------------------------------------------------------------------------
    def parts(self, table: str) -> list[Path]:
        d = self.path / table
        if not d.is_dir():
            return []
        return sorted(p for p in d.iterdir() if p.is_file() and not p.name.startswith((".", "_")))

    def committed(self) -> set[str]:
        """File names of the stored cells: runs parts that have their iters part."""
        iters = {p.name for p in self.parts("iters")}
        return {p.name for p in self.parts("runs") if p.name in iters}

    def _read(self, table: str, columns: list[str], only: set[str] | None = None) -> pd.DataFrame:
        frames = []
        for p in self.parts(table):
            if only is not None and p.name not in only and table == "iters":
                continue
            df = _read_part(p, columns)  # a damaged runs part raises even when its cell is not committed
            if only is None or p.name in only:
                frames.append(df)
        if not frames:
            return pd.DataFrame({c: pd.Series(dtype="object") for c in columns})
        frames = [f for f in frames if not f.empty] or frames[:1]
        return pd.concat(frames, ignore_index=True)

    def read_runs(self) -> pd.DataFrame:
        """All stored runs (one row per finished cell and execution), sorted by timestamp then run_id."""
        self.check()
        df = self._read("runs", RUNS_COLUMNS, only=self.committed())
        if len(df):
            df = df.sort_values(["timestamp", "run_id"], kind="stable").reset_index(drop=True)
        return df

    def read_iters(self) -> pd.DataFrame:
        """All stored iterations of stored runs (iters parts without a runs part are ignored)."""
        self.check()
        df = self._read("iters", ITERS_COLUMNS, only=self.committed())
        if len(df):
            df = df.sort_values(["run_id", "iter"], kind="stable").reset_index(drop=True)
        return df

    def validate(self) -> None:
        """Check the marker and every part's footer and columns (cheap: schemas only); raise
        :class:`StoreError` naming the first bad file."""
        import pyarrow.parquet as pq

        self.check()
        for table, columns in (("runs", RUNS_COLUMNS), ("iters", ITERS_COLUMNS)):
            for p in self.parts(table):
                try:
                    names = pq.read_schema(p).names
                except Exception as exc:
                    raise StoreError(f"cannot read store part {p}: {type(exc).__name__}: {exc} (the file was left "
                                     "in place; `precond-bench store repair` moves it to quarantine/)") from None
                missing = [c for c in columns if c not in names]
                if missing:
                    raise StoreError(f"store part {p} is not a results table of this schema: missing columns "
                                     f"{missing} (the file was left in place; move it out of the store to continue)")

    def check_parts(self) -> list[tuple[Path, str]]:
        """Every part that makes the store unusable or is ignored: ``[(path, reason)]``, reasons
        "unreadable: ...", "missing columns [...]", "orphaned: no runs part" (an iters part whose cell was
        never committed) and "orphaned: no iters part" (a runs part whose curve is missing). Reads every
        part in full (a damaged page is found, not only a damaged footer)."""
        self.check()
        bad: list[tuple[Path, str]] = []
        names = {t: {p.name for p in self.parts(t)} for t in ("runs", "iters")}
        for table, columns in (("runs", RUNS_COLUMNS), ("iters", ITERS_COLUMNS)):
            other = "iters" if table == "runs" else "runs"
            for p in self.parts(table):
                try:
                    df = pd.read_parquet(p)
                except Exception as exc:
                    bad.append((p, f"unreadable: {type(exc).__name__}: {exc}"))
                    continue
                missing = [c for c in columns if c not in df.columns]
                if missing:
                    bad.append((p, f"missing columns {missing}"))
                elif p.name not in names[other]:
                    bad.append((p, f"orphaned: no {other} part"))
        # the partner of a bad part is quarantined with it (its cell is redone as a whole)
        bad_names = {p.name for p, _ in bad}
        seen = {p for p, _ in bad}
        for table in ("runs", "iters"):
            for p in self.parts(table):
                if p.name in bad_names and p not in seen:
                    bad.append((p, "partner of a bad part"))
        return bad

    def repair(self) -> tuple[Path | None, list[tuple[Path, str]]]:
        """Move every part listed by :meth:`check_parts` to ``quarantine/<UTC timestamp>/<table>/`` inside
        the store (nothing is deleted) and write ``reasons.json`` there; return (quarantine dir or None,
        the moved parts). The next run redoes those cells."""
        bad = self.check_parts()
        if not bad:
            return None, []
        stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
        qdir = self.path / "quarantine" / stamp
        moved = []
        for p, why in bad:
            dest = qdir / p.parent.name / p.name
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.replace(p, dest)
            moved.append((dest, why))
        atomic_write_bytes(qdir / "reasons.json", json.dumps(
            {f"{d.parent.name}/{d.name}": why for d, why in moved}, indent=1, sort_keys=True).encode())
        return qdir, moved

    def read(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        return self.read_runs(), self.read_iters()

    def done_ids(self, git_commit: str | None = None, machine: str | None = None) -> set[str]:
        """run_ids already stored (for the given commit and machine when given)."""
        runs = self.read_runs()
        if runs.empty:
            return set()
        mask = pd.Series(True, index=runs.index)
        if git_commit is not None:
            mask &= runs["git_commit"] == git_commit
        if machine is not None:
            mask &= runs["machine"] == machine
        return set(runs.loc[mask, "run_id"])


def load_tables(store_dir: str | os.PathLike) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(runs, iters)`` of the store at ``store_dir`` (the reader the report uses)."""
    return Store(store_dir).read()


def latest_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """Keep the newest row per (run_id, git_commit, machine): drops older executions made with --rerun."""
    if runs.empty:
        return runs
    return (runs.sort_values("timestamp", kind="stable")
            .drop_duplicates(["run_id", "git_commit", "machine"], keep="last").reset_index(drop=True))


def _read_part(path: Path, columns: list[str]) -> pd.DataFrame:
    try:
        df = pd.read_parquet(path)
    except Exception as exc:  # pyarrow raises several types for damaged files
        raise StoreError(f"cannot read store part {path}: {type(exc).__name__}: {exc} "
                         "(the file was left in place; `precond-bench store repair` moves it to quarantine/)") from None
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise StoreError(f"store part {path} is not a results table of this schema: missing columns "
                         f"{missing} (the file was left in place; `precond-bench store repair` moves it to quarantine/)")
    return df


def _atomic_write_parquet(df: pd.DataFrame, path: Path) -> None:
    try:
        with atomic_path(path, overwrite=False) as tmp:
            df.to_parquet(tmp, index=False)
    except FileExistsError:
        raise StoreError(f"refusing to overwrite existing store part {path}") from None


__all__ = ["Store", "StoreError", "load_tables", "latest_runs", "normalize", "RUNS_COLUMNS", "ITERS_COLUMNS",
           "SCHEMA_VERSION"]
