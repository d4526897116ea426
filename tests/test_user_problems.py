"""User problems and data in grids, every grid error at once, method parameter validation, a store that
mends, honest summaries (issue: your own problems, data and models everywhere)."""
from __future__ import annotations

import hashlib
import shutil
import textwrap
from pathlib import Path

import pandas as pd
import pytest
import torch

pytest.importorskip("pyarrow")

import precond_core as pc
from precond_core import problems
from precond_core.bench import cli, grid as G
from precond_core.bench.runner import run_sweep
from precond_core.bench.store import Store

ROOT = Path(__file__).resolve().parents[1]
HEART = ROOT / "datasets" / "heart_scale" / "heart_scale"

FACTORY_MODULE = '''
import torch
from precond_core.problems import from_function


def make(n=3, scale=1.0, dtype=torch.float64, device="cpu", seed=0):
    """A user's quadratic 1/2 scale |x - c|^2."""
    g = torch.Generator().manual_seed(seed)
    c = torch.randn(n, generator=g, dtype=dtype).to(device)
    return from_function(lambda x: 0.5 * scale * ((x - c) ** 2).sum(), torch.zeros(n, dtype=dtype, device=device),
                         name="userquad", L=scale)
'''


def snapshot(root: Path) -> dict:
    return {p: p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def run_cli(capsys, *argv):
    rc = cli.main([str(a) for a in argv])
    out = capsys.readouterr()
    return rc, out.out, out.err


@pytest.fixture
def user_dir(tmp_path, monkeypatch, request):
    """A directory holding a user's factory module (unique name per test) and a LIBSVM file; the cwd."""
    mod = f"userprob_{request.node.name.replace('[', '_').replace(']', '_').replace('-', '_')}"
    (tmp_path / f"{mod}.py").write_text(FACTORY_MODULE)
    shutil.copy(HEART, tmp_path / "my.libsvm")
    monkeypatch.chdir(tmp_path)
    return tmp_path, mod


def write_grid(path: Path, mod: str, extra: str = "") -> Path:
    path.write_text(textwrap.dedent(f'''
        [defaults]
        eps = 1e-8
        max_iters = 12
        threads = 1
        [[problems]]
        factory = "{mod}:make"
        n = [3, 4]
        [[problems]]
        name = "logistic"
        dataset = "my.libsvm"
        [[methods]]
        name = "gd"
        step = "armijo"
        ''') + extra)
    return path


def test_factory_and_libsvm_path_run_store_and_report(user_dir, capsys):
    tmp, mod = user_dir
    g = write_grid(tmp / "g.toml", mod)
    store = tmp / "store"
    rc, _, err = run_cli(capsys, "run", g, "--store", store, "--no-progress")
    assert rc == 0, err
    runs = Store(store).read_runs()
    assert len(runs) == 3
    user = runs[runs["problem"] == f"{mod}:make"]
    assert sorted(user["n"]) == [3, 4]
    assert set(user["problem_factory"]) == {f"{mod}:make"}
    lib = runs[runs["problem"] == "logistic"].iloc[0]
    assert lib["dataset"] == "my.libsvm" == lib["dataset_name"]
    assert lib["dataset_path"] == str((tmp / "my.libsvm").resolve())
    assert lib["dataset_sha256"] == hashlib.sha256(HEART.read_bytes()).hexdigest()
    assert lib["n"] == 13  # heart_scale has 13 features
    assert (Store(store).read_iters()["run_id"].nunique()) == 3
    # resumable like any cell: a second run stores nothing new
    rc, _, err = run_cli(capsys, "run", g, "--store", store, "--no-progress")
    assert rc == 0 and "3 already stored" in err
    out = tmp / "rep" / "index.html"
    rc, _, err = run_cli(capsys, "report", "--store", store, "--out", out)
    assert rc == 0, err
    html = out.read_text()
    assert f"{mod}:make" in html and "my.libsvm" in html
    shutil.copytree(store, tmp / "store_b")
    rc, text, err = run_cli(capsys, "compare", store, tmp / "store_b")
    assert rc == 0, err
    assert "3 matching cells" in text and f"{mod}:make" in text and "my.libsvm" in text


def test_register_problem_enters_make_problem_list_and_grids(user_dir, capsys):
    tmp, mod = user_dir
    calls = []

    def factory(m=2, dtype=torch.float64, seed=0):
        calls.append((m, dtype, seed))
        return problems.quadratic(n=m, cond=4.0, seed=seed, dtype=dtype)

    problems.register_problem("my_quad", factory, summary="a registered quadratic")
    try:
        assert "my_quad" in problems.list_problems()
        info = problems.problem_info("my_quad")
        assert info["params"] == {"m": 2} and info["factory"].endswith("factory")
        p = problems.make_problem("my_quad", m=5, seed=3)
        assert p.n == 5 and calls[-1] == (5, torch.float64, 3)
        with pytest.raises(ValueError, match="did you mean 'm'"):
            problems.make_problem("my_quad", mm=5)
        with pytest.raises(ValueError, match="already registered"):
            problems.register_problem("my_quad", factory)
        with pytest.raises(ValueError, match="built in"):
            problems.register_problem("logistic", factory)
        rc, out, _ = run_cli(capsys, "list", "problems")
        assert rc == 0 and "my_quad" in out and "a registered quadratic" in out
        g = tmp / "r.toml"
        g.write_text('[defaults]\nmax_iters = 5\n[[problems]]\nname = "my_quad"\nm = [2, 3]\n'
                     '[[methods]]\nname = "newton"\n')
        rc, _, err = run_cli(capsys, "run", g, "--store", tmp / "s", "--no-progress")
        assert rc == 0, err
        runs = Store(tmp / "s").read_runs()
        assert sorted(runs["n"]) == [2, 3] and set(runs["problem"]) == {"my_quad"}
        assert all(f.endswith("factory") for f in runs["problem_factory"])
    finally:
        problems.unregister_problem("my_quad")
    assert "my_quad" not in problems.list_problems()


def test_factory_parameter_without_default_is_required(user_dir, capsys):
    tmp, mod = user_dir
    (tmp / f"{mod}_req.py").write_text(
        "import torch\nfrom precond_core.problems import quadratic\n"
        "def make(n, cond=10.0):\n    return quadratic(n=n, cond=cond)\n")
    with pytest.raises(ValueError, match=r"needs parameter\(s\) \['n'\]"):
        problems.make_problem(f"{mod}_req:make")
    assert problems.make_problem(f"{mod}_req:make", n=4).n == 4
    g = tmp / "q.toml"
    g.write_text(f'[[problems]]\nfactory = "{mod}_req:make"\n[[methods]]\nname = "gd"\n')
    rc, _, err = run_cli(capsys, "run", g, "--dry-run", "--store", tmp / "s")
    assert rc == 2 and "key 'n': missing" in err


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA")
def test_from_function_per_sample_grads_on_cuda():
    p, A, y, sample_loss = _logistic_function_problem(with_samples="sample_loss")
    A, y = A.cuda(), y.cuda()
    q = problems.from_function(None, p.x0().cuda(), sample_loss=sample_loss, data=(A, y))
    idx = torch.tensor([1, 4, 9], device="cuda")
    torch.testing.assert_close(q.per_sample_grads(q.x0(), idx).cpu(), p.per_sample_grads(p.x0(), idx.cpu()))


def test_bad_factory_paths_are_named(user_dir):
    tmp, mod = user_dir
    with pytest.raises(ValueError, match="cannot import module 'no_such_mod_xyz'"):
        problems.make_problem("no_such_mod_xyz:make")
    with pytest.raises(ValueError, match="did you mean 'make'"):
        problems.make_problem(f"{mod}:mak")
    with pytest.raises(ValueError, match="unknown parameter"):
        problems.make_problem(f"{mod}:make", size=3)


def test_three_mistakes_three_messages_exit_2_store_untouched(user_dir, capsys):
    tmp, mod = user_dir
    store = tmp / "store"
    rc, _, err = run_cli(capsys, "run", write_grid(tmp / "ok.toml", mod), "--store", store, "--no-progress")
    assert rc == 0, err
    before = snapshot(store)
    bad = tmp / "bad.toml"
    bad.write_text(textwrap.dedent(f'''
        [defaults]
        epsilon = 1e-6
        [[problems]]
        name = "logistic"
        lamda = 0.1
        [[methods]]
        name = "gd"
        max_iter = 10
        '''))
    for extra in ((), ("--dry-run",)):
        rc, out, err = run_cli(capsys, "run", bad, "--store", store, "--no-progress", *extra)
        assert rc == 2 and out == ""
        lines = [l for l in err.splitlines() if str(bad) in l and "key" in l]
        assert len(lines) == 3, err
        assert "table [defaults], key 'epsilon'" in err and "did you mean 'eps'" in err
        assert "table [[problems]] #1, key 'lamda'" in err and "did you mean 'lam'" in err
        assert "table [[methods]] #1, key 'max_iter'" in err and "did you mean 'max_iters'" in err
        assert snapshot(store) == before


def test_dry_run_refuses_bad_values_and_missing_data(user_dir, capsys):
    tmp, mod = user_dir
    g = tmp / "k.toml"
    g.write_text('[[problems]]\nname = "logistic"\ndataset = "nope.libsvm"\n[[problems]]\nname = "logistic"\n'
                 'dataset = "mushroom"\n[[methods]]\nname = "adagrad_bma"\nk = [-4, 0, 8]\n')
    rc, _, err = run_cli(capsys, "run", g, "--dry-run", "--store", tmp / "s")
    assert rc == 2
    assert "key 'k'" in err and "k=-4" in err and "k=0" in err and "positive integer" in err
    assert "no such file 'nope.libsvm'" in err
    assert "did you mean 'mushrooms'" in err
    assert not (tmp / "s").exists()


def test_missing_registered_dataset_names_the_fetch_command(tmp_path, capsys):
    missing = [n for n, a in G.dataset_availability().items() if not a and not n.startswith("synthetic:")
               and getattr(__import__("precond_core.datasets.registry", fromlist=["registry"]).registry()[n],
                           "kind", "") == "download"]
    if not missing:
        pytest.skip("every downloadable data set is on this machine")
    g = tmp_path / "m.toml"
    g.write_text(f'[[problems]]\nname = "logistic"\ndataset = "{missing[0]}"\n[[methods]]\nname = "gd"\n')
    rc, _, err = run_cli(capsys, "run", g, "--dry-run", "--store", tmp_path / "s")
    assert rc == 2 and "not on this machine" in err
    assert f"python -m precond_core.datasets fetch {missing[0]}" in err
    rc, out, _ = run_cli(capsys, "list", "datasets")
    line = next(l for l in out.splitlines() if l.startswith(missing[0] + " "))
    assert "not on disk" in line and "fetch" in line


def test_list_datasets_shows_disk_status_and_size(capsys):
    rc, out, _ = run_cli(capsys, "list", "datasets")
    assert rc == 0
    avail = G.dataset_availability()
    for name, a in avail.items():
        if a and not name.startswith("synthetic:") and a.where and Path(a.where).is_file():
            line = next(l for l in out.splitlines() if l.startswith(name + " "))
            assert "on disk" in line and "iB" in line
            break
    else:
        pytest.skip("no data set file on disk")


def test_list_methods_shows_step_rule_parameters(capsys):
    rc, out, _ = run_cli(capsys, "list", "methods")
    assert rc == 0
    adam = next(l for l in out.splitlines() if l.startswith("adam "))
    assert "lr=0.01" in adam and "beta2=0.999" in adam and "beta1=0.9" in adam and "step='power'" in adam
    gd = next(l for l in out.splitlines() if l.startswith("gd "))
    assert "lr=None" in gd


# -- make_method validation -------------------------------------------------------------------------------
@pytest.mark.parametrize("name,params,key", [
    ("adagrad_bma", {"k": -4}, "k"), ("adagrad_bma", {"k": 2.5}, "k"), ("adagrad_bma", {"k": "8"}, "k"),
    ("adagrad_bma", {"k": 0}, "k"), ("adagrad_bma", {"k": True}, "k"), ("newton_bma", {"blocks": [2, 0]}, "blocks"),
    ("adagrad_bma", {"update_every": 0}, "update_every"), ("adagrad_bma", {"variant": "scaled", "damping": -1},
                                                          "damping"),
    ("uniform_direction", {"delta": -0.1}, "delta"), ("uniform_direction", {"form": "rawx"}, "form"),
    ("adam", {"lr": 0}, "lr"), ("adam", {"lr": "0.1"}, "lr"), ("adam", {"beta2": 1.0}, "beta2"),
    ("gd", {"lr": float("nan")}, "lr"), ("fisher_sampled", {"b": 0}, "b"), ("hutchinson", {"probes": 1.5}, "probes"),
    ("lbfgs", {"memory": -1}, "memory"), ("lowrank_hessian", {"rank": 0}, "rank"),
    ("gd", {"step": "armijo", "c": 1.5}, "c"), ("newton", {"step": "adaptive", "shrink": 2.0}, "shrink"),
    ("adagrad_bma", {"k": 2, "blocks": [1, 1]}, "blocks"),
])
def test_make_method_refuses_bad_values(name, params, key):
    with pytest.raises(ValueError, match=key) as exc:
        pc.make_method(name, **params)
    assert getattr(exc.value, "param", None) == key


@pytest.mark.parametrize("name,params,key,why", [
    ("uniform_direction", {"form": "raw", "delta": 0.5}, "delta", "form='raw'"),
    ("uniform_direction", {"form": "symmetrized", "delta": 0.01}, "delta", "form='symmetrized'"),
    ("adagrad_bma", {"variant": "exact", "damping": 0.1}, "damping", "variant='exact'"),
    ("adagrad_bma", {"damping": 0.3}, "damping", "variant='exact'"),
])
def test_make_method_refuses_no_effect_parameters(name, params, key, why):
    with pytest.raises(ValueError, match="no effect") as exc:
        pc.make_method(name, **params)
    assert why in str(exc.value) and exc.value.param == key


def test_parameters_with_effect_are_accepted_and_labelled():
    assert pc.make_method("uniform_direction", form="regularized", delta=0.5).label == "uniform_direction(delta=0.5)"
    assert pc.make_method("uniform_direction", form="raw").label == "uniform_direction(form=raw)"
    assert pc.make_method("adagrad_bma", variant="scaled", damping=0.2, k=8).label == \
        "adagrad_bma(damping=0.2,k=8,variant=scaled)"
    assert pc.make_method("adagrad_bma", k=None).label == "adagrad_bma"
    with pytest.raises(ValueError, match="did you mean 'beta2'"):
        pc.make_method("adam", beta_2=0.9)


def test_every_registered_parameter_has_a_rule():
    from precond_core.registry import PARAM_RULES, STEP_PARAMS

    for name in pc.list_methods():
        info = pc.method_info(name)
        for step in info.steps:
            for key in info.all_params(step):
                assert key in PARAM_RULES or f"{name}.{key}" in PARAM_RULES, (name, key)
    for params in STEP_PARAMS.values():
        assert set(params) <= set(PARAM_RULES)


# -- incompatibilities refused at construction --------------------------------------------------------------
def _logistic_function_problem(S=30, n=5, seed=0, with_samples="sample_loss"):
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(S, n, generator=g, dtype=torch.float64)
    y = torch.where(torch.rand(S, generator=g, dtype=torch.float64) < 0.5, -1.0, 1.0).to(torch.float64)

    def sample_loss(x, a, yi):
        return torch.nn.functional.softplus(-yi * (a @ x))

    def per_sample(x):
        return torch.nn.functional.softplus(-y * (A @ x))

    def fun(x):
        return per_sample(x).mean()

    x0 = 0.1 * torch.randn(n, generator=g, dtype=torch.float64)
    if with_samples == "sample_loss":
        return problems.from_function(None, x0, sample_loss=sample_loss, data=(A, y)), A, y, sample_loss
    if with_samples == "per_sample":
        return problems.from_function(fun, x0, per_sample), A, y, sample_loss
    return problems.from_function(fun, x0), A, y, sample_loss


@pytest.mark.parametrize("kind", ["sample_loss", "per_sample"])
def test_from_function_per_sample_grads_match_autograd_row_by_row(kind):
    p, A, y, sample_loss = _logistic_function_problem(with_samples=kind)
    x = torch.linspace(-0.5, 0.5, 5, dtype=torch.float64)
    assert p.n_samples == 30 and p.fisher_scale == pytest.approx(1 / 30)
    idx = torch.tensor([3, 0, 17, 17, 29])
    G_idx, G_all = p.per_sample_grads(x, idx), p.per_sample_grads(x)
    assert G_idx.shape == (5, 5) and G_all.shape == (30, 5)
    for r, s in enumerate(idx.tolist()):
        xr = x.clone().requires_grad_(True)
        (ref,) = torch.autograd.grad(sample_loss(xr, A[s], y[s]), xr)
        torch.testing.assert_close(G_idx[r], ref, rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(G_all[s], ref, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(G_all.mean(0), p.grad(x), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("method", ["fisher_sampled", "fisher_empirical", "fisher_model", "kfac"])
def test_from_function_without_samples_refuses_fisher_methods_at_construction(method):
    p, *_ = _logistic_function_problem(with_samples=None)
    with pytest.raises(ValueError, match="does not provide") as exc:
        pc.Solver(p, pc.make_method(method))
    assert method in str(exc.value)
    if method in ("fisher_sampled", "fisher_empirical"):
        assert "per_sample=" in str(exc.value)
        q, *_ = _logistic_function_problem(with_samples="sample_loss")
        pc.Solver(q, pc.make_method(method)).step()  # with per-sample losses it runs


def test_from_function_fisher_sampled_runs_and_decreases():
    p, *_ = _logistic_function_problem(S=60, n=6, with_samples="sample_loss")
    tr = pc.minimize(p, pc.make_method("fisher_sampled", b=8), eps=1e-12, max_iters=30, seed=0)
    assert float(tr.losses[-1]) < float(tr.losses[0])


def test_steps_needing_unknown_constants_and_too_many_blocks_are_refused():
    p, *_ = _logistic_function_problem(with_samples=None)  # L, M unknown
    with pytest.raises(ValueError, match="no known smoothness constant L; pass lr=... or step='armijo'"):
        pc.Solver(p, pc.make_method("gd"))
    pc.Solver(p, pc.make_method("gd", lr=0.5))
    pc.Solver(p, pc.make_method("gd", step="armijo"))
    with pytest.raises(ValueError, match="needs M"):
        pc.Solver(p, pc.make_method("newton", step="regularized"))
    with pytest.raises(ValueError, match="k=8 blocks > n=5"):
        pc.Solver(p, pc.make_method("adagrad_bma", k=8))


# -- the store mends ---------------------------------------------------------------------------------------
STORE_GRID = """
[defaults]
max_iters = 8
threads = 1
[[problems]]
name = "quadratic"
n = [4, 5]
[[methods]]
name = "gd"
"""


def test_repair_quarantines_a_corrupt_part_and_the_next_run_redoes_that_cell(tmp_path, capsys):
    g = tmp_path / "s.toml"
    g.write_text(STORE_GRID)
    store = tmp_path / "store"
    assert run_cli(capsys, "run", g, "--store", store, "--no-progress")[0] == 0
    st = Store(store)
    runs = st.read_runs()
    victim = runs[runs["n"] == 5].iloc[0]
    part = next(p for p in st.parts("iters") if victim["run_id"] in p.name)
    data = part.read_bytes()
    part.write_bytes(data[: len(data) // 2])
    rc, out, err = run_cli(capsys, "store", "check", "--store", store)
    assert rc == 1 and f"{part}: unreadable" in out and "1 bad part" not in err  # its runs part is listed too
    assert len(out.splitlines()) == 2 and "partner of a bad part" in out
    rc, out, err = run_cli(capsys, "store", "repair", "--store", store)
    assert rc == 0 and "moved 2 part(s)" in err
    q = list((store / "quarantine").rglob("*.parquet"))
    assert sorted(p.parent.name for p in q) == ["iters", "runs"] and all(victim["run_id"] in p.name for p in q)
    assert next(p for p in q if p.parent.name == "iters").read_bytes() == data[: len(data) // 2]  # kept, as it was
    assert run_cli(capsys, "store", "check", "--store", store)[0] == 0
    rc, _, err = run_cli(capsys, "run", g, "--store", store, "--no-progress")
    assert rc == 0 and "1 already stored" in err and "1 to run" in err
    runs2 = Store(store).read_runs()
    assert len(runs2) == 2 and sorted(runs2["n"]) == [4, 5]


def test_runs_part_without_iters_part_is_not_stored(tmp_path, capsys):
    g = tmp_path / "s.toml"
    g.write_text(STORE_GRID)
    store = tmp_path / "store"
    assert run_cli(capsys, "run", g, "--store", store, "--no-progress")[0] == 0
    st = Store(store)
    part = st.parts("iters")[0]
    part.rename(tmp_path / part.name)  # moved out by hand
    assert len(st.read_runs()) == 1
    rc, out, _ = run_cli(capsys, "store", "check", "--store", store)
    assert rc == 1 and "orphaned: no iters part" in out
    rc, _, err = run_cli(capsys, "run", g, "--dry-run", "--store", store)
    assert rc == 0 and "1 stored" in err and "1 to run" in err


# -- honest summaries ---------------------------------------------------------------------------------------
def test_run_summary_counts_diverged_cells(tmp_path):
    g = tmp_path / "d.toml"
    g.write_text('[defaults]\nmax_iters = 50\nthreads = 1\n[[problems]]\nname = "quadratic"\nn = 4\n'
                 '[[methods]]\nname = "gd"\nlr = [1e4, 1e5]\n[[methods]]\nname = "gd"\n')
    lines = []
    s = run_sweep(str(g), tmp_path / "store", progress=False, log=lines.append)
    reasons = Store(tmp_path / "store").read_runs()["stop_reason"].value_counts().to_dict()
    assert s.diverged == reasons.get("diverged", 0) == 2
    assert s.timed_out == reasons.get("timeout", 0)
    assert f"diverged 2, timed out {s.timed_out}" in lines[-1]


def test_readme_from_function_example_runs(capsys):
    import re

    text = (ROOT / "README.md").read_text()
    section = text.split("## Your own objective: `from_function`", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    assert len(code.strip().splitlines()) <= 12
    exec(compile(code, "README.md", "exec"), {})
    out = capsys.readouterr().out
    assert out.count("converged") == 4, out
