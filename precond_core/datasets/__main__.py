"""Command line: ``python -m precond_core.datasets list`` | ``fetch NAME [--trust-unverified] [--url URL]``."""
from __future__ import annotations

import argparse
import sys

from . import available, fetch
from .errors import DatasetError


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m precond_core.datasets")
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("list", help="registered data sets and whether each is available here")
    f = sub.add_parser("fetch", help="download a LIBSVM data set into $PRECOND_DATA_DIR/raw, sha256-verified")
    f.add_argument("name")
    f.add_argument("--url", default=None, help="download from this address instead of the registry's")
    f.add_argument("--trust-unverified", action="store_true",
                   help="accept a file whose checksum the registry does not record")
    args = ap.parse_args(argv)
    if args.cmd == "list":
        for name, a in available().items():
            print(f"{name:18s} {'yes' if a else 'no ':3s}  {a.where if a else a.reason}")
        return 0
    try:
        print(fetch(args.name, url=args.url, trust_unverified=args.trust_unverified))
    except DatasetError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
