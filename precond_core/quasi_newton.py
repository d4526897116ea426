"""Dense BFGS (docs/METHODS.md section 4): the rank-one talk's quasi-Newton baseline, small n only.

The state is the inverse-Hessian approximation Hinv (n x n, O(n^2) memory and work per step). With
s = x_k - x_{k-1}, y = g_k - g_{k-1} and rho = 1 / (y^T s):

    Hinv+ = (I - rho s y^T) Hinv (I - rho y s^T) + rho s s^T
          = Hinv - rho (s h^T + h s^T) + (rho^2 y^T h + rho) s s^T,   h = Hinv y

(the second form, applied in place, costs one matrix-vector product and two rank-one updates). The pair is
skipped when y^T s <= 1e-10 ||s|| ||y|| (curvature condition; keeps Hinv positive definite). Hinv0 = I,
rescaled to (y^T s / y^T y) I before the first update. The step rule applies ``solve`` (= Hinv g) with a
line search (Armijo by default).
"""
from __future__ import annotations

import torch

from . import operators as ops
from .preconditioners import Preconditioner


class BFGSInverse(ops.Operator):
    """D^{-1} = Hinv (dense, symmetric positive definite): ``solve`` applies it; ``mv`` solves with it."""

    def __init__(self, Hinv: torch.Tensor):
        self.Hinv = Hinv
        self.n, self.dtype, self.device = Hinv.shape[0], Hinv.dtype, Hinv.device

    def solve(self, v, shift=0.0):
        v = self._check_v(v)
        if not (isinstance(shift, (int, float)) and shift == 0):
            raise ValueError("BFGS applies its inverse only without a shift (use step='armijo' or 'fixed')")
        return self.Hinv @ v

    def mv(self, v):
        v = self._check_v(v)
        return torch.linalg.solve(self.Hinv, v)

    def power(self, v, p, shift=0.0):
        if p == -1:
            return self.solve(v, shift)
        if p == 1 and shift == 0:
            return self.mv(v)
        raise NotImplementedError("BFGS provides D^{-1} (p = -1) and D (p = 1) only")

    def to_dense(self):
        return torch.linalg.inv(self.Hinv)


class BFGS(Preconditioner):
    name = "bfgs"
    skip_tol = 1e-10

    def init(self, problem, x, generator):
        return {"Hinv": torch.eye(problem.n, dtype=x.dtype, device=x.device), "x": None, "g": None,
                "updates": 0, "skipped": 0}

    def update(self, st, x, g, oracle):
        if st["x"] is not None:
            s, y = x - st["x"], g - st["g"]
            ys = float(torch.dot(y, s))
            if ys > self.skip_tol * float(torch.linalg.vector_norm(s) * torch.linalg.vector_norm(y)):
                H = st["Hinv"]
                if st["updates"] == 0:
                    H.mul_(ys / float(torch.dot(y, y)))
                rho = 1.0 / ys
                h = H @ y
                H.addr_(s, h, alpha=-rho).addr_(h, s, alpha=-rho)
                H.addr_(s, s, alpha=rho * rho * float(torch.dot(y, h)) + rho)
                st["updates"] += 1
            else:
                st["skipped"] += 1
        st["x"], st["g"] = x.clone(), g.clone()
        return BFGSInverse(st["Hinv"]), st


__all__ = ["BFGS", "BFGSInverse"]
