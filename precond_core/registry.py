"""Methods by stable names: ``make_method(name, **params)``, ``list_methods()``, ``method_info(name)``.

A method is a (preconditioner, step rule) pair. The names below are what the suites, the command line
and the reports use; a new method is added by one ``_register`` call and is then covered by the shared
tests in ``tests/test_methods.py`` (parametrized over this registry).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, Callable

from . import preconditioners as P
from . import steps as S
from . import quasi_newton as _qn
from . import newton_cg as _ncg
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
# a curvature step x - lr D^{-1} g with D ~ H is Newton-scaled: its fixed step defaults to lr = 1 (gd's 1/L
# would multiply a Newton-like step by 1/L; on the scalable problem, L ~ 1.6e-3, every such run diverged)
CURV_FIXED = {"lr": 1.0}
_register(MethodInfo("gd", "gradient descent, D = I", {}, "fixed", ("fixed", "armijo", "adaptive")),
          lambda: P.IdentityP())
_register(MethodInfo("newton", "Newton's method, D = exact Hessian (inner_dtype=float32: float32 Hessian, refined solve)",
                     {"inner_dtype": None}, "armijo", CURV_STEPS,
                     dense=True, max_n=4096, needs=("grad", "hessian"), step_defaults=CURV_FIXED), lambda inner_dtype: P.ExactHessian(inner_dtype))
_register(MethodInfo("adam", "Adam: D^2 = diag EMA of g*g, momentum beta1", {"beta2": 0.999}, "power", ("power",),
                     step_defaults={"lr": 0.01, "beta1": 0.9, "eps": 1e-16}), lambda beta2: P.AdamP(beta2))
_register(MethodInfo("adagrad", "diagonal AdaGrad: D = diag(sum g*g)", {}, "power", ("power",)),
          lambda: P.AdaGradDiag())
_register(MethodInfo("adagrad_full", "full-matrix AdaGrad: D = sum g g^T", {}, "power", ("power",),
                     dense=True, max_n=2048), lambda: P.AdaGradFull())
_register(MethodInfo("hutchinson", "Hutchinson diagonal |E[z * Hz]|, m Rademacher probes",
                     {"probes": 1, "beta": 0.0}, "adaptive", CURV_STEPS, needs=("grad", "hvp"), step_defaults=CURV_FIXED),
          lambda probes, beta: P.Hutchinson(probes, beta))
_register(MethodInfo("fisher_empirical", "full-batch empirical Fisher + lam I", {}, "adaptive", CURV_STEPS,
                     dense=True, max_n=4096, needs=("grad", "per_sample_grads"), step_defaults=CURV_FIXED), lambda: P.FisherEmpirical())
_register(MethodInfo("fisher_sampled", "sampled empirical Fisher of rank b (b = 1: rank one) + lam I", {"b": 1},
                     "adaptive", CURV_STEPS, needs=("grad", "per_sample_grads"), step_defaults=CURV_FIXED), lambda b: P.FisherSampled(b))
_register(MethodInfo("fisher_model", "sampled Fisher of rank b with labels drawn from the model + lam I",
                     {"b": 1}, "adaptive", CURV_STEPS, needs=("grad", "model_sample_grads"), step_defaults=CURV_FIXED),
          lambda b: P.FisherSampled(b, model=True))
_register(MethodInfo("uniform_direction", "n H u u^T, u uniform on the sphere: raw, symmetrized, regularized (+delta I)",
                     {"form": "regularized", "delta": 0.01, "lambda_max": None, "samples": 1, "sigma_form": "local"},
                     "adaptive", CURV_STEPS, needs=("grad", "hvp"), step_defaults=CURV_FIXED),
          lambda form, delta, lambda_max, samples, sigma_form: P.UniformDirection(form, delta, lambda_max, samples,
                                                                                  sigma_form))
_register(MethodInfo("newton_bma", "optimal block-mean approximation of the exact Hessian (study)",
                     {"k": None, "blocks": None}, "adaptive", CURV_STEPS, blocks=True, dense=True, max_n=4096,
                     needs=("grad", "hessian"), step_defaults=CURV_FIXED), lambda k, blocks: P.HessianBMA(k, blocks))
_register(MethodInfo("adagrad_bma", "AdaGrad with the block-mean approximation of sum g g^T (exact or Z F Z)",
                     {"k": None, "blocks": None, "variant": "exact", "update_every": None, "damping": 0.1}, "power",
                     ("power",), blocks=True),
          lambda k, blocks, variant, update_every, damping: _lu2018(k, blocks, update_every) if variant == "lu2018" else P.AdaGradBMA(k, blocks, variant, update_every, damping))
_register(MethodInfo("block_diag_hessian", "block-diagonal part of the Hessian", {"k": None, "blocks": None},
                     "adaptive", CURV_STEPS, blocks=True, max_n=20000, needs=("grad", "hessian_blocks"), step_defaults=CURV_FIXED),
          lambda k, blocks: P.BlockDiagHessian(k, blocks))
_register(MethodInfo("lowrank_hessian", "top-r eigenpairs of the Hessian by Lanczos on HVPs",
                     {"rank": 10, "update_every": 1}, "adaptive", ("adaptive", "regularized"), needs=("grad", "hvp")),
          lambda rank, update_every: P.LowRankHessian(rank, update_every))
_register(MethodInfo("kfac", "Kronecker-factored Fisher per linear layer + lam I", {}, "adaptive", CURV_STEPS,
                     max_n=4096, needs=("grad", "kfac_factors"), step_defaults=CURV_FIXED), lambda: P.KFAC())
_register(MethodInfo("lbfgs", "L-BFGS two-loop inverse-Hessian approximation", {"memory": 10}, "armijo",
                     ("armijo", "fixed"), step_defaults=CURV_FIXED), lambda memory: P.LBFGS(memory))
_register(MethodInfo("newton_cg", "Hessian-free Newton-CG: CG on HVPs, Eisenstat-Walker forcing, float32 inner solve option",
                     {"inner_dtype": None, "cg_maxiter": None}, "armijo", CURV_STEPS, needs=("grad", "hvp"), step_defaults=CURV_FIXED),
          lambda inner_dtype, cg_maxiter: _ncg.NewtonCG(inner_dtype, cg_maxiter))
_register(MethodInfo("bfgs", "dense inverse-Hessian BFGS with curvature skip (small n)", {}, "armijo",
                     ("armijo", "fixed"), dense=True, max_n=4096, step_defaults=CURV_FIXED), lambda: _qn.BFGS())


# -- parameter validation (table-driven) --------------------------------------------------------------
class ParamError(ValueError):
    """A method parameter that is refused; ``param`` names it."""

    def __init__(self, message: str, param: str | None = None):
        super().__init__(message)
        self.param = param


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _pos_int(v):
    return None if _is_int(v) and v >= 1 else "a positive integer"


def _pos_int_or_none(v):
    return None if v is None else _pos_int(v)


def _pos_num(v):
    return None if _is_num(v) and v > 0 else "a finite number > 0"


def _pos_num_or_none(v):
    return None if v is None else _pos_num(v)


def _nonneg_num(v):
    return None if _is_num(v) and v >= 0 else "a finite number >= 0"


def _unit_open(v):
    return None if _is_num(v) and 0 < v < 1 else "a number in (0, 1)"


def _unit_halfopen(v):
    return None if _is_num(v) and 0 <= v < 1 else "a number in [0, 1)"


def _blocks(v):
    if v is None:
        return None
    if isinstance(v, (list, tuple)) and v and all(_is_int(b) and b >= 1 for b in v):
        return None
    return "None or a non-empty list of positive integers (block sizes)"


def _choice(*options):
    def check(v):
        return None if v in options else f"one of {list(options)}"
    return check


#: parameter name -> check(value) -> None when allowed, else what is expected. Keyed by name, the same
#: rule for every method that takes the parameter; a method-specific rule is keyed "method.param".
PARAM_RULES: dict[str, Callable[[Any], str | None]] = {
    "k": _pos_int_or_none, "blocks": _blocks, "samples": _pos_int, "update_every": _pos_int, "b": _pos_int,
    "probes": _pos_int, "rank": _pos_int, "memory": _pos_int,
    "delta": _nonneg_num, "damping": _nonneg_num, "lambda_max": _pos_num_or_none, "beta2": _unit_halfopen,
    "form": _choice(*P.UniformDirection.FORMS), "sigma_form": _choice(*P.UniformDirection.SIGMA_FORMS), "variant": _choice(*P.AdaGradBMA.VARIANTS, "lu2018"),
    "hutchinson.beta": _unit_halfopen,
    "inner_dtype": _choice(*_ncg.INNER_DTYPES), "cg_maxiter": _pos_int_or_none,
    "adagrad_bma.update_every": lambda v: None if v == "auto" else _pos_int_or_none(v),
    # step rules
    "lr": _pos_num_or_none, "c": _unit_open, "beta": _unit_open, "M": _pos_num_or_none, "sigma": _pos_num_or_none,
    "gamma0": _pos_num, "grow": lambda v: None if _is_num(v) and v >= 1 else "a number >= 1",
    "shrink": _unit_open, "eps": _pos_num, "beta1": _unit_halfopen,
}

#: (method, parameter) -> condition(resolved params) -> reason the parameter has no effect (or None).
#: Rule: a parameter given explicitly where it has no effect is refused (ValueError naming it and why),
#: so two labels never name the same run; left at its default it is not shown in the label.
NO_EFFECT: dict[tuple[str, str], Callable[[dict], str | None]] = {
    ("uniform_direction", "delta"): lambda p: None if p["form"] == "regularized" else
    f"delta has no effect with form={p['form']!r} (only form='regularized' adds delta I)",
    ("adagrad_bma", "damping"): lambda p: None if p["variant"] == "scaled" else
    f"damping has no effect with variant={p['variant']!r} (it damps the factor F of variant='scaled')",
}


def _check_param(method: str, key: str, value) -> None:
    rule = PARAM_RULES.get(f"{method}.{key}") or PARAM_RULES.get(key)
    if rule is None:
        return
    want = rule(value)
    if want is not None:
        raise ParamError(f"method {method!r}: {key}={value!r} is not allowed; {key} must be {want}", key)


def list_methods() -> list[str]:
    """Registered method names, sorted."""
    return sorted(_REGISTRY)


def method_info(name: str) -> MethodInfo:
    if name not in _REGISTRY:
        raise ValueError(f"unknown method {name!r}; registered methods: {', '.join(list_methods())}")
    return _REGISTRY[name][0]


def make_method(name: str, **params) -> Method:
    """Build a registered method; ``params`` are the method's own and its step rule's (see ``method_info``).

    Every parameter is checked up front (``PARAM_RULES``: type and range, e.g. ``k`` a positive integer
    or None); a parameter given explicitly where it has no effect (``NO_EFFECT``: ``delta`` with
    ``form="raw"``, ``damping`` with ``variant="exact"``) is refused with the reason. Raises
    :class:`ParamError` (a ``ValueError``; ``.param`` names the parameter) naming an unknown method or
    parameter and listing what is allowed.
    """
    info = method_info(name)
    factory = _REGISTRY[name][1]
    params = dict(params)
    step = params.pop("step", None) or info.step
    if step not in info.steps:
        raise ParamError(f"step={step!r} is not allowed for method {name!r}; allowed: {', '.join(info.steps)}",
                         "step")
    allowed = info.all_params(step)
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        import difflib
        hints = [f"did you mean {h[0]!r} for {u!r}?" for u in unknown
                 if (h := difflib.get_close_matches(u, list(allowed) + ["step"], n=1))]
        raise ParamError(f"unknown parameter(s) {', '.join(unknown)} for method {name!r} with step={step!r}; "
                         f"allowed: {', '.join(sorted(allowed)) or '(none)'} and step"
                         + (f" ({'; '.join(hints)})" if hints else ""), unknown[0])
    for key, value in params.items():
        _check_param(name, key, value)
    resolved = {**allowed, **params}
    if info.blocks and resolved.get("k") is not None and resolved.get("blocks") is not None:
        raise ParamError(f"method {name!r}: give k or blocks, not both", "blocks")
    for (mname, key), cond in NO_EFFECT.items():
        if mname == name and key in params:
            why = cond(resolved)
            if why:
                raise ParamError(f"method {name!r}: {why}; remove {key}", key)
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


__all__ = ["MethodInfo", "Method", "list_methods", "method_info", "make_method", "resolve_method", "STEP_PARAMS",
           "PARAM_RULES", "NO_EFFECT", "ParamError"]
