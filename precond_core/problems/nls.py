"""Nonlinear least squares with a scalar link: f(x) = 1/2 sum_s (phi(a_s^T x) - b_s)^2 + lam/2 ||x||^2."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

from .base import Problem
from ._common import Design, XCache, check_idx, check_lam, normal, resolve_dtype_device


@dataclass(frozen=True)
class Link:
    """phi with its first three derivatives and their suprema over the real line (None: unbounded)."""
    phi: Callable
    d1: Callable
    d2: Callable
    sup_phi: float | None   # sup |phi|
    sup_d1: float | None    # sup |phi'|
    sup_d2: float           # sup |phi''| = L_phi, the smoothness constant of phi
    sup_d3: float           # sup |phi'''|


def _sig_d1(t):
    s = torch.sigmoid(t)
    return s * (1 - s)


def _sig_d2(t):
    s = torch.sigmoid(t)
    return s * (1 - s) * (1 - 2 * s)


def _tanh_d1(t):
    return 1 - torch.tanh(t) ** 2


def _tanh_d2(t):
    th = torch.tanh(t)
    return -2 * th * (1 - th ** 2)


LINKS = {
    # sigmoid: phi'' = s(1-s)(1-2s), max 1/(6 sqrt 3); |phi'''| = |s(1-s)(1-6s+6s^2)| <= 1/8
    "sigmoid": Link(torch.sigmoid, _sig_d1, _sig_d2, 1.0, 0.25, 1.0 / (6 * math.sqrt(3)), 0.125),
    # tanh: |phi''| = 2|th|(1-th^2) <= 4/(3 sqrt 3); |phi'''| = 2(1-th^2)|1-3th^2| <= 2
    "tanh": Link(torch.tanh, _tanh_d1, _tanh_d2, 1.0, 1.0, 4.0 / (3 * math.sqrt(3)), 2.0),
    # identity: linear least squares
    "identity": Link(lambda t: t, torch.ones_like, torch.zeros_like, None, 1.0, 0.0, 0.0),
}


class NonlinearLeastSquares(Problem):
    """f(x) = 1/2 sum_s (phi(z_s) - b_s)^2 + lam/2 ||x||^2, z = A x (SUM convention, fisher_scale = 1).

    With r = phi(z) - b:  grad = A^T (r phi'(z)) + lam x;
    hvp = A^T ((phi'(z)^2 + r phi''(z)) * (A v)) + lam v  (Gauss-Newton part plus residual part).
    Per-sample gradient of l_s = r_s^2 / 2: r_s phi'(z_s) a_s (empirical Fisher sum G^T G). Model labels
    b~_s = phi(z_s) + N(0, 1) give rows -e_s phi'(z_s) a_s whose sum G^T G has expectation the Gauss-Newton
    matrix J^T J = A^T diag(phi'^2) A.

    Constants: L = ||A||_2^2 (sup phi'^2 + L_phi (sup|phi| + max|b|)) + lam (a bound on ||H|| everywhere;
    ||A||_2^2 + lam for the identity link); M = sum_s ||a_s||^3 (3 sup|phi'| L_phi + (sup|phi| + max|b|)
    sup|phi'''|) (0 for the identity link). Memory: A, b, O(S) cache.
    """

    def __init__(self, A, b, phi: str = "sigmoid", lam: float = 0.0, *, dtype=None, device=None, name="nls"):
        if not isinstance(A, torch.Tensor):
            raise ValueError(f"A must be a 2-D torch tensor (dense or sparse CSR), got {type(A).__name__}")
        if phi not in LINKS:
            raise ValueError(f"phi must be one of {sorted(LINKS)}, got {phi!r}")
        dtype, device = resolve_dtype_device(A, dtype, device)
        self.design = Design(A, dtype, device, "A")
        self.S, self.n = self.design.S, self.design.n
        self.n_samples = self.S
        if not isinstance(b, torch.Tensor) or b.dim() != 1 or b.shape[0] != self.S:
            shape = tuple(b.shape) if isinstance(b, torch.Tensor) else type(b).__name__
            raise ValueError(f"b must be a 1-D tensor of shape ({self.S},) to match A's rows, got {shape}")
        if not bool(torch.isfinite(b).all()):
            raise ValueError("b has non-finite entries")
        self.b = b.to(dtype=dtype, device=device)
        self.phi_name, self.link = phi, LINKS[phi]
        self.lam = check_lam(lam)
        self.dtype, self.device, self.name = dtype, device, name
        self.fisher_scale = 1.0
        self.f_star = None
        self._row_sq = self.design.row_sq_norms()
        self.L_phi = self.link.sup_d2
        # smoothness of x -> phi(a_s^T x), uniformly over s: L_phi * max_s ||a_s||^2
        self.L_x = self.L_phi * float(self._row_sq.max())
        self._L = None
        bmax = float(self.b.abs().max())
        lk = self.link
        if lk.sup_phi is None:
            self.M = 0.0
        else:
            self.M = float((self._row_sq ** 1.5).sum()) * (3 * lk.sup_d1 * lk.sup_d2 + (lk.sup_phi + bmax) * lk.sup_d3)
        self._bmax = bmax
        self._cache = XCache()

    @property
    def L(self) -> float:
        if self._L is None:
            lk = self.link
            nrm = self.design.spectral_norm_sq()
            if lk.sup_phi is None:
                self._L = nrm + self.lam
            else:
                self._L = nrm * (lk.sup_d1 ** 2 + lk.sup_d2 * (lk.sup_phi + self._bmax)) + self.lam
        return self._L

    def describe(self) -> dict:
        d = super().describe()
        d.update(lam=self.lam, phi=self.phi_name)
        return d

    def _forward(self, x):
        c = self._cache.get(x)
        if c is not None:
            return c
        z = self.design.mv(x)
        r = self.link.phi(z) - self.b
        return self._cache.put(x, {"z": z, "r": r, "d1": self.link.d1(z)})

    def loss(self, x):
        self._check(x)
        r = self._forward(x)["r"]
        return 0.5 * torch.dot(r, r) + 0.5 * self.lam * torch.dot(x, x)

    def grad(self, x):
        self._check(x)
        c = self._forward(x)
        return self.design.rmv(c["r"] * c["d1"]).add_(x, alpha=self.lam)

    def loss_grad(self, x):
        self._check(x)
        c = self._forward(x)
        r = c["r"]
        return (0.5 * torch.dot(r, r) + 0.5 * self.lam * torch.dot(x, x),
                self.design.rmv(r * c["d1"]).add_(x, alpha=self.lam))

    def _curv(self, c):
        if "w" not in c:
            c["w"] = c["d1"] ** 2 + c["r"] * self.link.d2(c["z"])
        return c["w"]

    def hvp(self, x, v):
        self._check(x)
        self._check(v, "v")
        w = self._curv(self._forward(x))
        return self.design.rmv(w * self.design.mv(v)).add_(v, alpha=self.lam)

    def hessian(self, x):
        """A^T diag(phi'^2 + r phi'') A + lam I (dense)."""
        self._check(x)
        H = self.design.gram(self._curv(self._forward(x)), 0, self.n)
        H = 0.5 * (H + H.T)
        H.diagonal().add_(self.lam)
        return H

    def gauss_newton(self, x):
        """A^T diag(phi'^2) A + lam I (dense): the expected model Fisher times fisher_scale, plus lam I."""
        self._check(x)
        H = self.design.gram(self._forward(x)["d1"] ** 2, 0, self.n)
        H = 0.5 * (H + H.T)
        H.diagonal().add_(self.lam)
        return H

    def hessian_blocks(self, x, sizes):
        from .base import check_partition
        self._check(x)
        sizes = check_partition(sizes, self.n)
        w = self._curv(self._forward(x))
        out, start = [], 0
        for s in sizes:
            B = self.design.gram(w, start, start + s)
            B = 0.5 * (B + B.T)
            B.diagonal().add_(self.lam)
            out.append(B)
            start += s
        return out

    def per_sample_grads(self, x, idx=None):
        """Rows r_s phi'(z_s) a_s (b x n)."""
        self._check(x)
        idx = check_idx(idx, self.S, self.device)
        Ai = self.design.rows(idx)
        z = Ai @ x
        return Ai * ((self.link.phi(z) - self.b[idx]) * self.link.d1(z))[:, None]

    def model_sample_grads(self, x, idx, generator):
        """Rows -e_s phi'(z_s) a_s, e_s ~ N(0, 1) (labels b~ = phi(z) + e); E[sum g g^T] = J^T J."""
        self._check(x)
        idx = check_idx(idx, self.S, self.device)
        Ai = self.design.rows(idx)
        e = normal(idx.shape, generator, self.dtype, self.device)
        return Ai * (-e * self.link.d1(Ai @ x))[:, None]

    def fisher_sigma(self, x) -> torch.Tensor:
        """The talk's bound sigma <= L sum_s |phi(a_s^T x) - b_s| on ||H(x) - J^T J||_2, with
        L = L_phi max_s ||a_s||^2 the smoothness constant of x -> phi(a_s^T x)."""
        self._check(x)
        return self.L_x * self._forward(x)["r"].abs().sum()


def nonlinear_least_squares(A, b, phi: str = "sigmoid", lam: float = 0.0, *, dtype=None, device=None,
                            name: str = "nls") -> NonlinearLeastSquares:
    """Nonlinear least squares f = 1/2 sum (phi(a_s^T x) - b_s)^2 + lam/2 ||x||^2, phi in
    {"sigmoid", "tanh", "identity"}. See :class:`NonlinearLeastSquares`."""
    return NonlinearLeastSquares(A, b, phi, lam, dtype=dtype, device=device, name=name)
