"""The benchmark suites are well formed and run: asv check, one asv benchmark end to end (results and the
HTML site in a temporary folder), the pytest-benchmark bodies once untimed, pytest-benchmark's
autosave/compare, and the step-cost script. Nothing here times the library for its own sake."""
from __future__ import annotations

import json
import math
import os
import re
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCH_DIR = ROOT / "benchmarks"

if str(ROOT) not in sys.path:  # ``benchmarks`` is a package at the repository root
    sys.path.insert(0, str(ROOT))

from benchmarks import cases  # noqa: E402
import precond_core as pc  # noqa: E402


def _env(home: Path | None = None) -> dict:
    env = os.environ.copy()
    # asv's --python=same runs the suite against this checkout (installed or not)
    env["ASV_PYTHONPATH"] = str(ROOT)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in [env.get("PYTHONPATH")] if p])
    env.pop(cases.GRID_ENV, None)  # the default grid
    if home is not None:
        home.mkdir(exist_ok=True)
        env["HOME"] = str(home)  # asv machine writes ~/.asv-machine.json
    return env


def _run(args, *, env, cwd=ROOT, timeout=240) -> str:
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{' '.join(map(str, args))} exited {proc.returncode}:\n{out[-4000:]}"
    return out


def _tmp_asv_conf(tmp_path: Path) -> Path:
    """The project's asv.conf.json with results, html and environments in tmp_path."""
    from asv import util
    conf = util.load_json(ROOT / "asv.conf.json", js_comments=True)
    conf.update(repo=str(ROOT), benchmark_dir=str(BENCH_DIR), results_dir=str(tmp_path / "results"),
                html_dir=str(tmp_path / "html"), env_dir=str(tmp_path / "env"))
    path = tmp_path / "asv.conf.json"
    path.write_text(json.dumps(conf))
    return path


def _head_commit() -> str | None:
    proc = subprocess.run(["git", "rev-parse", "--verify", "-q", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    return proc.stdout.strip() if proc.returncode == 0 and proc.stdout.strip() else None


# -- the suite's shape ------------------------------------------------------------------------------
def test_suite_covers_the_registry_and_the_grids():
    from asv_runner.discovery import disc_benchmarks
    found = {b.name: b for b in disc_benchmarks(str(BENCH_DIR))}
    required = ["bench_step.StepCost.time_step", "bench_step.BlockStepCost.time_step",
                "bench_step.OracleCost.time_gradient", "bench_step.OracleCost.time_hvp",
                "bench_memory.Memory.peakmem_step", "bench_memory.Memory.track_state_bytes",
                "bench_memory.CudaMemory.track_cuda_peak_bytes",
                "bench_convergence.Convergence.track_iters_to_eps", "bench_convergence.Convergence.track_time_to_eps",
                "bench_convergence.ConvergenceLibsvm.track_iters_to_eps"]
    missing = [name for name in required if name not in found]
    assert not missing, f"benchmarks missing: {missing}; found {sorted(found)}"
    # every registered method is timed, over the n grid, and block methods over k
    step = found["bench_step.StepCost.time_step"]
    assert step.param_names == ["method", "n", "device"]
    methods = [eval(p) for p in step.params[0]]
    assert methods == pc.list_methods()
    assert [int(p) for p in step.params[1]] == [10**e for e in range(2, 7)]
    assert [eval(p) for p in step.params[2]] == ["cpu", "cuda"]
    block = found["bench_step.BlockStepCost.time_step"]
    assert [eval(p) for p in block.params[0]] == [m for m in pc.list_methods() if pc.method_info(m).blocks]
    assert [int(p) for p in block.params[1]] == [1, 8, 64, 512]
    conv = found["bench_convergence.Convergence.track_iters_to_eps"]
    assert {"mushrooms", "heart_scale"} <= {eval(p) for p in conv.params[0]}
    assert [float(p) for p in conv.params[2]] == [1e-4, 1e-6]
    for b in found.values():
        assert b.timeout >= 300, f"{b.name} keeps asv's default timeout ({b.timeout} s)"


def test_skip_rules_raise_not_implemented():
    dense = [m for m in pc.list_methods() if pc.method_info(m).max_n is not None]
    assert dense, "the registry has no size-limited method to test the skip rule with"
    info = pc.method_info(dense[0])
    with pytest.raises(NotImplementedError):
        cases.check_size(dense[0], info.max_n + 1)
    blocky = cases.block_methods()[0]
    with pytest.raises(NotImplementedError):
        cases.check_size(blocky, 100, k=512)
    if not __import__("torch").cuda.is_available():
        with pytest.raises(NotImplementedError):
            cases.require_device("cuda")
    with pytest.raises(ValueError, match="device"):
        cases.require_device("tpu")


def test_loglog_slope_recovers_a_power_law():
    ns = [10**2, 10**3, 10**4, 10**6]
    for power in (0.5, 1.0, 1.7):
        assert math.isclose(cases.loglog_slope(ns, [3e-6 * n**power for n in ns]), power, rel_tol=1e-12)


# -- asv ------------------------------------------------------------------------------------------
def test_asv_check(tmp_path):
    out = _run([sys.executable, "-m", "asv", "check", "--python=same", "--config", str(_tmp_asv_conf(tmp_path))],
               env=_env(tmp_path / "home"))
    assert "No problems found" in out, out


def test_asv_quick_benchmark_end_to_end(tmp_path):
    conf = str(_tmp_asv_conf(tmp_path))
    env = _env(tmp_path / "home")
    _run([sys.executable, "-m", "asv", "machine", "--yes", "--config", conf], env=env)
    bench = r"^bench_step\.OracleCost\.time_gradient\b"
    head = _head_commit()
    args = [sys.executable, "-m", "asv", "run", "--python=same", "--quick", "--record-samples", "--show-stderr",
            "--bench", bench, "--config", conf]
    if head:
        args += ["--set-commit-hash", head]
    out = _run(args, env=env)
    assert "bench_step.OracleCost.time_gradient" in out and "failed" not in out, out
    # the n = 100 cpu cell has a time (asv prints e.g. "101±0μs"), the cuda cells are skipped or timed
    assert re.search(r"\b100\s+[\d.]+(±[\d.]+)?(ns|μs|us|ms|s)\b", out), out
    if head:  # results stored and the HTML site builds from them
        files = [p for p in (tmp_path / "results").rglob("*.json") if p.name not in ("machine.json", "benchmarks.json")]
        assert files, list((tmp_path / "results").rglob("*"))
        result = json.loads(files[0].read_text())["results"]["bench_step.OracleCost.time_gradient"]
        assert result[0][0] is not None and result[0][0] > 0, result
        _run([sys.executable, "-m", "asv", "publish", "--config", conf], env=env)
        assert (tmp_path / "html" / "index.html").is_file()


# -- pytest-benchmark ------------------------------------------------------------------------------
def _summary(out: str) -> dict:
    return {word: int(num) for num, word in re.findall(r"(\d+) (passed|failed|skipped|errors?)", out)}


def test_pytest_benchmark_bodies_run_once_untimed(tmp_path):
    out = _run([sys.executable, "-m", "pytest", "benchmarks", "-q", "-p", "no:cacheprovider", "--benchmark-disable",
                "-k", "(n1e2 and cpu) or (heart_scale and cpu and (newton or gd or lbfgs))"], env=_env())
    counts = _summary(out)
    assert counts.get("failed", 0) == 0 and counts.get("error", 0) == 0 and counts.get("errors", 0) == 0, out
    # every method's step at n = 100, the gradient, the HVP, the block cases and three convergence runs
    assert counts.get("passed", 0) >= len(pc.list_methods()) + 2 + 3, out


def test_pytest_benchmark_autosave_and_compare(tmp_path):
    storage = f"file://{tmp_path / 'benchmarks'}"
    args = [sys.executable, "-m", "pytest", "benchmarks", "-q", "-p", "no:cacheprovider", "--benchmark-only",
            f"--benchmark-storage={storage}", "-k", "test_gradient and n1e2 and cpu"]
    _run(args + ["--benchmark-autosave"], env=_env())
    saved = list((tmp_path / "benchmarks").rglob("*.json"))
    assert len(saved) == 1, saved
    data = json.loads(saved[0].read_text())
    assert data["benchmarks"][0]["extra_info"]["rel_error"] < 1e-6
    out = _run(args + ["--benchmark-compare"], env=_env())
    assert "Comparing against benchmarks from" in out, out


def test_step_cost_script_writes_its_table(tmp_path):
    stem = tmp_path / "step_cost"
    out = _run([sys.executable, str(BENCH_DIR / "step_cost.py"), "--n", "100", "1000", "--methods", "gd", "lbfgs",
                "newton", "--repeat", "3", "--out", str(stem)], env=_env())
    assert "| method |" in out, out
    data = json.loads(stem.with_suffix(".json").read_text())
    rows = {(r["method"], r["n"]): r for r in data["rows"]}
    assert set(rows) == {(m, n) for m in ("gd", "lbfgs", "newton") for n in (100, 1000)}
    for row in rows.values():
        assert row["step_s"] > 0 and math.isclose(row["step_per_grad"], row["step_s"] / row["grad_s"])
        assert row["round_ratio_q1"] <= row["round_ratio"] <= row["round_ratio_q3"]
        assert row["grads_per_step"] >= 1  # every step ends with the gradient at the new point
    # slopes only for matrix-free methods (newton keeps a dense Hessian)
    assert set(data["slopes"]) == {"gd", "lbfgs"}


def test_step_cost_lanes_with_block_counts_and_bad_lanes(tmp_path):
    stem = tmp_path / "lanes"
    _run([sys.executable, str(BENCH_DIR / "step_cost.py"), "--n", "1000", "--methods", "adagrad_bma:4",
          "adagrad_bma:16", "--repeat", "2", "--out", str(stem)], env=_env())
    rows = json.loads(stem.with_suffix(".json").read_text())["rows"]
    assert {(r["lane"], r["method"], r["k"]) for r in rows} == {("adagrad_bma:4", "adagrad_bma", 4),
                                                                 ("adagrad_bma:16", "adagrad_bma", 16)}
    for lane, words in (("adagrad_bma:0", "positive integer"), ("gd:4", "needs a block method")):
        proc = subprocess.run([sys.executable, str(BENCH_DIR / "step_cost.py"), "--n", "100", "--methods", lane,
                               "--out", str(tmp_path / "bad")], env=_env(), capture_output=True, text=True)
        assert proc.returncode == 2 and words in proc.stderr and lane in proc.stderr, proc.stderr
        assert not (tmp_path / "bad.json").exists()


def test_step_cost_restarts_converged_and_diverged_lanes():
    """A lane is restarted (untimed) when its gradient norm fell by 1 / RESTART_BELOW, grew by RESTART_ABOVE
    or stopped being finite, so no timed step runs past convergence or on inf/NaN."""
    import torch
    from benchmarks import step_cost

    class Fake:
        def __init__(self, gn, f=1.0):
            self.g, self.f = torch.tensor([gn], dtype=torch.float64), torch.tensor(f, dtype=torch.float64)

    def reason(gn, f=1.0):
        return step_cost._Lane(Fake(gn, f), g0=2.0).restart_reason()

    assert reason(2.0) is None and reason(2.0 * step_cost.RESTART_ABOVE * 0.99) is None
    assert reason(2.0 * step_cost.RESTART_BELOW * 0.5) == "converged"
    assert reason(2.0 * step_cost.RESTART_ABOVE * 1.01) == "diverged"
    assert reason(math.inf) == reason(math.nan) == reason(1.0, f=math.inf) == "diverged"

def test_step_cost_never_times_a_diverged_step(monkeypatch):
    """End to end: a gd lane whose fixed step is about 360 times 1/L diverges within a few steps; it is restarted
    each time (counted in the row's ``diverged``) and every timed step starts from a finite iterate."""
    import torch
    from benchmarks import step_cost
    real_make_method, seen, LONG = cases.make_method, [], 4e4   # lr: about 360 times 1/L (110) here

    def too_long(method, k=None, step=None):
        m = real_make_method(method, k, step)
        return pc.make_method("gd", step="fixed", lr=LONG) if method == "gd" else m

    real_step = pc.Solver.step

    def step(self):
        if self.method.params.get("lr") == LONG:
            seen.append(bool(torch.isfinite(self.g).all()) and math.isfinite(float(self.f)))
        real_step(self)

    monkeypatch.setattr(cases, "make_method", too_long)
    monkeypatch.setattr(pc.Solver, "step", step)
    rows = step_cost.measure(["gd", "lbfgs@fixed"], [200], "cpu", 12, log=lambda *a: None)
    by = {r["lane"]: r for r in rows}
    assert by["gd"]["diverged"] >= 2 and by["gd"]["diverged"] == by["gd"]["restarts"]
    assert by["lbfgs@fixed"]["diverged"] == 0
    assert seen and all(seen)


def test_step_cost_bursts_time_b_steps_per_lane_and_round(monkeypatch):
    """``burst=b``: every round runs one untimed settling step and b timed steps of each lane (and b + 1
    gradients and HVPs), a sample is the mean of the b; ``"auto"`` follows ``burst_for``; bad values are
    refused, by ``measure`` and by the command line."""
    from benchmarks import step_cost
    calls = []
    real_step = pc.Solver.step

    def step(self):
        calls.append(self.method.name)
        real_step(self)

    rows = {}
    for burst in (1, 3):
        calls.clear()
        monkeypatch.setattr(pc.Solver, "step", step)
        rows[burst] = step_cost.measure(["gd"], [200], "cpu", 4, log=lambda *a: None, burst=burst)[0]
        monkeypatch.setattr(pc.Solver, "step", real_step)
        warm = cases.steady_warm(cases.make_solver("gd", 200))
        assert len(calls) == warm + 5 * (burst + (burst > 1))   # warm-up, then 1 + 4 rounds
        assert rows[burst]["burst"] == burst and rows[burst]["step_s"] > 0
    assert step_cost.burst_for(10 ** 4) == 10 and step_cost.burst_for(10 ** 6) == 1
    assert step_cost.burst_for(100) == 16 and step_cost.burst_for(step_cost.BURST_BELOW - 1) == 2
    assert step_cost.measure(["gd"], [300], "cpu", 1, log=lambda *a: None, burst="auto")[0]["burst"] == 16
    for bad in (0, -1, 1.5, True, "many"):
        with pytest.raises(ValueError, match="burst"):
            step_cost.measure(["gd"], [200], "cpu", 1, log=lambda *a: None, burst=bad)
    with pytest.raises(SystemExit):
        step_cost.main(["--n", "100", "--methods", "gd", "--burst", "0"])


def test_bench_floor_small_compares_both_paths_and_restores_the_limit():
    """``bench_floor.py small`` times the block-mean refresh through the NumPy and the torch path and leaves
    ``HOST_SMALL_MAX`` as it found it."""
    from benchmarks import bench_floor
    from precond_core import operators as ops
    limit = ops.HOST_SMALL_MAX
    med = bench_floor.small(1, ks=(4, 8), calls=2)
    assert set(med) == {(k, p) for k in (4, 8) for p in ("numpy", "torch")} and all(v > 0 for v in med.values())
    assert ops.HOST_SMALL_MAX == limit


def test_bench_floor_parts_composes_each_floor_from_its_timed_primitives(capsys):
    """``bench_floor.py parts`` runs every method of ``FLOORS`` and every primitive of their recipes in
    the same rounds; each floor is the recipe's sum of the primitives' medians, and the table prints a row
    per method."""
    from benchmarks import bench_floor
    out = bench_floor.parts(300, 1, calls=1)
    prim, steps, floor = out["primitives"], out["steps"], out["floor"]
    assert set(steps) == set(floor) == set(bench_floor.FLOORS)
    assert {p for r in bench_floor.FLOORS.values() for p, _ in r} | {"gradient"} == set(prim)
    assert all(v > 0 for v in (*prim.values(), *steps.values()))
    for m, recipe in bench_floor.FLOORS.items():
        assert floor[m] == pytest.approx(sum(prim[p] * float(c) for p, c in recipe))
        assert floor[m] > prim["loss_grad"]        # every step evaluates the loss and gradient, and more
    text = capsys.readouterr().out
    assert all(m in text for m in bench_floor.FLOORS) and "step / floor" in text


def test_bench_floor_parts_refuses_methods_without_a_recipe(capsys):
    from benchmarks import bench_floor
    with pytest.raises(ValueError, match="floor recipe"):
        bench_floor.parts(300, 1, methods=("newton",), calls=1)
    with pytest.raises(SystemExit):
        bench_floor.main(["parts", "--methods", "newton"])
    assert "no floor recipe" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        bench_floor.main(["small", "--methods", "adagrad"])
    with pytest.raises(SystemExit):
        bench_floor.main(["parts", "--n", "0.5"])


def test_step_cost_round_ratios_divide_each_step_by_its_own_rounds_gradient():
    """Each step is divided by the gradient of its own round: rounds whose speed changed together cancel,
    where the ratio of the two medians mixes rounds; quartiles bracket the median; unequal lists are
    refused."""
    from benchmarks import step_cost
    steps, grads = [2.0, 20.0, 30.0], [1.0, 10.0, 15.0]     # a machine 10-15x slower in rounds 2 and 3
    assert step_cost.round_ratios(steps, grads) == (2.0, 2.0, 2.0)
    assert statistics.median(steps) / statistics.median(grads) == 2.0
    steps, grads = [2.0, 4.0, 30.0], [1.0, 10.0, 15.0]      # the gradient alone slow in round 2
    assert step_cost.round_ratios(steps, grads)[0] == 2.0
    assert statistics.median(steps) / statistics.median(grads) == pytest.approx(0.4)
    med, q1, q3 = step_cost.round_ratios([3.0, 3.0, 3.0, 6.0, 6.0], [1.0] * 5)
    assert (med, q1, q3) == (3.0, 3.0, 6.0)
    assert step_cost.round_ratios([2.0], [4.0]) == (0.5, 0.5, 0.5)
    with pytest.raises(ValueError, match="one gradient per timed step"):
        step_cost.round_ratios([1.0, 2.0], [1.0])
