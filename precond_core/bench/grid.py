"""Benchmark grids as plain data: a TOML file per suite, expanded into a list of :class:`Cell`.

Format (see ``precond_core/suites/README.md``)::

    [suite]                      # optional
    description = "..."

    [defaults]                   # run settings; any of them may also appear in a problems/methods table
    eps = 1e-6
    max_iters = 500
    threads = 1                  # optional: torch CPU threads per cell
    max_seconds = 60
    dtype = "float64"            # or a list: ["float32", "float64"]
    device = "cpu"
    seeds = [0, 1, 2]

    [[problems]]
    name = "logistic"
    dataset = "mushrooms"
    lam = 1e-3

    [[methods]]
    name = "adagrad_bma"
    k = [1, 8, 64]               # a list expands as a product; [[a, b]] passes the list [a, b] itself
    variant = "exact"

A cell is one point of problems x methods x dtype x device x eps x max_iters x seed. Its identity is
``cell_key`` (sorted JSON of everything that fixes the result) and ``run_id`` (a hash of it); the suite
name is not part of it, so the same cell in two suites is the same run.
"""
from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import tomllib
from pathlib import Path
from typing import Any

SUITES_DIR = Path(__file__).resolve().parent.parent / "suites"

#: run settings: allowed in [defaults] and as per-table overrides in [[problems]] / [[methods]]
RUN_KEYS = ("eps", "max_iters", "max_seconds", "dtype", "device", "seeds", "threads")
DTYPES = ("float32", "float64")
_DEFAULTS = {"eps": 1e-6, "max_iters": 500, "max_seconds": 60.0, "dtype": "float64", "device": "cpu",
             "seeds": [0], "threads": None}


class GridError(ValueError):
    """A grid file that cannot be run; the message names the file, the table and the key."""


@dataclasses.dataclass(frozen=True)
class Cell:
    """One benchmark run: a problem, a method, and the settings that fix its result."""

    problem: str
    problem_params: dict
    method: str
    method_params: dict
    device: str = "cpu"
    dtype: str = "float64"
    seed: int = 0
    eps: float = 1e-6
    max_iters: int = 500
    max_seconds: float | None = None
    threads: int | None = None  # torch CPU threads for this cell (None: leave torch's setting)
    suite: str = ""

    @property
    def n(self) -> int | None:
        """Dimension as declared in the grid (``n`` problem parameter), ``None`` when the problem fixes it."""
        return self.problem_params.get("n")

    @property
    def k(self) -> int | None:
        """Block count as declared in the grid (``k`` method parameter), ``None`` if not given."""
        return self.method_params.get("k")

    @property
    def dataset(self) -> str:
        return self.problem_params.get("dataset") or ""

    def key(self) -> dict:
        """Everything that fixes the result (not the suite, not the time budget)."""
        return {"problem": self.problem, "problem_params": self.problem_params, "method": self.method,
                "method_params": self.method_params, "n": self.n, "k": self.k, "device": self.device,
                "dtype": self.dtype, "seed": self.seed, "eps": self.eps, "max_iters": self.max_iters}

    @property
    def cell_key(self) -> str:
        return canonical_json(self.key())

    @property
    def run_id(self) -> str:
        return hashlib.sha256(self.cell_key.encode()).hexdigest()[:16]

    def short(self) -> str:
        """Short human label for progress bars and logs."""
        pp = ",".join(f"{a}={v}" for a, v in sorted(self.problem_params.items()))
        mp = ",".join(f"{a}={v}" for a, v in sorted(self.method_params.items()))
        return f"{self.problem}({pp}) {self.method}({mp}) {self.dtype} {self.device} seed={self.seed}"

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


# -- loading ------------------------------------------------------------------------------------------
def list_suites() -> dict[str, str]:
    """Names of the bundled suites -> their one-line description."""
    out = {}
    for path in sorted(SUITES_DIR.glob("*.toml")):
        try:
            desc = _read_toml(path).get("suite", {}).get("description", "")
        except GridError as exc:
            desc = f"(unreadable: {exc})"
        out[path.stem] = " ".join(str(desc).split())
    return out


def resolve_grid_path(source: str | Path) -> Path:
    """A suite name (``quick``) or a path to a TOML file -> the file's path."""
    p = Path(source)
    if p.suffix == ".toml" or p.exists():
        if not p.is_file():
            raise GridError(f"grid file {str(p)!r} does not exist")
        return p
    cand = SUITES_DIR / f"{source}.toml"
    if cand.is_file():
        return cand
    raise GridError(f"unknown suite {str(source)!r}: not a file, and not one of the suites "
                    f"{sorted(list_suites())} (in {SUITES_DIR})")


def _read_toml(path: Path) -> dict:
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise GridError(f"{path}: not valid TOML: {exc}") from None
    except OSError as exc:
        raise GridError(f"{path}: cannot read: {exc}") from None


def _expand(table: dict) -> list[dict]:
    """Product over list-valued fields; a list of lists passes each inner list as one value."""
    keys = list(table)
    choices = [v if isinstance(v, list) else [v] for v in table.values()]
    return [dict(zip(keys, combo)) for combo in itertools.product(*choices)]


def load_grid(source: str | Path, *, validate: bool = True) -> tuple[str, list[Cell]]:
    """Read a suite name or TOML path; return ``(suite_name, cells)`` in a deterministic order.

    A file is one grid (top-level ``[[problems]]`` and ``[[methods]]``) or several (``[[sweep]]`` blocks,
    each with its own ``[[sweep.problems]]``, ``[[sweep.methods]]`` and optional ``[sweep.defaults]``
    over the file's ``[defaults]``). Everything is validated before anything runs: unknown tables or keys,
    unknown problem, dataset, method or parameter raise :class:`GridError` naming the file, the table and
    the key. A cell listed twice (same ``run_id``) is kept once.
    """
    path = resolve_grid_path(source)
    data = _read_toml(path)
    where = str(path)
    suite = path.stem
    unknown = set(data) - {"suite", "defaults", "problems", "methods", "sweep"}
    if unknown:
        raise GridError(f"{where}: unknown top-level table(s) {sorted(unknown)}; allowed: "
                        "[suite], [defaults], [[problems]], [[methods]], [[sweep]]")
    defaults = _defaults(dict(_DEFAULTS), data.get("defaults", {}), where, "[defaults]")
    if "sweep" in data:
        if "problems" in data or "methods" in data:
            raise GridError(f"{where}: use either top-level [[problems]]/[[methods]] or [[sweep]] blocks, not both")
        blocks = data["sweep"]
        if not isinstance(blocks, list) or not blocks or not all(isinstance(t, dict) for t in blocks):
            raise GridError(f"{where}: [[sweep]] must be one or more tables")
    else:
        blocks = [{"problems": data.get("problems"), "methods": data.get("methods")}]
    cells: list[Cell] = []
    seen = set()
    for j, block in enumerate(blocks):
        prefix = f"[[sweep]] #{j + 1} " if "sweep" in data else ""
        extra = set(block) - {"name", "description", "defaults", "problems", "methods"}
        if extra:
            raise GridError(f"{where}: table {prefix.strip()}: unknown key(s) {sorted(extra)}; allowed: name, "
                            "description, defaults, problems, methods")
        bdefaults = _defaults(dict(defaults), block.get("defaults", {}), where, f"{prefix}[defaults]")
        for cell in _grid_cells(block.get("problems"), block.get("methods"), bdefaults, where, prefix, suite,
                                validate):
            if cell.run_id not in seen:
                seen.add(cell.run_id)
                cells.append(cell)
    return suite, cells


def _defaults(base: dict, table, where: str, label: str) -> dict:
    if not isinstance(table, dict):
        raise GridError(f"{where}: {label} must be a table")
    for key, val in table.items():
        if key == "seed":
            key = "seeds"
        if key not in RUN_KEYS:
            raise GridError(f"{where}: table {label}, key {key!r}: unknown setting; allowed: {list(RUN_KEYS)}")
        base[key] = val
    return base


def _grid_cells(problems, methods, defaults: dict, where: str, prefix: str, suite: str, validate: bool):
    for name, tabs in (("problems", problems), ("methods", methods)):
        if not tabs or not isinstance(tabs, list) or not all(isinstance(t, dict) for t in tabs):
            raise GridError(f"{where}: {prefix}needs at least one [[{name}]] table")
    def entries(kind, tabs, check):  # [(name, params, run overrides, label)] of every expanded table
        out = []
        for i, tab in enumerate(tabs):
            label = f"{prefix}[[{kind}]] #{i + 1}"
            for combo in _expand(tab):
                name, params, over = _split(combo, where, label)
                if validate:
                    check(name, params, where, label)
                out.append((name, params, over, label))
        return out

    prob_entries = entries("problems", problems, _validate_problem)
    meth_entries = entries("methods", methods, _validate_method)
    for pname, pparams, pover, plabel in prob_entries:
        for mname, mparams, mover, mlabel in meth_entries:
            run = {**defaults, **pover, **mover}
            settings = _run_settings(run, where, f"{plabel} x {mlabel}")
            for dtype, device, eps, max_iters, seed in itertools.product(*settings):
                yield Cell(pname, pparams, mname, mparams, device=device, dtype=dtype, seed=seed, eps=eps,
                           max_iters=max_iters, max_seconds=run["max_seconds"], threads=run["threads"],
                           suite=suite)


def _split(combo: dict, where: str, label: str) -> tuple[str, dict, dict]:
    combo = dict(combo)
    name = combo.pop("name", None)
    if not isinstance(name, str) or not name:
        raise GridError(f"{where}: table {label}, key 'name': missing or not a string")
    over = {}
    for key in list(combo):
        if key in RUN_KEYS:  # per-table override of a run setting
            over[key] = combo.pop(key)
    return name, combo, over


def _run_settings(run: dict, where: str, label: str):
    def listify(v):
        return v if isinstance(v, list) else [v]

    dtypes, devices = listify(run["dtype"]), listify(run["device"])
    epss, iters, seeds = listify(run["eps"]), listify(run["max_iters"]), listify(run["seeds"])
    for d in dtypes:
        if d not in DTYPES:
            raise GridError(f"{where}: {label}, key 'dtype': {d!r} is not allowed; use one of {list(DTYPES)}")
    for d in devices:
        if not isinstance(d, str) or d.split(":")[0] not in ("cpu", "cuda", "mps"):
            raise GridError(f"{where}: {label}, key 'device': {d!r} is not allowed; use 'cpu', 'cuda' or 'cuda:<i>'")
    for e in epss:
        if isinstance(e, bool) or not isinstance(e, (int, float)) or not e > 0:
            raise GridError(f"{where}: {label}, key 'eps': {e!r} must be a number > 0")
    for m in iters:
        if isinstance(m, bool) or not isinstance(m, int) or m < 1:
            raise GridError(f"{where}: {label}, key 'max_iters': {m!r} must be a positive integer")
    for s in seeds:
        if isinstance(s, bool) or not isinstance(s, int) or s < 0:
            raise GridError(f"{where}: {label}, key 'seeds': {s!r} must be a non-negative integer")
    th = run["threads"]
    if th is not None and (isinstance(th, bool) or not isinstance(th, int) or th < 1):
        raise GridError(f"{where}: {label}, key 'threads': {th!r} must be a positive integer")
    ms = run["max_seconds"]
    if ms is not None and (isinstance(ms, bool) or not isinstance(ms, (int, float)) or ms <= 0):
        raise GridError(f"{where}: {label}, key 'max_seconds': {ms!r} must be a positive number")
    return dtypes, devices, [float(e) for e in epss], iters, seeds


# -- validation against the library's registries ------------------------------------------------------
def _info_get(info, attr, default=None):
    if isinstance(info, dict):
        return info.get(attr, default)
    return getattr(info, attr, default)


def _validate_method(name: str, params: dict, where: str, label: str) -> None:
    import precond_core as pc

    if name not in pc.list_methods():
        raise GridError(f"{where}: table {label}, key 'name': unknown method {name!r}; "
                        f"known methods: {pc.list_methods()}")
    try:
        pc.make_method(name, **params)
    except (ValueError, TypeError) as exc:
        allowed = _info_get(pc.method_info(name), "params", {}) or {}
        bad = [key for key in params if key not in allowed]
        keytxt = f"key {bad[0]!r}" if bad else f"parameters {params}"
        raise GridError(f"{where}: table {label}, {keytxt}: {exc}") from None


def _validate_problem(name: str, params: dict, where: str, label: str) -> None:
    from precond_core import problems

    names = list(problems.list_problems())
    if name not in names:
        raise GridError(f"{where}: table {label}, key 'name': unknown problem {name!r}; known problems: {names}")
    info = problems.problem_info(name)
    allowed = _info_get(info, "params", None)
    if allowed is not None:
        allowed = set(allowed) | {"seed"}
        for key in params:
            if key not in allowed:
                raise GridError(f"{where}: table {label}, key {key!r}: unknown parameter for problem {name!r}; "
                                f"allowed: {sorted(allowed)}")
    ds = params.get("dataset")
    if ds is not None:
        known = list_dataset_names()
        if known is not None and ds not in known:
            raise GridError(f"{where}: table {label}, key 'dataset': unknown dataset {ds!r}; known datasets: {known}")


def list_dataset_names() -> list[str] | None:
    """Dataset names from ``precond_core.datasets`` (``None`` when the library does not list them)."""
    try:
        from precond_core import datasets
    except ImportError:
        return None
    for attr in ("list_datasets", "available", "names"):
        fn = getattr(datasets, attr, None)
        if callable(fn):
            out = fn()
            return sorted(out) if not isinstance(out, dict) else sorted(out)
    return None


__all__ = ["Cell", "GridError", "load_grid", "list_suites", "resolve_grid_path", "canonical_json",
           "list_dataset_names", "SUITES_DIR", "RUN_KEYS"]
