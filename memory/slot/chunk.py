"""SlotMemory's chunk path with grad (training): the reference's steps, with all work that
does not depend on the recurrent state taken out of the step loop.

:meth:`SlotMemory.forward_reference` runs every layer once a step.  Most of
them do not need to:

- the controller's first layer sees ``[x_t, read_{t-1}]``; its ``x`` columns
  (and bias) are applied to the whole chunk in one product before the loop
  (``controller.prepare``), and a step adds only ``read_{t-1} @ W_read``
  (``controller.step_prepared``, one ``addmm``);
- the heads layer and the bottleneck's first layer both read ``h_t``: their
  weights are stacked once per call, so a step makes one product for both;
- the output ``y_t = h_t + W_fuse(LayerNorm(read_t))`` depends on nothing later
  in the loop: it is applied once to the stacked ``h`` and ``read`` of all steps.

What stays in the loop is what the recurrence needs: the controller on the
last read, the heads, and one step of slot I/O on :class:`SlotBank` (the same
code as the reference, so the slots chosen are the same).  The result equals
``forward_reference`` to float rounding (outputs, states, gradients);
tests/test_fast_paths.py holds it to 1e-5.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor

from memworld.memory.base import State
from memworld.memory.slot.bank import HeadOutputs, SlotBank, last_addressing
from memworld.memory.slot.rollout import BANK_KEYS

if TYPE_CHECKING:
    from memworld.memory.slot.module import SlotMemory


def chunk_forward(
    module: SlotMemory, x: Tensor, state: State, episode_starts: Tensor
) -> tuple[Tensor, State]:
    """``module.forward`` on a chunk ``x (T, B, input_dim)``: equal to ``forward_reference``."""
    module.check_inputs(x, episode_starts, state)
    steps, batch, _ = x.shape
    starts = episode_starts.to(device=x.device, dtype=torch.bool)
    reset_at = starts.any(dim=1).tolist()  # one host sync for the whole chunk
    init = module._initial_carry(batch, x.device) if any(reset_at) else None
    bank = SlotBank(
        state["memory"],
        state["age"],
        state["usage"],
        F.logsigmoid(module.decay_logit),
        module.usage_decay,
        capacity=steps * module.num_write_heads * module.write_top_k,
    )
    carry = {k: v for k, v in state.items() if k not in BANK_KEYS}
    # (T, B, width) the controller's first layer on x; (H * D, width) its read columns.
    projected, read_weight = module.controller.prepare(x)
    first = module.bottleneck[0]
    heads_weight = torch.cat(
        [module.heads.weight, first.weight]
    ).t()  # (hidden, heads + bottleneck)
    heads_bias = torch.cat([module.heads.bias, first.bias])
    hidden, reads, log = [], [], StepLog()
    for t, projected_t in enumerate(projected.unbind(0)):
        if reset_at[t]:
            rows = starts[t]
            carry = {
                k: torch.where(rows.view(-1, *[1] * (v.dim() - 1)), init[k], v)
                for k, v in carry.items()
            }
            if module.reset_on_episode_start:
                bank.reset(rows)
        bank.advance()
        ctrl = {k: v for k, v in carry.items() if k.startswith("ctrl_")}
        h, ctrl = module.controller.step_prepared(
            projected_t, carry["read"].flatten(1), read_weight, ctrl
        )
        heads = head_outputs(module, torch.addmm(heads_bias, h, heads_weight))
        io = bank.read_write(heads, module.read_top_k, module.write_top_k, module.age_scale)
        hidden.append(h)
        reads.append(io.read)
        carry = next_carry(module, ctrl, carry, heads, io)
        log.add(io)
    new_state = log.finish(module, bank, carry, heads, io, steps)
    read = module.read_norm(torch.stack(reads))  # (T, B, H, D)
    return torch.stack(hidden) + module.fuse(read.flatten(2)), new_state


def next_carry(module: SlotMemory, ctrl: State, carry: State, heads: HeadOutputs, io) -> State:
    """The per-episode state after a step: the controller's, the raw read (fed back next
    step), the read weights and the write gate's moving average."""
    return {
        **ctrl,
        "read": io.read,
        "read_weights": io.read_weights.detach(),
        "write_rate": module.usage_decay * carry["write_rate"]
        + (1 - module.usage_decay) * heads.write_gate.detach().mean(dim=-1),
    }


class StepLog:
    """The addressing of every step of a forward call, kept for the call's aux terms."""

    def __init__(self) -> None:
        self.index: list[Tensor] = []
        self.weights: list[Tensor] = []
        self.read_weights: list[Tensor] = []

    def add(self, io) -> None:
        self.index += [io.write_index.flatten(1), io.read_index.flatten(1)]
        self.weights += [io.write_weights.flatten(1), io.read_weights.flatten(1)]
        self.read_weights.append(io.read_weights)

    def finish(
        self, module: SlotMemory, bank: SlotBank, carry: State, heads: HeadOutputs, io, steps: int
    ) -> State:
        """The call's new state (the bank materialised once, the last step's addressing over
        the slots); stores the aux terms on ``module``."""
        memory = bank.materialise()
        carry.update(last_addressing(io, heads.write_gate, module.num_read_heads, bank.usage))
        module._last_aux = {
            "index": self.index,
            "weights": self.weights,
            "read_weights": self.read_weights,
            "memory": memory,
            "steps": steps,
        }
        return {"memory": memory, "age": bank.age, "usage": bank.usage, **carry}


def head_outputs(module: SlotMemory, stacked: Tensor) -> HeadOutputs:
    """:meth:`SlotMemory.head_outputs` from ``stacked`` (B, heads + bottleneck): the heads
    layer's output followed by the bottleneck's first layer's, computed in one product."""
    batch, hw, d = stacked.shape[0], module.num_write_heads, module.slot_dim
    sizes = (*module.head_sizes, stacked.shape[1] - sum(module.head_sizes))
    rk, rs, wk, ws, gate, alloc, erase, squeezed = stacked.split(sizes, dim=-1)
    add = module.bottleneck[2](module.bottleneck[1](squeezed))
    return HeadOutputs(
        read_keys=rk.view(batch, module.num_read_heads, d),
        read_strength=1.0 + F.softplus(rs),
        write_keys=wk.view(batch, hw, d),
        write_strength=1.0 + F.softplus(ws),
        write_gate=torch.sigmoid(gate),
        alloc_strength=F.softplus(alloc),
        erase=torch.sigmoid(erase).view(batch, hw, d),
        add=add.view(batch, hw, d),
    )
