"""The CPU GRU/LSTM kernels' step loops, C++ against Python, and the LSTM's crossover.

    python bench/rnn_loops.py [--sizes 4x256 4x128 64x64] [--steps 128] [--repeats 9]
                              [--threads 1] [--out runs/bench/rnn_loops.json]

1. Forward+backward of one layer over a chunk (T steps, input 64, resets: each row starts
   an episode with probability 1/32 a step) through memory/fused_rnn.py's kernels with
   their Python step loops and with the C++ ones (memory/native.py), and the unsplit
   ``nn.LSTM``/``nn.GRU`` call on the same weights without resets, for each
   ``BATCHxHIDDEN`` of ``--sizes``; ratios C++ / Python.
2. The LSTM module's chunk path at each size, split at 1 to 32 evenly spaced starts (one
   ``nn.LSTM`` call a piece) against the fused kernel with the C++ loops: where the
   second becomes faster is ``fused_above_loops["cpp"]`` in memory/recurrent.py.

Every time is the process's CPU time (one thread), paired in alternating rounds
(bench/timing.py).  Needs the C++ loops (a C++ compiler and ninja).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from timing import interleaved_medians, process_clock  # run as a script: bench/ on sys.path

from memworld import memory
from memworld.memory import fused_rnn, native
from memworld.runs import write_results

INPUT = 64


def sizes(text: str) -> tuple[int, int]:
    batch, hidden = text.lower().split("x")
    return int(batch), int(hidden)


def with_loops(loops, fn):
    """``fn`` run with the kernels' step loops set to ``loops``."""

    def run() -> None:
        fused_rnn.step_loops = lambda x: loops
        fn()

    return run


def bench_loops(batch: int, hidden: int, steps: int, repeats: int, compiled) -> dict:
    torch.manual_seed(0)
    lstm, gru = torch.nn.LSTM(INPUT, hidden), torch.nn.GRU(INPUT, hidden)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(steps, batch, INPUT, generator=gen, requires_grad=True)
    keep = (torch.rand(steps, batch, 1, generator=gen) > 1 / 32).float()
    h0, c0 = torch.zeros(batch, hidden), torch.zeros(batch, hidden)

    def fused_lstm() -> None:
        out, _ = fused_rnn.LSTMSequence.apply(x, h0, c0, keep, *lstm._flat_weights)
        out.sum().backward()

    def fused_gru() -> None:
        fused_rnn.GRUSequence.apply(x, h0, keep, *gru._flat_weights).sum().backward()

    def torch_lstm() -> None:
        lstm(x)[0].sum().backward()

    def torch_gru() -> None:
        gru(x)[0].sum().backward()

    fns = {
        "lstm_python": with_loops(fused_rnn.PythonLoops, fused_lstm),
        "lstm_cpp": with_loops(compiled, fused_lstm),
        "nn.LSTM": torch_lstm,
        "gru_python": with_loops(fused_rnn.PythonLoops, fused_gru),
        "gru_cpp": with_loops(compiled, fused_gru),
        "nn.GRU": torch_gru,
    }
    cpu = torch.device("cpu")
    medians = interleaved_medians(fns, cpu, repeats, clock=process_clock(cpu))
    return {"batch": batch, "hidden": hidden, **{k: 1e3 * v for k, v in medians.items()}}


def bench_crossover(batch: int, hidden: int, steps: int, repeats: int, compiled) -> list[dict]:
    torch.manual_seed(0)
    module = memory.make("lstm", input_dim=INPUT, hidden_dim=hidden)
    x = torch.randn(steps, batch, INPUT, requires_grad=True)
    state = module.initial_state(batch)
    fused_rnn.step_loops = lambda x: compiled
    rows = []
    for pieces in [p for p in (1, 4, 8, 12, 16, 24, 32) if p <= steps]:
        starts = torch.zeros(steps, batch, dtype=torch.bool)
        starts[:: steps // pieces, 0] = True

        def path(fused_above: float, starts: torch.Tensor = starts):
            def run() -> None:
                module.fused_above = fused_above
                module.zero_grad(set_to_none=True)
                module(x, state, starts)[0].sum().backward()

            return run

        cpu = torch.device("cpu")
        medians = interleaved_medians(
            {"split": path(float("inf")), "fused_cpp": path(0.0)}, cpu, repeats, process_clock(cpu)
        )
        rows.append({"batch": batch, "hidden": hidden, "pieces": pieces, **medians})
        print(
            f"  lstm {batch}x{hidden} {pieces:3d} pieces: split {1e3 * medians['split']:7.2f} ms, "
            f"fused (C++) {1e3 * medians['fused_cpp']:7.2f} ms, "
            f"split / fused {medians['split'] / medians['fused_cpp']:.2f}"
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=sizes, nargs="+", default=[(4, 256), (4, 128), (64, 64)])
    parser.add_argument("--steps", type=int, default=128, help="chunk length T")
    parser.add_argument("--repeats", type=int, default=9, help="rounds per case (median)")
    parser.add_argument("--no-crossover", action="store_true", help="skip part 2")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--out", type=Path, default=Path("runs/bench/rnn_loops.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    compiled = native.loops()
    if compiled is None:
        raise SystemExit("the C++ step loops are unavailable here (see the warning above)")
    print(f"torch threads: {torch.get_num_threads()}; T={args.steps}, input {INPUT}, CPU time")
    loops = []
    for batch, hidden in args.sizes:
        row = bench_loops(batch, hidden, args.steps, args.repeats, compiled)
        loops.append(row)
        print(
            f"{batch:3d}x{hidden:<4d} lstm: python {row['lstm_python']:7.2f} ms, "
            f"C++ {row['lstm_cpp']:7.2f} ms ({row['lstm_cpp'] / row['lstm_python']:.2f}x), "
            f"nn.LSTM unsplit {row['nn.LSTM']:7.2f} ms | gru: python {row['gru_python']:7.2f} ms, "
            f"C++ {row['gru_cpp']:7.2f} ms ({row['gru_cpp'] / row['gru_python']:.2f}x), "
            f"nn.GRU unsplit {row['nn.GRU']:7.2f} ms"
        )
    crossover = []
    if not args.no_crossover:
        for batch, hidden in args.sizes:
            crossover += bench_crossover(batch, hidden, args.steps, args.repeats, compiled)
    write_results(args.out, {"threads": args.threads, "loops": loops, "crossover": crossover})
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
