"""Honest clocks: the method's one-off set-up is timed as ``setup_s`` before the iteration clock starts;
problem constants are computed once per problem and cached with it."""
from __future__ import annotations

import pytest
import torch

import precond_core as pc
from precond_core.problems import make_problem


def test_sigma_power_iteration_runs_in_the_setup_not_in_the_first_step():
    prob = make_problem("logistic", n_samples=60, n_features=8, seed=0)
    method = pc.make_method("uniform_direction", step="regularized")  # regularized step: sigma from a power iteration on HVPs
    assert method.params.get("step") == "regularized"
    tr = pc.minimize(prob, method, eps=1e-30, max_iters=3, seed=0)
    assert tr.setup_s > 0 and tr.times[0] >= 0
    # the 30 HVPs of the power iteration are counted before iteration 0, the steps pay 1 HVP each
    assert tr.n_hvps[0] == 30
    assert [b - a for a, b in zip(tr.n_hvps, tr.n_hvps[1:])] == [1, 1, 1]
    # same iterates as a run given the same sigma explicitly (the set-up computes what the first step would)
    from precond_core.solver import Solver

    s = Solver(prob, pc.make_method("uniform_direction", step="regularized"), seed=0)
    s.setup()
    sigma = s.sstate["sigma"]
    tr2 = pc.minimize(prob, pc.make_method("uniform_direction", step="regularized", sigma=sigma), eps=1e-30, max_iters=3, seed=0)
    assert torch.equal(tr.x, tr2.x) and tr2.n_hvps[0] == 0


def test_per_step_sigma_stays_in_the_step():
    prob = make_problem("nls", n_samples=30, n_features=5, seed=0)
    from precond_core.solver import Solver

    method = pc.make_method("fisher_sampled", step="regularized")
    method.preconditioner.exact_model = True   # the estimate the talk's sigma(x) covers: recomputed per step
    s = Solver(prob, method, seed=0)
    assert s.method.preconditioner.sigma_per_step
    before = dict(s.sstate) if isinstance(s.sstate, dict) else s.sstate
    s.setup()
    assert s.sstate == before  # sigma(x_k) is recomputed each step: nothing moves to the set-up


def test_setup_in_summary_and_trace():
    prob = make_problem("quadratic", n=5, seed=0)
    tr = pc.minimize(prob, "gd", eps=1e-6, max_iters=5)
    assert tr.summary()["setup_s"] == tr.setup_s >= 0


def test_problem_constants_computed_once_and_cached(monkeypatch):
    prob = make_problem("logistic", n_samples=50, n_features=6, seed=0)
    calls = []
    design = prob.design
    orig = type(design).spectral_norm_sq

    def counting(self, *a, **kw):
        calls.append(1)
        return orig(self, *a, **kw)

    monkeypatch.setattr(type(design), "spectral_norm_sq", counting)
    c = prob.constants()
    assert set(c) == {"L", "M", "f_star"} and c["L"] > 0 and c["M"] > 0 and c["f_star"] is None
    assert prob.constants() == c and prob.L == c["L"]
    pc.minimize(prob, "gd", eps=1e-30, max_iters=2)  # lr = 1/L from the cached constant
    assert len(calls) == 1


def test_runner_records_setup_and_oracle_counts(tmp_path):
    pytest.importorskip("pyarrow")
    from precond_core.bench.grid import Cell
    from precond_core.bench.runner import run_cell

    res = run_cell(Cell("logistic", {"n_samples": 40, "n_features": 5}, "uniform_direction", {"step": "regularized"}, seed=0, eps=1e-30,
                        max_iters=4, suite="t"))
    row = res.runs.iloc[0]
    assert row["setup_s"] > 0 and row["constants_s"] >= 0
    assert row["n_hvps"] == 30 + 4 and row["n_losses"] >= 0 and row["n_sample_grads"] == 0
    assert {"n_losses", "n_sample_grads"} <= set(res.iters.columns)
    assert res.iters["n_hvps"].iloc[0] == 30  # the set-up's HVPs, counted before the iteration clock starts
