"""Wall-clock timing and memory release shared by the benchmark scripts (not a benchmark)."""

from __future__ import annotations

import gc
import time
from collections.abc import Callable

import torch


def sync(device: torch.device) -> None:
    """Wait for the device's queued kernels, so a wall-clock reading covers them."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device) -> tuple[float, object]:
    """``(seconds, fn())``, synchronized on both sides."""
    sync(device)
    start = time.perf_counter()
    out = fn()
    sync(device)
    return time.perf_counter() - start, out


def release(device: torch.device) -> None:
    """Free what the previous measurement left, so each starts from the same memory state."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
