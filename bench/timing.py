"""Timing helpers shared by the benchmarks in bench/ (run as scripts: ``python bench/X.py``)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def process_clock(device: torch.device) -> Callable[[], float]:
    """``time.process_time`` on the CPU with one torch thread, else ``time.perf_counter``.

    The process's CPU time leaves out the time it spends descheduled, which on a shared
    machine (more busy processes than cores) is most of the spread between rounds; it
    would add up the threads' times with several torch threads, so it is used with one.
    """
    if device.type == "cpu" and torch.get_num_threads() == 1:
        return time.process_time
    return time.perf_counter


def interleaved_medians(
    fns: dict[str, Callable[[], object]],
    device: torch.device,
    repeats: int,
    clock: Callable[[], float] = time.perf_counter,
) -> dict[str, float]:
    """Median time of each of ``fns`` over ``repeats`` rounds, after one warm-up call.

    ``clock`` is wall time by default; :func:`process_clock` gives CPU time on a shared CPU.

    Each round calls every function once, so a drift in the machine's speed during the run
    hits all of them alike and their ratios stay fair; every other round runs them in
    reverse order (a, b, c, c, b, a, ...), because a function's position in a round biases
    its time: two calls of the same code timed a, b, a, b differed by 5-10%.
    """
    times: dict[str, list[float]] = {name: [] for name in fns}
    for fn in fns.values():
        fn()
    sync(device)
    names = list(fns)
    for round_ in range(repeats):
        for name in names if round_ % 2 == 0 else reversed(names):
            start = clock()
            fns[name]()
            sync(device)
            times[name].append(clock() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def mean_seconds(fn: Callable[[], object], device: torch.device, calls: int) -> float:
    """Mean wall time of ``fn`` over ``calls`` calls in a row, after one warm-up call."""
    fn()
    sync(device)
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    sync(device)
    return (time.perf_counter() - start) / calls


def median_seconds(fn: Callable[[], object], device: torch.device, repeats: int) -> float:
    """Median wall time of ``fn`` over ``repeats`` calls, after one warm-up call."""
    return interleaved_medians({"fn": fn}, device, repeats)["fn"]


def count_torch_calls(fn: Callable[[], object]) -> int:
    """Top-level aten operations ``fn()`` issues, counted with ``torch.profiler`` on the CPU
    (calls made inside another aten call are not counted again).  At small sizes each
    costs microseconds from Python whatever its arithmetic, so the count is a step's floor."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    calls = [e for e in prof.events() if e.name.startswith("aten::")]
    return sum(e.cpu_parent is None or not e.cpu_parent.name.startswith("aten::") for e in calls)


def guarded(fn: Callable[[], dict]) -> dict:
    """Run one case; a failure becomes ``{"skipped": reason}`` so the rest of the run goes on."""
    try:
        return fn()
    except (RuntimeError, TypeError, ValueError, AttributeError, MemoryError) as err:
        return {"skipped": f"{type(err).__name__}: {str(err).splitlines()[0][:200]}"}


def format_case(result: dict) -> str:
    if "skipped" in result:
        return f"skipped ({result['skipped']})"
    return ", ".join(
        f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in result.items()
    )
