"""Memory-module speed: rollout steps against nn.GRUCell, forward+backward against nn.LSTM.

    python bench/memory_ops.py [--quick] [--device cpu|cuda] [--steps 128 --batch 64 --dim 64]
                               [--modules lstm gru ...] [--threads 1]
                               [--module-kwargs '{"num_layers": 1}']

Torch runs on ``--threads`` threads (default 1, printed).  Every time is paired with
its peer in the same rounds (alternating order); on the CPU with one thread the rollout,
module and slot rows are the process's CPU time (bench/timing.py ``process_clock``), so
time spent descheduled on a shared machine does not count.  Still, compare ratios.

0. One rollout step (T=1, 8 rows, input width 8, no grad, default sizes) of every
   chosen module, against a bare ``nn.GRUCell(8, 128)``; modules with a fast path
   also time their reference path (``forward_reference``) in the same rounds.
1. Forward+backward time of one chunk (T=128, B=64, D=64) for every name in
   ``memory.names()``, at width 64 where a module has a width, and of
   ``torch.nn.LSTM(64, 64)`` in the same run; the table gives the ratio to it.
   "resets" repeats the measurement with episode starts inside the chunk
   (each row starts a new episode with probability 1/32 per step), as in RL.
2. If registered: SlotMemory forward+backward (paired with nn.LSTM), no-grad forward
   and its exact top-k scan alone (every slot, every step) at 4,096 and 65,536 slots; DualMemory retrieval at 10,000 and 100,000 long-term slots;
   BitMemory reads and writes per second.

Writes runs/bench/memory_ops.json.  A case that fails (out of memory, an API
that differs) is reported as skipped with the reason instead of stopping the run.
"""

from __future__ import annotations

import argparse
import json
import platform
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from memory_stores import bench_bit, bench_dual
from rollout_step import bench_rollout  # run as a script: bench/ is on sys.path
from timing import format_case, guarded, interleaved_medians, median_seconds, process_clock
from torch import nn

from memworld import memory
from memworld.memory.slot.bank import SlotBank
from memworld.runs import write_results

WIDTH = 64
# Keyword arguments that give a module the benchmark's width (64); others use defaults.
WIDTH_KWARGS: dict[str, dict] = {
    "lstm": {"hidden_dim": WIDTH},
    "gru": {"hidden_dim": WIDTH},
    "window_attention": {"d_model": WIDTH},
    "slot": {"hidden_dim": WIDTH, "slot_dim": WIDTH},
    "gtrxl": {"d_model": WIDTH},
    "lru": {"d_model": WIDTH},
    "fwp": {"d_model": WIDTH},
}


def chunk(steps: int, batch: int, dim: int, device: torch.device, resets: bool):
    """Inputs (T, B, dim) and episode starts (T, B): all rows start at step 0.

    The inputs require grad, as the output of an encoder before the memory would.
    """
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(steps, batch, dim, generator=gen).to(device).requires_grad_(True)
    starts = torch.rand(steps, batch, generator=gen) < (1 / 32 if resets else 0.0)
    starts[0] = True
    return x, starts.to(device)


def lstm_peer_step(args: argparse.Namespace, device: torch.device) -> Callable[[], None]:
    """One fwd+bwd of ``nn.LSTM(dim, 64)`` on a chunk: the reference every module is timed against."""
    torch.manual_seed(0)
    lstm = nn.LSTM(args.dim, WIDTH).to(device)
    x, _ = chunk(args.steps, args.batch, args.dim, device, resets=False)

    def step() -> None:
        lstm.zero_grad(set_to_none=True)
        y, _ = lstm(x)
        y.mean().backward()

    return step


def module_step(
    module: memory.MemoryModule,
    args: argparse.Namespace,
    device: torch.device,
    resets: bool,
    starts: torch.Tensor | None = None,
) -> Callable[[], None]:
    """One fwd+bwd of a chunk; ``starts`` replaces the chunk's episode starts."""
    x, chunk_starts = chunk(args.steps, args.batch, args.dim, device, resets)
    starts = chunk_starts if starts is None else starts

    def step() -> None:
        module.zero_grad(set_to_none=True)
        y, state = module(x, module.initial_state(args.batch, device), starts)
        (y.mean() + module.aux_loss(state)).backward()

    return step


def forward_seconds(module: memory.MemoryModule, args: argparse.Namespace, device) -> float:
    x, starts = chunk(args.steps, args.batch, args.dim, device, resets=False)

    @torch.no_grad()
    def step() -> None:
        module(x, module.initial_state(args.batch, device), starts)

    return median_seconds(step, device, args.repeats)


def on_path(
    module: nn.Module,
    step: Callable[[], None],
    device: torch.device,
    fused_above: float,
    step_loop_above: float,
) -> Callable[[], None]:
    """``step`` with ``module`` (an LSTM or GRU) set to take one of its paths."""

    def run() -> None:
        module.fused_above = fused_above
        module.step_loop_above = {device.type: step_loop_above}
        step()

    return run


def bench_recurrent_paths(args: argparse.Namespace, device: torch.device) -> list[dict]:
    """LSTM/GRU fwd+bwd with ``k`` evenly spaced episode starts in the chunk (``k`` pieces),
    through the split sequence path, the step-by-step cell path and (CPU) the fused
    sequence kernels: the crossovers set ``fused_above`` and ``step_loop_above``
    in memory/recurrent.py."""
    never = float("inf")
    paths = {"split_ms": (never, 1.0), "step_loop_ms": (never, 0.0)}
    if device.type == "cpu":
        paths["fused_ms"] = (0, 1.0)
    rows = []
    for name in ("lstm", "gru"):
        torch.manual_seed(0)
        module = memory.make(name, input_dim=args.dim, hidden_dim=WIDTH).to(device)
        for pieces in (1, 4, 8, 16, 32, 64, args.steps):
            starts = torch.zeros(args.steps, args.batch, dtype=torch.bool, device=device)
            starts[:: max(1, args.steps // pieces), 0] = True
            step = module_step(module, args, device, False, starts)
            fns = {path: on_path(module, step, device, *choice) for path, choice in paths.items()}
            medians = interleaved_medians(fns, device, args.repeats)
            row = {"module": name, "pieces": pieces, **{p: 1e3 * s for p, s in medians.items()}}
            rows.append(row)
            times = ", ".join(f"{p[:-3].replace('_', ' ')} {row[p]:8.2f} ms" for p in paths)
            print(f"  {name} {pieces:4d} pieces: {times}")
    return rows


def bench_modules(args: argparse.Namespace, device: torch.device) -> list[dict]:
    rows = []
    for name in args.modules:

        def case(name: str = name) -> dict:
            torch.manual_seed(0)
            kwargs = WIDTH_KWARGS.get(name, {}) | args.module_kwargs
            module = memory.make(name, input_dim=args.dim, **kwargs)
            module.to(device).train()
            # nn.LSTM is timed again, interleaved with the module: the ratios are paired.
            medians = interleaved_medians(
                {
                    "lstm": lstm_peer_step(args, device),
                    "plain": module_step(module, args, device, resets=False),
                    "resets": module_step(module, args, device, resets=True),
                },
                device,
                args.repeats,
                process_clock(device),
            )
            return {
                "output_dim": module.output_dim,
                "parameters": sum(p.numel() for p in module.parameters()),
                "fwd_bwd_s": medians["plain"],
                "fwd_bwd_resets_s": medians["resets"],
                "nn_lstm_fwd_bwd_s": medians["lstm"],
                "ratio_to_nn_lstm": medians["plain"] / medians["lstm"],
                "ratio_to_nn_lstm_resets": medians["resets"] / medians["lstm"],
            }

        rows.append({"module": name, **guarded(case)})
        print_module_row(rows[-1])
    return rows


def bench_slot(args: argparse.Namespace, device: torch.device) -> list[dict]:
    """SlotMemory fwd+bwd at large slot counts, paired with nn.LSTM, and its floor: the
    exact top-k scan alone (``SlotBank.similarity`` over every slot, once a step)."""
    rows = []
    for num_slots in args.slot_sizes:

        def case(num_slots: int = num_slots) -> dict:
            torch.manual_seed(0)
            module = memory.make(
                "slot", input_dim=args.dim, num_slots=num_slots, **WIDTH_KWARGS["slot"]
            ).to(device)
            heads = module.num_read_heads + module.num_write_heads
            bank = SlotBank(
                torch.randn(args.batch, num_slots, module.slot_dim, device=device),
                *torch.zeros(2, args.batch, num_slots, device=device),
                F.logsigmoid(module.decay_logit.detach()),
                module.usage_decay,
                capacity=1,
            )
            keys = F.normalize(
                torch.randn(args.batch, heads, module.slot_dim, device=device), dim=-1
            )
            medians = interleaved_medians(
                {
                    "lstm": lstm_peer_step(args, device),
                    "plain": module_step(module.train(), args, device, resets=False),
                    "scan": lambda: [bank.similarity(keys) for _ in range(args.steps)],
                },
                device,
                args.repeats,
                process_clock(device),
            )
            return {
                "fwd_bwd_s": medians["plain"],
                "nn_lstm_fwd_bwd_s": medians["lstm"],
                "ratio_to_nn_lstm": medians["plain"] / medians["lstm"],
                "scan_s": medians["scan"],
                "scan_ratio_to_nn_lstm": medians["scan"] / medians["lstm"],
                "forward_no_grad_s": forward_seconds(module.eval(), args, device),
            }

        rows.append({"num_slots": num_slots, **guarded(case)})
        print(f"  slot N={num_slots:>6d}: {format_case(rows[-1])}", flush=True)
    return rows


def print_module_row(row: dict) -> None:
    if not getattr(print_module_row, "header", False):
        cols = ["module", "out", "params", "nn.LSTM ms", "fwd+bwd ms", "x nn.LSTM"]
        cols += ["resets ms", "x nn.LSTM"]
        print(" | ".join(f"{c:>16s}" for c in cols))
        print_module_row.header = True
    if "skipped" in row:
        print(f"{row['module']:>16s} | skipped: {row['skipped']}", flush=True)
        return
    cells = [
        row["module"],
        str(row["output_dim"]),
        f"{row['parameters']:,d}",
        f"{1e3 * row['nn_lstm_fwd_bwd_s']:.2f}",
        f"{1e3 * row['fwd_bwd_s']:.2f}",
        f"{row['ratio_to_nn_lstm']:.2f}x",
        f"{1e3 * row['fwd_bwd_resets_s']:.2f}",
        f"{row['ratio_to_nn_lstm_resets']:.2f}x",
    ]
    print(" | ".join(f"{c:>16s}" for c in cells), flush=True)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="2 repeats instead of --repeats")
    parser.add_argument("--repeats", type=int, default=10, help="timed calls per case (median)")
    parser.add_argument("--steps", type=int, default=128, help="chunk length T")
    parser.add_argument("--batch", type=int, default=64, help="batch B")
    parser.add_argument("--dim", type=int, default=64, help="input width D")
    parser.add_argument("--slot-sizes", type=int, nargs="+", default=[4096, 65536])
    parser.add_argument("--dual-sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--modules",
        nargs="+",
        choices=memory.names(),
        default=memory.names(),
        help="modules to time (default: all); slot/dual/bit extras run only when chosen",
    )
    parser.add_argument(
        "--module-kwargs",
        type=json.loads,
        default={},
        help="forward+backward rows: keyword arguments for every module, e.g. '{\"num_layers\": 1}'",
    )
    parser.add_argument("--out", default="runs/bench/memory_ops.json")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument(
        "--rollout-only", action="store_true", help="time only the rollout-step rows"
    )
    parser.add_argument(
        "--compile",
        action="store_true",
        help="also time the rollout step compiled (modules with a compile argument), and its "
        "first call; set TORCHINDUCTOR_CACHE_DIR to an empty folder for a cold compile",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.repeats = 2
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    print(f"torch threads: {torch.get_num_threads()}")
    rollout = bench_rollout(args, device)
    if args.rollout_only:
        report = {"torch_threads": torch.get_num_threads(), "rollout_step": rollout}
        write_results(Path(args.out), report)
        return report

    print(f"T={args.steps} B={args.batch} D={args.dim} on {device}, median of {args.repeats}")
    lstm_s = median_seconds(lstm_peer_step(args, device), device, args.repeats)
    print(f"nn.LSTM({args.dim}, {WIDTH}) fwd+bwd: {1e3 * lstm_s:.2f} ms")
    report: dict = {
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "device": str(device),
            "torch_threads": torch.get_num_threads(),
        },
        "config": {k: v for k, v in vars(args).items() if k != "out"},
        "nn_lstm_fwd_bwd_s": lstm_s,
        "rollout_step": rollout,
        "modules": bench_modules(args, device),
    }
    if {"lstm", "gru"} & set(args.modules):
        report["recurrent_paths"] = bench_recurrent_paths(args, device)
    if "slot" in args.modules:
        report["slot_memory"] = bench_slot(args, device)
    if "dual" in args.modules:
        report["dual_memory"] = bench_dual(args, device)
    if "bit" in args.modules:
        report["bit_memory"] = bench_bit(args, device)

    out = Path(args.out)
    write_results(out, report)
    print(f"wrote {out}")
    return report


if __name__ == "__main__":
    main()
