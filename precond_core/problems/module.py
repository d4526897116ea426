"""``module_problem``: a ``torch.nn.Module`` with a loss and data as a flat-vector ``Problem``.

x is the concatenation of the model's trainable parameters (``model.parameters()`` order, each
flattened); ``blocks`` is the parameter-tensor partition (one block per tensor). The oracles ``loss``,
``grad``, ``loss_grad``, ``hvp`` (double backward) and ``per_sample_grads`` (``torch.func.vmap`` over
``torch.func.grad``) act on the *current minibatch* (mean loss over it); ``next_batch()`` draws the next
one from a seeded permutation of the training set (epochs reshuffle). ``train_loss(x)`` is the mean loss
over the whole training set and ``test_error(x)`` the misclassification rate on ``test`` (or ``train``).
The model itself is not modified (``torch.func.functional_call``).
"""
from __future__ import annotations

import torch

from .base import Problem

__all__ = ["ModuleProblem", "module_problem"]


def _as_pair(data, name):
    if not (isinstance(data, (tuple, list)) and len(data) == 2 and all(isinstance(t, torch.Tensor) for t in data)):
        raise ValueError(f"{name} must be a pair (inputs, targets) of tensors, got {type(data).__name__}")
    X, y = data
    if X.shape[0] != y.shape[0] or X.shape[0] == 0:
        raise ValueError(f"{name}: inputs and targets must have the same positive number of rows, "
                         f"got {X.shape[0]} and {y.shape[0]}")
    return X, y


class ModuleProblem(Problem):
    def __init__(self, model, loss_fn, train, test=None, batch_size=128, seed=0, name="module"):
        if not isinstance(model, torch.nn.Module):
            raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if not callable(loss_fn):
            raise ValueError("loss_fn must be callable as loss_fn(outputs, targets) -> mean loss")
        self.X, self.y = _as_pair(train, "train")
        self.Xt, self.yt = _as_pair(test, "test") if test is not None else (self.X, self.y)
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        self.model, self.loss_fn, self.name = model, loss_fn, name
        self.names = [k for k, p in model.named_parameters() if p.requires_grad]
        params = [p for p in model.parameters() if p.requires_grad]
        if not params:
            raise ValueError("model has no trainable parameters")
        self.shapes = [p.shape for p in params]
        self.blocks = tuple(p.numel() for p in params)
        self.n = sum(self.blocks)
        self.dtype, self.device = params[0].dtype, params[0].device
        if self.X.device != self.device:
            raise ValueError(f"train is on {self.X.device}, the model on {self.device}")
        self.n_samples = self.X.shape[0]
        self.batch_size = min(batch_size, self.n_samples)
        self.fisher_scale = 1.0 / self.batch_size
        self._gen = torch.Generator().manual_seed(seed)
        self._perm, self._pos = None, 0
        self._x0 = torch.cat([p.detach().reshape(-1) for p in params])
        self.next_batch()

    def x0(self):
        return self._x0.clone()

    def _params(self, x):
        out, o = {}, 0
        for k, s, m in zip(self.names, self.shapes, self.blocks):
            out[k] = x[o:o + m].view(s)
            o += m
        return out

    def _forward(self, x, X):
        return torch.func.functional_call(self.model, self._params(x), (X,))

    def next_batch(self):
        """Advance to the next minibatch (a fresh seeded permutation at each epoch)."""
        if self._perm is None or self._pos + self.batch_size > self.n_samples:
            self._perm = torch.randperm(self.n_samples, generator=self._gen).to(self.device)
            self._pos = 0
        self.idx = self._perm[self._pos:self._pos + self.batch_size]
        self._pos += self.batch_size
        self.Xb, self.yb = self.X[self.idx], self.y[self.idx]

    def loss(self, x):
        self._check(x)
        with torch.no_grad():
            return self.loss_fn(self._forward(x, self.Xb), self.yb)

    def loss_grad(self, x):
        self._check(x)
        x = x.detach().requires_grad_(True)
        with torch.enable_grad():
            f = self.loss_fn(self._forward(x, self.Xb), self.yb)
            (g,) = torch.autograd.grad(f, x)
        return f.detach(), g

    def grad(self, x):
        return self.loss_grad(x)[1]

    def hvp(self, x, v):
        self._check(x)
        self._check(v, "v")
        x = x.detach().requires_grad_(True)
        with torch.enable_grad():
            f = self.loss_fn(self._forward(x, self.Xb), self.yb)
            (g,) = torch.autograd.grad(f, x, create_graph=True)
            (hv,) = torch.autograd.grad(g, x, v)
        return hv

    def per_sample_grads(self, x, idx=None):
        """Gradients (b, n) of the single-sample losses on the current minibatch (rows ``idx`` of it)."""
        self._check(x)
        X, y = (self.Xb, self.yb) if idx is None else (self.Xb[idx], self.yb[idx])

        def one(xx, a, b):
            return self.loss_fn(self._forward(xx, a[None]), b[None])

        return torch.func.vmap(torch.func.grad(one), in_dims=(None, 0, 0))(x.detach(), X, y)

    @torch.no_grad()
    def train_loss(self, x, chunk=4096):
        """Mean loss over the whole training set."""
        self._check(x)
        tot = 0.0
        for i in range(0, self.n_samples, chunk):
            Xc, yc = self.X[i:i + chunk], self.y[i:i + chunk]
            tot += float(self.loss_fn(self._forward(x, Xc), yc)) * Xc.shape[0]
        return tot / self.n_samples

    @torch.no_grad()
    def test_error(self, x, chunk=4096):
        """Misclassification rate on the test set (the training set when no test set was given)."""
        self._check(x)
        wrong = 0
        for i in range(0, self.Xt.shape[0], chunk):
            out = self._forward(x, self.Xt[i:i + chunk])
            wrong += int((out.argmax(1) != self.yt[i:i + chunk]).sum())
        return wrong / self.Xt.shape[0]


def module_problem(model, loss_fn, train, test=None, batch_size=128, seed=0, name="module") -> ModuleProblem:
    """See the module docstring."""
    return ModuleProblem(model, loss_fn, train, test, batch_size, seed, name)
