"""asv: iterations and wall time to reach ||grad f|| <= eps (float64 logistic regression).

One ``pc.minimize`` run per (dataset, method, device, seed) down to the smallest eps, in setup; the
``track_*`` bodies read the first iteration (and synchronized time since the start) at which the
gradient norm is <= eps, NaN when the run stopped first (``cases.CONVERGENCE_MAX_ITERS`` /
``CONVERGENCE_MAX_SECONDS``). A dataset that is not on this machine is skipped.
"""
from . import cases


class Convergence:
    params = [list(cases.CONVERGENCE_DATASETS), list(cases.methods()), list(cases.EPS_GRID),
              list(cases.DEVICES), list(cases.SEEDS)]
    param_names = ["dataset", "method", "eps", "device", "seed"]
    timeout = 600

    def setup(self, dataset, method, eps, device, seed):
        self.run = cases.convergence_run(dataset, method, device, seed)

    def track_iters_to_eps(self, dataset, method, eps, device, seed):
        return cases.or_nan(self.run.iters[eps])

    track_iters_to_eps.unit = "iterations"

    def track_time_to_eps(self, dataset, method, eps, device, seed):
        return cases.or_nan(self.run.seconds[eps])

    track_time_to_eps.unit = "seconds"
