"""The ``Problem`` interface: an objective over a flat parameter vector ``x``.

Every problem works on any device and in float32 or float64; the tensors it holds fix both, and
``x`` passed to its methods must match them (``check_vector`` raises a ``ValueError`` otherwise).

Oracles (all return tensors on the problem's device, no host copies):

- ``loss(x)`` -> 0-d tensor, ``grad(x)`` -> (n,), ``loss_grad(x)`` -> (f, g) in one pass;
- ``hvp(x, v)`` -> (n,) Hessian-vector product;
- ``per_sample_grads(x, idx=None)`` -> (b, n): gradients of the per-sample loss terms ``l_s`` (the
  regularizer excluded) for the samples ``idx`` (all samples when ``None``);
- ``model_sample_grads(x, idx, generator)`` -> (b, n): the same with labels drawn from the model's own
  predictive distribution (the "model" or "true" Fisher; its expectation over labels is the Gauss-Newton
  matrix, equal to the Hessian of the unregularized loss for logistic and softmax regression);
- ``hessian(x)`` -> dense (n, n), small n only (tests and Newton);
- ``hessian_blocks(x, sizes)`` -> list of dense diagonal blocks of the Hessian for a partition ``sizes``.

Conventions (``docs/METHODS.md``): ``fisher_scale`` is the factor that turns the *sum* of per-sample outer
products, sum_s g_s g_s^T, into the Fisher of the objective as written (1/S for a mean loss, 1 for a
sum loss);
``lam`` is the ridge coefficient whose Hessian ``lam * I`` is added exactly to any Fisher estimate.
Constants the theory needs are attributes, ``None`` where not known: ``L`` (gradient Lipschitz
constant), ``M`` (Hessian Lipschitz constant), ``f_star`` (optimal value).
"""
from __future__ import annotations

from typing import Sequence

import torch


def check_vector(x: torch.Tensor, n: int, dtype: torch.dtype, device: torch.device, name: str = "x") -> None:
    """Raise a ``ValueError`` naming ``name`` unless ``x`` is a 1-D tensor of length n on device/dtype."""
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor of shape ({n},), got {type(x).__name__}")
    if x.shape != (n,):
        raise ValueError(f"{name} must have shape ({n},), got {tuple(x.shape)}")
    if x.dtype != dtype:
        raise ValueError(f"{name} has dtype {x.dtype}, the problem uses {dtype}; convert it with .to({dtype})")
    if torch.device(x.device).type != torch.device(device).type:
        raise ValueError(f"{name} is on device {x.device}, the problem is on {device}; move it with .to('{device}')")


def partition(n: int, k: int) -> tuple[int, ...]:
    """Split n coordinates into k contiguous blocks whose sizes differ by at most one."""
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    if not isinstance(k, int) or not 1 <= k <= n:
        raise ValueError(f"k (number of blocks) must be an integer in [1, n={n}], got {k!r}")
    q, r = divmod(n, k)
    return tuple(q + 1 if i < r else q for i in range(k))


def check_partition(sizes: Sequence[int], n: int, name: str = "blocks") -> tuple[int, ...]:
    """Validate a partition of n coordinates into contiguous blocks; return it as a tuple."""
    try:
        sizes = tuple(int(s) for s in sizes)
    except TypeError:
        raise ValueError(f"{name} must be a sequence of positive block sizes summing to n={n}, got {sizes!r}") from None
    bad = [s for s in sizes if s <= 0]
    if not sizes or bad:
        raise ValueError(f"{name} must contain positive block sizes, got {sizes!r} (non-positive: {bad})")
    if sum(sizes) != n:
        raise ValueError(f"{name} sizes must sum to n={n}, got sum {sum(sizes)} for {sizes!r}")
    return sizes


class Problem:
    """Base class; subclasses set the attributes below and override the oracles they can do better."""

    name: str = "problem"
    n: int
    n_samples: int = 1
    dtype: torch.dtype = torch.float64
    device: torch.device = torch.device("cpu")
    lam: float = 0.0
    fisher_scale: float = 1.0
    L: float | None = None
    M: float | None = None
    f_star: float | None = None
    blocks: tuple[int, ...] | None = None  # natural partition (e.g. one block per layer), if any

    def _check(self, x: torch.Tensor, name: str = "x") -> None:
        """``check_vector`` against this problem's n, dtype and device."""
        check_vector(x, self.n, self.dtype, self.device, name)

    # -- required -----------------------------------------------------------------------------
    def loss(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def grad(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def hvp(self, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    # -- defaults -----------------------------------------------------------------------------
    def loss_grad(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.loss(x), self.grad(x)

    def x0(self) -> torch.Tensor:
        """Default starting point (zeros unless the problem says otherwise)."""
        return torch.zeros(self.n, dtype=self.dtype, device=self.device)

    def per_sample_grads(self, x: torch.Tensor, idx: torch.Tensor | None = None) -> torch.Tensor:
        raise NotImplementedError(f"{self.name} has no per-sample gradients (needed by Fisher methods)")

    def model_sample_grads(self, x: torch.Tensor, idx: torch.Tensor | None, generator: torch.Generator) -> torch.Tensor:
        raise NotImplementedError(f"{self.name} has no model-label gradients (needed by fisher_model)")

    def hessian(self, x: torch.Tensor) -> torch.Tensor:
        """Dense Hessian from n Hessian-vector products (small n only)."""
        eye = torch.eye(self.n, dtype=self.dtype, device=self.device)
        H = torch.stack([self.hvp(x, eye[i]) for i in range(self.n)], dim=1)
        return 0.5 * (H + H.T)

    def hessian_blocks(self, x: torch.Tensor, sizes: Sequence[int]) -> list[torch.Tensor]:
        """Diagonal blocks of the Hessian, from s_i HVPs per block (override analytically when cheap)."""
        sizes = check_partition(sizes, self.n)
        out, start = [], 0
        for s in sizes:
            cols = []
            for j in range(start, start + s):
                e = torch.zeros(self.n, dtype=self.dtype, device=self.device)
                e[j] = 1.0
                cols.append(self.hvp(x, e)[start:start + s])
            B = torch.stack(cols, dim=1)
            out.append(0.5 * (B + B.T))
            start += s
        return out

    def kfac_factors(self, x: torch.Tensor, generator: torch.Generator) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Kronecker factors (A_l, G_l) per linear layer with Fisher block ~= A_l kron G_l (x laid out
        so that layer l's block is vec of its weight in the matching order); see kfac in the registry."""
        raise NotImplementedError(f"{self.name} has no linear-layer structure (needed by kfac)")

    def constants(self) -> dict:
        """The problem's own constants ``L``, ``M``, ``f_star`` (``None`` where unknown). Problems that
        estimate them (a power iteration on the data for L, a pass over the rows for M) do so on first
        use and keep the value with the problem object, so calling this once before a timed run takes
        that cost off every clock that follows."""
        out = {}
        for name in ("L", "M", "f_star"):
            try:
                v = getattr(self, name)
            except (NotImplementedError, ValueError, ArithmeticError):
                v = None
            out[name] = None if v is None else float(v)
        return out

    def clear_cache(self) -> None:
        """Forget forward quantities cached for the last x (so a timed gradient pays its full cost)."""
        cache = getattr(self, "_cache", None)
        if cache is not None:
            cache.clear()

    def describe(self) -> dict:
        """Plain-data description for result tables."""
        return {"problem": self.name, "n": self.n, "n_samples": self.n_samples,
                "dtype": str(self.dtype).replace("torch.", ""), "device": torch.device(self.device).type}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, n={self.n}, dtype={self.dtype}, device={self.device})"


def norm(v: torch.Tensor) -> torch.Tensor:
    return torch.linalg.vector_norm(v)


__all__ = ["Problem", "check_vector", "partition", "check_partition", "norm"]
