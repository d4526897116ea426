"""``torch.optim.Optimizer`` versions of the flat-vector preconditioners (``precond_core.preconditioners``).

Classes: ``AdaGrad`` (diagonal, the update of ``torch.optim.Adagrad`` with defaults), ``AdaGradFull``
(full-matrix, small models only), ``AdaGradBMA`` (block-mean approximation, ``variant`` exact / scaled /
lu2018), ``BlockDiagAdaGrad`` (full-matrix AdaGrad within each parameter tensor), ``Hutchinson``
(Rademacher diagonal of the Hessian through the closure), ``UniformDirection`` (the rank-one uniform-direction
estimate n H u u^T, averaged over ``samples`` directions, with the regularized or adaptive step) and
``FisherSampled`` (rank-b Fisher from per-sample gradients by ``torch.func``, same steps).

How the mathematics is shared: the parameters of a group become views into one flat buffer x, and their
gradients views into one flat buffer g (both built at the first step, in group order, each tensor
flattened). The group's flat preconditioner (``preconditioners.AdaGradDiag``, ``AdaGradFull``,
``AdaGradBMA``, ``bma_lu2018.AdaGradBMALu2018``, ``Hutchinson``, ``UniformDirection``) then runs on x and g
exactly as in ``minimize``, with no copy per step, and the update is one in-place operation on x. The
blocks of the BMA variants are the parameter tensors (one per tensor, in order), or ``k`` equal blocks,
or explicit ``blocks`` sizes. The step rules of the Newton-like optimizers are ``steps.Regularized`` and
``steps.Adaptive`` themselves, evaluated through the closure. Chosen over gathering the gradients into a
fresh vector at every step (two O(n) copies per step, measured 1.5x torch Adagrad at n = 10^7) because
the flat preconditioners then cost what they cost on a flat problem.

What this means for the model: ``p.data`` of each parameter is a view into x (the Parameter objects stay
the same, so the model, ``model.state_dict()`` and ``model.load_state_dict()`` work unchanged) and
``p.grad`` is a view into g. ``zero_grad()`` zeroes g in place (``set_to_none`` is ignored for these
parameters, so ``backward`` accumulates into the views without allocating). A gradient that is not the
view (after ``model.zero_grad()``, a ``backward(create_graph=True)``, or one set by hand) is copied into g
at the next step; a parameter whose storage was replaced (``p.data = ...``) is copied back into x.
Moving the model to another device or dtype after steps without moving the optimizer state raises a
``ValueError`` at the next step.

Conventions (those of ``torch.optim``): ``step(closure=None)`` returns the closure's loss; ``closure``
re-evaluates the model, zeroes and fills the gradients (the ``torch.optim.LBFGS`` convention). ``Hutchinson``
and ``UniformDirection`` need a closure that calls ``loss.backward(create_graph=True)`` so that
Hessian-vector products can be taken from the gradients (one extra backward pass per probe or direction;
torch's warning about the parameter-gradient reference cycle of ``create_graph=True`` does not apply after
``step``, which replaces those gradients by the detached views);
``FisherSampled`` needs the model, its loss function and the minibatch (``step(closure, inputs=...,
targets=...)``). The adaptive step calls the closure again at each trial point. Parameters whose ``.grad``
is ``None`` at the first step are left out of the group's flat buffers for good (a later missing gradient
of an included parameter counts as zero). Sparse gradients raise ``ValueError``. The state lives in
``self.state`` under the group's first parameter and round-trips through
``state_dict``/``load_state_dict``.
"""
from __future__ import annotations

import math
from types import SimpleNamespace

import torch

from . import operators as ops
from . import preconditioners as P
from . import steps as S
from .bma_lu2018 import AdaGradBMALu2018, Lu2018Operator

__all__ = ["AdaGrad", "AdaGradFull", "AdaGradBMA", "BlockDiagAdaGrad", "Hutchinson", "UniformDirection",
           "FisherSampled"]


def _check_number(name, value, *, positive=False, nonneg=False):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"Invalid {name}: must be a finite number, got {value!r}")
    if positive and not value > 0:
        raise ValueError(f"Invalid {name}: must be > 0, got {value!r}")
    if nonneg and value < 0:
        raise ValueError(f"Invalid {name}: must be >= 0, got {value!r}")


def _check_int(name, value):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"Invalid {name}: must be a positive integer, got {value!r}")


def _mismatch(state: torch.Tensor, what: str, t: torch.Tensor) -> ValueError:
    return ValueError(f"optimizer state is {state.dtype} on {state.device} but {what} {t.dtype} on {t.device}; "
                      f"create the optimizer after moving the model (or load a state_dict)")


class _Flat:
    """A group's flat buffers: ``x`` (the parameters' storage) and ``g`` (their gradients' storage), the
    group's flat preconditioner ``pre`` and kept scratch n-vectors (``buf``; not part of the state)."""
    __slots__ = ("group", "params", "x", "g", "xs", "gs", "xptr", "gptr", "pre", "bufs")

    def __init__(self, group, params, pre):
        p0 = params[0]
        for i, p in enumerate(params):
            if p.device != p0.device or p.dtype != p0.dtype:
                raise ValueError(f"params: all parameters of a group must share one device and dtype; parameter "
                                 f"{i} is {p.dtype} on {p.device}, parameter 0 is {p0.dtype} on {p0.device}")
        n = sum(p.numel() for p in params)
        self.group, self.params, self.pre, self.bufs = group, params, pre, []
        self.x = torch.empty(n, dtype=p0.dtype, device=p0.device)
        self.g = torch.zeros(n, dtype=p0.dtype, device=p0.device)
        self.xs, self.gs, o = [], [], 0
        for p in params:
            m = p.numel()
            self.xs.append(self.x[o:o + m].view_as(p))
            self.gs.append(self.g[o:o + m].view_as(p))
            o += m
        for p, xv in zip(params, self.xs):
            xv.copy_(p.detach())
            p.data = xv
        self.xptr = [v.data_ptr() for v in self.xs]
        self.gptr = [v.data_ptr() for v in self.gs]

    def sync(self, name):
        """Make every parameter a view of x and every gradient a view of g (copying what is not);
        returns the gradients that were not views (those with a graph, for HVPs), in parameter order."""
        outside = None
        for i, p in enumerate(self.params):
            if p.data_ptr() != self.xptr[i]:
                if p.device != self.x.device or p.dtype != self.x.dtype:
                    raise _mismatch(self.x, "the parameters are", p)
                self.xs[i].copy_(p.detach())
                p.data = self.xs[i]
            gr = p.grad
            if gr is not None and gr.layout == torch.strided and gr.grad_fn is None and gr.data_ptr() == self.gptr[i]:
                continue
            if outside is None:
                outside = [None] * len(self.params)
            if gr is None:
                self.gs[i].zero_()
            else:
                if gr.is_sparse:
                    raise ValueError(f"grad: {name} does not support sparse gradients (parameter {i})")
                if gr.device != self.g.device or gr.dtype != self.g.dtype:
                    raise _mismatch(self.g, f"the gradient of parameter {i} is", gr)
                self.gs[i].copy_(gr.detach())
            outside[i] = gr
            p.grad = self.gs[i]
        return outside

    def buf(self, i=0):
        """The i-th kept n-vector (scratch for directions)."""
        while len(self.bufs) <= i:
            self.bufs.append(torch.empty_like(self.g))
        return self.bufs[i]

    def zero_(self):
        self.g.zero_()
        for p, gv in zip(self.params, self.gs):
            if p.grad is not gv:
                p.grad = gv


class _FlatOptimizer(torch.optim.Optimizer):
    """Base: per group, one flat parameter buffer and one flat gradient buffer; subclasses update x in place."""
    needs_closure = False
    create_graph = False   # the closure must call backward(create_graph=True)

    def __init__(self, params, defaults):
        super().__init__(params, defaults)
        self._flats = {}    # id(group) -> _Flat (rebuilt on demand: not part of the state)

    def _make_preconditioner(self, group):
        raise NotImplementedError

    def _update(self, group, st, fl, graph_grads, loss, closure, **kw):
        raise NotImplementedError

    def _flat(self, group):
        fl = self._flats.get(id(group))
        if fl is not None and fl.group is group:
            return fl
        st = self.state[group["params"][0]]
        if "active" not in st:
            st["active"] = [i for i, p in enumerate(group["params"])
                            if p.requires_grad and p.grad is not None and p.numel() > 0]
        params = [group["params"][i] for i in st["active"]]
        if not params:
            return None
        self._check_params(group, params)
        fl = self._flats[id(group)] = _Flat(group, params, self._make_preconditioner(group))
        return fl

    def _check_params(self, group, params):
        pass

    @staticmethod
    def _check_state_device(flat_state, g):
        for v in vars(flat_state).values() if hasattr(flat_state, "__dict__") else ():
            if isinstance(v, torch.Tensor) and v.is_floating_point() and (v.device != g.device or v.dtype != g.dtype):
                raise _mismatch(v, "the parameters are", g)

    def load_state_dict(self, state_dict):
        """``torch.optim`` semantics; the flat buffers are rebuilt at the next step (the groups are new)."""
        super().load_state_dict(state_dict)
        self._flats.clear()

    def zero_grad(self, set_to_none: bool = True):
        """Zero the flat gradient buffers in place (gradients stay views into them); parameters not in a
        flat buffer (before the first step, or without gradients then) as ``torch.optim`` does."""
        inside = set()
        for group in self.param_groups:
            fl = self._flats.get(id(group))
            if fl is not None and fl.group is group:
                fl.zero_()
                inside.update(id(p) for p in fl.params)
        for group in self.param_groups:
            for p in group["params"]:
                if id(p) in inside or p.grad is None:
                    continue
                if set_to_none:
                    p.grad = None
                else:
                    if p.grad.grad_fn is not None:
                        p.grad.detach_()
                    else:
                        p.grad.requires_grad_(False)
                    p.grad.zero_()

    @torch.no_grad()
    def step(self, closure=None, **kw):
        if self.needs_closure and closure is None:
            what = "loss.backward(create_graph=True)" if self.create_graph else "loss.backward()"
            raise ValueError(f"closure: {type(self).__name__} needs a closure that zeroes the gradients, computes "
                             f"the loss, calls {what} and returns the loss")
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            fl = self._flat(group)
            if fl is None:
                continue
            graph_grads = fl.sync(type(self).__name__)
            st = self.state[group["params"][0]]
            if "flat" not in st:
                prob = SimpleNamespace(n=fl.x.numel(), blocks=tuple(p.numel() for p in fl.params), name="module")
                st["flat"] = fl.pre.init(prob, fl.x, None)
                st["step"] = 0
            self._check_state_device(st["flat"], fl.g)
            self._update(group, st, fl, graph_grads, loss, closure, **kw)
            st["step"] += 1
        return loss


class AdaGrad(_FlatOptimizer):
    """Diagonal AdaGrad, the update of ``torch.optim.Adagrad`` with lr_decay = weight_decay = 0 and
    initial_accumulator_value = 0: acc += g * g; p -= lr * g / (sqrt(acc) + eps) (eps outside the root,
    as torch does; ``preconditioners.AdaGradDiag`` with the ``power`` rule puts it inside). Three fused
    in-place passes over the flat buffers per step and one kept n-vector besides the accumulator."""

    def __init__(self, params, lr: float = 1e-2, eps: float = 1e-10):
        _check_number("lr", lr, positive=True)
        _check_number("eps", eps, nonneg=True)
        super().__init__(params, {"lr": lr, "eps": eps})

    def _make_preconditioner(self, group):
        return P.AdaGradDiag()

    def _update(self, group, st, fl, graph_grads, loss, closure):
        acc, g = st["flat"].acc, fl.g
        d = fl.buf()
        acc.addcmul_(g, g)
        torch.sqrt(acc, out=d).add_(group["eps"])
        fl.x.addcdiv_(g, d, value=-group["lr"])


class _PowerOptimizer(_FlatOptimizer):
    """x -= lr * op.power(g, -1/2, eps) with the group's flat preconditioner."""

    def _update(self, group, st, fl, graph_grads, loss, closure):
        op, st["flat"] = fl.pre.update(st["flat"], fl.x, fl.g, None)
        eps, g = group["eps"], fl.g
        inner, shift = (op.op, eps) if isinstance(op, ops.Scaled) else (None, eps)
        if isinstance(inner, P.Shifted):
            inner, shift = inner.op, shift + inner.c
        if isinstance(op, ops.BlockMean):     # the powered block mean (cached between refreshes) into a kept buffer
            # the update's block sums of g serve the direction too (one reduction per step)
            d = op.matrix_power(-0.5, eps).mv(g, out=fl.buf(), sums=op.block_sums_of(g))
        elif isinstance(inner, ops.BlockMean):
            # Scaled.power(g, -1/2, eps) = z^(-1/2) * (F + shift I)^(-1/2) (z^(-1/2) * g) with kept buffers;
            # op.z is this step's own vector, powered in place
            zp = op.z.pow_(-0.5)
            u = torch.mul(zp, g, out=fl.buf(1))
            d = inner.matrix_power(-0.5, shift).mv(u, out=fl.buf()).mul_(zp)
        elif isinstance(op, Lu2018Operator):
            d = op.power(g, -0.5, eps, out=fl.buf())
        else:
            d = op.power(g, -0.5, eps)
        fl.x.add_(d, alpha=-group["lr"])


class AdaGradFull(_PowerOptimizer):
    """Full-matrix AdaGrad: H += g g^T, p -= lr (H + eps I)^{-1/2} g (n x n state; ``max_n`` guards it)."""

    def __init__(self, params, lr: float = 1e-2, eps: float = 1e-10, max_n: int = 4096):
        _check_number("lr", lr, positive=True)
        _check_number("eps", eps, nonneg=True)
        super().__init__(params, {"lr": lr, "eps": eps, "max_n": max_n})

    def _check_params(self, group, params):
        n = sum(p.numel() for p in params)
        if n > group["max_n"]:
            raise ValueError(f"params: full-matrix AdaGrad on {n} parameters exceeds max_n={group['max_n']} "
                             f"(an n x n state); use AdaGradBMA or raise max_n")

    def _make_preconditioner(self, group):
        return P.AdaGradFull()


class _BlockFullAdaGrad(P.Preconditioner):
    """Full-matrix AdaGrad within each block (the problem's ``blocks``, here the parameter tensors):
    ``preconditioners.AdaGradFull`` per block, joined by ``operators.BlockDiagonal``. State: sum_i s_i^2
    numbers; each block of more than ``max_block`` coordinates is refused (an s x s matrix per block)."""
    name = "block_diag_adagrad"

    def __init__(self, max_block: int):
        self.max_block, self._full = max_block, P.AdaGradFull()

    def init(self, problem, x, generator):
        sizes = tuple(problem.blocks)
        big = [(i, s) for i, s in enumerate(sizes) if s > self.max_block]
        if big:
            raise ValueError(f"params: parameter {big[0][0]} has {big[0][1]} elements, above max_block="
                             f"{self.max_block} (full-matrix AdaGrad keeps an s x s matrix per tensor); "
                             f"raise max_block or use AdaGradBMA")
        return [self._full.init(SimpleNamespace(n=s), xi, None) for s, xi in zip(sizes, torch.split(x, sizes))]

    def update(self, states, x, g, oracle):
        parts = torch.split(g, [st.acc.shape[0] for st in states])
        return ops.BlockDiagonal([self._full.update(st, None, gi, None)[0] for st, gi in zip(states, parts)]), states


class BlockDiagAdaGrad(_PowerOptimizer):
    """Full-matrix AdaGrad per parameter tensor: H_i += g_i g_i^T, p_i -= lr (H_i + eps I)^{-1/2} g_i
    (the block-diagonal part of full-matrix AdaGrad; one eigendecomposition per tensor and step).
    ``max_block`` limits a tensor's size (its state is an s x s matrix)."""

    def __init__(self, params, lr: float = 1e-2, eps: float = 1e-10, max_block: int = 4096):
        _check_number("lr", lr, positive=True)
        _check_number("eps", eps, nonneg=True)
        _check_int("max_block", max_block)
        super().__init__(params, {"lr": lr, "eps": eps, "max_block": max_block})

    def _make_preconditioner(self, group):
        return _BlockFullAdaGrad(group["max_block"])


class AdaGradBMA(_PowerOptimizer):
    """AdaGrad with the block-mean approximation of sum g g^T (``preconditioners.AdaGradBMA`` for
    ``variant`` exact / scaled, ``bma_lu2018`` for the authors' published update). Blocks: one per
    parameter tensor (default), ``k`` equal blocks, or explicit ``blocks`` sizes summing to the group's
    parameter count. ``update_every``: refresh of the k x k factor (an integer period, ``"auto"``: when the
    statistics have outgrown the factor, or ``None``: the flat method's default, every step for k <= 64
    and "auto" above). Extra keyword arguments go to the flat preconditioner (e.g. ``damping``)."""

    VARIANTS = ("exact", "scaled", "lu2018")

    def __init__(self, params, lr: float = 1e-2, eps: float = 1e-10, variant: str = "exact", k=None,
                 blocks=None, update_every: int | str | None = None, **kwargs):
        _check_number("lr", lr, positive=True)
        _check_number("eps", eps, nonneg=True)
        if variant not in self.VARIANTS:
            raise ValueError(f"variant must be one of {self.VARIANTS}, got {variant!r}")
        if update_every not in (None, "auto") and (not isinstance(update_every, int) or isinstance(update_every, bool)
                                                   or update_every < 1):
            raise ValueError(f"update_every must be a positive integer, 'auto' or None, got {update_every!r}")
        super().__init__(params, {"lr": lr, "eps": eps, "variant": variant, "k": k, "blocks": blocks,
                                  "update_every": update_every, "extra": dict(kwargs)})

    def _make_preconditioner(self, group):
        if group["variant"] == "lu2018":
            if group["extra"]:
                raise ValueError(f"unknown argument(s) {sorted(group['extra'])} for variant='lu2018'")
            return AdaGradBMALu2018(group["k"], group["blocks"], group["update_every"])
        return P.AdaGradBMA(group["k"], group["blocks"], group["variant"], group["update_every"], **group["extra"])

    def _check_params(self, group, params):
        if group["blocks"] is not None:
            n = sum(p.numel() for p in params)
            try:
                total = sum(int(b) for b in group["blocks"])
            except TypeError:
                raise ValueError(f"blocks must be a sequence of block sizes, got {group['blocks']!r}") from None
            if total != n:
                raise ValueError(f"blocks sizes sum to {total} but the parameter group has {n} parameters "
                                 f"(with gradients)")


def _graph_grads(name, fl, graph_grads):
    if graph_grads is None or any(gr is None or gr.grad_fn is None for gr in graph_grads):
        raise ValueError(f"closure: {name} needs gradients with a graph; call loss.backward(create_graph=True) "
                         f"in the closure")
    return graph_grads


def _hvp_oracle(fl, grads):
    """``hvp(x, v)``: H v by a second backward pass through the closure's gradients (x is ignored: the
    gradients were taken at the current parameters)."""
    params = fl.params

    def hvp(_x, v):
        zs, o = [], 0
        for p in params:
            zs.append(v[o:o + p.numel()].view_as(p))
            o += p.numel()
        with torch.enable_grad():
            hv = torch.autograd.grad(grads, params, zs, retain_graph=True)
        return torch.cat([h.reshape(-1) for h in hv])
    return SimpleNamespace(hvp=hvp)


def _hvp_update(opt, group, st, fl, graph_grads):
    """The group's preconditioner updated with HVPs through the closure's gradients (its generator seeded
    from ``group["seed"]`` at the first step); returns the operator."""
    grads = _graph_grads(type(opt).__name__, fl, graph_grads)
    s = st["flat"]
    if s.generator is None:
        s.generator = torch.Generator(device=fl.x.device).manual_seed(group["seed"])
    op, st["flat"] = fl.pre.update(s, fl.x, fl.g, _hvp_oracle(fl, grads))
    return op


class Hutchinson(_FlatOptimizer):
    """Diagonal Newton-like step with the Hutchinson estimate d = |mean_j z_j * H z_j| (``probes``
    Rademacher vectors z_j, seeded by ``seed``; EMA weight ``beta``): p -= lr * g / (d + damping).

    Needs a closure that zeroes the gradients and calls ``loss.backward(create_graph=True)``; the HVPs are
    taken from those gradients by a second backward pass (``probes`` extra backward passes per step)."""
    needs_closure = True
    create_graph = True

    def __init__(self, params, lr: float = 0.1, probes: int = 1, beta: float = 0.0, damping: float = 1e-2,
                 seed: int = 0):
        _check_number("lr", lr, positive=True)
        _check_number("damping", damping, positive=True)
        _check_int("probes", probes)
        if not 0 <= beta < 1:
            raise ValueError(f"Invalid beta: must be in [0, 1), got {beta!r}")
        super().__init__(params, {"lr": lr, "probes": probes, "beta": beta, "damping": damping, "seed": seed})

    def _make_preconditioner(self, group):
        return P.Hutchinson(group["probes"], group["beta"])

    def _update(self, group, st, fl, graph_grads, loss, closure):
        op = _hvp_update(self, group, st, fl, graph_grads)
        d = op.d + group["damping"] if hasattr(op, "d") else None
        fl.x.add_(fl.g / d if d is not None else op.solve(fl.g, group["damping"]), alpha=-group["lr"])


class _ClosureOracle:
    """The oracle interface of ``steps.Regularized``/``steps.Adaptive`` over the flat buffers: a loss at a
    trial point writes it into x and calls the closure (which also fills g)."""

    def __init__(self, opt, fl, closure):
        self.opt, self.fl, self.closure = opt, fl, closure

    def solve(self, op, v, shift=0.0):
        return op.solve(v, shift)

    def loss(self, x):
        self.fl.x.copy_(x)
        with torch.enable_grad():
            f = self.closure()
        self.fl.sync(type(self.opt).__name__)
        return f.detach()

    def loss_grad(self, x):
        f = self.loss(x)
        return f, self.fl.g.clone()


class _RegularizedOptimizer(_FlatOptimizer):
    """x+ = x - lr (D + alpha I)^{-1} g with ``step="regularized"`` (alpha = sqrt(M ||g|| / 2) + sigma,
    ``steps.Regularized``; lr = 1 is the talk's step) or ``step="adaptive"`` (alpha = ||g|| / gamma,
    ``steps.Adaptive``: a trial point is accepted when f - f+ >= ||g+||^2 / (8 alpha), then gamma grows,
    else it shrinks; ``lr`` is the initial gamma and each trial costs one closure call)."""
    STEPS = ("regularized", "adaptive")

    def _step_defaults(self, lr, step, M, sigma):
        _check_number("lr", lr, positive=True)
        if step not in self.STEPS:
            raise ValueError(f"Invalid step: must be one of {self.STEPS}, got {step!r}")
        _check_number("M", M, nonneg=True)
        if step == "regularized":
            if sigma is None:
                raise ValueError("Invalid sigma: step='regularized' needs sigma > 0 (alpha = sqrt(M ||g|| / 2) + "
                                 "sigma; no bound is known for a network), or use step='adaptive'")
            _check_number("sigma", sigma, positive=True)
        elif sigma is not None:
            raise ValueError("Invalid sigma: it has no effect with step='adaptive' (alpha = ||g|| / gamma)")
        return {"lr": lr, "step": step, "M": M, "sigma": sigma}

    def _apply(self, group, st, fl, op, loss, closure):
        if group["step"] == "regularized":
            rule = S.Regularized(M=group["M"], sigma=group["sigma"])
            x_new = rule.step({"M": group["M"], "sigma": group["sigma"]}, fl.x, None, fl.g, op,
                              _ClosureOracle(self, fl, closure))[0]
            if group["lr"] == 1.0:
                fl.x.copy_(x_new)
            else:
                fl.x.lerp_(x_new, group["lr"])
            return
        if closure is None or loss is None:
            raise ValueError(f"closure: step='adaptive' of {type(self).__name__} needs a closure that returns the loss")
        rule = S.Adaptive(gamma0=group["lr"])
        gamma = st.get("gamma", group["lr"])
        x0, g0 = fl.x.clone(), fl.g.clone()
        x_new, _, _, st["gamma"] = rule.step(gamma, x0, loss.detach(), g0, op, _ClosureOracle(self, fl, closure))
        fl.x.copy_(x_new)


class UniformDirection(_RegularizedOptimizer):
    """The uniform-direction estimate of the Hessian (``preconditioners.UniformDirection``): D =
    (n/m) sum_i H u_i u_i^T over ``samples`` = m directions uniform on the sphere (``form`` raw,
    symmetrized, or regularized = symmetrized + ``delta`` I), solved by Sherman-Morrison/Woodbury with the
    shift alpha of the step (no n x n matrix). The m HVPs are m extra backward passes through the closure's
    gradients: the closure must call ``loss.backward(create_graph=True)``."""
    needs_closure = True
    create_graph = True

    def __init__(self, params, lr: float = 1.0, samples: int = 1, form: str = "regularized",
                 delta: float | None = None, step: str = "adaptive", M: float = 0.0, sigma: float | None = None,
                 seed: int = 0):
        _check_int("samples", samples)
        if form not in P.UniformDirection.FORMS:
            raise ValueError(f"Invalid form: must be one of {P.UniformDirection.FORMS}, got {form!r}")
        if delta is not None and form != "regularized":
            raise ValueError(f"Invalid delta: it has no effect with form={form!r} (only 'regularized' adds delta I)")
        delta = (0.01 if form == "regularized" else 0.0) if delta is None else delta
        _check_number("delta", delta, nonneg=True)
        super().__init__(params, {**self._step_defaults(lr, step, M, sigma), "samples": samples, "form": form,
                                  "delta": delta, "seed": seed})

    def _make_preconditioner(self, group):
        return P.UniformDirection(form=group["form"], delta=group["delta"], samples=group["samples"])

    def _update(self, group, st, fl, graph_grads, loss, closure):
        op = _hvp_update(self, group, st, fl, graph_grads)
        del graph_grads
        self._apply(group, st, fl, op, loss, closure)


class FisherSampled(_RegularizedOptimizer):
    """Sampled Fisher D = (1/b) sum_i g_i g_i^T over b samples of the minibatch drawn without replacement
    (``seed``), the per-sample gradients g_i by ``torch.func.vmap(grad(...))`` through ``model`` and
    ``loss_fn`` (``loss_fn(output, target)``, called on one sample at a time); rank b, solved by Woodbury
    with the step's shift. ``b = 1`` is the talk's rank-one case. Call ``step(closure, inputs=X, targets=y)``
    with the minibatch the closure uses (its gradient is the mean over the minibatch, as the Fisher's)."""
    needs_closure = True
    needs_batch = True

    def __init__(self, params, lr: float = 1.0, b: int = 1, step: str = "adaptive", M: float = 0.0,
                 sigma: float | None = None, seed: int = 0, *, model: torch.nn.Module, loss_fn):
        _check_int("b", b)
        if not isinstance(model, torch.nn.Module):
            raise ValueError(f"Invalid model: FisherSampled needs the torch.nn.Module whose parameters it "
                             f"trains, got {type(model).__name__}")
        if not callable(loss_fn):
            raise ValueError("Invalid loss_fn: must be callable as loss_fn(output, target)")
        super().__init__(params, {**self._step_defaults(lr, step, M, sigma), "b": b, "seed": seed})
        self.model, self.loss_fn = model, loss_fn

    def _make_preconditioner(self, group):
        return SimpleNamespace(init=lambda problem, x, gen: SimpleNamespace(generator=None))

    def _per_sample_grads(self, fl, X, y):
        from torch.func import functional_call, grad, vmap
        ids = {id(p): i for i, p in enumerate(fl.params)}
        names = [None] * len(fl.params)
        for name, p in self.model.named_parameters():
            if id(p) in ids:
                names[ids[id(p)]] = name
        if any(n is None for n in names):
            raise ValueError("model: every optimized parameter must be a parameter of `model`")
        frozen = {k: v.detach() for k, v in self.model.named_parameters() if id(v) not in ids}
        frozen.update(dict(self.model.named_buffers()))
        model, loss_fn = self.model, self.loss_fn

        def one(ps, xi, yi):
            out = functional_call(model, {**frozen, **dict(zip(names, ps))}, (xi.unsqueeze(0),))
            return loss_fn(out, yi.unsqueeze(0))
        with torch.enable_grad():
            G = vmap(grad(one), in_dims=(None, 0, 0))(tuple(p.detach() for p in fl.params), X, y)
        return torch.cat([t.reshape(t.shape[0], -1) for t in G], dim=1)     # (b, n)

    def _update(self, group, st, fl, graph_grads, loss, closure, inputs=None, targets=None):
        if inputs is None or targets is None:
            raise ValueError("inputs: FisherSampled.step needs the minibatch, step(closure, inputs=X, targets=y)")
        if len(inputs) != len(targets):
            raise ValueError(f"inputs/targets: {len(inputs)} inputs but {len(targets)} targets")
        b = group["b"]
        if b > len(inputs):
            raise ValueError(f"b: b={b} exceeds the minibatch size {len(inputs)}")
        s = st["flat"]
        if s.generator is None:
            s.generator = torch.Generator().manual_seed(group["seed"])
        idx = torch.randperm(len(inputs), generator=s.generator)[:b].to(inputs.device)
        G = self._per_sample_grads(fl, inputs[idx], targets[idx])
        op = ops.LowRank(G.T, torch.eye(b, dtype=G.dtype, device=G.device) / b)
        self._apply(group, st, fl, op, loss, closure)
