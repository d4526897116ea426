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

Training networks (``precond_core.bench.train``) sits in the same file as ``[[train]]`` tables, beside or
instead of the problems::

    [train_defaults]             # optional: keys every [[train]] table starts from
    data = "fashion_mnist"       # digits | fashion_mnist | cifar10 (data_path = "...", or $PRECOND_CIFAR10_DIR)
    epochs = 2
    subset = 5000                # training rows used ("all": every row)

    [train_full]                 # optional: applied over the tables with --full
    epochs = 50
    subset = "all"

    [[train]]
    name = "small/bma"
    model = "small_cnn"          # mlp | small_cnn | large_cnn
    optimizer = "adagrad_bma"
    params = { variant = "scaled" }
    lrs = [0.01, 0.03, 0.1]      # tried at the first seed; the best by final training loss gets the others
    seeds = [0, 1]
    full = { epochs = 30 }       # optional: this table's own --full settings, over [train_full]

The problems' ``[defaults]`` do not apply to ``[[train]]`` tables (their keys differ; see ``train.KEYS``).
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
        """The data set's label: its registry name, or the file name of a dataset given by path."""
        ds = self.problem_params.get("dataset")
        if not ds:
            return ""
        from precond_core.problems.registry import dataset_label
        return dataset_label(ds)

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


def resolve_grid_path(source: str | Path, suites_dir: Path = SUITES_DIR, what: str = "suite") -> Path:
    """A suite name (``quick``) or a path to a TOML file -> the file's path (``suites_dir``: where the
    bundled suites of this kind live)."""
    p = Path(source)
    if p.suffix == ".toml" or p.exists():
        if not p.is_file():
            raise GridError(f"{what} file {str(p)!r} does not exist")
        return p
    cand = suites_dir / f"{source}.toml"
    if cand.is_file():
        return cand
    known = sorted(q.stem for q in suites_dir.glob("*.toml"))
    raise GridError(f"unknown {what} {str(source)!r}: not a file, and not one of the bundled ones {known} "
                    f"(in {suites_dir})")


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


@dataclasses.dataclass
class Plan:
    """A grid file read and checked: its problem cells and its training tables (``train.load_suite``'s form:
    ``{"name", "base", "lrs", "seeds"}`` each)."""

    suite: str
    cells: list
    train: list


def load_grid(source: str | Path, *, validate: bool = True, check_data: bool | None = None) -> tuple[str, list[Cell]]:
    """``(suite_name, cells)`` of :func:`load_plan` (the problem cells only; a file of [[train]] tables
    alone gives no cells)."""
    plan = load_plan(source, validate=validate, check_data=check_data)
    return plan.suite, plan.cells


def load_plan(source: str | Path, *, validate: bool = True, check_data: bool | None = None,
              full: bool = False) -> Plan:
    """Read a suite name or TOML path; return its :class:`Plan` (cells in a deterministic order).

    A file is one grid (top-level ``[[problems]]`` and ``[[methods]]``) or several (``[[sweep]]`` blocks,
    each with its own ``[[sweep.problems]]``, ``[[sweep.methods]]`` and optional ``[sweep.defaults]``
    over the file's ``[defaults]``). Everything is validated before anything runs: unknown tables or keys,
    unknown problem, factory, dataset, method or parameter, values out of range, and (``check_data``,
    default ``validate``) data sets that are not on this machine; the same for the [[train]] tables (``full``:
    with their --full settings). All problems of the file are reported
    at once in one :class:`GridError`, one line each, naming the file, the table and the key, with a
    "did you mean" where a known name is close. A cell listed twice (same ``run_id``) is kept once.
    """
    path = resolve_grid_path(source)
    data = _read_toml(path)
    where = str(path)
    suite = path.stem
    check_data = validate if check_data is None else check_data
    errors: list[str] = []

    def fail(msg: str) -> None:
        if msg not in errors:
            errors.append(msg)

    unknown = set(data) - set(_TOP)
    for key in sorted(unknown):
        fail(f"{where}: unknown top-level table {key!r}{_hint(key, _TOP)}; allowed: "
             "[suite], [defaults], [[problems]], [[methods]], [[sweep]], [train_defaults], [train_full], [[train]]")
    train_only = "train" in data and not any(k in data for k in ("problems", "methods", "sweep"))
    train = _train_tables(data, where, full, validate, check_data, fail)
    defaults = _defaults(dict(_DEFAULTS), data.get("defaults", {}), where, "[defaults]", fail)
    if "train" in data and isinstance(data.get("defaults"), dict):
        from .train import KEYS as TRAIN_KEYS
        moved = sorted(set(data["defaults"]) if train_only else
                       set(data["defaults"]) & (TRAIN_KEYS | {"lrs"}) - set(RUN_KEYS) - {"seed"})
        if moved:
            fail(f"{where}: table [defaults], keys {moved}: settings of the [[train]] tables go in "
                 "[train_defaults] ([defaults] holds the problems' run settings; --full overrides go in [train_full])")
    if train_only:
        blocks = []
    elif "sweep" in data:
        blocks = data["sweep"]
        if "problems" in data or "methods" in data:
            fail(f"{where}: use either top-level [[problems]]/[[methods]] or [[sweep]] blocks, not both")
        if not isinstance(blocks, list) or not blocks or not all(isinstance(t, dict) for t in blocks):
            fail(f"{where}: [[sweep]] must be one or more tables")
            blocks = []
    else:
        blocks = [{"problems": data.get("problems"), "methods": data.get("methods")}]
    cells: list[Cell] = []
    seen = set()
    for j, block in enumerate(blocks):
        prefix = f"[[sweep]] #{j + 1} " if "sweep" in data else ""
        allowed = ("name", "description", "defaults", "problems", "methods")
        for key in sorted(set(block) - set(allowed)):
            fail(f"{where}: table {prefix.strip()}, key {key!r}: unknown key{_hint(key, allowed)}; allowed: "
                 f"{', '.join(allowed)}")
        bdefaults = _defaults(dict(defaults), block.get("defaults", {}), where, f"{prefix}[defaults]", fail)
        for cell in _grid_cells(block.get("problems"), block.get("methods"), bdefaults, where, prefix, suite,
                                validate, check_data, fail):
            if cell.run_id not in seen:
                seen.add(cell.run_id)
                cells.append(cell)
    if errors:
        head = f"{where}: {len(errors)} problem(s) in the grid file:" if len(errors) > 1 else ""
        raise GridError("\n".join(([head] if head else []) + [f"  {e}" if head else e for e in errors]))
    return Plan(suite, cells, train)


_TOP = ("suite", "defaults", "problems", "methods", "sweep", "train_defaults", "train_full", "train")


def _train_tables(data: dict, where: str, full: bool, validate: bool, check_data: bool, fail) -> list[dict]:
    """The [[train]] tables of a grid file, checked: ``[{"name", "base", "lrs", "seeds"}]``."""
    from . import train as T

    out = []
    tables = data.get("train", [])
    for key in ("train_defaults", "train_full"):
        if key in data and not isinstance(data[key], dict):
            fail(f"{where}: [{key}] must be a table")
    if ("train_defaults" in data or "train_full" in data) and "train" not in data:
        fail(f"{where}: [train_defaults] / [train_full] given but no [[train]] table")
    if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
        fail(f"{where}: [[train]] must be one or more tables (write [[train]], not [train])")
        return out
    tdef = data.get("train_defaults", {}) if isinstance(data.get("train_defaults"), dict) else {}
    tfull = data.get("train_full", {}) if isinstance(data.get("train_full"), dict) else {}
    allowed = sorted(T.TABLE_KEYS)
    for label, tab in (("[train_defaults]", tdef), ("[train_full]", tfull)):
        for key in sorted(set(tab) - T.TABLE_KEYS - {"lr", "seed"} | ({"name", "full"} & set(tab))):
            fail(f"{where}: table {label}, key {key!r}: unknown key{_hint(key, allowed)}; allowed: "
                 f"{sorted(T.TABLE_KEYS - {'name', 'full'})}")
    names = set()
    for i, tab in enumerate(tables):
        label = f"[[train]] #{i + 1}"
        own_full = tab.get("full", {})
        if not isinstance(own_full, dict):
            fail(f"{where}: table {label}, key 'full': must be a table of --full settings, got {own_full!r}")
            own_full = {}
        for key in sorted(set(own_full) - T.TABLE_KEYS | ({"name", "full"} & set(own_full))):
            fail(f"{where}: table {label}, key 'full.{key}': unknown key{_hint(key, allowed)}")
        t = {**tdef, **{k: v for k, v in tab.items() if k != "full"}, **(tfull if full else {}),
             **(own_full if full else {})}
        for alias, key in (("lr", "lrs"), ("seed", "seeds")):
            if alias in t:  # one value for the list key
                if key in t:
                    fail(f"{where}: table {label}, key {alias!r}: give either {alias} or {key}, not both")
                t[key] = [t.pop(alias)]
        bad = False
        for key in sorted(set(t) - T.TABLE_KEYS):
            fail(f"{where}: table {label}, key {key!r}: unknown key{_hint(key, allowed)}; allowed: {allowed}")
            bad = True
        lrs, seeds = t.pop("lrs", None), t.pop("seeds", [0])
        name = t.pop("name", None) or f"{t.get('optimizer')}#{i + 1}"
        if name in names:
            fail(f"{where}: table {label}, key 'name': {name!r} names another [[train]] table too")
        names.add(name)
        if not isinstance(lrs, list) or not lrs:
            fail(f"{where}: table {label}, key 'lrs': missing or not a non-empty list of learning rates")
            bad = True
            lrs = [1.0]
        if not isinstance(seeds, list) or not seeds:
            fail(f"{where}: table {label}, key 'seeds': must be a non-empty list of seeds, got {seeds!r}")
            bad = True
            seeds = [0]
        elif len(set(map(str, seeds))) != len(seeds):
            fail(f"{where}: table {label}, key 'seeds': {seeds} repeats a seed")
        if len(set(map(str, lrs))) != len(lrs):
            fail(f"{where}: table {label}, key 'lrs': {lrs} repeats a learning rate")
        if validate:
            seen = set()
            for cell in [{**t, "lr": lr, "seed": seeds[0]} for lr in lrs] + [{**t, "lr": lrs[0], "seed": s}
                                                                               for s in seeds[1:]]:
                for key, msg in T.check(cell):
                    key = {"lr": "lrs", "seed": "seeds"}.get(key, key)
                    line = f"{where}: table {label}, key {key!r}: {msg}" if key else f"{where}: table {label}: {msg}"
                    if line not in seen:
                        seen.add(line)
                        fail(line)
                        bad = True
            if check_data and not bad and isinstance(t.get("data"), str):
                why = T.data_problem(t["data"], t.get("data_path"))
                if why:
                    fail(f"{where}: table {label}, key {'data_path' if t.get('data_path') else 'data'!r}: {why}")
        if not bad:
            out.append({"name": name, "base": t, "lrs": list(lrs), "seeds": list(seeds)})
    return out


def _hint(word: str, candidates) -> str:
    """`` (did you mean 'x'?)`` for the closest candidate, or ``""``."""
    import difflib

    close = difflib.get_close_matches(str(word), [str(c) for c in candidates], n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _check_run_value(key: str, val) -> str | None:
    """Why the run setting ``key = val`` (a value or a list of them) is not allowed, or ``None``."""
    vals = val if isinstance(val, list) else [val]
    if key in ("dtype", "device", "eps", "max_iters", "seeds") and isinstance(val, list) and not val:
        return "an empty list gives no cells"
    for v in vals:
        if key == "dtype" and v not in DTYPES:
            return f"{v!r} is not allowed; use one of {list(DTYPES)}{_hint(v, DTYPES)}"
        if key == "device" and (not isinstance(v, str) or v.split(":")[0] not in ("cpu", "cuda", "mps")):
            return f"{v!r} is not allowed; use 'cpu', 'cuda' or 'cuda:<i>'"
        if key == "eps" and (isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0):
            return f"{v!r} must be a number > 0"
        if key == "max_iters" and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
            return f"{v!r} must be a positive integer"
        if key == "seeds" and (isinstance(v, bool) or not isinstance(v, int) or v < 0):
            return f"{v!r} must be a non-negative integer"
    if key == "threads" and val is not None and (isinstance(val, bool) or not isinstance(val, int) or val < 1):
        return f"{val!r} must be a positive integer"
    if key == "max_seconds" and val is not None and (isinstance(val, bool) or not isinstance(val, (int, float))
                                                     or val <= 0):
        return f"{val!r} must be a positive number"
    return None


def _defaults(base: dict, table, where: str, label: str, fail) -> dict:
    if not isinstance(table, dict):
        fail(f"{where}: {label} must be a table")
        return base
    for key, val in table.items():
        if key == "seed":
            key = "seeds"
        if key not in RUN_KEYS:
            fail(f"{where}: table {label}, key {key!r}: unknown setting{_hint(key, RUN_KEYS)}; "
                 f"allowed: {list(RUN_KEYS)}")
            continue
        why = _check_run_value(key, val)
        if why:
            fail(f"{where}: table {label}, key {key!r}: {why}")
            continue
        base[key] = val
    return base


def _grid_cells(problems, methods, defaults: dict, where: str, prefix: str, suite: str, validate: bool,
                check_data: bool, fail):
    ok = True
    for name, tabs in (("problems", problems), ("methods", methods)):
        if not tabs or not isinstance(tabs, list) or not all(isinstance(t, dict) for t in tabs):
            fail(f"{where}: {prefix}needs at least one [[{name}]] table")
            ok = False
    if not ok:
        return

    def entries(kind, tabs, check):  # [(name, params, run overrides, label)] of every expanded table
        out = []
        for i, tab in enumerate(tabs):
            label = f"{prefix}[[{kind}]] #{i + 1}"
            for combo in _expand(tab):
                try:
                    name, params, over = _split(combo, where, label, kind)
                    if validate:
                        check(name, params, where, label, check_data) if kind == "problems" else \
                            check(name, params, where, label)
                except GridError as exc:
                    for line in str(exc).splitlines():
                        fail(line)
                    continue
                out.append((name, params, over, label))
        return out

    prob_entries = entries("problems", problems, _validate_problem)
    meth_entries = entries("methods", methods, _validate_method)
    for pname, pparams, pover, plabel in prob_entries:
        for mname, mparams, mover, mlabel in meth_entries:
            run = {**defaults, **pover, **mover}
            settings = _run_settings(run)
            for dtype, device, eps, max_iters, seed in itertools.product(*settings):
                yield Cell(pname, pparams, mname, mparams, device=device, dtype=dtype, seed=seed, eps=eps,
                           max_iters=max_iters, max_seconds=run["max_seconds"], threads=run["threads"],
                           suite=suite)


def _split(combo: dict, where: str, label: str, kind: str = "methods") -> tuple[str, dict, dict]:
    combo = dict(combo)
    name = combo.pop("name", None)
    factory = combo.pop("factory", None) if kind == "problems" else None
    errs = []
    if factory is not None:
        if name is not None:
            errs.append(f"{where}: table {label}, key 'factory': give either name or factory, not both")
        if not isinstance(factory, str) or factory.count(":") != 1:
            errs.append(f"{where}: table {label}, key 'factory': {factory!r} must be 'package.module:function'")
        name = factory
    elif not isinstance(name, str) or not name:
        what = "'name' (or 'factory')" if kind == "problems" else "'name'"
        errs.append(f"{where}: table {label}, key {what}: missing or not a string")
    over = {}
    for key in list(combo):
        if key in RUN_KEYS:  # per-table override of a run setting
            over[key] = combo.pop(key)
            why = _check_run_value(key, over[key])
            if why:
                errs.append(f"{where}: table {label}, key {key!r}: {why}")
    if errs:
        raise GridError("\n".join(errs))
    return name, combo, over


def _run_settings(run: dict):
    def listify(v):
        return v if isinstance(v, list) else [v]

    dtypes, devices = listify(run["dtype"]), listify(run["device"])
    epss, iters, seeds = listify(run["eps"]), listify(run["max_iters"]), listify(run["seeds"])
    return dtypes, devices, [float(e) for e in epss], iters, seeds


# -- validation against the library's registries ------------------------------------------------------
def _info_get(info, attr, default=None):
    if isinstance(info, dict):
        return info.get(attr, default)
    return getattr(info, attr, default)


def _validate_method(name: str, params: dict, where: str, label: str) -> None:
    import precond_core as pc

    if name not in pc.list_methods():
        raise GridError(f"{where}: table {label}, key 'name': unknown method {name!r}"
                        f"{_hint(name, pc.list_methods())}; known methods: {pc.list_methods()}")
    info = pc.method_info(name)
    allowed = set(info.all_params(params.get("step"))) | {"step"} \
        if params.get("step") in (None, *info.steps) else set(info.params) | {"step"}
    errs = []
    for key in params:
        if key not in allowed:
            errs.append(f"{where}: table {label}, key {key!r}: unknown parameter for method {name!r}"
                        f"{_hint(key, sorted(allowed) + list(RUN_KEYS))}; allowed: {sorted(allowed)}")
    from precond_core.registry import _check_param

    known = {k: v for k, v in params.items() if k in allowed}
    for key, value in known.items():  # each bad value, not only the first
        try:
            _check_param(name, key, value)
        except ValueError as exc:
            errs.append(f"{where}: table {label}, key {key!r}: {exc}")
    if not errs:
        try:
            pc.make_method(name, **known)
        except (ValueError, TypeError) as exc:
            key = getattr(exc, "param", None)
            keytxt = f"key {key!r}" if key else f"parameters {params}"
            errs.append(f"{where}: table {label}, {keytxt}: {exc}")
    if errs:
        raise GridError("\n".join(errs))


def _validate_problem(name: str, params: dict, where: str, label: str, check_data: bool = True) -> None:
    from precond_core import problems

    try:
        info = problems.problem_info(name)
    except ValueError as exc:
        key = "factory" if problems.registry.is_factory_path(name) else "name"
        raise GridError(f"{where}: table {label}, key {key!r}: {exc}") from None
    allowed = _info_get(info, "params", None)
    errs = []
    if allowed is not None and not problems.registry._entry(name).open_kwargs:
        allowed = set(allowed) | {"seed"}
        for key in params:
            if key not in allowed:
                errs.append(f"{where}: table {label}, key {key!r}: unknown parameter for problem {name!r}"
                            f"{_hint(key, sorted(allowed) + list(RUN_KEYS))}; allowed: {sorted(allowed)}")
    if allowed is not None:
        required = [k for k, v in _info_get(info, "params", {}).items()
                    if v is problems.registry.REQUIRED and k not in params]
        for key in required:
            errs.append(f"{where}: table {label}, key {key!r}: missing; problem {name!r} needs it (no default)")
    ds = params.get("dataset")
    if ds is not None:
        why = dataset_problem(ds, check_data)
        if why:
            errs.append(f"{where}: table {label}, key 'dataset': {why}")
    if errs:
        raise GridError("\n".join(errs))


def fetch_command(name: str) -> str:
    return f"python -m precond_core.datasets fetch {name}"


def dataset_problem(ds, check_data: bool = True) -> str | None:
    """Why the ``dataset`` value ``ds`` cannot be used here (``None`` when it can): an unknown name (with a
    "did you mean"), a path that is not a file, or (``check_data``) a registered set not on this machine,
    with the command that fetches it."""
    from precond_core.problems.registry import is_dataset_path

    if not isinstance(ds, str) or not ds:
        return f"{ds!r} must be a data set name or the path of a LIBSVM file"
    if is_dataset_path(ds):
        if not Path(ds).is_file():
            return f"no such file {ds!r} (a dataset path is read relative to the current directory {Path.cwd()})"
        return None
    known = list_dataset_names()
    if known is None or ds.startswith("synthetic:"):
        return None
    if ds not in known:
        return f"unknown dataset {ds!r}{_hint(ds, known)}; known datasets: {known}, or the path of a LIBSVM file"
    if check_data:
        avail = dataset_availability().get(ds)
        if avail is not None and not avail:
            try:
                from precond_core.datasets.registry import data_dir, registry
                kind, ddir = registry()[ds].kind, data_dir()
            except Exception:  # pragma: no cover
                kind, ddir = "", None
            if kind == "download":
                return (f"data set {ds!r} is not on this machine (data directory {ddir}, set by PRECOND_DATA_DIR); "
                        f"fetch it with `{fetch_command(ds)}`")
            return f"data set {ds!r} is not on this machine: {avail.reason}"
    return None


def dataset_availability() -> dict:
    """``precond_core.datasets.available()`` ({} when the data layer is missing)."""
    try:
        from precond_core import datasets
        return datasets.available()
    except Exception:
        return {}


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


__all__ = ["Cell", "GridError", "Plan", "load_grid", "load_plan", "list_suites", "resolve_grid_path", "canonical_json",
           "list_dataset_names", "dataset_problem", "dataset_availability", "fetch_command", "SUITES_DIR",
           "RUN_KEYS"]
