import math
import copy
import io

import pytest
import torch

from precond_core import operators as ops
from precond_core.bma_lu2018 import AdaGradBMALu2018, dense_lu2018_step
from precond_core.models import MLP
from precond_core import preconditioners as P
from precond_core.optim import (AdaGrad, AdaGradBMA, AdaGradFull, BlockDiagAdaGrad, FisherSampled, Hutchinson,
                                 UniformDirection)
from precond_core.registry import make_method



@pytest.fixture(autouse=True)
def _float64_default():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


def _digits(n=256):
    sk = pytest.importorskip("sklearn.datasets")
    X, y = sk.load_digits(return_X_y=True)
    X = torch.tensor(X[:n] / 16.0, dtype=torch.float64)
    return X, torch.tensor(y[:n])


def _model(seed=0, sizes=(64, 8, 10)):
    torch.manual_seed(seed)
    return MLP(list(sizes)).double()


def _loss(model, X, y):
    return torch.nn.functional.cross_entropy(model(X), y)


def _grads(seed, model):
    g = torch.Generator().manual_seed(seed)
    for p in model.parameters():
        p.grad = torch.randn(p.shape, generator=g, dtype=p.dtype)


def test_adagrad_matches_torch():
    X, y = _digits()
    a, b = _model(), _model()
    oa, ob = AdaGrad(a.parameters(), lr=0.1), torch.optim.Adagrad(b.parameters(), lr=0.1)
    for _ in range(10):
        for m, o in ((a, oa), (b, ob)):
            o.zero_grad()
            _loss(m, X, y).backward()
            o.step()
        for pa, pb in zip(a.parameters(), b.parameters()):
            torch.testing.assert_close(pa, pb, rtol=1e-12, atol=1e-14)


def test_bma_exact_singletons_equals_full():
    a, b = _model(sizes=(5, 3, 2)), _model(sizes=(5, 3, 2))
    n = sum(p.numel() for p in a.parameters())
    oa = AdaGradBMA(a.parameters(), lr=0.05, blocks=[1] * n)
    ob = AdaGradFull(b.parameters(), lr=0.05)
    for t in range(6):
        _grads(t, a), _grads(t, b)
        oa.step(), ob.step()
    for pa, pb in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(pa, pb, rtol=1e-8, atol=1e-10)


def test_block_diag_equals_dense_blockwise_formula():
    # H_i = sum_t g_i g_i^T per parameter tensor, p_i -= lr (H_i + eps I)^{-1/2} g_i, from eigh in float64
    a = _model(sizes=(5, 3, 2))
    ref = [p.detach().clone() for p in a.parameters()]
    H = [torch.zeros(p.numel(), p.numel(), dtype=torch.float64) for p in ref]
    opt = BlockDiagAdaGrad(a.parameters(), lr=0.05, eps=1e-8)
    for t in range(6):
        _grads(t, a)
        for i, p in enumerate(a.parameters()):
            g = p.grad.reshape(-1)
            H[i] += torch.outer(g, g)
            w, V = torch.linalg.eigh(H[i] + 1e-8 * torch.eye(len(g), dtype=torch.float64))
            ref[i] = ref[i] - 0.05 * (V @ ((V.T @ g) / w.clamp_min(0).sqrt())).view_as(p)
        opt.step()
    for p, r in zip(a.parameters(), ref):
        torch.testing.assert_close(p.detach(), r, rtol=1e-8, atol=1e-10)
    # one tensor: the same as full-matrix AdaGrad
    w1, w2 = torch.nn.Parameter(torch.randn(4, 3, dtype=torch.float64)), None
    w2 = torch.nn.Parameter(w1.detach().clone())
    o1, o2 = BlockDiagAdaGrad([w1], lr=0.1), AdaGradFull([w2], lr=0.1)
    gen = torch.Generator().manual_seed(1)
    for _ in range(4):
        g = torch.randn(4, 3, generator=gen, dtype=torch.float64)
        w1.grad, w2.grad = g.clone(), g.clone()
        o1.step(), o2.step()
    torch.testing.assert_close(w1, w2, rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="max_block"):
        o = BlockDiagAdaGrad(_model().parameters(), max_block=3)
        for p in o.param_groups[0]["params"]:
            p.grad = torch.zeros_like(p)
        o.step()


def test_bma_scaled_identity_F_equals_diagonal():
    # F = I exactly when every group is one coordinate (the 1 x 1 normalized block mean is 1): with
    # damping 0 the scaled variant is then diagonal AdaGrad, eps and delta inside the root
    gen = torch.Generator().manual_seed(0)
    ps = [torch.nn.Parameter(torch.randn(1, generator=gen)) for _ in range(6)]
    qs = [torch.nn.Parameter(p.detach().clone()) for p in ps]
    opt = AdaGradBMA([{"params": [p]} for p in ps], lr=0.05, variant="scaled", damping=0.0, delta=1e-10, eps=0.0)
    acc = [torch.zeros(1) for _ in qs]
    for t in range(5):
        g = torch.randn(6, generator=gen)
        for i in range(6):
            ps[i].grad = g[i:i + 1].clone()
        opt.step()
        with torch.no_grad():
            for i, (q, s) in enumerate(zip(qs, acc)):
                s.add_(g[i] ** 2)
                q.sub_(0.05 * g[i] / (s + 1e-10).sqrt())
    for p, q in zip(ps, qs):
        torch.testing.assert_close(p, q, rtol=1e-9, atol=1e-12)


def test_lu2018_matches_dense_formula():
    gen = torch.Generator().manual_seed(3)
    sizes = (3, 1, 4, 2)
    n = sum(sizes)
    prob = type("P", (), {"n": n, "blocks": sizes})()
    pre = AdaGradBMALu2018()
    x = torch.zeros(n)
    s = pre.init(prob, x, None)
    a = torch.zeros(n)
    U = torch.zeros(len(sizes), len(sizes))
    E = torch.zeros(n, len(sizes))
    o = 0
    for i, m in enumerate(sizes):
        E[o:o + m, i] = 1
        o += m
    for _ in range(4):
        g = torch.randn(n, generator=gen)
        op, s = pre.update(s, x, g, None)
        a += g * g
        e = E.T @ g
        U += torch.outer(e, e)
        torch.testing.assert_close(op.power(g, -0.5, 1e-10), dense_lu2018_step(a, U, g, sizes), rtol=1e-12, atol=1e-14)
    # via the registry with the power step rule
    m = make_method("adagrad_bma", variant="lu2018")
    assert isinstance(m.preconditioner, AdaGradBMALu2018)


def test_lu2018_diagonal_U_is_diagonal_adagrad():
    # one block: U - diag(U) = 0 -> F = I, P = 0, step g / sqrt(a + eps0)
    n = 5
    prob = type("P", (), {"n": n, "blocks": None})()
    pre = AdaGradBMALu2018(blocks=[n])
    s = pre.init(prob, torch.zeros(n), None)
    g = torch.arange(1.0, n + 1)
    op, s = pre.update(s, torch.zeros(n), g, None)
    torch.testing.assert_close(op.power(g, -0.5, 1e-10), g / (g * g + 1e-10).sqrt())


def _closure(model, opt, X, y, create_graph=False):
    def closure():
        opt.zero_grad()
        loss = _loss(model, X, y)
        loss.backward(create_graph=create_graph)
        return loss
    return closure


OPTIMIZERS = [
    ("adagrad", lambda ps: AdaGrad(ps, lr=0.05), False),
    ("adagrad_full", lambda ps: AdaGradFull(ps, lr=0.5), False),
    ("bma_exact", lambda ps: AdaGradBMA(ps, lr=0.05), False),
    ("bma_scaled", lambda ps: AdaGradBMA(ps, lr=0.05, variant="scaled"), False),
    ("bma_lu2018", lambda ps: AdaGradBMA(ps, lr=0.05, variant="lu2018"), False),
    ("block_diag", lambda ps: BlockDiagAdaGrad(ps, lr=0.5), False),
    ("hutchinson", lambda ps: Hutchinson(ps, lr=0.05, probes=2, beta=0.9, damping=0.1), True),
    ("uniform_direction", lambda ps: UniformDirection(ps, lr=1.0, samples=2), True),
    ("uniform_direction_reg", lambda ps: UniformDirection(ps, step="regularized", sigma=2.0, form="symmetrized"),
     True),
]


@pytest.mark.parametrize("name,make,cg", OPTIMIZERS, ids=[o[0] for o in OPTIMIZERS])
def test_decreases_digits_loss(name, make, cg):
    # every optimizer lowers the full-batch training loss of the digits MLP by 20% within 30 steps
    X, y = _digits()
    model = _model(sizes=(64, 8, 10))
    opt = make(model.parameters())
    closure = _closure(model, opt, X, y, cg)
    with torch.no_grad():
        l0 = _loss(model, X, y).item()
    for _ in range(30):
        opt.step(closure)
    with torch.no_grad():
        l1 = _loss(model, X, y).item()
    assert l1 < 0.8 * l0, (name, l0, l1)


def _through_file(state):
    """``state`` saved with ``torch.save`` and loaded back (a checkpoint; the states hold the library's own
    objects, so ``weights_only=False``)."""
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=False)


@pytest.mark.parametrize("via", ["deepcopy", "torch.save"])
@pytest.mark.parametrize("name,make,cg", OPTIMIZERS, ids=[o[0] for o in OPTIMIZERS])
def test_state_dict_round_trip(name, make, cg, via):
    X, y = _digits(64)
    a = _model()
    oa = make(a.parameters())
    for _ in range(3):
        oa.step(_closure(a, oa, X, y, cg))
    b = copy.deepcopy(a)
    ob = make(b.parameters())
    ob.load_state_dict(copy.deepcopy(oa.state_dict()) if via == "deepcopy" else _through_file(oa.state_dict()))
    oa.step(_closure(a, oa, X, y, cg))
    ob.step(_closure(b, ob, X, y, cg))
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)


def test_param_groups_different_lrs():
    a = _model(sizes=(4, 3, 2))
    ws = [p for n, p in a.named_parameters() if n.endswith("weight")]
    bs = [p for n, p in a.named_parameters() if n.endswith("bias")]
    opt = AdaGradBMA([{"params": ws, "lr": 0.1}, {"params": bs, "lr": 0.01}])
    before = [p.detach().clone() for p in ws + bs]
    _grads(0, a)
    opt.step()
    # first AdaGrad step on a block moves it by lr times a bounded direction: compare with a one-group run
    for lr, group in ((0.1, ws), (0.01, bs)):
        b = _model(sizes=(4, 3, 2))
        pb = [p for n, p in b.named_parameters() if n.endswith("weight" if group is ws else "bias")]
        _grads(0, b)
        AdaGradBMA(pb, lr=lr).step()
        for p, q in zip(group, pb):
            torch.testing.assert_close(p, q)
    assert all(not torch.equal(p, q) for p, q in zip(ws + bs, before))


def test_no_grad_params_skipped():
    a = _model(sizes=(4, 3, 2))
    first = next(a.parameters())
    first.requires_grad_(False)
    opt = AdaGradBMA(a.parameters(), lr=0.1)
    keep = first.detach().clone()
    _grads(0, a)
    first.grad = None
    opt.step()
    assert torch.equal(first, keep)
    assert len(opt.state[first]["flat"].sizes) == 3


def test_bad_input():
    a = _model(sizes=(4, 3, 2))
    for cls in (AdaGrad, AdaGradFull, AdaGradBMA, BlockDiagAdaGrad, Hutchinson):
        with pytest.raises(ValueError, match="lr"):
            cls(a.parameters(), lr=0.0)
        with pytest.raises(ValueError, match="lr"):
            cls(a.parameters(), lr=-1.0)
    with pytest.raises(ValueError, match="variant"):
        AdaGradBMA(a.parameters(), variant="nope")
    with pytest.raises(ValueError, match="update_every"):
        AdaGradBMA(a.parameters(), update_every=0)
    opt = AdaGradBMA(a.parameters(), blocks=[3, 4])
    _grads(0, a)
    with pytest.raises(ValueError, match="blocks"):
        opt.step()
    with pytest.raises(ValueError, match="closure"):
        Hutchinson(a.parameters()).step()
    X, y = _digits(32)
    m = _model()
    h = Hutchinson(m.parameters())
    with pytest.raises(ValueError, match="create_graph"):
        h.step(_closure(m, h, X, y, create_graph=False))
    big = _model()
    o = AdaGradFull(big.parameters(), max_n=10)
    _grads(0, big)
    with pytest.raises(ValueError, match="max_n"):
        o.step()
    emb = torch.nn.Embedding(5, 2, sparse=True).double()
    o = AdaGrad(emb.parameters())
    emb(torch.tensor([1, 2])).sum().backward()
    with pytest.raises(ValueError, match="grad"):
        o.step()


@pytest.mark.parametrize("move", [
    lambda m: m.float(),
    pytest.param(lambda m: m.cuda(), marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")),
], ids=["dtype", "cuda"])
def test_state_mismatch_clear_error(move):
    a = _model(sizes=(4, 3, 2))
    opt = AdaGradBMA(a.parameters())
    _grads(0, a)
    opt.step()
    move(a)
    for p in a.parameters():
        p.grad = torch.ones_like(p)
    with pytest.raises(ValueError, match="optimizer state"):
        opt.step()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cuda_matches_cpu(dtype):
    res = []
    for dev in ("cpu", "cuda"):
        m = _model(sizes=(4, 3, 2)).to(dev, dtype)
        opt = AdaGradBMA(m.parameters(), lr=0.1)
        for t in range(3):
            g = torch.Generator().manual_seed(t)
            for p in m.parameters():
                p.grad = torch.randn(p.shape, generator=g, dtype=dtype).to(dev)
            opt.step()
        res.append([p.detach().cpu() for p in m.parameters()])
    for p, q in zip(*res):
        torch.testing.assert_close(p, q)


# --- the Newton-like optimizers against dense float64 -------------------------------------------------

def _flat_fn(model):
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for p in model.parameters()]

    def unflat(x):
        out, o = {}, 0
        for n, sh in zip(names, shapes):
            m = math.prod(sh)
            out[n] = x[o:o + m].view(sh)
            o += m
        return out
    return unflat


def _dense_setup(model, X, y):
    unflat = _flat_fn(model)
    x0 = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    f = lambda x: _loss_fc(model, unflat(x), X, y)  # noqa: E731
    g = torch.autograd.functional.jacobian(f, x0)
    H = torch.autograd.functional.hessian(f, x0)
    return x0, g, H, unflat


def _loss_fc(model, params, X, y):
    return torch.nn.functional.cross_entropy(torch.func.functional_call(model, params, (X,)), y)


CPU_CUDA = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"))]


@pytest.mark.parametrize("device", CPU_CUDA)
@pytest.mark.parametrize("form,samples", [("raw", 1), ("raw", 2), ("symmetrized", 1), ("regularized", 3)])
def test_uniform_direction_regularized_step_matches_dense(form, samples, device):
    X, y = _digits(40)
    X, y = X[:, :6].to(device), (y % 3).to(device)
    model = _model(sizes=(6, 3, 3)).to(device)
    x0, g, H, _ = _dense_setup(model, X, y)
    n = x0.numel()
    M, sigma, delta = 0.3, 0.7, 0.05 if form == "regularized" else 0.01
    kw = {"delta": delta} if form == "regularized" else {}
    opt = UniformDirection(model.parameters(), samples=samples, form=form, step="regularized", M=M, sigma=sigma,
                           seed=3, **kw)
    opt.step(_closure(model, opt, X, y, create_graph=True))
    x1 = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    U = P.UniformDirection.draw(torch.empty(samples, n, device=device),
                                torch.Generator(device=device).manual_seed(3)).T   # (n, m)
    V = H @ U
    D = (n / samples) * V @ U.T
    eye = torch.eye(n, device=device)
    if form != "raw":
        D = 0.5 * (D + D.T) + (delta if form == "regularized" else 0.0) * eye
    alpha = math.sqrt(M * g.norm().item() / 2) + sigma
    ref = x0 - torch.linalg.solve(D + alpha * eye, g)
    torch.testing.assert_close(x1, ref, rtol=1e-9, atol=1e-11)


def test_uniform_direction_lr_scales_the_regularized_step():
    X, y = _digits(40)
    a, b = _model(sizes=(64, 3, 10)), _model(sizes=(64, 3, 10))
    x0 = torch.cat([p.detach().reshape(-1) for p in a.parameters()])
    oa = UniformDirection(a.parameters(), step="regularized", sigma=1.0)
    ob = UniformDirection(b.parameters(), step="regularized", sigma=1.0, lr=0.25)
    oa.step(_closure(a, oa, X, y, True))
    ob.step(_closure(b, ob, X, y, True))
    xa = torch.cat([p.detach().reshape(-1) for p in a.parameters()])
    xb = torch.cat([p.detach().reshape(-1) for p in b.parameters()])
    torch.testing.assert_close(xb - x0, 0.25 * (xa - x0))


@pytest.mark.parametrize("device", CPU_CUDA)
@pytest.mark.parametrize("b", [1, 4])
def test_fisher_sampled_regularized_step_matches_dense(b, device):
    X, y = _digits(24)
    X, y = X[:, :6].to(device), (y % 3).to(device)
    model = _model(sizes=(6, 3, 3)).to(device)
    x0, g, _, unflat = _dense_setup(model, X, y)
    n = x0.numel()
    opt = FisherSampled(model.parameters(), b=b, step="regularized", M=0.2, sigma=0.5, seed=5, model=model,
                        loss_fn=torch.nn.functional.cross_entropy)
    opt.step(_closure(model, opt, X, y), inputs=X, targets=y)
    x1 = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    idx = torch.randperm(len(y), generator=torch.Generator().manual_seed(5))[:b]   # drawn on the CPU
    G = torch.stack([torch.autograd.functional.jacobian(lambda x: _loss_fc(model, unflat(x), X[i:i + 1], y[i:i + 1]), x0)
                     for i in idx.tolist()])
    D = G.T @ G / b
    alpha = math.sqrt(0.2 * g.norm().item() / 2) + 0.5
    ref = x0 - torch.linalg.solve(D + alpha * torch.eye(n, device=device), g)
    torch.testing.assert_close(x1, ref, rtol=1e-9, atol=1e-11)


def test_fisher_sampled_adaptive_decreases_digits_loss_and_round_trips():
    X, y = _digits()
    model = _model(sizes=(64, 8, 10))
    lf = torch.nn.functional.cross_entropy
    opt = FisherSampled(model.parameters(), b=8, model=model, loss_fn=lf)
    with torch.no_grad():
        l0 = _loss(model, X, y).item()
    for t in range(30):
        sl = slice((t % 4) * 64, (t % 4 + 1) * 64)
        opt.step(_closure(model, opt, X[sl], y[sl]), inputs=X[sl], targets=y[sl])
    with torch.no_grad():
        l1 = _loss(model, X, y).item()
    assert l1 < 0.8 * l0, (l0, l1)
    other = copy.deepcopy(model)
    o2 = FisherSampled(other.parameters(), b=8, model=other, loss_fn=lf)
    o2.load_state_dict(copy.deepcopy(opt.state_dict()))
    opt.step(_closure(model, opt, X[:64], y[:64]), inputs=X[:64], targets=y[:64])
    o2.step(_closure(other, o2, X[:64], y[:64]), inputs=X[:64], targets=y[:64])
    for pa, pb in zip(model.parameters(), other.parameters()):
        assert torch.equal(pa, pb)


def test_adaptive_step_accepts_only_by_the_rule():
    # an accepted step satisfies f(x) - f(x+) >= ||g(x+)||^2 / (8 alpha), alpha = ||g(x)|| / gamma, where
    # gamma is the accepted value (the state holds it doubled)
    X, y = _digits(128)
    model = _model(sizes=(64, 4, 10))
    opt = UniformDirection(model.parameters(), lr=1.0)

    def fg():
        with torch.enable_grad():
            model.zero_grad()
            f = _loss(model, X, y)
            f.backward()
        return f.item(), torch.cat([p.grad.reshape(-1) for p in model.parameters()]).norm().item()
    for _ in range(6):
        f0, g0 = fg()
        assert opt.step(_closure(model, opt, X, y, True)).item() == pytest.approx(f0, rel=1e-12)
        f1, g1 = fg()
        alpha = g0 / (opt.state[next(model.parameters())]["gamma"] / 2)
        assert f0 - f1 >= g1 ** 2 / (8 * alpha) - 1e-12, (f0, f1, g1, alpha)


def test_newton_like_bad_input():
    m = _model(sizes=(4, 3, 2))
    with pytest.raises(ValueError, match="sigma"):
        UniformDirection(m.parameters(), step="regularized")
    with pytest.raises(ValueError, match="sigma"):
        UniformDirection(m.parameters(), step="adaptive", sigma=1.0)
    with pytest.raises(ValueError, match="delta"):
        UniformDirection(m.parameters(), form="raw", delta=0.5)
    with pytest.raises(ValueError, match="samples"):
        UniformDirection(m.parameters(), samples=0)
    with pytest.raises(ValueError, match="step"):
        UniformDirection(m.parameters(), step="armijo")
    with pytest.raises(ValueError, match="closure"):
        UniformDirection(m.parameters()).step()
    lf = torch.nn.functional.cross_entropy
    with pytest.raises(ValueError, match="model"):
        FisherSampled(m.parameters(), model=None, loss_fn=lf)
    with pytest.raises(ValueError, match="b"):
        FisherSampled(m.parameters(), b=0, model=m, loss_fn=lf)
    X, y = torch.randn(3, 4), torch.tensor([0, 1, 0])
    o = FisherSampled(m.parameters(), b=2, model=m, loss_fn=lf)
    with pytest.raises(ValueError, match="inputs"):
        o.step(_closure(m, o, X, y))
    o = FisherSampled(m.parameters(), b=5, model=m, loss_fn=lf)
    with pytest.raises(ValueError, match="b=5 exceeds"):
        o.step(_closure(m, o, X, y), inputs=X, targets=y)


def test_flat_views_survive_model_zero_grad_and_replaced_storage():
    # gradients that are not views (model.zero_grad(), set by hand) and replaced parameter storage are
    # copied in; the step equals the one of a fresh optimizer state fed the same numbers
    X, y = _digits(64)
    a, b = _model(), _model()
    oa, ob = AdaGrad(a.parameters(), lr=0.1), torch.optim.Adagrad(b.parameters(), lr=0.1)
    for t in range(4):
        for m, o in ((a, oa), (b, ob)):
            (m.zero_grad() if t % 2 else o.zero_grad())
            _loss(m, X, y).backward()
            o.step()
        if t == 1:
            with torch.no_grad():
                for pa, pb in zip(a.parameters(), b.parameters()):
                    pa.data = pa.detach().clone() * 0.5
                    pb.data = pb.detach().clone() * 0.5
    for pa, pb in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(pa, pb, rtol=1e-12, atol=1e-14)
    # the parameters are views into one flat buffer, the gradients into another
    assert len({p.untyped_storage().data_ptr() for p in a.parameters()}) == 1
    assert len({p.grad.untyped_storage().data_ptr() for p in a.parameters()}) == 1
