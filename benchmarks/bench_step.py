"""asv: cost of one iteration of every registered method, and of the oracles it is measured against.

``StepCost.time_step`` over n on the scalable synthetic problem, ``BlockStepCost.time_step`` over block
counts k for the block methods, and ``OracleCost.time_gradient`` / ``time_hvp`` on the same problems,
so a report can state the cost of a step as a multiple of a gradient. Grids and data: ``cases.py``.
"""
from . import cases


class StepCost:
    """Seconds per ``Solver.step()`` (preconditioner update, step rule, gradient at the new point).

    ``number = 1`` makes asv run ``setup`` before every sample, so each sample times the same step (the
    second from the seeded start) of a fresh solver: the working regime, never steps past convergence.
    """

    params = [list(cases.methods()), list(cases.N_STEP), list(cases.DEVICES)]
    param_names = ["method", "n", "device"]
    timeout = cases.TIMEOUT
    number = 1
    repeat = (3, 15, 2.0)

    def setup(self, method, n, device):
        self.step = cases.step_fn(cases.make_solver(method, n, device), device)

    def time_step(self, method, n, device):
        self.step()


class BlockStepCost:
    """Seconds per step of the block methods over the number of blocks k."""

    params = [list(cases.block_methods()), list(cases.K_GRID), list(cases.N_BLOCK), list(cases.DEVICES)]
    param_names = ["method", "k", "n", "device"]
    timeout = cases.TIMEOUT
    number = 1            # as StepCost: a fresh solver per sample
    repeat = (3, 15, 2.0)

    def setup(self, method, k, n, device):
        self.step = cases.step_fn(cases.make_solver(method, n, device, k=k), device)

    def time_step(self, method, k, n, device):
        self.step()


class OracleCost:
    """Seconds per gradient and per Hessian-vector product on the step-cost problems (the unit of cost)."""

    params = [list(cases.N_STEP), list(cases.DEVICES)]
    param_names = ["n", "device"]
    timeout = cases.TIMEOUT

    def setup(self, n, device):
        self.gradient, self.hvp = cases.oracle_fns(n, device)

    def time_gradient(self, n, device):
        self.gradient()

    def time_hvp(self, n, device):
        self.hvp()
