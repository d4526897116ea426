"""Parse time vs parsed-cache load time for a LIBSVM data set (default: mushrooms).

    python benchmarks/bench_datasets.py [name] [--repeats 7]

Prints medians over the repeats of:
  libsvm-official  svm_read_problem(text, return_scipy=True) alone (the reference parser);
  checked parse    parse_text: precond_core's strict checks (file:line errors) + the libsvm-official parse;
  load, no cache   load_info(name, cache=False): read + sha256 + check + libsvm parse + tensors;
  load, cached     load_info(name) with the parsed cache filled: sha256 + npz read + tensors.
Runs in a temporary data directory unless PRECOND_DATA_DIR is set.
"""
from __future__ import annotations

import argparse
import io
import os
import statistics
import tempfile
import time


def median_times(fns: dict, repeats: int) -> dict:
    """Median seconds of each callable, run round-robin so that load from other processes hits all alike."""
    ts = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            t = time.perf_counter()
            fn()
            ts[k].append(time.perf_counter() - t)
    return {k: statistics.median(v) for k, v in ts.items()}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("name", nargs="?", default="mushrooms")
    ap.add_argument("--repeats", type=int, default=11)
    args = ap.parse_args(argv)
    tmp = None
    if "PRECOND_DATA_DIR" not in os.environ:
        tmp = tempfile.TemporaryDirectory()
        os.environ["PRECOND_DATA_DIR"] = tmp.name
    import torch

    import precond_core.datasets as D
    from libsvm.svmutil import svm_read_problem
    from precond_core.datasets.libsvm_format import parse_text

    ds = D.load_info(args.name)                      # produces the raw file and fills the cache
    text = open(ds.path).read()
    entry = D.registry().get(args.name)
    nf = entry.n_features if entry else None
    res = median_times({
        "libsvm-official parse": lambda: svm_read_problem(io.StringIO(text), return_scipy=True),
        "checked parse": lambda: parse_text(text, ds.path, ds.sha256, n_features=nf),
        "load, no cache": lambda: D.load_info(args.name, cache=False),
        "load, cached": lambda: D.load_info(args.name),
    }, args.repeats)
    assert D.load_info(args.name).from_cache
    layout = "dense" if ds.A.layout == torch.strided else "sparse CSR"
    print(f"{args.name}: {ds.n_samples} x {ds.n_features}, nnz {ds.nnz}, {layout}; median of {args.repeats}")
    for k, v in res.items():
        print(f"  {k:22s} {1e3 * v:8.1f} ms")
    share = res["libsvm-official parse"] / res["checked parse"]
    print(f"  libsvm-official share of the checked parse: {100 * share:.0f}%; "
          f"cached load is {res['load, no cache'] / res['load, cached']:.0f}x faster than a fresh load")
    if tmp is not None:
        tmp.cleanup()
    return res


if __name__ == "__main__":
    main()
