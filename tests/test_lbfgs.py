"""L-BFGS in preallocated buffers (compact form) against a plain float64 two-loop recursion and a dense
BFGS inverse; traces against the previous list-based two-loop implementation (kept here as reference)."""
from __future__ import annotations

import dataclasses
import resource

import pytest
import torch

import precond_core as pc
from precond_core import preconditioners as P
from precond_core.oracle import Oracle

F64 = torch.float64


# -- references ---------------------------------------------------------------------------------------
def two_loop(S, Y, v):
    """H v by the textbook two-loop recursion (H0 = gamma I, gamma = s^T y / y^T y of the newest pair)."""
    q, alphas = v.clone(), []
    for s, y in zip(reversed(S), reversed(Y)):
        a = torch.dot(s, q) / torch.dot(y, s)
        alphas.append(a)
        q = q - a * y
    if S:
        q = q * (torch.dot(S[-1], Y[-1]) / torch.dot(Y[-1], Y[-1]))
    for (s, y), a in zip(zip(S, Y), reversed(alphas)):
        q = q + (a - torch.dot(y, q) / torch.dot(y, s)) * s
    return q


def dense_bfgs_inverse(S, Y, n):
    """H from H0 = gamma I by the BFGS inverse update H <- (I - rho s y^T) H (I - rho y s^T) + rho s s^T."""
    eye = torch.eye(n, dtype=F64)
    H = eye * (torch.dot(S[-1], Y[-1]) / torch.dot(Y[-1], Y[-1])) if S else eye.clone()
    for s, y in zip(S, Y):
        rho = 1.0 / torch.dot(y, s)
        V = eye - rho * torch.outer(y, s)
        H = V.T @ H @ V + rho * torch.outer(s, s)
    return H


class _OldLBFGSInverse(P.ops.Operator):
    """The previous implementation (list of pairs, two-loop), verbatim up to names."""

    def __init__(self, S, Y, n, dtype, device, rho, gamma):
        self.S, self.Y, self.n, self.dtype, self.device, self.rho, self.gamma = S, Y, n, dtype, device, rho, gamma

    def solve(self, v, shift=0.0):
        q = v.clone()
        alphas = []
        for s, y, rho in zip(reversed(self.S), reversed(self.Y), reversed(self.rho)):
            a = rho * torch.dot(s, q)
            alphas.append(a)
            q.addcmul_(y, a, value=-1)
        if self.S:
            q.mul_(self.gamma)
        for s, y, rho, a in zip(self.S, self.Y, self.rho, reversed(alphas)):
            q.addcmul_(s, a - rho * torch.dot(y, q))
        return q


class _OldLBFGS(P.Preconditioner):
    name = "lbfgs"

    def __init__(self, memory=10):
        self.memory = memory

    def init(self, problem, x, generator):
        return {"S": [], "Y": [], "rho": [], "gamma": None, "x": None, "g": None}

    def update(self, s, x, g, oracle):
        if s["x"] is not None:
            sv, yv = x - s["x"], g - s["g"]
            ys = torch.dot(sv, yv)
            if bool(ys > 1e-12 * torch.linalg.vector_norm(sv) * torch.linalg.vector_norm(yv)):
                s["S"].append(sv)
                s["Y"].append(yv)
                s["rho"].append(1.0 / ys)
                s["gamma"] = ys / torch.dot(yv, yv)
                if len(s["S"]) > self.memory:
                    s["S"].pop(0), s["Y"].pop(0), s["rho"].pop(0)
        s["x"], s["g"] = x, g
        return _OldLBFGSInverse(list(s["S"]), list(s["Y"]), x.shape[0], x.dtype, x.device, list(s["rho"]),
                                s["gamma"]), s


def _rel(a, b):
    return float(torch.linalg.vector_norm(a - b) / torch.linalg.vector_norm(b).clamp_min(1e-300))


def _pairs(n, k, seed=0):
    gen = torch.Generator().manual_seed(seed)
    A = torch.randn(n, n, generator=gen, dtype=F64)
    H = A @ A.T / n + 0.1 * torch.eye(n, dtype=F64)
    S = [torch.randn(n, generator=gen, dtype=F64) for _ in range(k)]
    return H, S, [H @ s for s in S]


def _torch_small_algebra(state):
    """Run the state's small algebra in torch (the CUDA code path) on CPU."""
    state.host, state.chunked = False, False
    state._small()
    return state


# -- solve against the references ---------------------------------------------------------------------
@pytest.mark.parametrize("memory", [3, 6, 10])      # memory > pairs (not full), = pairs (full), < pairs (wrapped)
def test_from_pairs_matches_two_loop_and_dense_bfgs(memory):
    n = 12
    H, S, Y = _pairs(n, 6)
    op = P.LBFGSInverse.from_pairs(S, Y, memory=memory)
    Sk, Yk = S[-memory:], Y[-memory:]
    v = torch.linspace(-1, 2, n, dtype=F64)
    assert _rel(op.solve(v), two_loop(Sk, Yk, v)) < 1e-12
    Hd = dense_bfgs_inverse(Sk, Yk, n)
    assert _rel(op.solve(v), Hd @ v) < 1e-12
    assert torch.allclose(op.to_dense(), torch.linalg.inv(Hd), rtol=1e-9, atol=1e-10)
    x = torch.ones(n, dtype=F64)
    assert _rel(op.solve_add_(x.clone(), v, -0.5), x - 0.5 * Hd @ v) < 1e-12


@pytest.mark.parametrize("path", ["numpy", "chunked", "torch"])
def test_update_wraps_refuses_and_matches_two_loop(path, monkeypatch):
    """Memory 3 over 40 updates (wrapped around many times) with refused pairs: solve of the update's g
    (products reused), of another vector, and solve_add_, against the two-loop over the kept pairs."""
    n, memory = 30, 3
    if path == "chunked":
        monkeypatch.setattr(P, "_LBFGS_CHUNK", 7)           # 5 chunks, the last one short
    H, _, _ = _pairs(n, 0, seed=3)
    gen = torch.Generator().manual_seed(4)
    pre = P.LBFGS(memory)
    st = pre.init(None, torch.zeros(n, dtype=F64), None)
    assert st.chunked == (path == "chunked")
    if path == "torch":
        _torch_small_algebra(st)
    S, Y, xp, gp, refused = [], [], None, None, 0
    for k in range(40):
        x = torch.randn(n, generator=gen, dtype=F64)
        g = H @ x + 0.01 * torch.randn(n, generator=gen, dtype=F64)
        if k % 7 == 5:
            g = gp - (g - gp)                   # y = -(H s + noise): y^T s < 0, refused
        op, st = pre.update(st, x, g, None)
        if xp is not None:
            s, y = x - xp, g - gp
            if float(torch.dot(s, y)) > 1e-12 * float(s.norm() * y.norm()):
                S, Y = (S + [s])[-memory:], (Y + [y])[-memory:]
            else:
                refused += 1
        xp, gp = x, g
        assert len(st.S) == len(S)
        for a, b in zip(st.S + st.Y, S + Y):
            assert torch.allclose(a, b, rtol=0, atol=1e-14)
        v = torch.randn(n, generator=gen, dtype=F64)
        ref_g, ref_v = two_loop(S, Y, g), two_loop(S, Y, v)
        assert _rel(op.solve(g), ref_g) < 1e-11
        assert _rel(op.solve(v), ref_v) < 1e-11
        x0 = x.clone()
        assert _rel(op.solve_add_(x0, g, -0.3), x - 0.3 * ref_g) < 1e-11
    assert refused == st.refused >= 5


def test_solve_results_do_not_alias_and_stale_operators_raise():
    n = 10
    H, S, Y = _pairs(n, 4)
    pre = P.LBFGS(3)
    st = pre.init(None, torch.zeros(n, dtype=F64), None)
    for k in range(5):
        x = torch.full((n,), float(k), dtype=F64) + torch.arange(n, dtype=F64) * k ** 2 / 10
        g = H @ x
        op, st = pre.update(st, x, g, None)
    d1, d2 = op.solve(g), op.solve(g)
    assert d1.data_ptr() != d2.data_ptr() and torch.equal(d1, d2)
    g2 = g.clone()
    g.mul_(2.0)                                  # the update's g modified in place: its products are not reused
    assert _rel(op.solve(g), 2 * d1) < 1e-12
    assert _rel(op.solve(g2), d1) < 1e-12
    pre.update(st, x + 1, H @ (x + 1), None)
    with pytest.raises(RuntimeError, match="superseded"):
        op.solve(g2)


# -- traces against the previous implementation -------------------------------------------------------
@pytest.mark.parametrize("problem, step", [("quadratic", "armijo"), ("quadratic", "fixed"),
                                           ("logistic", "armijo"), ("logistic", "fixed")])
def test_minimize_trace_matches_previous_two_loop(problem, step):
    """Same iterates as the previous two-loop implementation up to roundoff. Over many iterations on an
    ill-conditioned problem roundoff grows (two orderings of the two-loop itself drift apart by 1e-8 after
    60 iterations here), so the runs are 25 iterations, where both differences stay near 1e-12 relative
    (gradient norms: relative to the first once they are down at roundoff)."""
    if problem == "quadratic":
        prob = pc.problems.quadratic(n=60, cond=1e3, seed=1)
    else:
        prob = pc.problems.scalable(400, seed=0)
    kw = {"memory": 5} if step == "armijo" else {"memory": 5, "step": "fixed", "lr": 0.5}
    new = pc.make_method("lbfgs", **kw)
    old = dataclasses.replace(new, preconditioner=_OldLBFGS(5))
    tn = pc.minimize(prob, new, eps=1e-300, max_iters=25)
    to = pc.minimize(prob, old, eps=1e-300, max_iters=25)
    assert tn.iterations == to.iterations == 25
    assert to.grad_norms[-1] < 0.05 * to.grad_norms[0]          # the runs did move
    g0, df = to.grad_norms[0], to.losses[0] - to.losses[-1]
    for fn, fo in zip(tn.losses, to.losses):             # relative, with a floor at roundoff of the run's scale
        assert abs(fn - fo) <= 1e-11 * abs(fo) + 1e-13 * df
    for gn, go in zip(tn.grad_norms, to.grad_norms):
        assert abs(gn - go) <= 1e-11 * go + 1e-13 * g0
    assert _rel(tn.x, to.x) < 1e-10


# -- no n-sized allocation in the steady state -----------------------------------------------------------
@pytest.mark.parametrize("n", [1000, 300_000])          # one chunk; chunked (n > the chunk)
def test_steady_state_step_reuses_its_buffers(n):
    prob = pc.problems.quadratic(n=n, cond=10.0, seed=0) if n <= 1000 else pc.problems.scalable(n, seed=0)
    solver = pc.Solver(prob, pc.make_method("lbfgs", memory=3, step="fixed", lr=0.5))
    for _ in range(12):                         # the memory wrapped around (every ring position seen)
        solver.step()
    st = solver.pstate

    def ptrs():
        return sorted(t.untyped_storage().data_ptr() for t in vars(st).values() if isinstance(t, torch.Tensor))

    before, x_ptr = ptrs(), solver.x.data_ptr()
    for _ in range(4):
        solver.op, solver.pstate = solver.method.preconditioner.update(solver.pstate, solver.x, solver.g,
                                                                       solver.oracle)
        assert solver.owns_x()                  # the state holds copies, not the iterate
        solver.x, solver.f, solver.g, solver.sstate = (*solver.method.step_rule.step(
            solver.sstate, solver.x, solver.f, solver.g, solver.op, solver.oracle, owns_x=True)[:1],
            *solver.oracle.loss_grad(solver.x), solver.sstate)
        assert solver.x.data_ptr() == x_ptr     # x - lr H g written into x
    assert ptrs() == before and len(st.S) == 3
    # the preconditioner's own work (update and solve_add_) allocates no n-vector
    x, g = solver.x, solver.g
    op, _ = solver.method.preconditioner.update(st, x, g, solver.oracle)
    op.solve_add_(x, g, -1e-3)
    gs = [g * (1 + 1e-3 * k) for k in range(3)]
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for gk in gs:
        op, _ = solver.method.preconditioner.update(st, x, gk, solver.oracle)
        op.solve_add_(x, gk, -1e-3)
    # a fresh n-vector would fault in n * 8 / 4096 pages; Python's own small objects may touch a few
    assert resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults < max(8, n * 8 // 4096 // 10)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_update_and_solve_match_cpu():
    n = 50
    H, _, _ = _pairs(n, 0, seed=5)
    gen = torch.Generator().manual_seed(6)
    pre_c, pre_g = P.LBFGS(4), P.LBFGS(4)
    sc = pre_c.init(None, torch.zeros(n, dtype=F64), None)
    sg = pre_g.init(None, torch.zeros(n, dtype=F64, device="cuda"), None)
    for k in range(12):
        x = torch.randn(n, generator=gen, dtype=F64)
        g = H @ x
        oc, sc = pre_c.update(sc, x, g, None)
        og, sg = pre_g.update(sg, x.cuda(), g.cuda(), None)
        assert _rel(og.solve(g.cuda()).cpu(), oc.solve(g)) < 1e-12
        xg = x.cuda()
        assert _rel(og.solve_add_(xg, g.cuda(), -0.5).cpu(), oc.solve_add_(x.clone(), g, -0.5)) < 1e-12
