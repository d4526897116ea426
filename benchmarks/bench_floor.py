"""How close the project's methods run to their floors, side by side in one process (1 thread by default).

    python benchmarks/bench_floor.py flat --n 10000000 --rounds 7        # gradient given, flat float32
    python benchmarks/bench_floor.py fixed --rounds 7                     # minimize's fixed cost, n = 10
    python benchmarks/bench_floor.py mushrooms --rounds 5                 # time to ||g|| <= 1e-6 vs SciPy, sklearn
    python benchmarks/bench_floor.py small --rounds 7                     # k x k algebra: NumPy path vs torch path
    python benchmarks/bench_floor.py parts --n 1000000 --rounds 7         # each method's step against its floor

``flat``: one update of a flat float32 vector from a given gradient (no oracle): the project's adagrad
and adagrad_bma (k = 8, 64, 512) preconditioner + power step against ``torch.optim.Adagrad`` (default
settings) on a tensor of the same size; seconds per update and the ratio to torch's.
``fixed``: ``minimize`` with gd (fixed step) on a 10-dimensional quadratic against a bare torch loop of
the same arithmetic (the problem's loss_grad, x - lr g, the host reads of f and ||g||); seconds per
iteration and the ratio.
``mushrooms``: time to ||g|| <= 1e-6 on mushrooms (logistic regression, lam = 1e-3) of newton_cg (float64
and float32 inner solve), newton (float64, and float32 Hessian), lbfgs and bfgs against SciPy's Newton-CG, trust-ncg and L-BFGS-B and
scikit-learn's LogisticRegression (lbfgs, newton-cg, newton-cholesky), all on 1 thread (threadpoolctl
for NumPy/SciPy). A peer's own tolerance is calibrated first (untimed): divided by 10 until its answer
has ||g|| <= 1e-6 in the project's objective. Project times are set-up + iteration clock of ``minimize``
(the problem is built before). Ratios are to SciPy Newton-CG. Needs scipy, scikit-learn and threadpoolctl
(the ``bench`` extra) for the peers.
``small``: one block-mean refresh (``block_mean_from_stats(like=)``) and power -1/2 at k = 8, 16, 32, 64
on CPU, through the NumPy path and through the torch path (``operators.HOST_SMALL_MAX`` set per call),
300 calls per sample; the ratio NumPy / torch is what ``HOST_SMALL_MAX`` = 32 was chosen from.
``parts``: the floor of a step on the scalable problem (float64), from the primitives a minimal
implementation of the method cannot avoid, each timed on its own buffers in the same interleaved rounds
as the methods' real steps (``cases.make_solver``, steady state): the loss and gradient a step evaluates
(forward pass not cached), one HVP (forward cached, as after the step's gradient), the probe draw (a
direction uniform on the sphere, or Rademacher signs), a pass (axpy: two n-vectors read, one written),
products of r stored rows with an n-vector (``W v`` and ``W^T c``, one pass over the rows each) and the
k x k block-mean refresh. ``FLOORS`` lists each method's recipe. The table gives the step and its floor
in gradients (step_cost's unit, ``cases.oracle_fns``: the gradient alone, without the loss) and their
ratio, step / floor (1.00: the method runs at its floor), which does not depend on the gradient's own
noise. A recipe is a lower bound of this implementation's algorithm, not of every algorithm: e.g.
L-BFGS needs ``W g`` before its direction and ``W^T c`` after its small solve, two passes over the 2 m
stored rows that no ordering merges.

Rounds are interleaved (every round runs every contender once) and medians reported.
"""
from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from fractions import Fraction
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

import precond_core as pc  # noqa: E402
from precond_core.oracle import Oracle  # noqa: E402


def _interleave(contenders: dict, rounds: int) -> dict:
    """{name: median seconds} of ``fn()`` over interleaved rounds (one untimed warm-up round)."""
    samples = {k: [] for k in contenders}
    for r in range(rounds + 1):
        for name, fn in contenders.items():
            t0 = time.perf_counter()
            fn()
            dt = time.perf_counter() - t0
            if r:
                samples[name].append(dt)
    return {k: statistics.median(v) for k, v in samples.items()}


# -- flat: gradient given ---------------------------------------------------------------------------
class _FlatProblem:
    """The bare minimum a preconditioner's init needs (n, blocks); no oracle."""
    name, blocks, L, M = "flat", None, None, None

    def __init__(self, n):
        self.n = n


def flat(n: int, rounds: int, ks=(8, 64, 512)) -> dict:
    gen = torch.Generator().manual_seed(0)
    g = torch.randn(n, generator=gen, dtype=torch.float32)
    contenders = {}

    p = torch.nn.Parameter(torch.zeros(n, dtype=torch.float32))
    p.grad = g.clone()
    opt = torch.optim.Adagrad([p])
    contenders["torch.optim.Adagrad"] = opt.step

    def lane(method):
        m = pc.make_method(method)
        prob = _FlatProblem(n)
        box = {"x": torch.zeros(n, dtype=torch.float32)}
        oracle = Oracle(prob)
        pst = m.preconditioner.init(prob, box["x"], gen)
        sst = m.step_rule.init(prob, box["x"])
        holder = {"p": pst, "s": sst}

        def step():
            op, holder["p"] = m.preconditioner.update(holder["p"], box["x"], g, oracle)
            # the lane owns its iterate, as ``Solver`` does: the rule writes x+ into x (torch's update is in place too)
            box["x"], _, _, holder["s"] = m.step_rule.step(holder["s"], box["x"], None, g, op, oracle, owns_x=True)
        return m.label, step

    label, fn = lane("adagrad")
    contenders[label] = fn
    for k in ks:
        m = pc.make_method("adagrad_bma", k=k)
        prob = _FlatProblem(n)
        box = {"x": torch.zeros(n, dtype=torch.float32), "p": None, "s": None}
        oracle = Oracle(prob)
        box["p"] = m.preconditioner.init(prob, box["x"], gen)
        box["s"] = m.step_rule.init(prob, box["x"])

        def step(m=m, box=box, oracle=oracle):
            op, box["p"] = m.preconditioner.update(box["p"], box["x"], g, oracle)
            box["x"], _, _, box["s"] = m.step_rule.step(box["s"], box["x"], None, g, op, oracle, owns_x=True)
        contenders[m.label] = step
    med = _interleave(contenders, rounds)
    ref = med["torch.optim.Adagrad"]
    print(f"flat float32 n = {n:.0e}, {torch.get_num_threads()} thread(s), median of {rounds} interleaved rounds")
    for k, v in med.items():
        print(f"  {k:28s} {v * 1e3:9.2f} ms  {v / ref:6.2f}x torch.optim.Adagrad")
    return med


# -- fixed cost at n = 10 ---------------------------------------------------------------------------
def fixed(rounds: int, iters: int = 2000) -> dict:
    prob = pc.problems.quadratic(n=10, cond=10.0, seed=0)
    lr = 1.0 / prob.L
    x0 = prob.x0()

    def project():
        pc.minimize(prob, pc.make_method("gd", lr=lr), eps=1e-300, max_iters=iters)

    def bare():
        x = x0.clone()
        f, g = prob.loss_grad(x)
        fs, gs = [float(f)], [float(torch.linalg.vector_norm(g))]
        for _ in range(iters):
            x = x - lr * g
            f, g = prob.loss_grad(x)
            fs.append(float(f))
            gs.append(float(torch.linalg.vector_norm(g)))
    med = _interleave({"minimize(gd)": project, "bare torch loop": bare}, rounds)
    print(f"fixed cost per iteration, n = 10, {iters} iterations, {torch.get_num_threads()} thread(s), "
          f"median of {rounds} interleaved rounds")
    for k, v in med.items():
        print(f"  {k:20s} {v / iters * 1e6:8.2f} us/iteration")
    print(f"  ratio minimize / bare: {med['minimize(gd)'] / med['bare torch loop']:.3f}")
    return med


# -- mushrooms --------------------------------------------------------------------------------------
def mushrooms(rounds: int, eps: float = 1e-6) -> dict:
    import numpy as np
    from benchmarks import cases
    prob = cases.dataset_problem("mushrooms")
    lam, S = prob.lam, prob.n_samples
    A = prob.A.to_dense().numpy() if prob.A.layout != torch.strided else prob.A.numpy()
    b = prob.b.numpy()
    x0 = prob.x0().numpy()

    def gnorm(w):
        return float(torch.linalg.vector_norm(prob.grad(torch.as_tensor(np.asarray(w, dtype=np.float64)))))

    contenders = {}
    for spec in [("newton_cg", {}), ("newton_cg", {"inner_dtype": "float32"}), ("newton", {}),
                 ("newton", {"inner_dtype": "float32"}), ("lbfgs", {}),
                 ("bfgs", {})]:
        m = pc.make_method(spec[0], **spec[1])
        tr = pc.minimize(prob, m, eps=eps, max_iters=2000)
        if tr.stop_reason != "converged":
            print(f"  {m.label}: {tr.stop_reason}, skipped")
            continue
        contenders[m.label] = (lambda m=m: pc.minimize(prob, m, eps=eps, max_iters=2000))

    try:
        import scipy.optimize as so
    except ImportError:
        so = None

    def np_fun(w):
        z = A @ w
        m = -b * z
        return float(np.mean(np.logaddexp(0.0, m)) + 0.5 * lam * w @ w)

    def np_grad(w):
        z = A @ w
        s = 1.0 / (1.0 + np.exp(b * z))
        return -(A.T @ (b * s)) / S + lam * w

    def np_fun_grad(w):
        z = A @ w
        m = -b * z
        s = 1.0 / (1.0 + np.exp(-m))
        return float(np.mean(np.logaddexp(0.0, m)) + 0.5 * lam * w @ w), -(A.T @ (b * s)) / S + lam * w

    def np_hessp(w, v):
        z = A @ w
        p = 1.0 / (1.0 + np.exp(-z))
        return A.T @ (p * (1 - p) * (A @ v)) / S + lam * v

    def calibrated(run, tol0):
        tol = tol0
        for _ in range(12):
            w = run(tol)
            if gnorm(w) <= eps:
                return tol
            tol /= 10
        return None

    if so is not None:
        peers = {
            "scipy Newton-CG": (lambda tol: so.minimize(np_fun_grad, x0, jac=True, hessp=np_hessp, method="Newton-CG",
                                                        options={"xtol": tol}).x, 1e-5),
            "scipy trust-ncg": (lambda tol: so.minimize(np_fun_grad, x0, jac=True, hessp=np_hessp, method="trust-ncg",
                                                        options={"gtol": tol}).x, 1e-6),
            "scipy L-BFGS-B": (lambda tol: so.minimize(np_fun_grad, x0, jac=True, method="L-BFGS-B",
                                                       options={"gtol": tol, "ftol": 1e-15, "maxiter": 10000}).x, 1e-6),
        }
        try:
            from sklearn.linear_model import LogisticRegression
            C = 1.0 / (lam * S)
            for solver in ("lbfgs", "newton-cg", "newton-cholesky"):
                def run(tol, solver=solver):
                    est = LogisticRegression(C=C, fit_intercept=False, solver=solver, tol=tol, max_iter=10000)
                    return est.fit(A, b).coef_.ravel()
                peers[f"sklearn {solver}"] = (run, 1e-4)
        except ImportError:
            print("  scikit-learn not installed: its peers skipped")
        for name, (run, tol0) in peers.items():
            tol = calibrated(run, tol0)
            if tol is None:
                print(f"  {name}: never reached ||g|| <= {eps}, skipped")
                continue
            contenders[f"{name} (tol={tol:g})"] = (lambda run=run, tol=tol: run(tol))
    else:
        print("  scipy not installed: peers skipped")

    try:
        from threadpoolctl import threadpool_limits
        ctx = threadpool_limits(limits=torch.get_num_threads())
    except ImportError:
        ctx = None
        print("  threadpoolctl not installed: NumPy/SciPy threads not limited")
    try:
        med = _interleave(contenders, rounds)
    finally:
        if ctx is not None:
            ctx.unregister() if hasattr(ctx, "unregister") else None
    ref_key = next((k for k in med if k.startswith("scipy Newton-CG")), None)
    print(f"mushrooms (n = {prob.n}, S = {S}, lam = {lam}) to ||g|| <= {eps}, {torch.get_num_threads()} thread(s), "
          f"median of {rounds} interleaved rounds")
    for k, v in sorted(med.items(), key=lambda kv: kv[1]):
        ratio = f"{v / med[ref_key]:6.2f}x scipy Newton-CG" if ref_key else ""
        print(f"  {k:40s} {v * 1e3:9.2f} ms  {ratio}")
    return med


def small(rounds: int, ks=(8, 16, 32, 64), calls: int = 300) -> dict:
    from precond_core import operators as ops
    from precond_core.problems.base import partition
    contenders = {}
    for k in ks:
        sizes = tuple(partition(10 ** 4, k))
        g = torch.Generator().manual_seed(k)
        U = torch.zeros(k, k, dtype=torch.float64)
        Q = torch.zeros(k, dtype=torch.float64)
        for _ in range(20):                            # statistics of 20 gradients' block sums
            e = torch.randn(k, generator=g, dtype=torch.float64)
            U.addr_(e, e)
            Q.add_(e * e / 3)
        like = ops.BlockMean(torch.ones(k, dtype=torch.float64), torch.zeros(k, k, dtype=torch.float64), sizes)
        host = (U.numpy(), Q.numpy())
        for path, limit in (("numpy", max(ks)), ("torch", 0)):
            def run(U=U, Q=Q, sizes=sizes, like=like, host=host, limit=limit):
                saved, ops.HOST_SMALL_MAX = ops.HOST_SMALL_MAX, limit
                try:
                    for _ in range(calls):
                        ops.block_mean_from_stats(U, Q, sizes, like=like, host=host).matrix_power(-0.5, 1e-10)
                finally:
                    ops.HOST_SMALL_MAX = saved
            contenders[(k, path)] = run
    med = _interleave(contenders, rounds)
    print(f"block-mean refresh + power -1/2, {torch.get_num_threads()} thread(s), median of {rounds} interleaved "
          f"rounds of {calls} calls (HOST_SMALL_MAX = {pc.operators.HOST_SMALL_MAX})")
    for k in ks:
        a, b = med[(k, "numpy")] / calls, med[(k, "torch")] / calls
        print(f"  k = {k:3d}: numpy {a * 1e6:8.1f} us, torch {b * 1e6:8.1f} us, numpy / torch {a / b:5.2f}")
    return med


# -- parts: each method's step against the primitives it cannot avoid ---------------------------------
# method spec (as step_cost's) -> [(primitive, count)]. "pass": an axpy, i.e. the memory traffic of three
# n-vectors (two read, one written); fractional counts are other traffic in that unit (a fused sweep that
# reads x, g and a statistic and writes x and the statistic: 5/3). "rows:r" / "rowsT:r": W v and
# y += W^T c over r stored rows (the traffic of W's r rows and of the n-vectors they meet).
F = Fraction
FLOORS = {
    "gd@fixed": [("loss_grad", 1), ("pass", 1)],                         # x - lr g
    "adagrad": [("loss_grad", 1), ("pass", F(5, 3))],                    # one sweep: x, g, s read; x, s written
    "adam": [("loss_grad", 1), ("pass", F(7, 3))],                       # one sweep: x, g, m, v read; x, m, v written
    "adagrad_bma": [("loss_grad", 1), ("pass", F(4, 3)), ("refresh:8", 1)],   # E^T g (and squares): g read;
                                               # x - lr (lam g + E B E^T g): x, g read, x written; the k x k factor
    "hutchinson@fixed": [("loss_grad", 1), ("hvp", 1), ("rademacher", 1),
                         ("pass", F(7, 3))],                            # d = z * Hz; x - lr g / d
    "uniform_direction@fixed": [("loss_grad", 1), ("hvp", 1), ("sphere", 1), ("rows:2", 2), ("rowsT:2", 1),
                                ("pass", F(2, 3))],                     # [u.v, v.v], W g; x - lr (g / b - W^T c)
    "lbfgs@fixed": [("loss_grad", 1), ("pass", F(8, 3)), ("rows:20", 1), ("rowsT:20", 1),
                    ("pass", F(1, 3))],        # the pair: x, x_prev, g, g_prev read, s, y, x_prev, g_prev written;
                                               # W g over the 2 m = 20 rows; x + a (gamma g + W^T c)
}


def _refresh(n: int, k: int, gen):
    """The primitive "refresh:k": the k x k block-mean refresh and its power -1/2 from statistics of 20 gradients'
    block sums, as AdaGrad-BMA runs it every step (the path ``operators.HOST_SMALL_MAX`` selects)."""
    from precond_core import operators as ops
    from precond_core.problems.base import partition
    sizes = tuple(partition(n, k))
    U, Q = torch.zeros(k, k, dtype=torch.float64), torch.zeros(k, dtype=torch.float64)
    for _ in range(20):
        e = torch.randn(k, generator=gen, dtype=torch.float64)
        U.addr_(e, e)
        Q.add_(e * e / 3)
    box = {"F": None}
    host = (U.numpy(), Q.numpy())

    def refresh():
        box["F"] = ops.block_mean_from_stats(U, Q, sizes, like=box["F"], host=host)
        box["F"].matrix_power(-0.5, 1e-10)
    return refresh


def _primitives(n: int, needed) -> dict:
    """{name: fn} for the primitives named in ``needed``, each on its own problem object and buffers."""
    from benchmarks import cases
    from precond_core.preconditioners import Hutchinson, UniformDirection
    gen = torch.Generator().manual_seed(0)
    prob = cases.scalable_problem(n)
    x = prob.x0().add_(0.01)
    kw = {"dtype": x.dtype}
    v, out, y = torch.randn(n, generator=gen, **kw), torch.empty(n, **kw), torch.empty(n, **kw)
    hprob = cases.scalable_problem(n)         # the HVP's own problem: its cached forward pass is not the gradient's
    hprob.loss_grad(x)
    rows = max([int(p.split(":")[1]) for p in needed if p.startswith("rows")] or [0])
    W = torch.randn(rows, n, generator=gen, **kw) if rows else None
    c = torch.randn(rows, **kw) if rows else None
    U, buf = torch.empty(1, n, **kw), torch.empty(min(n, UniformDirection.DRAW_CHUNK), dtype=torch.float32)
    z, idx = torch.empty(-(-n // 8) * 8, **kw), torch.empty(-(-n // 8), dtype=torch.int64)

    def loss_grad():
        prob.clear_cache()
        prob.loss_grad(x)
    gradient, _ = cases.oracle_fns(n)        # step_cost's unit, on a problem of its own: grad(x), cache cleared
    fns = {"gradient": gradient, "loss_grad": loss_grad, "hvp": lambda: hprob.hvp_into(x, v, out),
           "sphere": lambda: UniformDirection.draw(U, gen, buf), "rademacher": lambda: Hutchinson.rademacher_(z, gen, idx),
           "pass": lambda: torch.add(x, v, alpha=-0.5, out=y)}
    for name in needed:
        kind, _, arg = name.partition(":")
        if kind == "rows":
            fns[name] = lambda r=int(arg): torch.mv(W[:r], v, out=c[:r])
        elif kind == "rowsT":
            fns[name] = lambda r=int(arg): y.addmv_(W[:r].T, c[:r])
        elif kind == "refresh":
            fns[name] = _refresh(n, int(arg), gen)
    unknown = set(needed) - set(fns)
    if unknown:
        raise ValueError(f"unknown primitives in FLOORS: {sorted(unknown)}")
    return {k: fns[k] for k in needed}


def parts(n: int, rounds: int, methods=tuple(FLOORS), calls: int | None = None) -> dict:
    """Interleaved rounds of every primitive of ``methods``' recipes and of each method's real step; prints
    the step, the floor (both in gradients) and their ratio. Returns {"primitives", "steps", "floor"} in
    seconds."""
    from benchmarks import cases
    unknown = [m for m in methods if m not in FLOORS]
    if unknown:
        raise ValueError(f"methods without a floor recipe: {unknown} (known: {sorted(FLOORS)})")
    needed = sorted({p for m in methods for p, _ in FLOORS[m]} | {"gradient"})
    calls = calls or max(1, int(1e6 // n))    # one call at n >= 10^6 (round-robin, as step_cost), else about 10 ms
    contenders = {}
    for name, fn in _primitives(n, needed).items():
        def many(fn=fn):
            for _ in range(calls):
                fn()
        contenders[("primitive", name)] = many
    for spec in methods:
        name, _, step = spec.partition("@")
        box = {"s": cases.make_solver(name, n, step=step or None)}

        def steps(box=box, name=name, step=step):
            for _ in range(calls):
                box["s"].step()
            if not math.isfinite(float(box["s"].f)):  # an iterate gone non-finite: untimed fresh start next round
                box["s"] = cases.make_solver(name, n, step=step or None)
        contenders[("step", spec)] = steps
    med = {k: v / calls for k, v in _interleave(contenders, rounds).items()}
    prim = {k[1]: v for k, v in med.items() if k[0] == "primitive"}
    steps_ = {k[1]: v for k, v in med.items() if k[0] == "step"}
    floor = {m: sum(prim[p] * float(c) for p, c in FLOORS[m]) for m in methods}
    g = prim["gradient"]
    print(f"step against its floor, scalable problem n = {n:.0e} (float64), {torch.get_num_threads()} thread(s), "
          f"median of {rounds} interleaved rounds of {calls} calls; gradient {g * 1e3:.3f} ms")
    for p in needed:
        print(f"  primitive {p:12s} {prim[p] * 1e3:9.3f} ms  {prim[p] / g:5.2f} gradients")
    print(f"  {'method':26s} {'step':>7s} {'floor':>7s}  (gradients)  step / floor   recipe")
    for m in methods:
        recipe = " + ".join(p if c == 1 else f"{c} {p}" for p, c in FLOORS[m])
        print(f"  {m:26s} {steps_[m] / g:7.2f} {floor[m] / g:7.2f}  {'':11s}  {steps_[m] / floor[m]:11.2f}   {recipe}")
    return {"primitives": prim, "steps": steps_, "floor": floor}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("what", choices=("flat", "fixed", "mushrooms", "small", "parts"))
    ap.add_argument("--n", type=float, default=None, help="flat: vector size (default 1e7); parts: the "
                    "scalable problem's n (default 1e6)")
    ap.add_argument("--methods", nargs="+", default=None, help=f"parts: methods (default: {' '.join(FLOORS)})")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    if args.rounds < 1:
        ap.error("--rounds must be >= 1")
    if args.threads < 1:
        ap.error("--threads must be >= 1")
    torch.set_num_threads(args.threads)
    if args.n is not None and not (args.n >= 1 and float(args.n).is_integer()):
        ap.error(f"--n must be a positive integer, got {args.n!r}")
    if args.methods and args.what != "parts":
        ap.error("--methods applies to parts only")
    if args.what == "flat":
        flat(int(args.n or 1e7), args.rounds)
    elif args.what == "parts":
        methods = args.methods or list(FLOORS)
        unknown = [m for m in methods if m not in FLOORS]
        if unknown:
            ap.error(f"--methods: no floor recipe for {unknown} (known: {' '.join(FLOORS)})")
        parts(int(args.n or 1e6), args.rounds, tuple(methods))
    elif args.what == "fixed":
        fixed(args.rounds)
    elif args.what == "small":
        small(args.rounds)
    else:
        mushrooms(args.rounds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
