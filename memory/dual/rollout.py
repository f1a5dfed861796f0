"""DualMemory's rollout step: one step without grad, in fewer torch calls.

At one step a call (a rollout, 8 rows) each torch call costs microseconds from Python,
about as much as its arithmetic.  The reference step (``forward_reference`` at
``T == 1``) spends about half of its ~240 calls on the long-term store: a retrieval
built for many queries at once (broadcasts, an index per gathered field, a second
scan of the prior at the found slots), a write that rewrites every row's slot (read,
blend and store back, five fields) whether or not the row writes, and the
bookkeeping of a step loop.  :func:`rollout_forward` runs each layer's attention,
short-term memory, gates and feed-forward block as the reference does (the same
modules), and the store's work with the chunk path's flat views: one scan with the
prior folded in, the found keys and values gathered by one index each on the state
seen as ``(B * L * C, ...)`` rows, the read logits recomputed as the reference does,
and a write of only the rows that write.  It computes the reference's values
(tests/test_fast_dual_bit.py holds a run of single steps to it, every state field,
with episode starts, evictions, consolidations, one and two layers, with and without
attention, and persistence across episodes).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from memworld.memory.base import State
from memworld.memory.dual.chunk import flat_stores, write_rows
from memworld.memory.dual.reference import LONG_TERM_KEYS
from memworld.memory.dual.store import TINY

if TYPE_CHECKING:
    from memworld.memory.dual.layer import DualMemoryLayer
    from memworld.memory.dual.module import DualMemory


def rollout_forward(
    module: DualMemory, x: Tensor, state: State, episode_starts: Tensor
) -> tuple[Tensor, State]:
    """``module.forward`` for ``x (1, B, input_dim)`` without grad (see the module docstring)."""
    module.check_inputs(x, episode_starts, state)
    batch = x.shape[1]
    starts = episode_starts[0].to(device=x.device, dtype=torch.bool)
    starts_host = starts.cpu().numpy()  # one sync, as the reference's
    # One copy of the long-term stores; every write below is in place on it.
    ltm = {k: state[k].clone(memory_format=torch.contiguous_format) for k in LONG_TERM_KEYS}
    carry = {k: v for k, v in state.items() if k not in LONG_TERM_KEYS}
    if starts_host.any():
        init = module._initial_carry(batch, x.device)
        carry = module._start_episodes(carry, ltm, starts, starts_host, init)
    ltm["steps"] += 1
    clock = ltm["steps"]
    write_due = clock % module.ltm_write_interval == 0  # (B,)
    capacity = module.ltm_capacity
    flat, row_start = flat_stores(module, ltm, batch)  # layer i's slots at row_start + i * C
    h = module.embed(x[0])  # (B, H)
    outputs: dict[str, list[Tensor]] = {}
    for i, layer in enumerate(module.layers):
        store_io = partial(retrieve_and_write, module, i, ltm, flat, row_start + i * capacity)
        h = layer_step(module, layer, i, h, carry, partial(store_io, write_due), outputs)
    new_carry = {key: torch.stack(values, dim=1) for key, values in outputs.items()}
    if module.attention_window:
        valid = carry["attn_valid"]
        new_carry["attn_valid"] = torch.cat([valid[:, 1:], valid.new_ones(batch, 1)], dim=1)
    due = np.flatnonzero(ltm["steps"].cpu().numpy() % module.consolidation_interval == 0)
    if due.size:
        rows = torch.from_numpy(due).to(x.device)
        module._consolidate_rows(ltm, rows, module.consolidation_threshold)
    return module.out_norm(h)[None], {**ltm, **new_carry}


def layer_step(
    module: DualMemory,
    layer: DualMemoryLayer,
    i: int,
    h: Tensor,
    carry: State,
    long_term: Callable[[Tensor, Tensor, Tensor, Tensor], tuple[Tensor, Tensor, Tensor]],
    outputs: dict[str, list[Tensor]],
) -> Tensor:
    """Layer ``i`` for one step, ``h (B, H)``: returns the new ``h`` and appends this layer's
    part of the carry to ``outputs``.  ``long_term(q, sharpness, z, gate)`` is the layer's
    store I/O (:func:`retrieve_and_write`; bench/rollout_step.py times the layers alone
    with a stub), returning the read, the found similarities and their valid flags."""
    if layer.attention is not None:
        cache = (carry["attn_keys"][:, i], carry["attn_values"][:, i], carry["attn_valid"])
        attended, keys, values = layer.attention(layer.attn_norm(h), *cache)
        h = h + attended
        outputs.setdefault("attn_keys", []).append(keys)
        outputs.setdefault("attn_values", []).append(values)
    address, value, query, gate = layer.stm.split_input(layer.stm_norm(h))
    memory, write_address = layer.stm.write(carry["stm"][:, i], address, value, gate)
    stm_read, read_weights = layer.stm.read(memory, query)
    h = h + stm_read
    z = layer.ltm_norm(h)
    ltm_query, sharp_logit = layer.ltm_query(z).split([module.key_dim, 1], dim=-1)
    sharpness = 1.0 + F.softplus(sharp_logit)  # (B, 1)
    q = F.normalize(ltm_query, dim=-1)  # (B, Dk)
    read, similarity, valid = long_term(q, sharpness, z, gate)
    mix = torch.sigmoid(layer.ltm_gate(torch.cat([z, read], dim=-1)))
    h = h + mix * layer.ltm_out(read)
    h = h + layer.ffn(layer.ffn_norm(h))
    for key, part in (
        ("stm", memory),
        ("stm_read_weights", read_weights),
        ("stm_write_weights", gate.unsqueeze(-1) * write_address),
        ("stm_gate", gate),
        ("ltm_hit_similarity", torch.where(valid[:, 0], similarity[:, 0], 0.0)),
    ):
        outputs.setdefault(key, []).append(part)
    return h


def retrieve_and_write(
    module: DualMemory,
    i: int,
    ltm: State,
    flat: dict[str, Tensor],
    offsets: Tensor,
    write_due: Tensor,
    q: Tensor,
    sharpness: Tensor,
    z: Tensor,
    gate: Tensor,
) -> tuple[Tensor, Tensor, Tensor]:
    """Layer ``i``'s long-term store for one step: the top-k read of the unit query ``q
    (B, Dk)``, the importance update and the write of the rows that write.  Returns the
    read ``(B, Dv)``, the found similarities ``(B, k)`` and their valid flags."""
    store = module.layer_store(ltm, i)
    top_k = module.ltm_top_k
    prior = module.importance_weight * torch.log(store.importance.clamp_min(TINY))  # (B, C)
    scan = torch.baddbmm(
        prior.masked_fill(~store.filled, float("-inf")).unsqueeze(1),
        (sharpness * q).unsqueeze(1),
        store.keys.transpose(1, 2),
    )  # (B, 1, C): sharpness * (q . k) + prior, empty slots -inf
    indices = scan.squeeze(1).topk(top_k, dim=-1).indices  # (B, k)
    valid = store.filled.gather(1, indices)
    slots = (indices + offsets.view(-1, 1)).flatten()  # rows of the flat views
    keys = flat["ltm_keys"].index_select(0, slots).view(*indices.shape, -1)
    values = flat["ltm_values"].index_select(0, slots).view(*indices.shape, -1)
    similarity = (keys * q.unsqueeze(1)).sum(dim=-1)  # (B, k)
    logits = sharpness * similarity + prior.gather(1, indices)
    logits = logits.masked_fill(~valid, torch.finfo(logits.dtype).min)
    weights = torch.softmax(logits, dim=-1) * valid
    read = (weights.unsqueeze(1) @ values).squeeze(1)  # (B, Dv)
    store.importance.mul_(1.0 - module.importance_decay)
    store.importance.scatter_add_(1, indices, weights)
    rows = (write_due & (gate > module.ltm_write_threshold)).nonzero().flatten()
    if rows.numel():
        write_rows(
            flat,
            store.write_positions().index_select(0, rows) + offsets.index_select(0, rows),
            F.normalize(q.index_select(0, rows), dim=-1),
            z.index_select(0, rows),
            ltm["steps"].index_select(0, rows)[:, None],
            module.initial_importance,
        )
    return read, similarity, valid
