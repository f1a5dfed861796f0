"""The short-term memory and the memory-augmented layer of DualMemory (lmcode-dual-memory.md).

:class:`StepAttention` is causal self-attention of one step over a cache of the
last steps (a KV cache).  :class:`ShortTermMemory` is S slots of width H,
written every step and read by attention.  :class:`DualMemoryLayer` is one of
the document's "MemoryAugmentedLayer"s for a single time step: pre-LayerNorm
residual blocks of self-attention, short-term memory, gated long-term retrieval
and a feed-forward network, in the document's order.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from memworld.memory.dual.store import LTMBatch, Retrieval


class StepAttention(nn.Module):
    """Causal multi-head self-attention of one step over the last ``window`` steps.

    The keys and values of the ``window - 1`` previous steps of the episode are a
    cache carried in the state (oldest first); the step attends to them and to
    itself, with a learned per-head bias for each distance (the position
    information of a recurrent step).  Places before the episode start are
    masked by ``valid``.

    Args:
        dim: H, the input width.
        num_heads: heads (must divide ``dim``).
        window: steps attended to, the current one included (>= 2).
    """

    def __init__(self, dim: int, num_heads: int, window: int) -> None:
        super().__init__()
        self.dim, self.num_heads, self.window = dim, num_heads, window
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        # [:, j]: bias for the key ``window - 1 - j`` steps before the query (j = -1: itself).
        self.position_bias = nn.Parameter(torch.zeros(num_heads, window))

    def forward(
        self, z: Tensor, keys: Tensor, values: Tensor, valid: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        """``z (B, H)``, cache ``keys``/``values (B, W-1, H)``, ``valid (B, W-1)`` float.

        Returns the attention output ``(B, H)`` and the cache moved on one step
        (the oldest step out, this one in).
        """
        batch, heads, width = z.shape[0], self.num_heads, self.dim // self.num_heads
        q, k, v = self.qkv(z).chunk(3, dim=-1)
        all_keys = torch.cat([keys, k.unsqueeze(1)], dim=1)  # (B, W, H)
        all_values = torch.cat([values, v.unsqueeze(1)], dim=1)
        k_heads = all_keys.view(batch, self.window, heads, width).transpose(1, 2)  # (B, nh, W, w)
        v_heads = all_values.view(batch, self.window, heads, width).transpose(1, 2)
        scores = (k_heads @ q.view(batch, heads, width, 1)).squeeze(-1) / math.sqrt(width)
        seen = torch.cat([valid, valid.new_ones(batch, 1)], dim=1) > 0.5  # (B, W)
        scores = (scores + self.position_bias).masked_fill(~seen.unsqueeze(1), float("-inf"))
        weights = torch.softmax(scores, dim=-1)  # (B, nh, W)
        read = (weights.unsqueeze(2) @ v_heads).reshape(batch, self.dim)
        return self.out(read), all_keys[:, 1:], all_values[:, 1:]


class ShortTermMemory(nn.Module):
    """Working memory of ``num_slots`` slots, soft gated writes, multi-head attention reads.

    One step, input ``z (B, H)``, memory ``M (B, S, H)``:

    - write address ``a_i = softmax_i((W_a z) . (M_i + P_i) / sqrt(H))``, with
      learned slot embeddings ``P`` so empty slots are told apart;
    - update gate ``u = sigmoid(w_u . z + b_u)`` (one per row);
    - write projection ``c = W_c z``;
    - soft update ``M_i <- M_i + u * a_i * (c - M_i)``: each slot moves only the
      fraction ``u * a_i <= 1`` toward ``c``, so one step never wipes the memory;
    - read: ``num_heads``-head attention of ``W_q z`` over keys ``W_k M`` and
      values ``W_v M``, then ``W_o``.

    Args:
        dim: H, the slot and input width.
        num_slots: S.
        num_heads: read heads (must divide ``dim``).
    """

    def __init__(self, dim: int, num_slots: int, num_heads: int) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"hidden_dim={dim} must be divisible by num_heads={num_heads}")
        self.dim, self.num_slots, self.num_heads = dim, num_slots, num_heads
        self.slot_embedding = nn.Parameter(torch.randn(num_slots, dim))
        # write address query, write value, read query, update-gate logit: one matmul a step
        self.from_input = nn.Linear(dim, 3 * dim + 1)
        self.from_memory = nn.Linear(dim, 2 * dim)  # read keys and values
        self.read_out = nn.Linear(dim, dim)

    def split_input(self, z: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``(address_query, write_value, read_query)`` each ``(B, H)``, and the gate ``u (B,)``."""
        address, value, query, gate = self.from_input(z).split([self.dim] * 3 + [1], dim=-1)
        return address, value, query, torch.sigmoid(gate.squeeze(-1))

    def write(
        self, memory: Tensor, address_query: Tensor, value: Tensor, gate: Tensor
    ) -> tuple[Tensor, Tensor]:
        """Soft gated update of ``memory (B, S, H)``; returns it and the ``(B, S)`` address."""
        scores = torch.einsum("bh,bsh->bs", address_query, memory + self.slot_embedding)
        address = torch.softmax(scores / math.sqrt(self.dim), dim=-1)  # (B, S)
        amount = (gate.unsqueeze(-1) * address).unsqueeze(-1)  # (B, S, 1), in [0, 1]
        return memory + amount * (value.unsqueeze(1) - memory), address

    def read(self, memory: Tensor, query: Tensor) -> tuple[Tensor, Tensor]:
        """Multi-head attention read: ``(B, H)`` and the head-averaged ``(B, S)`` weights."""
        batch, heads, width = query.shape[0], self.num_heads, self.dim // self.num_heads
        keys, values = self.from_memory(memory).chunk(2, dim=-1)  # (B, S, H) each
        q = query.view(batch, heads, 1, width)
        k = keys.view(batch, self.num_slots, heads, width).transpose(1, 2)  # (B, nh, S, w)
        v = values.view(batch, self.num_slots, heads, width).transpose(1, 2)
        weights = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(width), dim=-1)  # (B, nh, 1, S)
        read = (weights @ v).reshape(batch, self.dim)
        return self.read_out(read), weights.squeeze(2).mean(dim=1)


class LayerStep(NamedTuple):
    """What one layer did in one step, for the module's bookkeeping."""

    stm_gate: Tensor  # (B,) update gate u
    stm_read_weights: Tensor  # (B, S)
    stm_write_weights: Tensor  # (B, S) gate times the write address
    ltm_key: Tensor  # (B, Dk) the normalised query, stored as key when written (detached)
    ltm_value: Tensor  # (B, H) the LayerNormed hidden, stored as value (detached)
    retrieval: Retrieval
    cache: list[Tensor] | None  # the attention cache's keys and values moved on one step


class DualMemoryLayer(nn.Module):
    """One memory-augmented layer for one step: ``h (B, H)`` -> ``h (B, H)``.

    ``h = h + Attn(LN(h))`` over the cached last ``attention_window`` steps (no
    such block when ``attention_window`` is 0); ``h = h + STM(LN(h))``; ``z = LN(h)``; ``h = h + g * W_o(LTM(q(z)))`` with the
    learned gate ``g = sigmoid(W_g [z, read])``; ``h = h + FFN(LN(h))``.  The
    long-term query is ``q = W_q z`` (normalised inside retrieval) with a learned
    sharpness ``1 + softplus(w . z + b)`` (initially 10).
    """

    def __init__(
        self,
        dim: int,
        num_slots: int,
        num_heads: int,
        key_dim: int,
        ffn_mult: int,
        attention_window: int = 0,
    ) -> None:
        super().__init__()
        self.attention = None
        if attention_window:
            self.attn_norm = nn.LayerNorm(dim)
            self.attention = StepAttention(dim, num_heads, attention_window)
        self.stm_norm = nn.LayerNorm(dim)
        self.stm = ShortTermMemory(dim, num_slots, num_heads)
        self.ltm_norm = nn.LayerNorm(dim)
        self.ltm_query = nn.Linear(dim, key_dim + 1)  # query and sharpness logit
        with torch.no_grad():
            self.ltm_query.bias[-1] = math.log(math.expm1(9.0))  # sharpness 1 + 9 at start
        self.ltm_out = nn.Linear(dim, dim)
        self.ltm_gate = nn.Linear(2 * dim, dim)
        self.ffn_norm = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(
            nn.Linear(dim, ffn_mult * dim), nn.GELU(), nn.Linear(ffn_mult * dim, dim)
        )

    def forward(
        self,
        h: Tensor,
        memory: Tensor,
        store: LTMBatch,
        top_k: int,
        importance_weight: float,
        cache: tuple[Tensor, Tensor, Tensor] | None = None,
    ) -> tuple[Tensor, Tensor, LayerStep]:
        """One step: ``h (B, H)``, short-term ``memory (B, S, H)``, this layer's long-term
        store and, with attention, its ``cache = (keys, values, valid)`` (see StepAttention)."""
        new_cache = None
        if self.attention is not None:
            keys, values, valid = cache
            attended, *new_cache = self.attention(self.attn_norm(h), keys, values, valid)
            h = h + attended
        address, value, query, gate = self.stm.split_input(self.stm_norm(h))
        memory, write_address = self.stm.write(memory, address, value, gate)
        stm_read, read_weights = self.stm.read(memory, query)
        h = h + stm_read

        z = self.ltm_norm(h)
        ltm_query, sharp_logit = self.ltm_query(z).split(
            [self.ltm_query.out_features - 1, 1], dim=-1
        )
        sharpness = 1.0 + F.softplus(sharp_logit)  # (B, 1)
        found = store.retrieve(ltm_query.unsqueeze(1), top_k, sharpness, importance_weight)
        read = found.read.squeeze(1)  # (B, H)
        mix = torch.sigmoid(self.ltm_gate(torch.cat([z, read], dim=-1)))
        h = h + mix * self.ltm_out(read)

        h = h + self.ffn(self.ffn_norm(h))
        step = LayerStep(
            stm_gate=gate,
            stm_read_weights=read_weights,
            stm_write_weights=gate.detach().unsqueeze(-1) * write_address.detach(),
            ltm_key=F.normalize(ltm_query.detach(), dim=-1),
            ltm_value=z.detach(),
            retrieval=found,
            cache=new_cache,
        )
        return h, memory, step
