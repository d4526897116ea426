"""One loop for every method: ``Solver`` (one iteration at a time) and ``minimize`` (until a stop reason).

An iteration is: preconditioner update at (x, g), the step rule's move, and the loss and gradient at
the new point (reused from the step rule when it computed them). The clock is read after a device
synchronize, so GPU times are those of finished work; the only host reads per iteration are the loss
and gradient norm that the stopping test and the trace need.
"""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field

import torch

from .oracle import Oracle
from .problems.base import Problem, check_vector, norm
from .registry import Method, resolve_method
from .steps import _sole_owner
from .timing import Clock

STOP_REASONS = ("converged", "max_iters", "timeout", "diverged")


def check_compatible(problem: Problem, method: Method) -> None:
    """Raise ``ValueError`` with the reason when ``method`` cannot run on ``problem``: a dense method above
    its size limit, an oracle capability the problem lacks (its class does not implement it, or the
    problem's ``provides(capability)`` says no, as for ``from_function`` without per-sample losses), more
    blocks than coordinates, or a step rule whose default needs a constant the problem does not know
    (``step="fixed"`` without ``lr`` needs L; ``step="regularized"`` without ``M`` needs the problem's M)."""
    info = method.info
    if info.max_n is not None and problem.n > info.max_n:
        raise ValueError(f"method {method.name!r} keeps dense n x n curvature and is limited to n <= {info.max_n}; "
                         f"problem {problem.name!r} has n={problem.n}")
    cap = ("per_sample_grads", "model_sample_grads", "kfac_factors", "hvp")
    provides = getattr(problem, "provides", None)
    for need in info.needs:
        missing = need in cap and getattr(type(problem), need, None) is getattr(Problem, need, None)
        if not missing and callable(provides):
            missing = not provides(need)
        if missing:
            hint = (" (from_function: pass per_sample= or sample_loss= with data=)"
                    if need == "per_sample_grads" and callable(provides) else "")
            raise ValueError(f"method {method.name!r} needs {need} which problem {problem.name!r} does not "
                             f"provide{hint}")
    params = method.params
    k = params.get("k") if info.blocks else None
    if k is not None and k > problem.n:
        raise ValueError(f"method {method.name!r}: k={k} blocks > n={problem.n} coordinates of problem "
                         f"{problem.name!r}")
    step = params.get("step")
    if step == "fixed" and params.get("lr") is None and getattr(problem, "L", None) is None:
        raise ValueError(f"method {method.name!r} with step='fixed' defaults to lr = 1/L, but problem "
                         f"{problem.name!r} has no known smoothness constant L; pass lr=... or step='armijo'")
    if step == "regularized" and params.get("M") is None and getattr(problem, "M", None) is None:
        raise ValueError(f"method {method.name!r} with step='regularized' needs M: problem {problem.name!r} "
                         "has no known Hessian Lipschitz constant; pass M=... or use step='adaptive'")


class Solver:
    """Runs ``method`` on ``problem`` one iteration at a time (``step()``); what the benchmarks time."""

    def __init__(self, problem: Problem, method, x0: torch.Tensor | None = None, seed: int = 0):
        self.problem = problem
        self.method = resolve_method(method)
        check_compatible(problem, self.method)
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise ValueError(f"seed must be an integer, got {seed!r}")
        self.seed = seed
        self.generator = torch.Generator(device=problem.device).manual_seed(seed)
        if x0 is None:
            x = problem.x0()
        else:
            check_vector(x0, problem.n, problem.dtype, problem.device, "x0")
            x = x0.clone()
        self.oracle = Oracle(problem)
        self.x = x
        self.f, self.g = self.oracle.loss_grad(x)
        self.pstate = self.method.preconditioner.init(problem, x, self.generator)
        self.sstate = self.method.step_rule.init(problem, x)
        # a preconditioner that fuses its update with this step rule (AdaGrad's, Adam's power step on CPU): one
        # call does both, with the same result up to roundoff
        fuse = getattr(self.method.preconditioner, "fused_step", None)
        self._fused = fuse(self.method.step_rule, x) if fuse is not None else None
        if self._fused is not None:
            self.pstate = self._fused.init(self.pstate)
        self.op = None
        self.iteration = 0

    def setup(self) -> None:
        """The method's one-off set-up that the first step would otherwise do: a bound sigma that holds for
        every x (e.g. the uniform direction's power iteration for lambda_max), computed at x0 exactly as
        the first step would. ``minimize`` runs it before the iteration clock starts."""
        st, pre = self.sstate, self.method.preconditioner
        if (isinstance(st, dict) and "sigma" in st and st["sigma"] is None and pre is not None
                and not getattr(pre, "sigma_per_step", False) and pre.has_sigma(self.problem)):
            sigma = pre.sigma(self.oracle, self.x)
            if sigma is not None:
                st["sigma"] = sigma

    @property
    def counts(self) -> dict:
        return self.oracle.counts()

    @property
    def state_bytes(self) -> int:
        """Bytes of the preconditioner's persistent state and the operator it last produced (shared
        storage counted once)."""
        from .preconditioners import tensor_bytes
        return tensor_bytes(self.pstate, self.op)

    def owns_x(self) -> bool:
        """Whether the iterate ``self.x`` is referenced by nothing but this solver (no caller, preconditioner
        state or view holds it), so a step rule may overwrite it with the next iterate."""
        return _sole_owner(self.x, 1)

    def step(self) -> None:
        """One iteration. Memory: a step rule that supports it (``takes_owns_x``: fixed, regularized, power)
        writes the next iterate into x's storage when nothing else holds x, and the old gradient is
        released before the new one is computed, so the loop itself keeps one iterate and one gradient.
        A tensor read from ``solver.x`` and kept by the caller is never overwritten (it is then not owned)."""
        pre, rule, oracle = self.method.preconditioner, self.method.step_rule, self.oracle
        if self._fused is not None:   # update and step in one call (``preconditioner.fused_step``)
            owns = self.owns_x()
            x_new, self.op, self.pstate = self._fused.step(self.pstate, self.sstate, self.x, self.g, owns)
            oracle.solves += 1
            f_new = g_new = None
        else:
            self.op, self.pstate = pre.update(self.pstate, self.x, self.g, oracle)
            if rule.takes_owns_x:
                owns = self.owns_x()   # read before x is an argument on the call stack
                x_new, f_new, g_new, self.sstate = rule.step(self.sstate, self.x, self.f, self.g, self.op, oracle,
                                                             owns_x=owns)
            else:
                x_new, f_new, g_new, self.sstate = rule.step(self.sstate, self.x, self.f, self.g, self.op, oracle)
        if g_new is None:
            self.x, self.g = x_new, None   # the old gradient is freed before the new one is allocated
            f_new, g_new = oracle.loss_grad(x_new)
        self.x, self.f, self.g = x_new, f_new, g_new
        self.iteration += 1


@dataclass
class Trace:
    """Per-iteration record of a run (iteration 0 is the starting point)."""
    problem: str
    method: str
    label: str
    params: dict
    n: int
    device: str
    dtype: str
    seed: int
    eps: float
    losses: list = field(default_factory=list)
    grad_norms: list = field(default_factory=list)
    times: list = field(default_factory=list)
    n_grads: list = field(default_factory=list)
    n_hvps: list = field(default_factory=list)
    n_solves: list = field(default_factory=list)
    n_sample_grads: list = field(default_factory=list)
    n_losses: list = field(default_factory=list)
    stop_reason: str = ""
    message: str = ""
    state_bytes: int = 0
    setup_s: float = 0.0  # the method's one-off set-up (synchronized seconds), before times[0] = 0
    events: dict = field(default_factory=dict)  # counts the method reports, e.g. newton_cg's negative_curvature
    x: torch.Tensor | None = None

    @property
    def iterations(self) -> int:
        return max(len(self.losses) - 1, 0)

    def iters_to(self, eps: float) -> int | None:
        """First iteration with ||grad|| <= eps, or ``None``."""
        for i, gn in enumerate(self.grad_norms):
            if gn <= eps:
                return i
        return None

    def time_to(self, eps: float) -> float | None:
        i = self.iters_to(eps)
        return None if i is None else self.times[i]

    def to_rows(self) -> list[dict]:
        return [{"iter": i, "loss": self.losses[i], "grad_norm": self.grad_norms[i], "time_s": self.times[i],
                 "n_grads": self.n_grads[i], "n_hvps": self.n_hvps[i], "n_solves": self.n_solves[i],
                 "n_sample_grads": self.n_sample_grads[i], "n_losses": self.n_losses[i]} for i in range(len(self.losses))]

    def summary(self) -> dict:
        steps = [b - a for a, b in zip(self.times, self.times[1:])]
        med = statistics.median(steps) if steps else float("nan")
        it = self.iters_to(self.eps)
        return {"problem": self.problem, "method": self.method, "method_label": self.label, "n": self.n,
                "device": self.device, "dtype": self.dtype, "seed": self.seed, "eps": self.eps,
                "stop_reason": self.stop_reason, "iterations": self.iterations,
                "iters_to_eps": float("nan") if it is None else it,
                "time_to_eps": float("nan") if it is None else self.times[it],
                "final_grad_norm": self.grad_norms[-1] if self.grad_norms else float("nan"),
                "final_loss": self.losses[-1] if self.losses else float("nan"),
                "median_step_s": med, "state_bytes": self.state_bytes, "setup_s": self.setup_s}


def minimize(problem: Problem, method, *, x0: torch.Tensor | None = None, eps: float = 1e-6,
             max_iters: int = 1000, max_seconds: float | None = None, seed: int = 0, callback=None) -> Trace:
    """Run ``method`` on ``problem`` until ||grad f(x_k)|| <= eps (``converged``), ``max_iters``
    iterations, ``max_seconds`` of synchronized wall time (``timeout``) or a non-finite loss or gradient
    (``diverged``). ``method`` is a registry name or a ``Method`` from ``make_method``.
    ``callback(solver, trace)`` is called after each recorded iteration; returning True stops the run.

    ``trace.setup_s`` is the method's one-off set-up (building the solver: preconditioner and step-rule
    init, f and g at x0, a sigma bound that holds for every x), timed on its own; the iteration clock
    (``trace.times``, 0 at x0) starts after it. Problem constants (``problem.constants()``) are the
    problem's, not the method's: compute them before the run to keep them off both clocks.
    """
    if not isinstance(eps, (int, float)) or isinstance(eps, bool) or not eps > 0 or not math.isfinite(eps):
        raise ValueError(f"eps must be a finite number > 0, got {eps!r}")
    if not isinstance(max_iters, int) or isinstance(max_iters, bool) or max_iters < 0:
        raise ValueError(f"max_iters must be an integer >= 0, got {max_iters!r}")
    if max_seconds is not None and not (isinstance(max_seconds, (int, float)) and max_seconds > 0):
        raise ValueError(f"max_seconds must be a number > 0 or None, got {max_seconds!r}")
    setup_clock = Clock(problem.device)  # set-up: the solver (step-rule and preconditioner init, f and g at x0)
    solver = Solver(problem, method, x0=x0, seed=seed)
    solver.setup()
    setup_s = setup_clock()
    clock = Clock(problem.device)  # the iteration clock starts after the set-up
    m = solver.method
    trace = Trace(problem=problem.name, method=m.name, label=m.label, params=dict(m.params), n=problem.n,
                  device=torch.device(problem.device).type, dtype=str(problem.dtype).replace("torch.", ""),
                  seed=seed, eps=float(eps), setup_s=float(setup_s))
    next_bytes_check = 1

    def record() -> tuple[float, float]:
        f, gn = float(solver.f), float(norm(solver.g))
        c = solver.oracle
        trace.times.append(clock())
        trace.losses.append(f)
        trace.grad_norms.append(gn)
        trace.n_grads.append(c.grads)
        trace.n_hvps.append(c.hvps)
        trace.n_solves.append(c.solves)
        trace.n_sample_grads.append(c.sample_grads)
        trace.n_losses.append(c.losses)
        return f, gn

    f, gn = record()
    while True:
        if not (math.isfinite(f) and math.isfinite(gn)):
            trace.stop_reason = "diverged"
            break
        if gn <= eps:
            trace.stop_reason = "converged"
            break
        if solver.iteration >= max_iters:
            trace.stop_reason = "max_iters"
            break
        if max_seconds is not None and trace.times[-1] >= max_seconds:
            trace.stop_reason = "timeout"
            break
        try:
            solver.step()
        except (torch.linalg.LinAlgError, FloatingPointError, ZeroDivisionError) as exc:
            trace.stop_reason, trace.message = "diverged", f"{type(exc).__name__}: {exc}"
            break
        if solver.iteration >= next_bytes_check:  # state size is read at iterations 1, 2, 4, 8, ... (off the clock path)
            trace.state_bytes = max(trace.state_bytes, solver.state_bytes)
            next_bytes_check *= 2
        f, gn = record()
        if callback is not None and callback(solver, trace):
            trace.stop_reason = "callback"
            break
    if solver.op is not None:
        trace.state_bytes = max(trace.state_bytes, solver.state_bytes)
    trace.x = solver.x
    events = solver.pstate.get("events") if isinstance(solver.pstate, dict) else None
    if events:
        trace.events = dict(events)
    return trace


__all__ = ["Solver", "Trace", "minimize", "check_compatible", "STOP_REASONS"]
