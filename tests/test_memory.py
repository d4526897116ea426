"""At n = 10^6 a matrix-free step (uniform direction, AdaGrad-BMA) runs in well under 1 GB of process memory."""
import json
import subprocess
import sys

import pytest

SCRIPT = r"""
import json, resource, torch, precond_core as pc
torch.set_num_threads(1)
prob = pc.problems.scalable(10**6, seed=0)
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
s = pc.Solver(prob, pc.make_method(METHOD, **KW))
for _ in range(3):
    s.step()
print(json.dumps({"peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "after_problem": base,
                  "state_bytes": s.state_bytes, "n": prob.n}))
"""


@pytest.mark.parametrize("method,kw", [("uniform_direction", {}), ("adagrad_bma", {"k": 512})])
def test_million_dimensional_step_stays_well_under_1GB(method, kw):
    code = SCRIPT.replace("METHOD", repr(method)).replace("KW", repr(kw))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
    r = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"\n{method}: peak RSS {r['peak_rss'] / 1e6:.0f} MB (after building the problem "
          f"{r['after_problem'] / 1e6:.0f} MB), state {r['state_bytes'] / 1e6:.1f} MB at n = {r['n']}")
    assert r["n"] == 10**6
    assert r["peak_rss"] < 1e9, r
    assert r["state_bytes"] < 64 * r["n"], r
