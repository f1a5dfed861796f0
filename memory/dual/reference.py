"""DualMemory's reference path: every layer at each step, the step loop the fast path
(memory/dual/chunk.py) is tested against.  A mixin of :class:`memworld.memory.dual.DualMemory`."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from memworld.memory.base import State
from memworld.memory.dual.store import LTMBatch

LTM_FIELDS = {f: f"ltm_{f}" for f in LTMBatch.FIELDS}  # LTMBatch field -> state key
LONG_TERM_KEYS = (*LTM_FIELDS.values(), "ltm_merges", "steps")


class DualReference:
    """``forward_reference`` and ``step`` of DualMemory (see its docstring for the step)."""

    def forward_reference(
        self, x: Tensor, state: State, episode_starts: Tensor
    ) -> tuple[Tensor, State]:
        """Step by step, every layer at each step: the computation the fast path must equal."""
        self.check_inputs(x, episode_starts, state)
        steps_total, batch, _ = x.shape
        starts = episode_starts.to(device=x.device, dtype=torch.bool)
        # One sync: resets and consolidations are scheduled on the host.
        starts_host = starts.cpu().numpy()
        step_count = state["steps"].cpu().numpy().copy()  # (B,) steps each row has run
        init = self._initial_carry(batch, x.device) if starts_host.any() else None
        # One copy of the long-term stores per call; all later writes are in place on it.
        ltm = {k: state[k].clone() for k in LONG_TERM_KEYS}
        stores = [self.layer_store(ltm, i) for i in range(self.num_layers)]
        carry = {k: v for k, v in state.items() if k not in LONG_TERM_KEYS}
        # unbind, not h_in[t]: each indexing backward would zero-fill all of (T, B, H).
        h_in = self.embed(x).unbind(0)  # T x (B, H)
        outputs = []
        for t in range(steps_total):
            if starts_host[t].any():
                carry = self._start_episodes(carry, ltm, starts[t], starts_host[t], init)
                if self.reset_on_episode_start:
                    step_count[starts_host[t]] = 0
            step_count += 1
            ltm["steps"] += 1
            h, carry = self.step(h_in[t], carry, stores, ltm["steps"])
            outputs.append(self.out_norm(h))
            due = np.flatnonzero(step_count % self.consolidation_interval == 0)
            if due.size:
                self._consolidate_rows(
                    ltm, torch.from_numpy(due).to(x.device), self.consolidation_threshold
                )
        return torch.stack(outputs), {**ltm, **carry}

    def _start_episodes(
        self, carry: State, ltm: State, starts: Tensor, starts_host: np.ndarray, init: State
    ) -> State:
        """The carry with the rows that start an episode (``starts (B,)`` bool, and the same
        on the host) set to ``init``; with ``reset_on_episode_start`` those rows of the
        long-term stores ``ltm`` are zeroed in place too."""
        carry = {
            k: torch.where(starts.view(-1, *[1] * (v.dim() - 1)), init[k], v)
            for k, v in carry.items()
        }
        if self.reset_on_episode_start:
            rows = torch.from_numpy(np.flatnonzero(starts_host)).to(starts.device)
            for value in ltm.values():
                value.index_fill_(0, rows, 0)
        return carry

    def step(
        self, h: Tensor, carry: State, stores: list[LTMBatch], clock: Tensor
    ) -> tuple[Tensor, State]:
        """All layers for one step: ``h (B, H)``; writes the long-term stores in place."""
        write_due = clock % self.ltm_write_interval == 0  # (B,)
        memories, gates, read_weights, write_weights, hits = [], [], [], [], []
        cache_keys, cache_values = [], []
        for i, layer in enumerate(self.layers):
            cache = None
            if self.attention_window:
                cache = (carry["attn_keys"][:, i], carry["attn_values"][:, i], carry["attn_valid"])
            h, memory, io = layer(
                h, carry["stm"][:, i], stores[i], self.ltm_top_k, self.importance_weight, cache
            )
            if io.cache is not None:
                cache_keys.append(io.cache[0])
                cache_values.append(io.cache[1])
            stores[i].mark_reads(io.retrieval, self.importance_decay)
            write = write_due & (io.stm_gate.detach() > self.ltm_write_threshold)
            stores[i].write(io.ltm_key, io.ltm_value, clock, write, self.initial_importance)
            found = io.retrieval
            hits.append(torch.where(found.valid[:, 0, 0], found.similarity[:, 0, 0].detach(), 0.0))
            memories.append(memory)
            gates.append(io.stm_gate.detach())
            read_weights.append(io.stm_read_weights.detach())
            write_weights.append(io.stm_write_weights)
        new_carry = {
            "stm": torch.stack(memories, dim=1),
            "stm_read_weights": torch.stack(read_weights, dim=1),
            "stm_write_weights": torch.stack(write_weights, dim=1),
            "stm_gate": torch.stack(gates, dim=1),
            "ltm_hit_similarity": torch.stack(hits, dim=1),
        }
        if self.attention_window:
            valid = carry["attn_valid"]
            new_carry.update(
                attn_keys=torch.stack(cache_keys, dim=1),
                attn_values=torch.stack(cache_values, dim=1),
                attn_valid=torch.cat([valid[:, 1:], valid.new_ones(valid.shape[0], 1)], dim=1),
            )
        return h, new_carry
