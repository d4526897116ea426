"""asv: iterations and wall time to reach ||grad f|| <= eps (float64 logistic regression).

One ``pc.minimize`` run per (dataset, method, device, seed) down to the smallest eps; the ``track_*``
bodies read the first iteration (and the synchronized time since the start) at which the gradient norm
is <= eps, NaN when the run stopped first (``cases.CONVERGENCE_MAX_ITERS`` / ``CONVERGENCE_MAX_SECONDS``).

``Convergence`` (mushrooms, heart_scale, the 500 x 100 synthetic set) runs all of them once in asv's
``setup_cache``, so the four figures of a point (two eps, iterations and time) come from one run.
``ConvergenceLibsvm`` covers the larger LIBSVM sets of the dataset registry; a set that is not on this
machine (see ``precond_core.datasets.fetch``) is skipped.
"""
from . import cases


class _TrackToEps:
    # the parameters end with (eps, device, seed); with setup_cache, asv passes its result first
    param_names = ["dataset", "method", "eps", "device", "seed"]

    def track_iters_to_eps(self, *args):
        return cases.or_nan(self.run["iters_to_eps"][cases.eps_key(args[-3])])

    track_iters_to_eps.unit = "iterations"

    def track_time_to_eps(self, *args):
        return cases.or_nan(self.run["time_to_eps"][cases.eps_key(args[-3])])

    track_time_to_eps.unit = "seconds"


class Convergence(_TrackToEps):
    params = [list(cases.CORE_DATASETS), list(cases.methods()), list(cases.EPS_GRID),
              list(cases.DEVICES), list(cases.SEEDS)]
    timeout = 900

    def setup_cache(self):
        return cases.convergence_table(cases.CORE_DATASETS)

    def setup(self, table, dataset, method, eps, device, seed):
        self.run = cases.result_or_skip(table[dataset, method, device, seed])


class ConvergenceLibsvm(_TrackToEps):
    params = [list(cases.libsvm_sets()), list(cases.methods()), list(cases.EPS_GRID),
              list(cases.DEVICES), list(cases.SEEDS)]
    timeout = 900

    def setup(self, dataset, method, eps, device, seed):
        self.run = cases.convergence_run(dataset, method, device, seed)
