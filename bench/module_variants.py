"""One memory module under several settings, forward+backward, in the same rounds as nn.LSTM.

    python bench/module_variants.py --module gtrxl \\
        --variants '{"max_block": 64}' '{"max_block": 32}' '{"max_block": 16}' \\
        [--steps 128 --batch 64 --dim 64] [--resets] [--repeats 9] [--threads 1]

Each variant is the module built with those keyword arguments (on top of
bench/memory_ops.py's width 64) from the same seed; all of them and ``nn.LSTM(dim, 64)``
are timed in one set of alternating rounds (process CPU time, one thread), so settings
that compute the same (a chunk's piece length, say) can be compared on a busy machine
where separate runs move by 20%.  The outputs of the variants are printed side by side
too (largest difference from the first): settings that should not change the result can
be checked here.  Writes runs/bench/module_variants.json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from memory_ops import WIDTH_KWARGS, chunk, lstm_peer_step, module_step  # bench/ on sys.path
from timing import interleaved_medians, process_clock

from memworld import memory
from memworld.runs import write_results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--module", required=True, choices=memory.names())
    parser.add_argument("--variants", type=json.loads, nargs="+", required=True,
                        help="JSON keyword arguments, one object per variant")  # fmt: skip
    parser.add_argument("--steps", type=int, default=128, help="chunk length T")
    parser.add_argument("--batch", type=int, default=64, help="batch B")
    parser.add_argument("--dim", type=int, default=64, help="input width D")
    parser.add_argument("--resets", action="store_true", help="episode starts, 1/32 a step")
    parser.add_argument("--repeats", type=int, default=9, help="rounds (median)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--out", type=Path, default=Path("runs/bench/module_variants.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device("cpu")
    modules = []
    for variant in args.variants:
        torch.manual_seed(0)
        kwargs = WIDTH_KWARGS.get(args.module, {}) | variant
        modules.append(memory.make(args.module, input_dim=args.dim, **kwargs))
    x, starts = chunk(args.steps, args.batch, args.dim, device, args.resets)
    with torch.no_grad():
        outputs = [m(x, m.initial_state(args.batch), starts)[0] for m in modules]
    differences = [float((y - outputs[0]).abs().max()) for y in outputs]
    fns = {"nn.LSTM": lstm_peer_step(args, device)}
    for variant, module in zip(args.variants, modules):
        fns[json.dumps(variant)] = module_step(module, args, device, args.resets)
    medians = interleaved_medians(fns, device, args.repeats, clock=process_clock(device))
    peer = medians["nn.LSTM"]
    print(f"torch threads {torch.get_num_threads()}; T={args.steps} B={args.batch} "
          f"D={args.dim}{' with resets' if args.resets else ''}; nn.LSTM {1e3 * peer:.2f} ms")  # fmt: skip
    rows = []
    for (name, seconds), difference in zip(list(medians.items())[1:], differences):
        rows.append({"variant": name, "ms": 1e3 * seconds, "x_lstm": seconds / peer,
                     "max_output_difference": difference})  # fmt: skip
        print(f"  {args.module} {name:30s} {1e3 * seconds:8.2f} ms  {seconds / peer:5.2f}x nn.LSTM"
              f"  max |y - first| {difference:.1e}")  # fmt: skip
    write_results(args.out, {"module": args.module, "lstm_ms": 1e3 * peer, "rows": rows})
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
