"""Parse time vs parsed-cache load time for a LIBSVM data set (default: mushrooms).

    python benchmarks/bench_datasets.py [name] [--repeats 7]

Prints medians over the repeats of:
  libsvm-official  svm_read_problem(text, return_scipy=True) alone (the reference parser);
  strict check     precond_core's validation pass (file:line errors) alone;
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


def median_time(fn, repeats: int) -> float:
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("name", nargs="?", default="mushrooms")
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args(argv)
    tmp = None
    if "PRECOND_DATA_DIR" not in os.environ:
        tmp = tempfile.TemporaryDirectory()
        os.environ["PRECOND_DATA_DIR"] = tmp.name
    import precond_core.datasets as D
    from libsvm.svmutil import svm_read_problem
    from precond_core.datasets.libsvm_format import validate

    ds = D.load_info(args.name)                      # produces the raw file and fills the cache
    text = open(ds.path).read()
    entry = D.registry().get(args.name)
    nf = entry.n_features if entry else None
    res = {
        "libsvm-official parse": median_time(lambda: svm_read_problem(io.StringIO(text), return_scipy=True),
                                             args.repeats),
        "strict check": median_time(lambda: validate(text, ds.path, n_features=nf), args.repeats),
        "load, no cache": median_time(lambda: D.load_info(args.name, cache=False), args.repeats),
        "load, cached": median_time(lambda: D.load_info(args.name), args.repeats),
    }
    assert D.load_info(args.name).from_cache
    print(f"{args.name}: {ds.n_samples} x {ds.n_features}, nnz {ds.nnz}, {'dense' if ds.A.layout.__repr__() == 'torch.strided' else 'sparse'}; "
          f"median of {args.repeats}")
    for k, v in res.items():
        print(f"  {k:22s} {1e3 * v:8.1f} ms")
    if tmp is not None:
        tmp.cleanup()
    return res


if __name__ == "__main__":
    main()
