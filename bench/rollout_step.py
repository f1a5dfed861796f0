"""One rollout step of each memory module against a bare ``nn.GRUCell(8, 128)``.

    python bench/rollout_step.py [--modules gru lstm slot ...] [--repeats 21] [--compile]
                                 [--threads 1] [--device cpu|cuda]

A rollout step is what a policy runs while it collects experience: T=1, 8 rows, input
width 8, no grad, the module at its default sizes carrying its state over 20 steps a
round.  Each module is paired round by round (alternating order) with the GRU cell and,
where it has a fast path, with its reference (``forward_reference``, through
``reference_mode``); on the CPU with one thread the times are the process's CPU time
(bench/timing.py ``process_clock``).  Floor rows time part of a step by itself: for
``slot`` its controller, heads and output layers, for ``bit`` its codec, controller and
heads, for ``dual`` its layers and, apart, the copy of its long-term fields that a new
state needs (through torch's modules from Python: the floor of a Python step; the C++
steps of ``slot`` and ``bit``, memory/csrc/, run below theirs); ``--compile`` also times the compiled step and its first
call (set ``TORCHINDUCTOR_CACHE_DIR`` to an empty folder for a cold compile).  Each row
also counts the torch operations one step issues (``torch.profiler``, top-level aten
calls): at 8 rows each costs microseconds whatever its arithmetic, so the count is the
step's floor without fusing them.
bench/memory_ops.py prints the same rows before its forward+backward table.
"""

from __future__ import annotations

import argparse
import inspect
import time
from collections.abc import Callable
from pathlib import Path

import torch
from timing import count_torch_calls, guarded, interleaved_medians, process_clock
from torch import Tensor, nn

from memworld import memory
from memworld.memory.base import reference_mode
from memworld.runs import write_results

ROLLOUT_INPUT, ROLLOUT_ROWS, ROLLOUT_STEPS = 8, 8, 20


def rollout_fn(module: nn.Module, device: torch.device) -> Callable[[], None]:
    """``ROLLOUT_STEPS`` rollout steps of a module (T=1, 8 rows, no grad), carrying its state."""
    gen = torch.Generator().manual_seed(0)
    xs = torch.randn(ROLLOUT_STEPS, 1, ROLLOUT_ROWS, ROLLOUT_INPUT, generator=gen).to(device)
    starts = torch.zeros(ROLLOUT_STEPS, 1, ROLLOUT_ROWS, dtype=torch.bool, device=device)
    box = [module.initial_state(ROLLOUT_ROWS, device)]

    @torch.no_grad()
    def run() -> None:
        state = box[0]
        for x, s in zip(xs, starts):
            _, state = module(x, state, s)
        box[0] = state

    return run


def cell_fn(device: torch.device) -> Callable[[], None]:
    """``ROLLOUT_STEPS`` steps of a bare ``nn.GRUCell(8, 128)`` on 8 rows, no grad: the peer."""
    torch.manual_seed(0)
    cell = nn.GRUCell(ROLLOUT_INPUT, 128).to(device)
    xs = torch.randn(ROLLOUT_STEPS, ROLLOUT_ROWS, ROLLOUT_INPUT, device=device)

    @torch.no_grad()
    def run() -> None:
        h = torch.zeros(ROLLOUT_ROWS, 128, device=device)
        for x in xs:
            h = cell(x, h)

    return run


def torch_calls(module: nn.Module, device: torch.device) -> int:
    """Top-level aten operations of one rollout step of ``module`` (after a warm-up step,
    so one-time caches are not counted), the input checks included."""
    x = torch.zeros(1, ROLLOUT_ROWS, ROLLOUT_INPUT, device=device)
    starts = torch.zeros(1, ROLLOUT_ROWS, dtype=torch.bool, device=device)
    with torch.no_grad():
        _, state = module(x, module.initial_state(ROLLOUT_ROWS, device), starts)
        return count_torch_calls(lambda: module(x, state, starts))


def slot_neural_fn(module: nn.Module, device: torch.device) -> Callable[[], None]:
    """``ROLLOUT_STEPS`` steps of SlotMemory's layers alone (controller step, heads, read
    LayerNorm and fusion), no slot I/O: what any implementation of the step must compute."""
    gen = torch.Generator().manual_seed(0)
    width = module.input_dim + module.num_read_heads * module.slot_dim
    u = torch.randn(ROLLOUT_ROWS, width, generator=gen).to(device)
    read = torch.randn(ROLLOUT_ROWS, module.num_read_heads, module.slot_dim, generator=gen)
    read = read.to(device)
    state = module.initial_state(ROLLOUT_ROWS, device)
    ctrl = {k: v for k, v in state.items() if k.startswith("ctrl_")}

    @torch.no_grad()
    def run() -> None:
        for _ in range(ROLLOUT_STEPS):
            h, _ = module.controller.step(u, ctrl)
            module.head_outputs(h)
            h + module.fuse(module.read_norm(read).flatten(1))

    return run


def dual_copy_fn(module: nn.Module, device: torch.device) -> Callable[[], None]:
    """``ROLLOUT_STEPS`` copies of DualMemory's long-term fields of an 8-row state, nothing
    else: what a step that returns a new state and leaves the old one as it was must do,
    since every row's store changes (the importance of the slots read) at every step."""
    from memworld.memory.dual.reference import LONG_TERM_KEYS

    state = module.initial_state(ROLLOUT_ROWS, device)
    fields = [state[key] for key in LONG_TERM_KEYS]

    def run() -> None:
        for _ in range(ROLLOUT_STEPS):
            for field in fields:
                field.clone()

    return run


def bit_layers_fn(module: nn.Module, device: torch.device) -> Callable[[], None]:
    """``ROLLOUT_STEPS`` steps of BitMemory's layers alone (the codec's encoding of the input
    and decoding of one read range, the controller cell, the read head and the fusion), no
    store I/O: what any implementation of the step must compute."""
    gen = torch.Generator().manual_seed(0)
    store = module.store
    x = torch.randn(ROLLOUT_ROWS, module.input_dim, generator=gen).to(device)
    read = torch.randn(ROLLOUT_ROWS, module.read_dim, generator=gen).to(device)
    h = torch.zeros(ROLLOUT_ROWS, module.hidden_dim, device=device)
    shape = (ROLLOUT_ROWS, store.range_len, store.word_bits)
    bits = torch.randint(0, 2, shape, generator=gen).float().to(device)

    @torch.no_grad()
    def run() -> None:
        for _ in range(ROLLOUT_STEPS):
            store.encode(x)
            hidden = module.controller(torch.cat([x, read], dim=-1), h)
            module.read_head(hidden)
            store.decode(bits)
            hidden + module.fuse(read)

    return run


def dual_layers_fn(module: nn.Module, device: torch.device) -> Callable[[], None]:
    """``ROLLOUT_STEPS`` steps of DualMemory's layers alone, as its rollout step runs them
    (memory/dual/rollout.py's ``layer_step``: the self-attention over the cache, the
    short-term write and read, the long-term query and sharpness, the read gate and
    projection, the feed-forward block; the input embedding and the output norm), with the
    long-term store I/O replaced by a stub: what any implementation of the step must compute."""
    from memworld.memory.dual.rollout import layer_step

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(ROLLOUT_ROWS, module.input_dim, generator=gen).to(device)
    found = (
        torch.randn(ROLLOUT_ROWS, module.hidden_dim, generator=gen).to(device),  # the read
        torch.zeros(ROLLOUT_ROWS, module.ltm_top_k, device=device),  # similarities
        torch.ones(ROLLOUT_ROWS, module.ltm_top_k, dtype=torch.bool, device=device),  # valid
    )
    state = module.initial_state(ROLLOUT_ROWS, device)

    def no_store(*_: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        return found

    @torch.no_grad()
    def run() -> None:
        for _ in range(ROLLOUT_STEPS):
            h = module.embed(x)
            for i, layer in enumerate(module.layers):
                h = layer_step(module, layer, i, h, state, no_store, {})
            module.out_norm(h)

    return run


# Floor rows: what parts of a module's step cost by themselves, and what each row prints.
FLOORS = {
    "slot": [(slot_neural_fn, "controller+heads+output alone")],
    "dual": [(dual_layers_fn, "layers alone"), (dual_copy_fn, "long-term fields' copy alone")],
    "bit": [(bit_layers_fn, "codec+controller+heads alone")],
}


def bench_rollout(args: argparse.Namespace, device: torch.device) -> list[dict]:
    """One rollout step (T=1, 8 rows, no grad) of every module at its default sizes, input
    width 8, paired round by round with a bare ``nn.GRUCell(8, 128)``; for modules with a
    fast path, its reference (``forward_reference``) in the same rounds."""
    rows = []
    print(f"rollout step, T=1, {ROLLOUT_ROWS} rows, no grad, x nn.GRUCell(8, 128):")
    for name in args.modules:

        def case(name: str = name) -> dict:
            torch.manual_seed(0)
            module = memory.make(name, input_dim=ROLLOUT_INPUT).to(device).eval()
            fns = {"cell": cell_fn(device), "module": rollout_fn(module, device)}
            has_reference = (
                type(module).forward_reference is not memory.MemoryModule.forward_reference
            )
            if has_reference:
                reference = rollout_fn(module, device)

                def run_reference() -> None:
                    with reference_mode(module):
                        reference()

                fns["reference"] = run_reference
            floors = FLOORS.get(name, [])
            for j, (floor_fn, _) in enumerate(floors):
                fns[f"floor{j}"] = floor_fn(module, device)
            compile_row = {}
            if args.compile and "compile" in inspect.signature(type(module).__init__).parameters:
                torch.manual_seed(0)
                twin = memory.make(name, input_dim=ROLLOUT_INPUT, compile=True).to(device).eval()
                fns["compiled"] = rollout_fn(twin, device)
                wall, cpu = time.perf_counter(), time.process_time()
                fns["compiled"]()  # the first call compiles (one graph per episode-start case)
                compile_row = {
                    "first_call_wall_s": time.perf_counter() - wall,
                    "first_call_cpu_s": time.process_time() - cpu,
                }
            medians = interleaved_medians(fns, device, args.repeats, process_clock(device))
            row = {
                "cell_step_s": medians["cell"] / ROLLOUT_STEPS,
                "step_s": medians["module"] / ROLLOUT_STEPS,
                "ratio_to_gru_cell": medians["module"] / medians["cell"],
                "torch_calls": torch_calls(module, device),
            }
            if floors:
                row["floors"] = [
                    {
                        "what": label,
                        "step_s": medians[f"floor{j}"] / ROLLOUT_STEPS,
                        "ratio_to_gru_cell": medians[f"floor{j}"] / medians["cell"],
                    }
                    for j, (_, label) in enumerate(floors)
                ]
            if "compiled" in medians:
                row["compiled_step_s"] = medians["compiled"] / ROLLOUT_STEPS
                row["compiled_ratio_to_gru_cell"] = medians["compiled"] / medians["cell"]
                row.update(compile_row)
            if has_reference:
                row["reference_step_s"] = medians["reference"] / ROLLOUT_STEPS
                row["reference_ratio_to_gru_cell"] = medians["reference"] / medians["cell"]
            return row

        rows.append({"module": name, **guarded(case)})
        row = rows[-1]
        if "skipped" in row:
            print(f"  {name:>16s}: skipped ({row['skipped']})", flush=True)
            continue
        ref = ""
        if "reference_step_s" in row:
            ref = (
                f"   reference {1e6 * row['reference_step_s']:8.0f} us "
                f"{row['reference_ratio_to_gru_cell']:6.2f}x"
            )
        for floor in row.get("floors", []):
            ref += f"   {floor['what']} {floor['ratio_to_gru_cell']:6.2f}x"
        if "compiled_step_s" in row:
            ref += (
                f"   compiled {1e6 * row['compiled_step_s']:8.0f} us "
                f"{row['compiled_ratio_to_gru_cell']:6.2f}x (first call "
                f"{row['first_call_wall_s']:.1f} s wall, {row['first_call_cpu_s']:.1f} s CPU)"
            )
        print(
            f"  {name:>16s}: nn.GRUCell {1e6 * row['cell_step_s']:6.0f} us   "
            f"module {1e6 * row['step_s']:8.0f} us {row['ratio_to_gru_cell']:6.2f}x "
            f"({row['torch_calls']} torch calls){ref}",
            flush=True,
        )
    return rows


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--modules", nargs="+", choices=memory.names(), default=memory.names())
    parser.add_argument("--repeats", type=int, default=21, help="paired rounds (median)")
    parser.add_argument("--compile", action="store_true", help="also time the compiled step")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", default="runs/bench/rollout_step.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"torch threads: {torch.get_num_threads()}")
    rows = bench_rollout(args, torch.device(args.device))
    write_results(Path(args.out), {"torch_threads": torch.get_num_threads(), "rows": rows})
    print(f"wrote {args.out}")
    return rows


if __name__ == "__main__":
    main()
