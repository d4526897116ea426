"""``torch.optim.Optimizer`` versions of the flat-vector preconditioners (``precond_core.preconditioners``).

Classes: ``AdaGrad`` (diagonal, the update of ``torch.optim.Adagrad`` with defaults), ``AdaGradFull``
(full-matrix, small models only), ``AdaGradBMA`` (block-mean approximation, ``variant`` exact / scaled /
lu2018), ``BlockDiagAdaGrad`` (full-matrix AdaGrad within each parameter tensor), ``Hutchinson`` (Rademacher diagonal of the Hessian through the closure).

How the mathematics is shared: at each step the gradients of a parameter group are gathered into one
flat vector g (parameters in group order, each tensor flattened), the group's flat preconditioner
(``preconditioners.AdaGradFull``, ``AdaGradBMA``, ``bma_lu2018.AdaGradBMALu2018``, ``Hutchinson``) is
updated with it unchanged, and the direction ``op.power(g, -1/2, eps)`` (``operators``) is scattered back
onto the parameters with ``add_``. The blocks of the BMA variants are the parameter tensors (one per
tensor, in order), or ``k`` equal blocks, or explicit ``blocks`` sizes. Gather/scatter costs two O(n)
copies per step; it was chosen over re-pointing the parameters into one flat buffer because it leaves
the model's storage untouched (``model.to``, weight tying, ``state_dict`` of the model keep working).

Conventions (those of ``torch.optim``): ``step(closure=None)`` returns the closure's loss; ``closure``
re-evaluates the model, zeroes and fills the gradients (the ``torch.optim.LBFGS`` convention). ``Hutchinson``
needs a closure that calls ``loss.backward(create_graph=True)`` so that Hessian-vector products can be
taken from the gradients. Parameters whose ``.grad`` is ``None`` at the first step are left out of the
group's flat vector for good (a later missing gradient of an included parameter counts as zero). Sparse
gradients raise ``ValueError``. The state lives in ``self.state`` under the group's first parameter
and round-trips through ``state_dict``/``load_state_dict`` (deep copies); moving the model to another
device or dtype after steps without moving the optimizer state raises a ``ValueError`` at the next step.
"""
from __future__ import annotations

import math
from types import SimpleNamespace

import torch

from . import operators as ops
from . import preconditioners as P
from .bma_lu2018 import AdaGradBMALu2018

__all__ = ["AdaGrad", "AdaGradFull", "AdaGradBMA", "BlockDiagAdaGrad", "Hutchinson"]


def _check_number(name, value, *, positive=False, nonneg=False):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"Invalid {name}: must be a finite number, got {value!r}")
    if positive and not value > 0:
        raise ValueError(f"Invalid {name}: must be > 0, got {value!r}")
    if nonneg and value < 0:
        raise ValueError(f"Invalid {name}: must be >= 0, got {value!r}")


class _FlatOptimizer(torch.optim.Optimizer):
    """Base: per group, gather the gradients into one flat vector and run a flat preconditioner."""
    needs_closure = False

    def _make_preconditioner(self, group):
        raise NotImplementedError

    def _direction(self, group, flat_state, x, g, params, closure_loss):
        raise NotImplementedError

    def _active(self, group):
        st = self.state[group["params"][0]]
        if "active" not in st:
            idx = [i for i, p in enumerate(group["params"]) if p.requires_grad and p.grad is not None]
            st["active"] = idx
        return [group["params"][i] for i in st["active"]]

    def _gather(self, params):
        dev, dt = params[0].device, params[0].dtype
        parts = []
        for i, p in enumerate(params):
            if p.device != dev or p.dtype != dt:
                raise ValueError(f"params: all parameters of a group must share one device and dtype; parameter "
                                 f"{i} is {p.dtype} on {p.device}, parameter 0 is {dt} on {dev}")
            if p.grad is None:
                parts.append(torch.zeros(p.numel(), dtype=dt, device=dev))
                continue
            if p.grad.is_sparse:
                raise ValueError(f"grad: {type(self).__name__} does not support sparse gradients (parameter {i})")
            parts.append(p.grad.reshape(-1))
        return torch.cat(parts) if len(parts) > 1 else parts[0].clone()

    @staticmethod
    def _check_state_device(flat_state, g):
        for v in vars(flat_state).values() if hasattr(flat_state, "__dict__") else ():
            if isinstance(v, torch.Tensor) and v.is_floating_point() and (v.device != g.device or v.dtype != g.dtype):
                raise ValueError(f"optimizer state is {v.dtype} on {v.device} but the parameters are {g.dtype} on "
                                 f"{g.device}; create the optimizer after moving the model (or load a state_dict)")

    @torch.no_grad()
    def step(self, closure=None):
        if self.needs_closure and closure is None:
            raise ValueError(f"closure: {type(self).__name__} needs a closure that calls "
                             f"loss.backward(create_graph=True)")
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = self._active(group)
            if not params:
                continue
            g = self._gather(params)
            st = self.state[group["params"][0]]
            # the flat preconditioners read x for its values only in init; later updates get the gradient
            # as a stand-in of the right shape, dtype and device (no n-sized copy of the parameters per step)
            x = torch.cat([p.detach().reshape(-1) for p in params]) if "flat" not in st else g
            if "flat" not in st:
                pre = self._make_preconditioner(group)
                prob = SimpleNamespace(n=g.numel(), blocks=tuple(p.numel() for p in params), name="module")
                st["flat"] = pre.init(prob, x, None)
                st["step"] = 0
            self._check_state_device(st["flat"], g)
            d = self._direction(group, st, x, g, params)
            st["step"] += 1
            o = 0
            for p in params:
                m = p.numel()
                p.add_(d[o:o + m].view_as(p), alpha=-group["lr"])
                o += m
        return loss


class AdaGrad(_FlatOptimizer):
    """Diagonal AdaGrad, the update of ``torch.optim.Adagrad`` with lr_decay = weight_decay = 0 and
    initial_accumulator_value = 0: acc += g * g; p -= lr * g / (sqrt(acc) + eps) (eps outside the root,
    as torch does; ``preconditioners.AdaGradDiag`` with the ``power`` rule puts it inside)."""

    def __init__(self, params, lr: float = 1e-2, eps: float = 1e-10):
        _check_number("lr", lr, positive=True)
        _check_number("eps", eps, nonneg=True)
        super().__init__(params, {"lr": lr, "eps": eps})

    def _make_preconditioner(self, group):
        return P.AdaGradDiag()

    def _direction(self, group, st, x, g, params):
        s = st["flat"]
        s.acc.addcmul_(g, g)
        d = torch.sqrt(s.acc).add_(group["eps"])
        return torch.div(g, d, out=d)


class _PowerOptimizer(_FlatOptimizer):
    """Direction op.power(g, -1/2, eps) of the group's flat preconditioner."""

    def _direction(self, group, st, x, g, params):
        op, st["flat"] = self._pre[id(group)].update(st["flat"], x, g, None)
        return op.power(g, -0.5, group["eps"])

    def _make_preconditioner(self, group):
        pre = self._build(group)
        self._pre[id(group)] = pre
        return pre

    def _ensure(self):
        for group in self.param_groups:
            if id(group) not in self._pre:
                self._pre[id(group)] = self._build(group)

    def step(self, closure=None):
        self._ensure()
        return super().step(closure)


class AdaGradFull(_PowerOptimizer):
    """Full-matrix AdaGrad: H += g g^T, p -= lr (H + eps I)^{-1/2} g (n x n state; ``max_n`` guards it)."""

    def __init__(self, params, lr: float = 1e-2, eps: float = 1e-10, max_n: int = 4096):
        _check_number("lr", lr, positive=True)
        _check_number("eps", eps, nonneg=True)
        self._pre = {}
        super().__init__(params, {"lr": lr, "eps": eps, "max_n": max_n})

    def _build(self, group):
        n = sum(p.numel() for p in group["params"])
        if n > group["max_n"]:
            raise ValueError(f"params: full-matrix AdaGrad on {n} parameters exceeds max_n={group['max_n']} "
                             f"(an n x n state); use AdaGradBMA or raise max_n")
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
        if isinstance(max_block, bool) or not isinstance(max_block, int) or max_block < 1:
            raise ValueError(f"Invalid max_block: must be a positive integer, got {max_block!r}")
        self._pre = {}
        super().__init__(params, {"lr": lr, "eps": eps, "max_block": max_block})

    def _build(self, group):
        return _BlockFullAdaGrad(group["max_block"])


class AdaGradBMA(_PowerOptimizer):
    """AdaGrad with the block-mean approximation of sum g g^T (``preconditioners.AdaGradBMA`` for
    ``variant`` exact / scaled, ``bma_lu2018`` for the authors' published update). Blocks: one per
    parameter tensor (default), ``k`` equal blocks, or explicit ``blocks`` sizes summing to the group's
    parameter count. Extra keyword arguments go to the flat preconditioner (e.g. ``damping``, ``delta``)."""

    VARIANTS = ("exact", "scaled", "lu2018")

    def __init__(self, params, lr: float = 1e-2, eps: float = 1e-10, variant: str = "exact", k=None,
                 blocks=None, update_every: int = 1, **kwargs):
        _check_number("lr", lr, positive=True)
        _check_number("eps", eps, nonneg=True)
        if variant not in self.VARIANTS:
            raise ValueError(f"variant must be one of {self.VARIANTS}, got {variant!r}")
        if not isinstance(update_every, int) or isinstance(update_every, bool) or update_every < 1:
            raise ValueError(f"update_every must be a positive integer, got {update_every!r}")
        self._pre = {}
        super().__init__(params, {"lr": lr, "eps": eps, "variant": variant, "k": k, "blocks": blocks,
                                  "update_every": update_every, "extra": dict(kwargs)})

    def _build(self, group):
        if group["variant"] == "lu2018":
            if group["extra"]:
                raise ValueError(f"unknown argument(s) {sorted(group['extra'])} for variant='lu2018'")
            return AdaGradBMALu2018(group["k"], group["blocks"], group["update_every"])
        return P.AdaGradBMA(group["k"], group["blocks"], group["variant"], group["update_every"], **group["extra"])

    def _active(self, group):
        params = super()._active(group)
        if group["blocks"] is not None:
            n = sum(p.numel() for p in params)
            try:
                total = sum(int(b) for b in group["blocks"])
            except TypeError:
                raise ValueError(f"blocks must be a sequence of block sizes, got {group['blocks']!r}") from None
            if total != n:
                raise ValueError(f"blocks sizes sum to {total} but the parameter group has {n} parameters "
                                 f"(with gradients)")
        return params


class Hutchinson(_FlatOptimizer):
    """Diagonal Newton-like step with the Hutchinson estimate d = |mean_j z_j * H z_j| (``probes``
    Rademacher vectors z_j, seeded by ``seed``; EMA weight ``beta``): p -= lr * g / (d + damping).

    Needs a closure that zeroes the gradients and calls ``loss.backward(create_graph=True)``; the HVPs are
    taken from those gradients by a second backward pass (``probes`` extra backward passes per step)."""
    needs_closure = True

    def __init__(self, params, lr: float = 0.1, probes: int = 1, beta: float = 0.0, damping: float = 1e-2,
                 seed: int = 0):
        _check_number("lr", lr, positive=True)
        _check_number("damping", damping, positive=True)
        if not isinstance(probes, int) or isinstance(probes, bool) or probes < 1:
            raise ValueError(f"probes must be a positive integer, got {probes!r}")
        if not 0 <= beta < 1:
            raise ValueError(f"beta must be in [0, 1), got {beta!r}")
        super().__init__(params, {"lr": lr, "probes": probes, "beta": beta, "damping": damping, "seed": seed})

    def _make_preconditioner(self, group):
        return P.Hutchinson(group["probes"], group["beta"])

    def _direction(self, group, st, x, g, params):
        s = st["flat"]
        if s.generator is None:
            s.generator = torch.Generator(device=x.device).manual_seed(group["seed"])
        grads = [p.grad for p in params]
        if any(gr is None or gr.grad_fn is None for gr in grads):
            raise ValueError("closure: Hutchinson needs gradients with a graph; call loss.backward(create_graph=True)")
        hess = SimpleNamespace(hvp=lambda _x, z: self._hvp(grads, params, z))
        op, st["flat"] = P.Hutchinson(group["probes"], group["beta"]).update(s, x, g.detach(), hess)
        out = g.detach() / (op.d + group["damping"]) if hasattr(op, "d") else op.solve(g.detach(), group["damping"])
        for p in params:   # drop the graph held by the gradients
            p.grad = p.grad.detach()
        return out

    @staticmethod
    def _hvp(grads, params, z):
        zs, o = [], 0
        for p in params:
            zs.append(z[o:o + p.numel()].view_as(p))
            o += p.numel()
        with torch.enable_grad():
            hv = torch.autograd.grad(grads, params, zs, retain_graph=True)
        return torch.cat([h.reshape(-1) for h in hv])
