"""A counting wrapper around a ``Problem``: every oracle call the methods make goes through it.

Counts are plain Python integers (no device work): ``grads`` (full gradients, a ``loss_grad`` counts
as one), ``losses`` (loss-only evaluations, e.g. in a line search), ``hvps`` (Hessian-vector products;
a dense Hessian or a set of Hessian blocks counts as the n products it replaces), ``sample_grads``
(per-sample gradient rows, for Fisher methods) and ``solves`` (applications of an inverse or power of a
curvature operator).
"""
from __future__ import annotations

import torch

from .problems.base import Problem


class Oracle:
    __slots__ = ("problem", "grads", "losses", "hvps", "sample_grads", "solves")

    def __init__(self, problem: Problem):
        self.problem = problem
        self.grads = self.losses = self.hvps = self.sample_grads = self.solves = 0

    def counts(self) -> dict:
        return {"grads": self.grads, "losses": self.losses, "hvps": self.hvps,
                "sample_grads": self.sample_grads, "solves": self.solves}

    # -- oracle calls --------------------------------------------------------------------------
    def loss(self, x: torch.Tensor) -> torch.Tensor:
        self.losses += 1
        return self.problem.loss(x)

    def loss_grad(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.grads += 1
        return self.problem.loss_grad(x)

    def hvp(self, x: torch.Tensor, v: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """H(x) v; with ``out`` (a vector like ``v``, not overlapping it) the product is written there, through
        the problem's ``hvp_into(x, v, out)`` when it has one (no n-sized temporary), else copied."""
        self.hvps += 1
        if out is None:
            return self.problem.hvp(x, v)
        into = getattr(self.problem, "hvp_into", None)
        if into is not None:
            return into(x, v, out)
        return out.copy_(self.problem.hvp(x, v))

    def hessian(self, x: torch.Tensor) -> torch.Tensor:
        self.hvps += self.problem.n
        return self.problem.hessian(x)

    def hessian_blocks(self, x: torch.Tensor, sizes) -> list[torch.Tensor]:
        self.hvps += self.problem.n
        return self.problem.hessian_blocks(x, sizes)

    def per_sample_grads(self, x: torch.Tensor, idx: torch.Tensor | None = None) -> torch.Tensor:
        G = self.problem.per_sample_grads(x, idx)
        self.sample_grads += G.shape[0]
        return G

    def model_sample_grads(self, x: torch.Tensor, idx, generator: torch.Generator) -> torch.Tensor:
        G = self.problem.model_sample_grads(x, idx, generator)
        self.sample_grads += G.shape[0]
        return G

    def solve(self, op, v: torch.Tensor, shift=0.0) -> torch.Tensor:
        self.solves += 1
        return op.solve(v, shift)

    def power(self, op, v: torch.Tensor, p: float, shift=0.0) -> torch.Tensor:
        self.solves += 1
        return op.power(v, p, shift)
