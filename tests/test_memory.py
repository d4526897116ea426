"""Peak memory of a step at n = 10^7 (float32), in vectors of size n beyond the problem's data.

Each method runs in its own subprocess. The problem is the scalable logistic regression with few samples
(100 rows of 10 nonzeros: its data is A, A^T and A^T's row pointer, fixed before the count starts), its
oracles (and a tiny eigh and solve) called once and freed first, so the library code they page in is
not counted. The count starts
from the resident set size after that (the kernel's peak counter ``VmHWM`` reset through
``/proc/self/clear_refs``): the solver's iterate and gradient, the method's state and every temporary of
the set-up (x0, g0, the preconditioner's and step rule's init, ``Solver.setup``) and of 3 iterations. torch
CPU tensors of this size are mapped and unmapped whole, so the resident set follows them. Targets
(issue 12): uniform_direction <= 4 vectors (x, g, u, v), adagrad (x, g, the sum of squares) and
adagrad_bma (x, g plus O(k^2)) <= 3.
"""
import json
import os
import subprocess
import sys

import pytest

SCRIPT = r"""
import gc, json, torch, precond_core as pc
torch.set_num_threads(1)

def rss(key):
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(key):
                return int(line.split()[1]) * 1024

def reset_peak():
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")

n = N
prob = pc.problems.scalable(n, seed=0, n_samples=100, nnz_per_row=10, dtype=torch.float32)
x0 = prob.x0(); f0, g0 = prob.loss_grad(x0); h0 = prob.hvp(x0, g0)
del x0, f0, g0, h0
a = torch.randn(64, 64); torch.linalg.eigh(a @ a.T); torch.linalg.solve(a @ a.T + torch.eye(64), a[0])
del a   # library code (LAPACK, random draws) paged in before the count: it is not the method's memory
prob._cache.clear(); gc.collect()
reset_peak(); base = rss("VmRSS")
s = pc.Solver(prob, pc.make_method(METHOD, **KW))
s.setup()
if SKIP_SETUP:
    reset_peak()
for _ in range(3):
    s.step()
vec = n * 4
print(json.dumps({"peak_vectors": (rss("VmHWM") - base) / vec, "resident_vectors": (rss("VmRSS") - base) / vec,
                  "state_bytes": s.state_bytes, "iteration": s.iteration}))
"""

N = 10**7
SLACK = 0.1   # of a vector of size n: 4 MB
CASES = [  # (method, parameters, the bound in vectors of size n, the set-up excluded from the peak)
    ("adagrad", {}, 3, False),
    ("adagrad_bma", {"k": 8}, 3, False),
    ("adagrad_bma", {"k": 512}, 3, False),        # 10^7 / 512 is not whole: two runs of equal blocks
    ("uniform_direction", {"step": "fixed", "lr": 0.1}, 4, False),
    # the regularized step's sigma (power iteration at x0, once) is set-up: only the iterations are counted
    ("uniform_direction", {"step": "regularized"}, 4, True),
]


def _can_reset_peak() -> bool:
    return sys.platform.startswith("linux") and os.access("/proc/self/clear_refs", os.W_OK)


def _peak(method: str, kw: dict, skip_setup: bool, n: int) -> dict:
    code = (SCRIPT.replace("METHOD", repr(method)).replace("KW", repr(kw)).replace("SKIP_SETUP", repr(skip_setup))
            .replace("n = N", f"n = {n}"))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not _can_reset_peak(), reason="needs Linux /proc/self/clear_refs to reset the peak RSS")
@pytest.mark.parametrize("method,kw,bound,skip_setup", CASES,
                         ids=[f"{m}-{'-'.join(f'{k}={v}' for k, v in kw.items())}" for m, kw, _, _ in CASES])
def test_peak_memory_at_ten_million(method, kw, bound, skip_setup):
    r = _peak(method, kw, skip_setup, N)
    print(f"\n{method} {kw}: peak {r['peak_vectors']:.2f} vectors of n = {N} (resident after: "
          f"{r['resident_vectors']:.2f}), state {r['state_bytes'] / 1e6:.1f} MB")
    assert r["iteration"] == 3
    # the n-vectors, plus at most SLACK of memory that does not grow with n (k x k matrices, small buffers)
    assert r["peak_vectors"] <= bound + SLACK, r
    # the count is not vacuous: the loop's own iterate and gradient are resident
    assert r["resident_vectors"] >= 1.9, r


GROWTH = [  # (method, parameters, the bound in vectors of size n)
    ("uniform_direction", {"step": "fixed", "lr": 0.1}, 4),
    ("adagrad", {}, 3),
    ("adagrad_bma", {"k": 512}, 3),
]


@pytest.mark.skipif(not _can_reset_peak(), reason="needs Linux /proc/self/clear_refs to reset the peak RSS")
@pytest.mark.parametrize("method,kw,bound", GROWTH, ids=[m for m, _, _ in GROWTH])
def test_peak_grows_within_the_bound_per_coordinate(method, kw, bound):
    """The peak's part that grows with n, from n = 10^7 and 2 10^7: at most the issue's bound of vectors
    per coordinate, to 1 %. The excess over the bound at one n (uniform_direction 4.03 at 10^7, adagrad
    3.02) is a fixed amount that does not grow (small buffers, the first call's library pages, k x k
    matrices)."""
    n1, n2 = N, 2 * N
    a, b = (_peak(method, kw, False, n) for n in (n1, n2))
    per_coord = (b["peak_vectors"] * n2 - a["peak_vectors"] * n1) / (n2 - n1)
    fixed_mib = (a["peak_vectors"] - per_coord) * n1 * 4 / 2 ** 20
    print(f"\n{method} {kw}: peak {a['peak_vectors']:.3f} / {b['peak_vectors']:.3f} vectors at n = {n1} / {n2}: "
          f"{per_coord:.4f} vectors per coordinate plus {fixed_mib:.2f} MiB")
    assert a["iteration"] == b["iteration"] == 3
    assert 1.9 <= per_coord <= bound + 0.04, (a, b)
