import pytest
import torch
import torch.nn.functional as Fn

from precond_core.models import MLP
from precond_core.problems import module_problem


def _setup(batch=16):
    gen = torch.Generator().manual_seed(0)
    X = torch.randn(40, 5, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 3, (40,), generator=gen)
    torch.manual_seed(0)
    model = MLP([5, 4, 3]).double()
    return model, module_problem(model, Fn.cross_entropy, (X, y), (X[:10], y[:10]), batch_size=batch), X, y


def _f(p, model, x, X, y):
    return Fn.cross_entropy(torch.func.functional_call(model, p._params(x), (X,)), y)


def test_oracles_against_autograd():
    model, p, X, y = _setup()
    assert p.blocks == (20, 4, 12, 3) and p.n == 39
    x = p.x0() + 0.1
    f, g = p.loss_grad(x)
    H = torch.autograd.functional.hessian(lambda z: _f(p, model, z, p.Xb, p.yb), x)
    gd = torch.autograd.functional.jacobian(lambda z: _f(p, model, z, p.Xb, p.yb), x)
    torch.testing.assert_close(g, gd)
    torch.testing.assert_close(f, _f(p, model, x, p.Xb, p.yb))
    v = torch.randn(p.n, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    torch.testing.assert_close(p.hvp(x, v), H @ v)
    G = p.per_sample_grads(x)
    rows = [torch.autograd.functional.jacobian(lambda z: _f(p, model, z, p.Xb[i:i + 1], p.yb[i:i + 1]), x)
            for i in range(p.batch_size)]
    torch.testing.assert_close(G, torch.stack(rows))
    torch.testing.assert_close(G.mean(0), g)


def test_batches_and_full_data():
    model, p, X, y = _setup(batch=16)
    seen = []
    for _ in range(2):
        seen.append(p.idx.clone())
        p.next_batch()
    assert len(set(torch.cat(seen).tolist())) == 32     # no repeats within an epoch
    x = p.x0()
    torch.testing.assert_close(torch.tensor(p.train_loss(x), dtype=torch.float64),
                               Fn.cross_entropy(model(X), y).detach())
    assert p.test_error(x) == float((model(X[:10]).argmax(1) != y[:10]).double().mean())


def test_bad_input():
    model, p, X, y = _setup()
    with pytest.raises(ValueError, match="train"):
        module_problem(model, Fn.cross_entropy, X)
    with pytest.raises(ValueError, match="batch_size"):
        module_problem(model, Fn.cross_entropy, (X, y), batch_size=0)
    with pytest.raises(ValueError, match="train"):
        module_problem(model, Fn.cross_entropy, (X, y[:3]))
    with pytest.raises(ValueError, match="x"):
        p.loss(torch.zeros(3, dtype=torch.float64))
