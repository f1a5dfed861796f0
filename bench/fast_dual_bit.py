"""DualMemory and BitMemory fast paths against their reference paths and a named peer.

    python bench/fast_dual_bit.py [--repeats 5] [--modules dual bit] [--out runs/bench/fast_dual_bit.json]

1. Rollout step: ``T=1``, 8 rows, no grad, input width 8, default sizes, the module in
   eval mode with a state carried over 20 steps first; paired with a bare
   ``nn.GRUCell(8, 128)`` step.
2. Forward+backward of a chunk ``T=128, B=64, D=64`` (training mode, each row starting
   an episode with probability 1/32 a step); paired with ``nn.LSTM(64, 64)``.

Each module runs twice in the same rounds: its fast path (``forward``) and its
reference (``fast_path = False``: ``forward_reference``).  Times are medians of paired
rounds whose order alternates (bench/timing.py); on a shared machine read the ratios.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from timing import interleaved_medians
from torch import nn

from memworld import memory
from memworld.runs import write_results


def module_call(module: memory.MemoryModule, fast: bool, x, state, starts, backward: bool):
    def call() -> None:
        module.fast_path = fast
        if not backward:
            with torch.no_grad():
                module(x, state, starts)
            return
        module.zero_grad(set_to_none=True)
        y, new_state = module(x, state, starts)
        (y.mean() + module.aux_loss(new_state)).backward()

    return call


def rollout_row(name: str, repeats: int) -> dict:
    torch.manual_seed(0)
    cell = nn.GRUCell(8, 128)
    x, h = torch.randn(1, 8, 8), torch.zeros(8, 128)
    module = memory.make(name, input_dim=8).eval()
    state = module.initial_state(8)
    starts = torch.zeros(1, 8, dtype=torch.bool)
    with torch.no_grad():
        for _ in range(20):
            state = module(torch.randn(1, 8, 8), state, starts)[1]

    @torch.no_grad()
    def peer() -> None:
        cell(x[0], h)

    medians = interleaved_medians(
        {
            "peer": peer,
            "fast": module_call(module, True, x, state, starts, backward=False),
            "reference": module_call(module, False, x, state, starts, backward=False),
        },
        torch.device("cpu"),
        repeats,
    )
    return {"case": "rollout step vs nn.GRUCell(8, 128)", "module": name, **ratios(medians)}


def training_row(name: str, repeats: int) -> dict:
    torch.manual_seed(0)
    lstm = nn.LSTM(64, 64)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(128, 64, 64, generator=gen).requires_grad_(True)
    starts = torch.rand(128, 64, generator=gen) < 1 / 32
    starts[0] = True
    module = memory.make(name, input_dim=64, **({"hidden_dim": 64} if name == "bit" else {}))
    module.train()
    state = module.initial_state(64)

    def peer() -> None:
        lstm.zero_grad(set_to_none=True)
        lstm(x)[0].mean().backward()

    medians = interleaved_medians(
        {
            "peer": peer,
            "fast": module_call(module, True, x, state, starts, backward=True),
            "reference": module_call(module, False, x, state, starts, backward=True),
        },
        torch.device("cpu"),
        repeats,
    )
    return {"case": "fwd+bwd T=128 B=64 vs nn.LSTM(64, 64)", "module": name, **ratios(medians)}


def ratios(medians: dict[str, float]) -> dict:
    peer = medians["peer"]
    return {
        "peer_s": peer,
        "fast_s": medians["fast"],
        "reference_s": medians["reference"],
        "fast_x_peer": medians["fast"] / peer,
        "reference_x_peer": medians["reference"] / peer,
        "fast_over_reference": medians["fast"] / medians["reference"],
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=5, help="paired rounds per case (median)")
    parser.add_argument("--modules", nargs="+", default=["dual", "bit"], choices=["dual", "bit"])
    parser.add_argument("--out", default="runs/bench/fast_dual_bit.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    rows = []
    print(f"torch threads {torch.get_num_threads()}, median of {args.repeats} paired rounds")
    for make_row in (rollout_row, training_row):
        for name in args.modules:
            row = make_row(name, args.repeats)
            rows.append(row)
            print(
                f"{row['case']:40s} {name:5s} peer {1e3 * row['peer_s']:8.2f} ms | fast "
                f"{row['fast_x_peer']:6.1f}x | reference {row['reference_x_peer']:6.1f}x | "
                f"fast/reference {row['fast_over_reference']:.2f}",
                flush=True,
            )
    report = {"threads": torch.get_num_threads(), "repeats": args.repeats, "rows": rows}
    write_results(Path(args.out), report)
    print(f"wrote {args.out}")
    return report


if __name__ == "__main__":
    main()
