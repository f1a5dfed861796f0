"""Where one memory module's fwd+bwd time goes: the top operators and the host syncs.

    python bench/profile_memory.py [--module slot] [--device cpu|cuda] [--steps 128 --batch 64]
                                   [--rollout]

Runs one warm-up and one profiled fwd+bwd chunk (inputs and episode starts as in
bench/memory_ops.py, with resets) under ``torch.profiler`` and prints the
operators by total self time, the kernel launches per step and, on CUDA, the
device-to-host copies and synchronisations per step (each one stalls the queue).
``--rollout`` profiles ``--steps`` rollout steps instead (T=1, no grad, the state
carried), the path a policy takes while it collects experience.
"""

from __future__ import annotations

import argparse

import torch
from memory_ops import WIDTH_KWARGS, chunk  # run as a script: bench/ is on sys.path
from timing import sync
from torch.profiler import ProfilerActivity, profile

from memworld import memory


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--module", default="slot", choices=memory.names())
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--steps", type=int, default=128)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--rollout", action="store_true", help="one-step calls without grad")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    device = torch.device(args.device)
    torch.manual_seed(0)
    module = memory.make(args.module, input_dim=args.dim, **WIDTH_KWARGS.get(args.module, {}))
    module = module.to(device)
    x, starts = chunk(args.steps, args.batch, args.dim, device, resets=True)

    def step() -> None:
        if args.rollout:
            with torch.no_grad():
                state = module.eval().initial_state(args.batch, device)
                for t in range(args.steps):
                    _, state = module(x[t : t + 1], state, starts[t : t + 1])
            return
        module.zero_grad(set_to_none=True)
        y, state = module(x, module.initial_state(args.batch, device), starts)
        (y.mean() + module.aux_loss(state)).backward()

    step()
    sync(device)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        step()
        sync(device)
    events = prof.key_averages()
    sort = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    print(events.table(sort_by=sort, row_limit=args.top))
    ops = sum(e.count for e in events if e.key.startswith("aten::"))
    print(f"{args.module} on {device}: {ops / args.steps:.0f} aten ops per step")
    if device.type == "cuda":
        launches = sum(e.count for e in events if e.key in ("cudaLaunchKernel", "cuLaunchKernel"))
        stalls = {
            e.key: e.count
            for e in events
            if e.key
            in (
                "cudaStreamSynchronize",
                "cudaDeviceSynchronize",
                "aten::item",
                "aten::_local_scalar_dense",
                "aten::nonzero",
                "cudaMemcpyAsync",
            )
        }
        print(f"kernel launches per step: {launches / args.steps:.0f}")
        print("syncs / copies in the chunk:", stalls)


if __name__ == "__main__":
    main()
