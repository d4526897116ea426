"""asv: memory of every registered method on the scalable synthetic problem.

``peakmem_step`` is asv's figure (peak resident set size of the benchmark process, setup included);
``track_state_bytes`` the exact bytes of the preconditioner's state (``Solver.state_bytes``) after the
warm-up step; ``CudaMemory.track_cuda_peak_bytes`` the CUDA allocator's peak over one step, its counter
reset in setup (skipped without a GPU).
"""
from precond_core import timing

from . import cases


class Memory:
    params = [list(cases.methods()), list(cases.N_MEMORY), list(cases.DEVICES)]
    param_names = ["method", "n", "device"]
    timeout = cases.TIMEOUT

    def setup(self, method, n, device):
        self.solver = cases.make_solver(method, n, device)

    def peakmem_step(self, method, n, device):
        self.solver.step()

    def track_state_bytes(self, method, n, device):
        return self.solver.state_bytes

    track_state_bytes.unit = "bytes"


class CudaMemory:
    params = [list(cases.methods()), list(cases.N_MEMORY)]
    param_names = ["method", "n"]
    timeout = cases.TIMEOUT

    def setup(self, method, n):
        self.step = cases.step_fn(cases.make_solver(method, n, "cuda"), "cuda")
        timing.cuda_reset_peak("cuda")

    def track_cuda_peak_bytes(self, method, n):
        self.step()
        return timing.cuda_peak_bytes("cuda")

    track_cuda_peak_bytes.unit = "bytes"
