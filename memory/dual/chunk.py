"""DualMemory's fast path: a chunk runs layer by layer, each layer's work batched over time.

A layer's recurrences are its own: the attention cache, the short-term memory
and the long-term store of a layer are read and written only by that layer, and
a layer's input at step ``t`` is the previous layer's output at step ``t``.  So a
chunk of ``T`` steps can run one layer at a time over all ``T`` steps, and in each
layer only what depends on the carried state stays in a step loop:

- self-attention over the cache: its queries, keys and values come from the
  layer's input, so the whole chunk is one batched attention over the cache
  followed by the chunk's own steps (a window of ``attention_window`` per step,
  episode starts masked);
- short-term memory: the write inputs (address query, value, gate) and the read
  query come from the layer's input, so they are computed for the chunk at
  once; the step loop only blends the memory (a few elementwise ops), and the
  ``T`` reads are one batched attention over the ``T`` memories;
- long-term memory: the top-k scan, importance updates, writes and
  consolidations run in a step loop without autograd, recording what each step
  retrieved; the differentiable part of the reads (similarities, softmax,
  weighted values) is then computed for the chunk at once;
- feed-forward block, gates, output norm: batched over the chunk.

Every operation is the reference's (:meth:`memworld.memory.dual.DualMemory.forward_reference`)
applied to more rows at once, so outputs, states and gradients agree with it to
float rounding (tests/test_fast_dual_bit.py).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from memworld.memory.base import State
from memworld.memory.dual.layer import DualMemoryLayer
from memworld.memory.dual.reference import LONG_TERM_KEYS, LTM_FIELDS
from memworld.memory.dual.store import TINY

# Steps whose attention is one matrix product (the score block is (B, heads, block, block + W-1)).
ATTENTION_BLOCK = 64

if TYPE_CHECKING:
    from memworld.memory.dual.module import DualMemory


def chunk_forward(
    module: DualMemory, x: Tensor, state: State, starts: Tensor
) -> tuple[Tensor, State]:
    """DualMemory's forward for a chunk ``x (T, B, D)``; ``starts (T, B)`` bool."""
    steps_total, batch, _ = x.shape
    starts_host = starts.cpu().numpy()  # one sync: resets and consolidations are host-side
    count = state["steps"].cpu().numpy().copy()
    clocks = np.empty((steps_total, batch), dtype=np.int64)  # each row's step count at t
    for t in range(steps_total):
        if module.reset_on_episode_start:
            count[starts_host[t]] = 0
        count += 1
        clocks[t] = count
    schedule = Schedule(module, starts, starts_host, clocks)
    ltm = {k: state[k].clone(memory_format=torch.contiguous_format) for k in LONG_TERM_KEYS}
    ltm["steps"] = torch.from_numpy(clocks[-1]).to(state["steps"])
    h = module.embed(x)  # (T, B, H)
    carry: dict[str, list[Tensor]] = {}
    for i, layer in enumerate(module.layers):
        h, out = layer_chunk(module, layer, i, h, state, ltm, schedule)
        for key, value in out.items():
            carry.setdefault(key, []).append(value)
    new_state = {**ltm, **{k: torch.stack(v, dim=1) for k, v in carry.items()}}
    if module.attention_window:
        new_state["attn_valid"] = schedule.final_valid
        del new_state["attn_valid_layers"]
    return module.out_norm(h), new_state


class Schedule:
    """Per-step facts of a chunk that do not depend on the layer (host and device copies)."""

    def __init__(
        self, module: DualMemory, starts: Tensor, starts_host: np.ndarray, clocks: np.ndarray
    ) -> None:
        self.starts, self.starts_host = starts, starts_host
        self.any_start = starts_host.any(axis=1)  # (T,)
        device = starts.device
        self.clocks = torch.from_numpy(clocks).to(device)  # (T, B) long
        self.write_due = self.clocks % module.ltm_write_interval == 0  # (T, B)
        due = clocks % module.consolidation_interval == 0
        self.consolidate = [
            torch.from_numpy(np.flatnonzero(due[t])).to(device) if due[t].any() else None
            for t in range(len(clocks))
        ]
        self.reset_rows = [
            torch.from_numpy(np.flatnonzero(starts_host[t])).to(device)
            if module.reset_on_episode_start and self.any_start[t]
            else None
            for t in range(len(clocks))
        ]
        # The last episode start at or before each step, -1 if none in the chunk: (T, B).
        index = np.where(starts_host, np.arange(len(clocks))[:, None], -1)
        self.last_start = torch.from_numpy(np.maximum.accumulate(index, axis=0)).to(device)
        self.final_valid: Tensor | None = None


def layer_chunk(
    module: DualMemory,
    layer: DualMemoryLayer,
    i: int,
    h: Tensor,
    state: State,
    ltm: State,
    schedule: Schedule,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Layer ``i`` over the chunk: ``h (T, B, H)`` -> ``(T, B, H)`` and its part of the carry."""
    out: dict[str, Tensor] = {}
    if layer.attention is not None:
        attended, keys, values, valid = attention_chunk(
            layer,
            layer.attn_norm(h),
            state["attn_keys"][:, i],
            state["attn_values"][:, i],
            state["attn_valid"],
            schedule,
        )
        h = h + attended
        out.update(attn_keys=keys, attn_values=values, attn_valid_layers=valid)
        schedule.final_valid = valid
    # Short-term memory: inputs for the chunk at once, the memory blend step by step.
    address, value, query, gate = layer.stm.split_input(layer.stm_norm(h))
    memory = state["stm"][:, i]
    memories, write_addresses = [], []
    # (a . (M + P)) = a . M + (a . P): the slot embeddings' part for the chunk at once, and
    # the 1 / sqrt(H) of the address scores folded into both parts; every step's inputs in
    # the shapes the blend broadcasts them to, made for the chunk at once.
    scale = 1.0 / math.sqrt(layer.stm.dim)
    to_slots = (address @ (layer.stm.slot_embedding.T * scale)).unbind(0)  # T x (B, S)
    # unbind, not address[t]: each indexing backward would zero-fill all of (T, B, H).
    per_step = zip(
        (address * scale).unsqueeze(2).unbind(0),  # (B, 1, H)
        value.unsqueeze(2).unbind(0),  # (B, 1, H)
        gate.unsqueeze(-1).unbind(0),  # (B, 1)
        to_slots,
    )
    for t, (a, c, u, p) in enumerate(per_step):
        if schedule.any_start[t]:
            memory = torch.where(schedule.starts[t].view(-1, 1, 1), 0.0, memory)
        # (B, S); a matrix-vector bmm is slower
        write_address = torch.softmax((memory * a).sum(-1) + p, dim=-1)
        memory = torch.lerp(memory, c, (u * write_address).unsqueeze(-1))  # m + amount (c - m)
        memories.append(memory)
        write_addresses.append(write_address)
    steps, batch, width = h.shape
    slots = memory.shape[1]
    read, read_weights = stm_read(
        layer, torch.stack(memories).view(steps * batch, slots, width), query.reshape(-1, width)
    )
    h = h + read.view(steps, batch, width)
    # Long-term memory: the store's step loop without autograd, the reads' gradient after it.
    z = layer.ltm_norm(h)
    ltm_query, sharp_logit = layer.ltm_query(z).split([layer.ltm_query.out_features - 1, 1], -1)
    sharpness = 1.0 + F.softplus(sharp_logit)  # (T, B, 1)
    q = F.normalize(ltm_query, dim=-1)  # (T, B, Dk)
    found = ltm_steps(module, i, ltm, schedule, ltm_query, q, sharpness, z, gate)
    keys, values, prior, valid = found
    similarity = (keys * q.unsqueeze(2)).sum(dim=-1)  # (T, B, k), differentiable in the query
    logits = sharpness * similarity + prior
    logits = logits.masked_fill(~valid, torch.finfo(logits.dtype).min)
    weights = torch.softmax(logits, dim=-1) * valid
    ltm_read = (weights.unsqueeze(-2) @ values).squeeze(-2)  # (T, B, Dv)
    mix = torch.sigmoid(layer.ltm_gate(torch.cat([z, ltm_read], dim=-1)))
    h = h + mix * layer.ltm_out(ltm_read)
    h = h + layer.ffn(layer.ffn_norm(h))
    last_gate = gate[-1].detach()
    out.update(
        stm=memory,
        stm_read_weights=read_weights.view(steps, batch, slots)[-1].detach(),
        stm_write_weights=last_gate.unsqueeze(-1) * write_addresses[-1].detach(),
        stm_gate=last_gate,
        ltm_hit_similarity=torch.where(valid[-1, :, 0], similarity[-1, :, 0].detach(), 0.0),
    )
    return h, out


def stm_read(layer: DualMemoryLayer, memory: Tensor, query: Tensor) -> tuple[Tensor, Tensor]:
    """The short-term read of ``memory (N, S, H)`` by ``query (N, H)``, with the key and value
    projections moved to the query and the read side: ``q . (W_k m + b_k) = (W_k^T q) . m
    + q . b_k`` (the last term is the same for every slot, so the softmax drops it) and
    ``sum_s w_s (W_v m_s + b_v) = W_v (sum_s w_s m_s) + b_v``.  The reference projects every
    slot of every step; this projects one query and one read per head."""
    stm = layer.stm
    n, heads, dim = query.shape[0], stm.num_heads, stm.dim
    width = dim // heads
    w_keys, w_values = stm.from_memory.weight.view(2, heads, width, dim).unbind(0)
    b_values = stm.from_memory.bias[dim:].view(heads, width)
    q_slots = torch.einsum("nhd,hdj->nhj", query.view(n, heads, width), w_keys)  # (N, nh, H)
    scores = torch.bmm(q_slots, memory.transpose(1, 2)) / math.sqrt(width)  # (N, nh, S)
    weights = torch.softmax(scores, dim=-1)
    mixed = torch.bmm(weights, memory)  # (N, nh, H)
    read = torch.einsum("nhj,hdj->nhd", mixed, w_values) + b_values
    return stm.read_out(read.reshape(n, dim)), weights.mean(dim=1)


@torch.no_grad()
def ltm_steps(
    module: DualMemory,
    i: int,
    ltm: State,
    schedule: Schedule,
    ltm_query: Tensor,
    q: Tensor,
    sharpness: Tensor,
    z: Tensor,
    gate: Tensor,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Layer ``i``'s long-term store through the chunk, in place: per step the top-k scan,
    the importance update and the write, as the reference does them.  Returns what each
    step retrieved, ``(T, B, k, ...)``: keys, values, ``log(importance)`` prior, valid.

    The scan's products ``(sharpness * q_t) . key`` of all ``T`` steps against the
    chunk-start keys are one matrix product ``(B, T, C)``; a write replaces the column
    of the slot it wrote (``T`` products), a reset zeroes the row's, a consolidation
    recomputes them.  The top-k's values are the read logits.  Which rows write at each
    step is known before the loop (the gate and the step counts), so a step writes the
    rows that write and nothing else: every entry they store is gathered for the chunk
    at once, and a step where no row writes skips the write."""
    store = module.layer_store(ltm, i)
    steps, batch, key_dim = q.shape
    q, z = q.detach(), z.detach()
    scaled_q = (sharpness.detach() * q).transpose(0, 1).contiguous()  # (B, T, Dk)
    dots = torch.bmm(scaled_q, store.keys.transpose(1, 2))  # (B, T, C)
    top_k, weight = module.ltm_top_k, module.importance_weight
    capacity = store.capacity
    flat, row_start = flat_stores(module, ltm, batch)
    offsets = row_start + i * capacity  # (B,)
    # Every write of the chunk, in step order: (step, row) pairs and what each stores.
    written = (gate.detach() > module.ltm_write_threshold) & schedule.write_due  # (T, B)
    step_of, row_of = written.nonzero(as_tuple=True)
    counts = written.sum(dim=1).tolist()
    unit_keys = F.normalize(F.normalize(ltm_query.detach(), dim=-1), dim=-1)  # as write() stores
    per_step = [
        part.split(counts)
        for part in (
            row_of,
            offsets[row_of],
            row_of * steps * capacity,  # where the row's (T, C) products start in the flat view
            unit_keys[step_of, row_of],
            z[step_of, row_of],
            schedule.clocks[step_of, row_of].view(-1, 1),
        )
    ]
    key_columns = unit_keys.unsqueeze(-1).unbind(0)  # T x (B, Dk, 1)
    step_columns = torch.arange(steps, device=q.device) * capacity  # (T,)
    keys_out, values_out, prior_out, valid_out = [], [], [], []
    for t in range(steps):
        reset = schedule.reset_rows[t]
        if reset is not None:
            store.clear(reset)
            ltm["ltm_merges"][:, i].index_fill_(0, reset, 0)
            dots.index_fill_(0, reset, 0.0)
        prior = weight * torch.log(store.importance.clamp_min(TINY))  # (B, C)
        best = (dots[:, t] + prior.masked_fill(~store.filled, float("-inf"))).topk(top_k, dim=-1)
        indices = best.indices  # (B, k)
        valid = store.filled.gather(1, indices)
        slots = (indices + offsets.view(-1, 1)).flatten()  # rows of the flat views
        keys_out.append(flat["ltm_keys"].index_select(0, slots).view(batch, top_k, key_dim))
        values_out.append(flat["ltm_values"].index_select(0, slots).view(batch, top_k, -1))
        prior_out.append(prior.gather(1, indices))
        valid_out.append(valid)
        # The scan's values are the logits sharpness * similarity + prior of the k found.
        logits = best.values.masked_fill(~valid, torch.finfo(best.values.dtype).min)
        store.importance.mul_(1.0 - module.importance_decay)
        store.importance.scatter_add_(1, indices, torch.softmax(logits, dim=-1) * valid)
        if counts[t]:
            rows, row_offsets, row_products, key, value, clock = (part[t] for part in per_step)
            position = store.write_positions().index_select(0, rows)  # (n,)
            write_rows(flat, position + row_offsets, key, value, clock, module.initial_importance)
            # The written slots' scan products for every step of the chunk: a column of the
            # (B, T, C) products, addressed as one flat index per (row, step).
            fresh = torch.bmm(scaled_q, key_columns[t]).index_select(0, rows)  # (n, T, 1)
            dots.put_((row_products + position).view(-1, 1) + step_columns, fresh)
        due = schedule.consolidate[t]
        if due is not None:
            module._consolidate_rows(ltm, due, module.consolidation_threshold, layers=(i,))
            dots = torch.bmm(scaled_q, store.keys.transpose(1, 2))
    stack = torch.stack
    return stack(keys_out), stack(values_out), stack(prior_out), stack(valid_out)


def flat_stores(module: DualMemory, ltm: State, batch: int) -> tuple[dict[str, Tensor], Tensor]:
    """The contiguous ``(B, L, C, ...)`` long-term state tensors seen as ``(B * L * C, ...)``
    rows, and where each batch row's slots start (``(B,)``; layer ``i``'s at ``+ i * C``)."""
    rows = batch * module.num_layers * module.ltm_capacity
    flat = {key: ltm[key].view(rows, -1) for key in LTM_FIELDS.values()}
    row_start = torch.arange(batch, device=ltm["steps"].device)
    return flat, row_start * (module.num_layers * module.ltm_capacity)


def write_rows(
    flat: dict[str, Tensor],
    target: Tensor,
    key: Tensor,
    value: Tensor,
    clock: Tensor,
    importance: float,
) -> None:
    """:meth:`LTMBatch.write` of ``n`` entries at the distinct flat rows ``target (n,)``:
    unit keys ``(n, Dk)``, values ``(n, Dv)``, clocks ``(n, 1)``."""
    flat["ltm_keys"].index_copy_(0, target, key)
    flat["ltm_values"].index_copy_(0, target, value)
    flat["ltm_importance"].index_fill_(0, target, importance)
    flat["ltm_written_at"].index_copy_(0, target, clock)
    flat["ltm_filled"].index_fill_(0, target, True)


def attention_chunk(
    layer: DualMemoryLayer,
    z: Tensor,
    cache_keys: Tensor,
    cache_values: Tensor,
    cache_valid: Tensor,
    schedule: Schedule,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Self-attention of every step of ``z (T, B, H)`` over its window: the cache
    ``(B, W-1, H)`` followed by the chunk's own steps.  Returns the output ``(T, B, H)``
    and the cache after the chunk (keys, values ``(B, W-1, H)``, valid ``(B, W-1)``)."""
    attn = layer.attention
    steps, batch, dim = z.shape
    window, heads = attn.window, attn.num_heads
    width, before = dim // heads, window - 1
    q, k, v = attn.qkv(z).chunk(3, dim=-1)  # (T, B, H) each
    all_keys = torch.cat([cache_keys.transpose(0, 1), k])  # (W-1+T, B, H), oldest first
    all_values = torch.cat([cache_values.transpose(0, 1), v])
    # Key s of the joined sequence is valid for step t if it lies in the cache and no episode
    # started in the chunk up to t, or it is a chunk step at or after the last such start.
    base = torch.cat([cache_valid.T > 0.5, cache_valid.new_ones(steps, batch, dtype=torch.bool)])
    position = torch.arange(before + steps, device=z.device) - before  # chunk step of key s
    since = schedule.last_start.masked_fill(schedule.last_start < 0, -before)  # (T, B)
    heads_first = lambda x: x.view(x.shape[0], batch, heads, width).permute(1, 2, 0, 3)  # noqa: E731
    q_h, k_h, v_h = heads_first(q), heads_first(all_keys), heads_first(all_values)  # (B, nh, ., w)
    reads = []
    for lo in range(0, steps, ATTENTION_BLOCK):  # queries lo..hi-1 see keys lo..hi-1+W-1
        hi = min(steps, lo + ATTENTION_BLOCK)
        span = hi - lo + before
        scores = q_h[:, :, lo:hi] @ k_h[:, :, lo : lo + span].transpose(-1, -2)  # (B, nh, t, s)
        offset = (
            torch.arange(span, device=z.device) - torch.arange(hi - lo, device=z.device)[:, None]
        )
        band = (offset >= 0) & (offset <= before)  # (t, s): key s is in step t's window
        bias = attn.position_bias[:, offset.clamp(0, before)]  # (nh, t, s)
        seen = (
            band
            & base[lo : lo + span].T[:, None, :]
            & (position[lo : lo + span] >= since[lo:hi].T[:, :, None])
        )  # (B, t, s)
        scores = (scores / math.sqrt(width) + bias).masked_fill(~seen[:, None], float("-inf"))
        reads.append(torch.softmax(scores, dim=-1) @ v_h[:, :, lo : lo + span])  # (B, nh, t, w)
    read = torch.cat(reads, dim=2).permute(2, 0, 1, 3).reshape(steps, batch, dim)
    # The cache after the chunk: the last W-1 keys, wiped where an episode started after them.
    last = schedule.last_start[-1]  # (B,)
    wiped = (position[steps:, None] < last) & (last >= 0)  # (W-1, B)
    keep = ~wiped.T.unsqueeze(-1)  # (B, W-1, 1)
    new_keys = torch.where(keep, all_keys[steps:].transpose(0, 1), 0.0)
    new_values = torch.where(keep, all_values[steps:].transpose(0, 1), 0.0)
    new_valid = torch.where(keep[..., 0], base[steps:].T.to(cache_valid.dtype), 0.0)
    return attn.out(read), new_keys, new_values, new_valid
