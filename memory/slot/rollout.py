"""SlotMemory's rollout step: one step without grad, on a dense copy of the slot bank.

A rollout (``T == 1``, no autograd) needs none of what makes the chunk path of
memory/slot/bank.py cheap in backward: no log of written values, no lazy decay,
no per-slot source positions.  :func:`rollout_step` instead decays the memory
once (``memory * retention``), writes the chosen slots in place and reads them
back, with the same operations in the same order as
:meth:`SlotBank.read_write` so the result equals the reference (the chunk path
run on one step) to float rounding; tests/test_fast_paths.py holds it to that.

The step is a plain function of tensors and the module, so it can be compiled
(memory/compile.py); episode starts are a Python flag (``any_start``) so that a
compiled step has no data-dependent branch.
"""

from __future__ import annotations

from types import ModuleType
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor

from memworld.memory import native
from memworld.memory.base import State
from memworld.memory.compile import CompiledStep
from memworld.memory.derived import derived
from memworld.memory.slot.bank import MemoryIO, last_addressing, sparse_attention
from memworld.memory.slot.controller import TransformerController

if TYPE_CHECKING:
    from memworld.memory.slot.module import SlotMemory

BANK_KEYS = ("memory", "age", "usage")


def tie_breaks(num_slots: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """The write (float64) and read (float32) tie-break ramps of :class:`SlotBank`."""
    ramp = torch.arange(num_slots, dtype=torch.float64, device=device) / num_slots
    return -1e-9 * ramp, (-1e-3 * ramp).float()


def rollout_step(
    module: SlotMemory,
    x: Tensor,
    state: State,
    starts: Tensor,
    any_start: bool,
    write_tie_break: Tensor,
    read_tie_break: Tensor,
) -> tuple[Tensor, State, MemoryIO]:
    """One step of ``module`` without grad.

    Args:
        module: the SlotMemory whose weights are used.
        x: ``(B, input_dim)`` the step's input.
        state: the module's state (batch-first).
        starts: ``(B,)`` bool, rows that start an episode at this step.
        any_start: whether ``starts`` has a True (decides whether resets run).
        write_tie_break, read_tie_break: from :func:`tie_breaks`.

    Returns:
        ``y (B, hidden)``, the next state, and the step's :class:`MemoryIO` (for the
        auxiliary terms).
    """
    batch = x.shape[0]
    hw, h = module.num_write_heads, module.num_read_heads
    usage_decay = module.usage_decay
    memory, age, usage = state["memory"], state["age"], state["usage"]
    carry = {k: v for k, v in state.items() if k not in BANK_KEYS}
    if any_start:
        init = module._initial_carry(batch, x.device)
        carry = {
            k: torch.where(starts.view(-1, *[1] * (v.dim() - 1)), init[k], v)
            for k, v in carry.items()
        }
        if module.reset_on_episode_start:
            memory = memory.masked_fill(starts[:, None, None], 0.0)
            age = age.masked_fill(starts[:, None], 0.0)
            usage = usage.masked_fill(starts[:, None], 0.0)
    # The bank at the start of the step: directions from the stored memory, values decayed once.
    unit = F.normalize(memory, dim=-1)
    mem = memory * torch.exp(F.logsigmoid(module.decay_logit))[:, None]
    age = age + 1.0
    usage = usage * usage_decay

    u = torch.cat([x, carry["read"].flatten(1)], dim=-1)
    ctrl = {k: v for k, v in carry.items() if k.startswith("ctrl_")}
    hidden, ctrl = module.controller.step(u, ctrl)
    heads = module.head_outputs(hidden)

    rows = torch.arange(batch, device=x.device)[:, None]
    keys_unit = F.normalize(torch.cat([heads.write_keys, heads.read_keys], dim=1), dim=-1)
    similarity = torch.bmm(unit, keys_unit.transpose(1, 2)).transpose(1, 2).contiguous()
    staleness = age / (age + module.age_scale) - usage
    write_score = heads.write_strength[..., None] * similarity[:, :hw]
    write_score = write_score + heads.alloc_strength[..., None] * staleness[:, None]
    write_index = (write_score.double() + write_tie_break).topk(module.write_top_k).indices
    write_weights = []
    for j in range(hw):
        index = write_index[:, j]  # (B, k)
        old = mem[rows, index]  # (B, k, D)
        bias = heads.alloc_strength[:, j : j + 1] * staleness.gather(1, index)
        weights = sparse_attention(
            keys_unit[:, j : j + 1], heads.write_strength[:, j : j + 1], old[:, None], bias[:, None]
        )[:, 0]
        gated = heads.write_gate[:, j : j + 1] * weights
        w = gated[..., None]
        new = old * (1.0 - w * heads.erase[:, j, None, :]) + w * heads.add[:, j, None, :]
        mem[rows, index] = new
        unit[rows, index] = F.normalize(new, dim=-1)
        age.scatter_(1, index, age.gather(1, index) * (1.0 - gated))
        usage.scatter_add_(1, index, (1.0 - usage_decay) * gated)
        write_weights.append(weights)

    written = write_index.flatten(1)
    read_score = similarity[:, hw:]
    fresh = torch.bmm(keys_unit[:, hw:], unit[rows, written].transpose(1, 2))
    read_score.scatter_(2, written[:, None, :].expand(-1, h, -1), fresh)
    read_index = read_score.add_(read_tie_break).topk(module.read_top_k).indices
    values = mem[rows, read_index.flatten(1)].view(*read_index.shape, -1)
    read_weights = sparse_attention(keys_unit[:, hw:], heads.read_strength, values)
    read = (read_weights[..., None] * values).sum(dim=2)
    usage.scatter_add_(1, read_index.flatten(1), (1.0 - usage_decay) * read_weights.flatten(1))

    y = hidden + module.fuse(module.read_norm(read).flatten(1))
    io = MemoryIO(read, read_weights, read_index, torch.stack(write_weights, dim=1), write_index)
    new_state = {
        "memory": mem,
        "age": age,
        "usage": usage,
        **ctrl,
        "read": read,
        "read_weights": read_weights,
        "write_rate": usage_decay * carry["write_rate"]
        + (1 - usage_decay) * heads.write_gate.mean(dim=-1),
        **last_addressing(io, heads.write_gate, h, usage),
    }
    return y, new_state, io


def rollout_forward(
    module: SlotMemory, x: Tensor, state: State, episode_starts: Tensor
) -> tuple[Tensor, State]:
    """``module.forward`` for one step without grad: checks, the (maybe compiled) step, and
    the auxiliary terms of the call (as the chunk path keeps them)."""
    module.check_inputs(x, episode_starts, state)
    if "_rollout" not in module.__dict__:  # a module unpickled from before the fast path
        module._rollout = CompiledStep(rollout_step, None, "SlotMemory rollout step")
        module._tie_breaks = {}
    key = (module.num_slots, x.device)
    if key not in module._tie_breaks:
        module._tie_breaks[key] = tie_breaks(module.num_slots, x.device)
    # The C++ step, unless the compiled Python step was asked for (``compile``).
    kernels = None if getattr(module._rollout, "enabled", False) else native.rollout_steps(x)
    if (
        kernels is not None
        and isinstance(module.controller, TransformerController)
        and x.dtype == torch.float32
    ):
        y, new_state, io = native_step(
            kernels, module, x, state, episode_starts, module._tie_breaks[key]
        )
    else:
        starts = episode_starts[0].to(device=x.device, dtype=torch.bool)
        y, new_state, io = module._rollout(
            module, x[0], state, starts, bool(starts.any()), *module._tie_breaks[key]
        )
        y = y.unsqueeze(0)
    module._last_aux = {
        "index": [io.write_index.flatten(1), io.read_index.flatten(1)],
        "weights": [io.write_weights.flatten(1), io.read_weights.flatten(1)],
        "read_weights": [io.read_weights],
        "memory": new_state["memory"],
        "steps": 1,
    }
    return y, new_state


# What the C++ step reads of the state, in its order, and the keys of the state it returns.
NATIVE_STATE_IN = ("memory", "age", "usage", "read", "write_rate", "ctrl_k", "ctrl_v", "ctrl_valid")
NATIVE_STATE_OUT = (
    "memory", "age", "usage", "ctrl_k", "ctrl_v", "ctrl_valid", "read", "read_weights",
    "write_rate", "read_slots", "write_slots",
)  # fmt: skip


def native_step(
    kernels: ModuleType,
    module: SlotMemory,
    x: Tensor,
    state: State,
    episode_starts: Tensor,
    ties: tuple[Tensor, Tensor],
) -> tuple[Tensor, State, MemoryIO]:
    """:func:`rollout_step` in C++ (memory/csrc/slot_step.cpp; transformer controller,
    float32, CPU): the same arithmetic, its products through BLAS and the rest as plain
    loops, sums rounded in another order.  ``x (1, B, input_dim)``, ``episode_starts (1, B)``;
    ``ties`` are :func:`tie_breaks`; returns ``y (1, B, hidden)``, the state and the step's
    :class:`MemoryIO`."""
    flat, offsets, eps, sizes = derived(module, "native_plan", lambda: native_plan(module))
    *outputs, read_index, write_index, write_weights = kernels.slot_step_nograd(
        x, [state[k] for k in NATIVE_STATE_IN], episode_starts, flat, offsets, *ties, eps,
        sizes, module.age_scale, module.usage_decay, module.reset_on_episode_start,
    )  # fmt: skip
    y, *values = outputs
    new_state = dict(zip(NATIVE_STATE_OUT, values))
    io = MemoryIO(
        new_state["read"], new_state["read_weights"], read_index, write_weights, write_index
    )
    return y, new_state, io


def native_plan(module: SlotMemory) -> tuple[Tensor, list[int], list[float], list[int]]:
    """What the C++ step reads, built once per parameter change (memory/derived.py): its 26
    tensors flattened into one (one argument to pass, not 26) and where each starts, three
    layer-norm eps and six sizes."""
    ctrl = module.controller
    layers = [
        ctrl.input_proj, ctrl.norm_attn, ctrl.qkv, ctrl.out_proj, ctrl.position_bias,
        ctrl.norm_mlp, ctrl.mlp[0], ctrl.mlp[2], module.heads, module.bottleneck[0],
        module.bottleneck[2], torch.exp(F.logsigmoid(module.decay_logit)), module.read_norm,
        module.fuse,
    ]  # fmt: skip
    eps = [ctrl.norm_attn.eps, ctrl.norm_mlp.eps, module.read_norm.eps]
    sizes = [
        module.num_read_heads, module.num_write_heads, module.read_top_k, module.write_top_k,
        ctrl.num_heads, module.bottleneck[0].out_features,
    ]  # fmt: skip
    flat, offsets = native.flat_plan(layers)
    return flat, offsets, eps, sizes
