"""asv's median beside pytest-benchmark's for the same case: the cold gradient of the scalable problem.

Runs ``asv run --python=same`` on ``OracleCost.time_gradient`` (into a temporary results folder, so the
project's .asv/results is left alone) and ``pytest benchmarks/test_step_cost.py -k test_gradient`` on the
same n, then prints both medians and their ratio. Not part of the test suite (a minute or two):

    python benchmarks/asv_vs_pytest.py [--n 1000 10000 100000] [--quick]

``--quick`` runs asv with ``--quick`` (one sample per benchmark), the mode that misleads: compare its
ratio with the default one.
"""
from __future__ import annotations

import argparse
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


def run_asv(ns: list[int], quick: bool, tmp: Path) -> dict[int, float]:
    conf = json.loads(_strip_comments((ROOT / "asv.conf.json").read_text()))
    conf.update(results_dir=str(tmp / "asv-results"), html_dir=str(tmp / "asv-html"),
                benchmark_dir=str(ROOT / "benchmarks"), repo=str(ROOT))
    (tmp / "asv.conf.json").write_text(json.dumps(conf))
    machine = socket.gethostname()
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
           "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    subprocess.run(["asv", "machine", "--yes", "--machine", machine, "--config", str(tmp / "asv.conf.json")],
                   cwd=tmp, env=env, check=True, capture_output=True)
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    cmd = ["asv", "run", "--python=same", "--config", str(tmp / "asv.conf.json"), "--machine", machine,
           "--set-commit-hash", commit, "-b", r"OracleCost\.time_gradient", "--record-samples"]
    if quick:
        cmd.append("--quick")
    out = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"asv failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    medians: dict[int, float] = {}
    for f in (tmp / "asv-results" / machine).glob("*.json"):
        if f.name == "machine.json":
            continue
        data = json.loads(f.read_text())
        cols = data.get("result_columns", [])
        for name, row in data.get("results", {}).items():
            if not name.endswith("OracleCost.time_gradient"):
                continue
            rec = dict(zip(cols, row))
            params = rec.get("params") or []
            result = rec.get("result") or []
            combos = [(a, b) for a in params[0] for b in params[1]] if len(params) == 2 else []
            for (n, dev), val in zip(combos, result):
                if dev.strip("'\"") == "cpu" and val is not None and int(n) in ns:
                    medians[int(n)] = float(val)
    return medians


def run_pytest(ns: list[int], tmp: Path) -> dict[int, float]:
    ids = " or ".join(f"n1e{round(math.log10(n))}-cpu" if 10 ** round(math.log10(n)) == n else f"n{n}-cpu" for n in ns)
    out_json = tmp / "pb.json"
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
           "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    cmd = [sys.executable, "-m", "pytest", str(ROOT / "benchmarks" / "test_step_cost.py"), "-q", "-p",
           "no:cacheprovider", "--benchmark-only", f"--benchmark-json={out_json}", "-k", f"test_gradient and ({ids})"]
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"pytest-benchmark failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    medians = {}
    for b in json.loads(out_json.read_text())["benchmarks"]:
        n = int(b["params"]["n"])
        if b["params"].get("device", "cpu") == "cpu":
            medians[n] = float(b["stats"]["median"])
    return medians


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, nargs="+", default=[10**3, 10**4, 10**5])
    ap.add_argument("--quick", action="store_true", help="asv --quick (one sample)")
    a = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        pb = run_pytest(a.n, tmp)
        asv = run_asv(a.n, a.quick, tmp)
    print(f"cold gradient of scalable(n), cpu float64, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '1')}"
          f"{', asv --quick' if a.quick else ''}")
    print(f"{'n':>8s} {'asv median':>12s} {'pytest-benchmark median':>24s} {'asv / pytest':>13s}")
    for n in a.n:
        x, y = asv.get(n, math.nan), pb.get(n, math.nan)
        print(f"{n:8d} {1e6 * x:10.1f}us {1e6 * y:22.1f}us {x / y:13.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
