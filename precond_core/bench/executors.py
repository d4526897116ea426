"""Where cells run: in this process (default) or as independent tasks on a Dask cluster.

An executor has ``map(fn, cells, on_start=None)``, an iterator over ``fn(cell)`` results in completion
order; the sweep writes each result to the store as it arrives, in the submitting process. ``same_machine``
says whether every cell runs on this host (the sweep then resumes per host).
"""
from __future__ import annotations

from typing import Callable, Iterable, Iterator


class LocalExecutor:
    """Run the cells one after another in this process (no service, no extra dependency)."""

    same_machine = True

    def map(self, fn: Callable, cells: Iterable, on_start: Callable | None = None) -> Iterator:
        for cell in cells:
            if on_start is not None:
                on_start(cell)
            yield fn(cell)

    def close(self) -> None:
        pass

    def __repr__(self) -> str:
        return "LocalExecutor()"


class DaskExecutor:
    """Submit one task per cell to a Dask distributed scheduler and gather results as they complete.

    ``address`` is a scheduler address (``tcp://host:8786``), a ``distributed.Client``, or ``"local"``
    (start a ``LocalCluster`` on 127.0.0.1 with one single-threaded worker process per core). Workers need
    the same ``precond_core`` installed. A failed task is reported as that cell's error; the others go on.
    """

    same_machine = False

    def __init__(self, address, *, n_workers: int | None = None, timeout: float = 30.0):
        try:
            import distributed
        except ImportError as exc:  # pragma: no cover - dask is an optional dependency
            raise RuntimeError("the dask executor needs `pip install 'precond_core[dask]'`") from exc
        self._cluster = None
        self._own_client = True
        if isinstance(address, distributed.Client):
            self.client, self._own_client = address, False
        elif address == "local":
            import os

            self._cluster = distributed.LocalCluster(host="127.0.0.1", n_workers=n_workers or os.cpu_count() or 1,
                                                     threads_per_worker=1, processes=True,
                                                     dashboard_address=None)
            self.client = distributed.Client(self._cluster)
        else:
            try:
                self.client = distributed.Client(address, timeout=timeout)
            except (OSError, TimeoutError) as exc:
                raise RuntimeError(f"cannot connect to the Dask scheduler at {address!r}: {exc}") from None
        self.address = address

    def map(self, fn: Callable, cells: Iterable, on_start: Callable | None = None) -> Iterator:
        from distributed import as_completed

        cells = list(cells)
        futures = [self.client.submit(fn, c, pure=False, key=f"cell-{c.run_id}-{i}") for i, c in enumerate(cells)]
        index = {f.key: c for f, c in zip(futures, cells)}
        try:
            for fut in as_completed(futures):
                cell = index[fut.key]
                if on_start is not None:
                    on_start(cell)
                if fut.status == "error":
                    from .runner import CellResult

                    exc = fut.exception()
                    yield CellResult(cell, error=f"{type(exc).__name__}: {exc}")
                else:
                    yield fut.result()
                fut.release()
        finally:
            for f in futures:  # Ctrl-C: do not leave queued cells running on the cluster
                if not f.done():
                    f.cancel()

    def close(self) -> None:
        if self._own_client:
            self.client.close()
        if self._cluster is not None:
            self._cluster.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self) -> str:
        return f"DaskExecutor({self.address!r})"


def make_executor(kind: str = "local", scheduler: str | None = None) -> LocalExecutor | DaskExecutor:
    if kind == "local":
        return LocalExecutor()
    if kind == "dask":
        if not scheduler:
            raise ValueError("--executor dask needs --scheduler ADDRESS (e.g. tcp://10.0.0.1:8786, or 'local')")
        return DaskExecutor(scheduler)
    raise ValueError(f"executor must be 'local' or 'dask', got {kind!r}")


__all__ = ["LocalExecutor", "DaskExecutor", "make_executor"]
