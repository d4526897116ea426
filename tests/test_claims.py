"""The report chapter "The talks' claims": verdicts computed by the stated rules, never a crash on
missing runs or a missing or malformed reference file."""
import json
import sys
import types

import numpy as np
import pandas as pd
import pytest

from precond_core.bench import claims


def _run(run_id, method, iters_to_eps, grads, seed=0, max_iters=20000, step="armijo"):
    row = {"run_id": run_id, "problem": "logistic", "method": method, "method_label": method, "seed": seed,
           "problem_params": json.dumps({"n_samples": 500, "n_features": 100}),
           "method_params": json.dumps({"step": step}), "method_params_resolved": json.dumps({"step": step}),
           "max_iters": max_iters, "eps": 1e-10, "iters_to_eps": iters_to_eps, "stop_reason": "converged",
           "dataset": None}
    it = pd.DataFrame({"run_id": run_id, "iter": np.arange(len(grads)), "grad_norm": grads})
    return row, it


def _tables(newton_iters, gd_iters):
    rows, its = [], []
    for seed in (0, 1):
        for name, k in (("newton", newton_iters), ("gd", gd_iters)):
            r, it = _run(f"{name}{seed}", name, float(k), np.logspace(0, -11, int(k) + 1), seed=seed)
            rows.append(r)
            its.append(it)
    return pd.DataFrame(rows), pd.concat(its, ignore_index=True)


def test_gd_newton_rule():
    ref, _ = claims.load_reference()
    runs, iters = _tables(8, 900)
    c = claims.claim_gd_newton_500(claims._prepare(runs), iters, ref)
    assert c.verdict == "reproduced" and len(c.table) == 2
    runs, iters = _tables(8, 40)          # GD only 5x slower: one half of the rule
    assert claims.claim_gd_newton_500(claims._prepare(runs), iters, ref).verdict == "partly"
    runs, iters = _tables(40, 60)         # Newton slow, GD not 10x slower
    assert claims.claim_gd_newton_500(claims._prepare(runs), iters, ref).verdict == "not reproduced"


def test_missing_runs_are_not_run_and_chapter_renders():
    sec = claims.section_claims(pd.DataFrame(), pd.DataFrame())
    assert sec.title == "The talks' claims" and sec.note is None
    got, _ = claims.evaluate_claims(pd.DataFrame(), pd.DataFrame())
    by = {c.key: c for c in got}
    for key in ("one-d", "mushrooms-ud", "regularized-K", "gd-newton-500", "cnn"):
        assert by[key].verdict == "not run", key
    assert all(c.verdict in claims.VERDICTS for c in got)
    # the seeded computations give verdicts without any run
    assert by["proposition"].verdict in ("partly", "reproduced", "refuted", "not reproduced")
    prop = by["proposition"].table
    # the proposition is an equality for H = cI and (raw form) H^2 = c^2 I, and the exact formula holds everywhere
    assert prop.loc[prop["matrix"].str.startswith("H = 2 I"), "equal to talk"].all()
    assert prop.loc[prop["matrix"].str.startswith("H^2") & (prop["form"] == "raw"), "equal to talk"].all()
    assert prop["exact within 4 s.e."].all()
    assert by["fisher-lemma"].table["model within"].all()
    assert by["block-mean"].verdict == "reproduced"


@pytest.mark.parametrize("content", [None, "this is [not toml"])
def test_missing_or_malformed_reference(tmp_path, content):
    path = tmp_path / "talk_figures.toml"
    if content is not None:
        path.write_text(content)
    ref, msg = claims.load_reference(path)
    assert ref is None and ("missing" if content is None else "malformed") in msg and str(path) in msg
    got, msg2 = claims.evaluate_claims(pd.DataFrame(), pd.DataFrame(), reference_path=path)
    assert msg2 == msg and {c.key for c in got} >= {"one-d", "mushrooms-ud", "cnn"}
    sec = claims.section_claims(pd.DataFrame(), pd.DataFrame(), reference_path=path)
    assert msg in sec.intro


def test_shipped_reference_has_the_talk_values():
    ref, msg = claims.load_reference()
    assert ref is not None, msg
    assert "source" in ref["rank_one_talk"] and ref["rank_one_talk"]["mushrooms"]["ud_50_samples"]


def test_cnn_claim_reads_training_tables(monkeypatch, tmp_path):
    ref, _ = claims.load_reference()
    runs = pd.DataFrame({"run_id": ["a", "b"], "method": ["adagrad", "adagrad_bma"], "model": ["small_cnn", "small_cnn"]})
    ep = pd.DataFrame({"run_id": ["a", "a", "b", "b"], "epoch": [1, 2, 1, 2], "train_loss_sum": [900, 800, 850, 700],
                       "test_error": [0.6, 0.55, 0.58, 0.5]})
    mod = types.ModuleType("precond_core.bench.train")
    mod.load_training_tables = lambda store_dir: (runs, ep)
    monkeypatch.setitem(sys.modules, "precond_core.bench.train", mod)
    import precond_core.bench as pb
    monkeypatch.setattr(pb, "train", mod, raising=False)
    c = claims.claim_cnn(None, None, ref, store_dir=tmp_path)
    assert c.verdict == "reproduced", c.detail
    ep2 = ep.assign(test_error=[0.5, 0.55, 0.58, 0.5])       # BMA worse at epoch 1, better at the last
    mod.load_training_tables = lambda store_dir: (runs, ep2)
    assert claims.claim_cnn(None, None, ref, store_dir=tmp_path).verdict == "partly"
    mod.load_training_tables = lambda store_dir: (runs.iloc[:0], ep.iloc[:0])
    assert claims.claim_cnn(None, None, ref, store_dir=tmp_path).verdict == "not run"
