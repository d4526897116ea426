"""Console script ``precond-bench`` (see :mod:`precond_core.bench.cli`)."""
from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    from precond_core.bench.cli import main as _main

    return _main(argv)


if __name__ == "__main__":
    sys.exit(main())
