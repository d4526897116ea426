"""Honest clocks and memory readers, in one place (used by ``minimize`` and the benchmark suites).

``synchronize(device)`` waits for queued GPU work; ``Clock`` reads ``time.perf_counter`` after a
synchronize, so a GPU step is counted when it has finished, not when it was queued.
"""
from __future__ import annotations

import os
import resource
import sys
import time

import torch


def synchronize(device: torch.device | str | None = None) -> None:
    """Block until all work queued on ``device`` has finished (no-op on CPU)."""
    if device is None:
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.synchronize()
        return
    dev = torch.device(device)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    elif dev.type == "mps":  # pragma: no cover - no MPS here
        torch.mps.synchronize()


def now(device: torch.device | str | None = None) -> float:
    """Synchronized wall time in seconds (``time.perf_counter`` after a device synchronize)."""
    synchronize(device)
    return time.perf_counter()


class Clock:
    """Seconds since construction, read after a device synchronize."""

    def __init__(self, device: torch.device | str | None = None):
        self.device = device
        self.start = now(device)

    def __call__(self) -> float:
        return now(self.device) - self.start


def time_call(fn, device=None, repeat: int = 5, warmup: int = 1) -> list[float]:
    """Synchronized wall times of ``fn()`` (seconds), ``warmup`` calls discarded."""
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(repeat):
        t0 = now(device)
        fn()
        out.append(now(device) - t0)
    return out


def cpu_peak_rss_bytes() -> int:
    """Peak resident set size of this process (bytes), from ``getrusage``."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def cpu_rss_bytes() -> int:
    """Current resident set size of this process (bytes), from /proc when available."""
    try:
        with open(f"/proc/{os.getpid()}/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:  # pragma: no cover
        return cpu_peak_rss_bytes()


def cuda_reset_peak(device: torch.device | str | None = None) -> None:
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats(device)


def cuda_peak_bytes(device: torch.device | str | None = None) -> int:
    """Peak bytes allocated by the CUDA caching allocator since the last ``cuda_reset_peak``."""
    if not torch.cuda.is_available():
        return 0
    synchronize(device or "cuda")
    return int(torch.cuda.max_memory_allocated(device))


def peak_memory_bytes(device: torch.device | str | None = None) -> int:
    """Peak memory on ``device``: the CUDA allocator's peak on a GPU, the process peak RSS on CPU."""
    if device is not None and torch.device(device).type == "cuda":
        return cuda_peak_bytes(device)
    return cpu_peak_rss_bytes()


def device_name(device: torch.device | str | None = None) -> str:
    """Human-readable name of the device (GPU model, or the CPU model from /proc/cpuinfo)."""
    dev = torch.device(device or "cpu")
    if dev.type == "cuda" and torch.cuda.is_available():
        return torch.cuda.get_device_name(dev)
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:  # pragma: no cover
        pass
    import platform
    return platform.processor() or platform.machine()


__all__ = ["synchronize", "now", "Clock", "time_call", "cpu_peak_rss_bytes", "cpu_rss_bytes",
           "cuda_reset_peak", "cuda_peak_bytes", "peak_memory_bytes", "device_name"]
