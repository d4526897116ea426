"""asv's median beside pytest-benchmark's for the same case: the cold gradient of the scalable problem, or
(``--optim``) one ``precond_core.optim`` step beside ``torch.optim.Adagrad`` (``bench_optim.OptimStep`` and
``test_optim_step.py::test_step``, gradients given, large CNN and a flat 10^7 parameter).

Runs ``asv run --python=same`` (into a temporary results folder, so the project's .asv/results is left
alone) and the pytest-benchmark file on the same cases, then prints both medians and their ratio. Not part
of the test suite (a minute or two):

    python benchmarks/asv_vs_pytest.py [--n 1000 10000 100000] [--quick]
    python benchmarks/asv_vs_pytest.py --optim

``--quick`` runs asv with ``--quick`` (one sample per benchmark), the mode that misleads: compare its
ratio with the default one.
"""
from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _strip_comments(text: str) -> str:
    return "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("//"))


def _env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
            "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}


def run_asv(bench: str, key, quick: bool, tmp: Path) -> dict:
    """{key(params): median} of the asv benchmark ``bench`` (``Class.method``); ``key`` maps one
    combination of its parameters to a case key, or None to drop it."""
    conf = json.loads(_strip_comments((ROOT / "asv.conf.json").read_text()))
    conf.update(results_dir=str(tmp / "asv-results"), html_dir=str(tmp / "asv-html"),
                benchmark_dir=str(ROOT / "benchmarks"), repo=str(ROOT))
    (tmp / "asv.conf.json").write_text(json.dumps(conf))
    machine = socket.gethostname()
    env = _env()
    subprocess.run(["asv", "machine", "--yes", "--machine", machine, "--config", str(tmp / "asv.conf.json")],
                   cwd=tmp, env=env, check=True, capture_output=True)
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    cmd = ["asv", "run", "--python=same", "--config", str(tmp / "asv.conf.json"), "--machine", machine,
           "--set-commit-hash", commit, "-b", bench.replace(".", r"\."), "--record-samples"]
    if quick:
        cmd.append("--quick")
    out = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"asv failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    medians: dict = {}
    for f in (tmp / "asv-results" / machine).glob("*.json"):
        if f.name == "machine.json":
            continue
        data = json.loads(f.read_text())
        cols = data.get("result_columns", [])
        for name, row in data.get("results", {}).items():
            if not name.endswith(bench):
                continue
            rec = dict(zip(cols, row))
            params = rec.get("params") or []
            combos = list(itertools.product(*params))
            for combo, val in zip(combos, rec.get("result") or []):
                k = key(tuple(c.strip("'\"") for c in combo))
                if k is not None and val is not None:
                    medians[k] = float(val)
    return medians


def run_pytest(path: str, kexpr: str, key, tmp: Path) -> dict:
    """{key(params dict): median} of the pytest-benchmark cases of ``path`` selected by ``-k kexpr``."""
    out_json = tmp / "pb.json"
    cmd = [sys.executable, "-m", "pytest", str(ROOT / path), "-q", "-p", "no:cacheprovider", "--benchmark-only",
           f"--benchmark-json={out_json}", "-k", kexpr]
    out = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"pytest-benchmark failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    medians = {}
    for b in json.loads(out_json.read_text())["benchmarks"]:
        k = key(b["params"])
        if k is not None:
            medians[k] = float(b["stats"]["median"])
    return medians


def _gradient(ns: list[int], quick: bool, tmp: Path):
    ids = " or ".join(f"n1e{round(math.log10(n))}-cpu" if 10 ** round(math.log10(n)) == n else f"n{n}-cpu" for n in ns)
    pb = run_pytest("benchmarks/test_step_cost.py", f"test_gradient and ({ids})",
                    lambda p: int(p["n"]) if p.get("device", "cpu") == "cpu" else None, tmp)
    asv = run_asv("OracleCost.time_gradient", lambda c: int(c[0]) if c[1] == "cpu" and int(c[0]) in ns else None,
                  quick, tmp)
    return "cold gradient of scalable(n), cpu float64", "n", ns, asv, pb


def _optim(quick: bool, tmp: Path):
    sys.path.insert(0, str(ROOT))
    from benchmarks.bench_optim import OPTIMIZERS
    pb = run_pytest("benchmarks/test_optim_step.py", "test_step and not train",
                    lambda p: (p["optimizer"], p["case"]), tmp)
    asv = run_asv("OptimStep.time_step", lambda c: (c[0], c[1]), quick, tmp)
    cases = [(o, c) for c in ("large_cnn", "flat_1e7") for o in OPTIMIZERS]
    return "optimizer.step() with gradients given, cpu float32", "optimizer/case", cases, asv, pb


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, nargs="+", default=[10**3, 10**4, 10**5])
    ap.add_argument("--optim", action="store_true", help="precond_core.optim steps instead of the gradient")
    ap.add_argument("--quick", action="store_true", help="asv --quick (one sample)")
    a = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as d:
        title, what, cases, asv, pb = _optim(a.quick, Path(d)) if a.optim else _gradient(a.n, a.quick, Path(d))
    print(f"{title}, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '1')}{', asv --quick' if a.quick else ''}")
    width = max(len(what), *(len(str(c if not isinstance(c, tuple) else "/".join(c))) for c in cases))
    print(f"{what:>{width}s} {'asv median':>12s} {'pytest-benchmark median':>24s} {'asv / pytest':>13s}")
    for c in cases:
        x, y = asv.get(c, math.nan), pb.get(c, math.nan)
        label = "/".join(c) if isinstance(c, tuple) else str(c)
        print(f"{label:>{width}s} {1e6 * x:10.1f}us {1e6 * y:22.1f}us {x / y:13.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
