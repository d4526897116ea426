"""Methods by stable names: ``make_method(name, **params)``, ``list_methods()``, ``method_info(name)``.

A method is a (preconditioner, step rule) pair. The names below are what the suites, the command line
and the reports use; a new method is added by one ``_register`` call and is then covered by the shared
tests in ``tests/test_methods.py`` (parametrized over this registry).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Callable

from . import preconditioners as P
from . import steps as S
from .bma_lu2018 import AdaGradBMALu2018 as _lu2018

# parameters each step rule takes (besides ``step``); ``None`` means "derive from the problem"
STEP_PARAMS: dict[str, dict[str, Any]] = {
    "fixed": {"lr": None},
    "armijo": {"lr": 1.0, "c": 1e-4, "beta": 0.5},
    "regularized": {"M": None, "sigma": None},
    "adaptive": {"gamma0": 1.0, "grow": 2.0, "shrink": 0.5},
    "power": {"lr": 0.1, "eps": 1e-10, "beta1": 0.0},
}


@dataclass(frozen=True)
class MethodInfo:
    name: str
    summary: str
    params: dict                    # the method's own parameters with defaults
    step: str                       # default step rule
    steps: tuple                    # allowed step rules
    blocks: bool = False            # takes a block count k / block sizes
    dense: bool = False             # n x n state: only for small n
    max_n: int | None = None
    needs: tuple = ("grad",)        # problem capabilities used
    step_defaults: dict = field(default_factory=dict)  # overrides of STEP_PARAMS defaults

    def all_params(self, step: str | None = None) -> dict:
        step = step or self.step
        out = dict(self.params)
        out.update({**STEP_PARAMS[step], **{k: v for k, v in self.step_defaults.items() if k in STEP_PARAMS[step]}})
        return out


@dataclass(frozen=True)
class Method:
    """A ready-to-run method: ``preconditioner`` + ``step_rule`` with its resolved ``params``."""
    name: str
    params: dict
    preconditioner: P.Preconditioner
    step_rule: S.StepRule
    info: MethodInfo

    @property
    def label(self) -> str:
        """The name plus every parameter that differs from its default, e.g. ``adagrad_bma(k=8)``."""
        defaults = {"step": self.info.step, **self.info.all_params(self.params.get("step"))}
        shown = {k: v for k, v in self.params.items() if k not in defaults or v != defaults[k]}
        if not shown:
            return self.name
        return f"{self.name}(" + ",".join(f"{k}={shown[k]}" for k in sorted(shown)) + ")"

    def params_json(self) -> str:
        return json.dumps(self.params, sort_keys=True, default=str)


_REGISTRY: dict[str, tuple[MethodInfo, Callable[..., P.Preconditioner]]] = {}


def _register(info: MethodInfo, factory: Callable[..., P.Preconditioner]) -> None:
    _REGISTRY[info.name] = (info, factory)


CURV_STEPS = ("adaptive", "regularized", "armijo", "fixed")
_register(MethodInfo("gd", "gradient descent, D = I", {}, "fixed", ("fixed", "armijo", "adaptive")),
          lambda: P.IdentityP())
_register(MethodInfo("newton", "Newton's method, D = exact Hessian", {}, "armijo", CURV_STEPS,
                     dense=True, max_n=4096, needs=("grad", "hessian")), lambda: P.ExactHessian())
_register(MethodInfo("adam", "Adam: D^2 = diag EMA of g*g, momentum beta1", {"beta2": 0.999}, "power", ("power",),
                     step_defaults={"lr": 0.01, "beta1": 0.9, "eps": 1e-16}), lambda beta2: P.AdamP(beta2))
_register(MethodInfo("adagrad", "diagonal AdaGrad: D = diag(sum g*g)", {}, "power", ("power",)),
          lambda: P.AdaGradDiag())
_register(MethodInfo("adagrad_full", "full-matrix AdaGrad: D = sum g g^T", {}, "power", ("power",),
                     dense=True, max_n=2048), lambda: P.AdaGradFull())
_register(MethodInfo("hutchinson", "Hutchinson diagonal |E[z * Hz]|, m Rademacher probes",
                     {"probes": 1, "beta": 0.0}, "adaptive", CURV_STEPS, needs=("grad", "hvp")),
          lambda probes, beta: P.Hutchinson(probes, beta))
_register(MethodInfo("fisher_empirical", "full-batch empirical Fisher + lam I", {}, "adaptive", CURV_STEPS,
                     dense=True, max_n=4096, needs=("grad", "per_sample_grads")), lambda: P.FisherEmpirical())
_register(MethodInfo("fisher_sampled", "sampled empirical Fisher of rank b (b = 1: rank one) + lam I", {"b": 1},
                     "adaptive", CURV_STEPS, needs=("grad", "per_sample_grads")), lambda b: P.FisherSampled(b))
_register(MethodInfo("fisher_model", "sampled Fisher of rank b with labels drawn from the model + lam I",
                     {"b": 1}, "adaptive", CURV_STEPS, needs=("grad", "model_sample_grads")),
          lambda b: P.FisherSampled(b, model=True))
_register(MethodInfo("uniform_direction", "n H u u^T, u uniform on the sphere: raw, symmetrized, regularized (+delta I)",
                     {"form": "regularized", "delta": 0.01, "lambda_max": None}, "adaptive", CURV_STEPS,
                     needs=("grad", "hvp")),
          lambda form, delta, lambda_max: P.UniformDirection(form, delta, lambda_max))
_register(MethodInfo("newton_bma", "optimal block-mean approximation of the exact Hessian (study)",
                     {"k": None, "blocks": None}, "adaptive", CURV_STEPS, blocks=True, dense=True, max_n=4096,
                     needs=("grad", "hessian")), lambda k, blocks: P.HessianBMA(k, blocks))
_register(MethodInfo("adagrad_bma", "AdaGrad with the block-mean approximation of sum g g^T (exact or Z F Z)",
                     {"k": None, "blocks": None, "variant": "exact", "update_every": 1, "damping": 0.1}, "power",
                     ("power",), blocks=True),
          lambda k, blocks, variant, update_every, damping: _lu2018(k, blocks, update_every) if variant == "lu2018" else P.AdaGradBMA(k, blocks, variant, update_every, damping))
_register(MethodInfo("block_diag_hessian", "block-diagonal part of the Hessian", {"k": None, "blocks": None},
                     "adaptive", CURV_STEPS, blocks=True, max_n=20000, needs=("grad", "hessian_blocks")),
          lambda k, blocks: P.BlockDiagHessian(k, blocks))
_register(MethodInfo("lowrank_hessian", "top-r eigenpairs of the Hessian by Lanczos on HVPs",
                     {"rank": 10, "update_every": 1}, "adaptive", ("adaptive", "regularized"), needs=("grad", "hvp")),
          lambda rank, update_every: P.LowRankHessian(rank, update_every))
_register(MethodInfo("kfac", "Kronecker-factored Fisher per linear layer + lam I", {}, "adaptive", CURV_STEPS,
                     max_n=4096, needs=("grad", "kfac_factors")), lambda: P.KFAC())
_register(MethodInfo("lbfgs", "L-BFGS two-loop inverse-Hessian approximation", {"memory": 10}, "armijo",
                     ("armijo", "fixed")), lambda memory: P.LBFGS(memory))


def list_methods() -> list[str]:
    """Registered method names, sorted."""
    return sorted(_REGISTRY)


def method_info(name: str) -> MethodInfo:
    if name not in _REGISTRY:
        raise ValueError(f"unknown method {name!r}; registered methods: {', '.join(list_methods())}")
    return _REGISTRY[name][0]


def make_method(name: str, **params) -> Method:
    """Build a registered method; ``params`` are the method's own and its step rule's (see ``method_info``).

    Raises ``ValueError`` naming an unknown method or parameter and listing what is allowed.
    """
    info = method_info(name)
    factory = _REGISTRY[name][1]
    step = params.pop("step", None) or info.step
    if step not in info.steps:
        raise ValueError(f"step={step!r} is not allowed for method {name!r}; allowed: {', '.join(info.steps)}")
    allowed = info.all_params(step)
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise ValueError(f"unknown parameter(s) {', '.join(unknown)} for method {name!r} with step={step!r}; "
                         f"allowed: {', '.join(sorted(allowed)) or '(none)'} and step")
    resolved = {**allowed, **params}
    pre = factory(**{k: resolved[k] for k in info.params})
    step_kwargs = {k: resolved[k] for k in STEP_PARAMS[step]}
    if step == "power" and name != "adam":
        step_kwargs.setdefault("beta1", 0.0)
    rule = S.STEP_RULES[step](**step_kwargs)
    if isinstance(rule, S.Regularized):
        rule.preconditioner = pre
    return Method(name, {"step": step, **resolved}, pre, rule, info)


def resolve_method(method) -> Method:
    if isinstance(method, Method):
        return method
    if isinstance(method, str):
        return make_method(method)
    raise ValueError(f"method must be a registered name or a Method from make_method, got {type(method).__name__}")


__all__ = ["MethodInfo", "Method", "list_methods", "method_info", "make_method", "resolve_method", "STEP_PARAMS"]
