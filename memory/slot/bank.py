"""The slot bank of SlotMemory for one forward call: the write policy, sparse reads, lazy decay.

:meth:`SlotBank.read_write` is one step of memory I/O (see its docstring for the
write policy and the reads); the rest of this file is how it stays cheap.

A forward call over a chunk of ``T`` steps never copies the ``(B, N, D)`` memory
per step.  :class:`SlotBank` keeps

- ``log``: a :class:`~memworld.memory.slot.log.SlotLog` holding the memory at the start
  of the chunk (positions ``[0, N)``, differentiable), a zero vector (position
  ``N``, the value of a slot reset at an episode start) and every slot value
  written during the chunk, appended;
- ``source``: for each slot, the log position of its current value;
- ``ref_step``: the step at which that value was stored.  Decay is lazy: the
  value of slot ``n`` at step ``t`` is ``stored * retention_n ** (t - ref_step)``;
- ``unit``: a no-grad copy of the slot directions, updated in place at written
  slots only; the full top-k scan runs on it without building any graph.

Only the ``k`` selected slots enter autograd, and the log's reads and appends
cost O(k) in backward as in forward, so a chunk's backward is linear in ``T``;
the dense memory is materialised once at the end of the chunk.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from memworld.memory.slot.log import SlotLog


class HeadOutputs(NamedTuple):
    """What the controller asks of the memory in one step (B rows)."""

    read_keys: Tensor  # (B, H, D)
    read_strength: Tensor  # (B, H), >= 1
    write_keys: Tensor  # (B, Hw, D)
    write_strength: Tensor  # (B, Hw), >= 1
    write_gate: Tensor  # (B, Hw), in [0, 1]
    alloc_strength: Tensor  # (B, Hw), >= 0: weight of staleness against content
    erase: Tensor  # (B, Hw, D), in [0, 1]
    add: Tensor  # (B, Hw, D)


class MemoryIO(NamedTuple):
    """What one step of reads and writes did."""

    read: Tensor  # (B, H, D) weighted sum of the read slots, before LayerNorm
    read_weights: Tensor  # (B, H, read_top_k)
    read_index: Tensor  # (B, H, read_top_k)
    write_weights: Tensor  # (B, Hw, write_top_k) softmax weights, before the gate
    write_index: Tensor  # (B, Hw, write_top_k)


class SlotBank:
    """Working copy of a slot memory for one forward call.

    Args:
        memory: ``(B, N, D)`` slot contents at the start of the chunk.
        age: ``(B, N)`` steps since each slot was last written (or reset).
        usage: ``(B, N)`` exponential moving average of head accesses per slot.
        log_retention: ``(N,)`` log of the per-step retention factor of each slot
            (``log sigmoid(decay_logit)``), differentiable.
        usage_decay: factor of the usage moving average (``usage = rho * usage + accesses``).
        capacity: slot writes per row the chunk may make (steps * write heads * write_top_k).
    """

    def __init__(
        self,
        memory: Tensor,
        age: Tensor,
        usage: Tensor,
        log_retention: Tensor,
        usage_decay: float,
        capacity: int,
    ) -> None:
        batch, num_slots, _ = memory.shape
        self.log = SlotLog(memory, capacity)
        self.log_retention = log_retention
        self.usage_decay = usage_decay
        with torch.no_grad():
            self.unit = F.normalize(memory.detach(), dim=-1)  # (B, N, D), updated in place
            self.age = age.detach().clone()
            self.usage = usage.detach().clone()
        self.source = torch.arange(num_slots, device=memory.device).repeat(batch, 1)  # (B, N)
        self.ref_step = torch.full((batch, num_slots), -1.0, device=memory.device)
        self.rows = torch.arange(batch, device=memory.device)[:, None]  # (B, 1) for gathers
        # Offsets of the rows in the flat (B * N, D) view of `unit`: flat index_select and
        # index_copy_ are several times cheaper on the CPU than advanced indexing.
        self.offsets = self.rows * num_slots
        # Lowest index wins ties, so a chunked run picks the same slots as a whole one:
        # exact in float64 for writes; for reads the ties are empty slots at cosine
        # exactly 0, where a small offset stays exact in float32.
        ramp = torch.arange(num_slots, dtype=torch.float64, device=memory.device) / num_slots
        self.write_tie_break = -1e-9 * ramp
        self.read_tie_break = (-1e-3 * ramp).float()
        self.step = -1

    # ------------------------------------------------------------------ time
    def advance(self) -> None:
        """Start the next step: every slot ages by one and its usage decays."""
        self.step += 1
        self.age.add_(1.0)
        self.usage.mul_(self.usage_decay)

    def reset(self, rows: Tensor) -> None:
        """Empty the slots of the rows where ``rows`` (B,) is True (initial state: zeros)."""
        self.source[rows] = self.log.empty
        self.unit[rows] = 0.0
        self.age[rows] = 0.0
        self.usage[rows] = 0.0

    # ------------------------------------------------------------- addressing
    @torch.no_grad()
    def similarity(self, keys_unit: Tensor) -> Tensor:
        """Cosine similarity of unit keys ``(B, H, D)`` with every slot: ``(B, H, N)``, no grad.

        Multiplied as ``unit @ keys^T`` (a tall product over the contiguous slots) and
        transposed: 6 ms a step at 64 rows x 4,096 slots against 12 ms for ``keys @ unit^T``.
        """
        return torch.bmm(self.unit, keys_unit.transpose(1, 2)).transpose(1, 2).contiguous()

    @torch.no_grad()
    def staleness(self, age_scale: float) -> Tensor:
        """``(B, N)`` preference for overwriting: ``age / (age + age_scale) - usage``."""
        return self.age / (self.age + age_scale) - self.usage

    def gather(self, index: Tensor) -> Tensor:
        """Current (decayed) values of slots ``index`` (B, M): ``(B, M, D)``, differentiable."""
        values = self.log.read(self.source.gather(1, index))  # (B, M, D)
        elapsed = self.step - self.ref_step.gather(1, index)  # (B, M) steps since stored
        log_retention = self.log_retention.index_select(0, index.flatten()).view_as(index)
        return values * torch.exp(log_retention * elapsed)[..., None]

    def flat_unit(self) -> Tensor:
        """``(B * N, D)`` view of the slot directions (shares their storage)."""
        return self.unit.view(-1, self.unit.shape[-1])

    # ---------------------------------------------------------------- writes
    def write(
        self, index: Tensor, weights: Tensor, erase: Tensor, add: Tensor, old: Tensor
    ) -> Tensor:
        """Residual gated write ``m = m * (1 - w * erase) + w * add`` on slots ``index``.

        Args:
            index: ``(B, k)`` distinct slots per row.
            weights: ``(B, k)`` write weights (gate times the softmax over the k slots).
            erase: ``(B, D)`` erase factors in [0, 1].
            add: ``(B, D)`` content to add.
            old: ``(B, k, D)`` current values of those slots (from :meth:`gather`).

        Returns:
            ``(B, k, D)`` the new slot values.
        """
        w = weights[..., None]  # (B, k, 1)
        new = old * (1.0 - w * erase[:, None, :]) + w * add[:, None, :]
        positions = self.log.append(new)
        with torch.no_grad():
            self.source.scatter_(1, index, positions.expand_as(index))
            self.ref_step.scatter_(1, index, torch.full_like(weights, float(self.step)))
            unit = F.normalize(new.detach(), dim=-1).flatten(0, 1)
            self.flat_unit().index_copy_(0, (index + self.offsets).flatten(), unit)
            # A full write (w = 1) renews a slot; a soft one renews it in proportion.
            self.age.scatter_(1, index, self.age.gather(1, index) * (1.0 - weights.detach()))
        return new

    @torch.no_grad()
    def record_access(self, index: Tensor, weights: Tensor) -> None:
        """Add head accesses ``weights`` (B, M) on slots ``index`` (B, M) to the usage average."""
        self.usage.scatter_add_(1, index, (1.0 - self.usage_decay) * weights.detach())

    # ------------------------------------------------------------------- step
    def read_write(
        self, heads: HeadOutputs, read_top_k: int, write_top_k: int, age_scale: float
    ) -> MemoryIO:
        """One step of memory I/O: all write heads, then all read heads.

        Write policy: each write head takes the ``write_top_k`` slots with the
        highest ``strength * cos(key, slot) + alloc_strength * staleness``
        (content matching against least-recently-used allocation), weights them
        by the softmax of those scores times its gate, and writes with
        :meth:`write`.  Several write heads choose from the memory as it was at
        the start of the step and write one after the other.  Each read head
        then takes the ``read_top_k`` slots of highest cosine similarity (after
        this step's writes) and reads their softmax-weighted sum.
        """
        hw, h = heads.write_keys.shape[1], heads.read_keys.shape[1]
        keys_unit = F.normalize(torch.cat([heads.write_keys, heads.read_keys], dim=1), dim=-1)
        similarity = self.similarity(keys_unit.detach())  # (B, Hw + H, N), no grad
        staleness = self.staleness(age_scale)  # (B, N)
        with torch.no_grad():
            write_score = heads.write_strength.detach()[..., None] * similarity[:, :hw]
            write_score = (
                write_score + heads.alloc_strength.detach()[..., None] * staleness[:, None]
            )
            write_index = (write_score.double() + self.write_tie_break).topk(write_top_k).indices

        write_weights = []
        for j in range(hw):
            index = write_index[:, j]  # (B, k)
            old = self.gather(index)  # (B, k, D)
            bias = heads.alloc_strength[:, j : j + 1] * staleness.gather(1, index)
            weights = sparse_attention(
                keys_unit[:, j : j + 1],
                heads.write_strength[:, j : j + 1],
                old[:, None],
                bias[:, None],
            )[:, 0]  # (B, k)
            gated = heads.write_gate[:, j : j + 1] * weights
            self.write(index, gated, heads.erase[:, j], heads.add[:, j], old)
            self.record_access(index, gated)
            write_weights.append(weights)

        with torch.no_grad():
            # Scores of the slots just written, from their new directions.
            written = write_index.flatten(1)  # (B, Hw * k)
            read_score = similarity[:, hw:]
            written_unit = self.flat_unit().index_select(0, (written + self.offsets).flatten())
            fresh = torch.bmm(
                keys_unit[:, hw:].detach(), written_unit.view(*written.shape, -1).transpose(1, 2)
            )
            read_score.scatter_(2, written[:, None, :].expand(-1, h, -1), fresh)
            read_index = read_score.add_(self.read_tie_break).topk(read_top_k).indices  # (B, H, k)
        values = self.gather(read_index.flatten(1)).view(*read_index.shape, -1)
        read_weights = sparse_attention(keys_unit[:, hw:], heads.read_strength, values)
        read = (read_weights[..., None] * values).sum(dim=2)  # (B, H, D); tiny bmms are slower
        self.record_access(read_index.flatten(1), read_weights.flatten(1))
        return MemoryIO(
            read, read_weights, read_index, torch.stack(write_weights, dim=1), write_index
        )

    # ----------------------------------------------------------------- state
    def materialise(self) -> Tensor:
        """The dense ``(B, N, D)`` memory at the current step (differentiable).

        One read of every slot's current value, times its decay since it was stored.
        """
        decay = torch.exp(self.log_retention * (self.step - self.ref_step))  # (B, N)
        return self.log.read(self.source) * decay[..., None]


@torch.no_grad()
def last_addressing(io: MemoryIO, write_gate: Tensor, num_read_heads: int, like: Tensor) -> dict:
    """``(B, N)`` read and write weights over the slots in a call's last step.

    ``read_slots``: the read heads' weights, averaged over heads (rows sum to 1);
    ``write_slots``: the write heads' gated weights (``write_gate (B, Hw)``), summed
    over heads.  ``like`` is any ``(B, N)`` tensor of the right dtype and device.
    """
    reads = io.read_weights.flatten(1) / num_read_heads
    writes = (write_gate[..., None] * io.write_weights).flatten(1)
    return {
        "read_slots": torch.zeros_like(like).scatter_add_(1, io.read_index.flatten(1), reads),
        "write_slots": torch.zeros_like(like).scatter_add_(1, io.write_index.flatten(1), writes),
    }


def sparse_attention(
    keys_unit: Tensor, strength: Tensor, values: Tensor, bias: Tensor | None = None
) -> Tensor:
    """Softmax over the k selected slots of ``strength * cos(key, value) (+ bias)``.

    Args:
        keys_unit: ``(B, H, D)`` unit-norm keys.
        strength: ``(B, H)`` key strengths (>= 1).
        values: ``(B, H, k, D)`` the selected slot values.
        bias: optional ``(B, H, k)`` added to the logits (the write policy's staleness term).

    Returns:
        ``(B, H, k)`` weights summing to 1 over k.
    """
    dots = (keys_unit[:, :, None] * values).sum(dim=-1)  # (B, H, k); tiny bmms are slower
    logits = strength[..., None] * dots / values.norm(dim=-1).clamp_min(1e-12)  # strength * cos
    if bias is not None:
        logits = logits + bias
    return torch.softmax(logits, dim=-1)


def slot_utilisation(mean_weights: Tensor, eps: float = 1e-8) -> Tensor:
    """``L_util = -sum_i w_i log(w_i + eps)`` over the last axis (the entropy of slot use).

    ``mean_weights`` (..., N) are addressing weights averaged over heads and steps.
    High values mean many slots are in use; SlotMemory *maximises* it.
    """
    return -(mean_weights * torch.log(mean_weights + eps)).sum(dim=-1)
