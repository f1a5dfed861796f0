"""SlotMemory's training chunk: fast path against reference, paired with nn.LSTM.

    python bench/slot_chunk.py [--slot-sizes 64 4096] [--repeats 5]

One chunk forward+backward (T=128, B=64, input 64, hidden and slot width 64, the
default transformer controller, no episode starts), timed in the same paired rounds
(alternating order, process CPU time, one torch thread: compare ratios) as

- ``fast``: ``module(x, state, starts)``, memory/slot/chunk.py;
- ``reference``: ``module.forward_reference(x, state, starts)``;
- ``layers alone``: the floor of the step loop without slot I/O: the controller, the
  heads and bottleneck layers and the output fusion on all 128 steps, with a
  stand-in read built from the heads' keys (no scan, no top-k, no slot log);
- ``nn.LSTM(64, 64)`` on the same input, the peer every ratio is taken against.

Writes runs/bench/slot_chunk.json.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from timing import interleaved_medians, process_clock
from torch import nn

from memworld import memory
from memworld.memory.slot.chunk import head_outputs
from memworld.runs import write_results

STEPS, BATCH, WIDTH = 128, 64, 64


def cases(num_slots: int) -> dict:
    """The four timed calls at ``num_slots`` slots."""
    torch.manual_seed(0)
    module = memory.make(
        "slot", input_dim=WIDTH, num_slots=num_slots, hidden_dim=WIDTH, slot_dim=WIDTH
    )
    x = torch.randn(STEPS, BATCH, WIDTH, requires_grad=True)
    starts = torch.zeros(STEPS, BATCH, dtype=torch.bool)
    state = module.initial_state(BATCH)
    lstm = nn.LSTM(WIDTH, WIDTH)

    def chunk(forward) -> None:
        y, _ = forward(x, state, starts)
        (y.sum() + module.aux_loss()).backward()

    def layers_alone() -> None:
        projected, read_weight = module.controller.prepare(x)
        first = module.bottleneck[0]
        weight = torch.cat([module.heads.weight, first.weight]).t()
        bias = torch.cat([module.heads.bias, first.bias])
        ctrl = module.controller.initial_state(BATCH, "cpu")
        read = torch.zeros(BATCH, module.num_read_heads, module.slot_dim)
        hidden, reads = [], []
        for projected_t in projected.unbind(0):
            h, ctrl = module.controller.step_prepared(
                projected_t, read.flatten(1), read_weight, ctrl
            )
            heads = head_outputs(module, torch.addmm(bias, h, weight))
            read = heads.read_keys * heads.read_strength[..., None] + heads.add.mean(1, True)
            hidden.append(h)
            reads.append(read)
        y = torch.stack(hidden) + module.fuse(module.read_norm(torch.stack(reads)).flatten(2))
        y.sum().backward()

    def peer() -> None:
        lstm(x)[0].sum().backward()

    return {
        "fast": lambda: chunk(module.forward),
        "reference": lambda: chunk(module.forward_reference),
        "layers_alone": layers_alone,
        "nn_lstm": peer,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--slot-sizes", type=int, nargs="+", default=[64, 4096])
    parser.add_argument("--repeats", type=int, default=5, help="paired rounds per size (median)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default="runs/bench/slot_chunk.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device("cpu")
    print(f"torch threads: {torch.get_num_threads()}; T={STEPS} B={BATCH} width {WIDTH}")
    rows = []
    for num_slots in args.slot_sizes:
        medians = interleaved_medians(cases(num_slots), device, args.repeats, process_clock(device))
        lstm = medians["nn_lstm"]
        row = {"num_slots": num_slots, **{f"{k}_s": v for k, v in medians.items()}}
        row.update({f"{k}_x_nn_lstm": v / lstm for k, v in medians.items() if k != "nn_lstm"})
        row["reference_over_fast"] = medians["reference"] / medians["fast"]
        rows.append(row)
        print(
            f"N={num_slots:>5d}: nn.LSTM {lstm * 1e3:7.1f} ms | fast {row['fast_x_nn_lstm']:6.1f}x"
            f" | reference {row['reference_x_nn_lstm']:6.1f}x"
            f" | layers alone {row['layers_alone_x_nn_lstm']:5.1f}x"
            f" | reference / fast {row['reference_over_fast']:.2f}",
            flush=True,
        )
    write_results(Path(args.out), {"args": vars(args), "rows": rows})
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
