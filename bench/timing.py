"""Timing helpers shared by the benchmarks in bench/ (run as scripts: ``python bench/X.py``)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def interleaved_medians(
    fns: dict[str, Callable[[], object]], device: torch.device, repeats: int
) -> dict[str, float]:
    """Median wall time of each of ``fns`` over ``repeats`` rounds, after one warm-up call.

    Each round calls every function once (a, b, c, a, b, c, ...), so a drift in the
    machine's speed during the run hits all of them alike and their ratios stay fair.
    """
    times: dict[str, list[float]] = {name: [] for name in fns}
    for fn in fns.values():
        fn()
    sync(device)
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            sync(device)
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def median_seconds(fn: Callable[[], object], device: torch.device, repeats: int) -> float:
    """Median wall time of ``fn`` over ``repeats`` calls, after one warm-up call."""
    return interleaved_medians({"fn": fn}, device, repeats)["fn"]
