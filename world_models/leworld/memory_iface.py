"""The memory interface the LeWorld system uses, on top of ``memory.bit.store.BitStore``.

The system only calls :class:`LeWorldMemory`'s methods: ``initial_state``,
``encode``, ``write``, ``range_bits``, ``candidates``, ``read`` (and its
shorthands ``read_hard``, ``read_soft``), ``reconstruction_loss``; a read takes
every SLM's addresses at once, ``(B, N, ...)``. Everything else is
:class:`memworld.memory.bit.store.BitStore`:

- storage: ``num_words`` 32-bit words per batch row, packed as int32, plus
  written flags; unwritten words read as all-zero bits; addresses wrap (a ring);
- a learned codec (observation -> 32 straight-through bits -> observation),
  ~21K parameters at the full preset;
- product-key addressing: ``address = num_low * high + low``; a read returns
  ``range_len`` consecutive decoded words; the training read is soft over the
  top-k high x top-k low candidates (Lample et al. 2019).

Writes are in place: a step's word is stored once and every branch of that
step (paired rewards) reads the same memory.

Reads decode each word once: a write also decodes its word into the state's
``decoded`` table and records the table row in ``slot`` (per address; 0 is the
all-zero word of an unwritten address), and a read gathers rows of that table.
The values and gradients are those of decoding every word read (``BitStore``'s
reads, tested), but a step decodes ``B`` words instead of ``B x top_k^2 x
range_len`` per SLM: the decoder was most of a training step.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from memworld.memory.bit.bits import pack_bits, unpack_bits
from memworld.memory.bit.store import BitStore
from memworld.world_models.leworld.config import MemoryConfig

__all__ = ["LeWorldMemory", "pack_bits", "unpack_bits"]


class LeWorldMemory(nn.Module):
    """Bit storage with a learned codec and product-key range reads (a ``BitStore``).

    Args:
        obs_dim: width of what is written (and of a decoded word).
        config: address bytes, word bits, range, top-k, codec hidden width.
    """

    def __init__(self, obs_dim: int, config: MemoryConfig) -> None:
        super().__init__()
        if config.num_high != config.num_low or config.num_high & (config.num_high - 1):
            raise ValueError(
                f"MemoryConfig.num_high ({config.num_high}) and num_low ({config.num_low}) must be "
                "the same power of two (BitStore splits an address into two equal halves)"
            )
        self.config = config
        self.word_dim = obs_dim
        self.store = BitStore(
            vector_dim=obs_dim,
            addr_bits_per_half=int(math.log2(config.num_high)),
            word_bits=config.word_bits,
            range_len=config.range_len,
            top_k=config.top_k,
            codec_hidden=config.hidden,
        )

    def initial_state(self, batch_size: int, device="cpu") -> dict:
        state = self.store.initial_state(batch_size, device)
        state["slot"] = torch.zeros(
            batch_size, self.config.num_words, dtype=torch.long, device=device
        )
        # (B, 1 + writes, word_dim) from the first write: row 0 the all-zero word, row s write s.
        state["decoded"] = None
        return state

    def encode(self, obs: Tensor) -> Tensor:
        """``(B, obs_dim)`` -> bits ``(B, word_bits)``: 0/1 forward, sigmoid gradient backward."""
        return self.store.encode(obs)

    def write(self, state: dict, bits: Tensor, address: Tensor) -> dict:
        """Store each row's word at its ``address`` ``(B,)`` (in place; returns ``state``)."""
        self.store.write(state, address, bits, inplace=True, wrap=True)  # the pointer rings
        word = self.store.decode(bits.detach())[:, None]  # what a read of it decodes
        state["decoded"] = torch.cat([self._table(state, address.shape[0]), word], dim=1)
        index = torch.remainder(address, self.config.num_words)[:, None]
        state["slot"].scatter_(1, index, state["decoded"].shape[1] - 1)
        return state

    def _table(self, state: dict, batch: int) -> Tensor:
        """The decoded words ``(B, 1 + writes, word_dim)``, row 0 the unwritten (all-zero) word."""
        if state["decoded"] is not None:
            return state["decoded"]
        zero = torch.zeros(1, 1, self.config.word_bits, device=state["slot"].device)
        return self.store.decode(zero).expand(batch, 1, self.word_dim)

    def read(self, state: dict, address: Tensor, weights: Tensor | None = None) -> Tensor:
        """Decoded ranges from start addresses ``(B, ..., C)``, summed over the last axis with
        ``weights`` ``(B, ..., C)`` -> ``(B, ..., range_len, word_dim)``; without weights,
        one range per start: ``(B, ...)`` -> ``(B, ..., range_len, word_dim)``.

        The weights are summed per table row first (``(B, ..., range_len, 1 + writes)``,
        tiny) and then multiply the table: no tensor of every candidate's decoded words.
        """
        index = self.store.range_index(address, wrap=True)  # (B, ..., [C,] L)
        batch, length = index.shape[0], index.shape[-1]
        slot = torch.gather(state["slot"], 1, index.flatten(1)).view(index.shape)
        table = self._table(state, batch)
        rows, width = table.shape[1], self.word_dim
        if weights is None:  # one range per start: pick its rows
            offsets = torch.arange(batch, device=slot.device) * rows
            picked = slot + offsets.view(-1, *[1] * (slot.dim() - 1))
            return table.reshape(-1, width).index_select(0, picked.flatten()).view(*slot.shape, -1)
        lead, starts = weights.shape[:-1], weights.shape[-1]  # (B, ...), C
        slot = slot.view(batch, -1, starts, length).transpose(2, 3)  # (B, R, L, C): R ranges
        spread = weights.view(batch, -1, 1, starts).expand_as(slot)
        mix = weights.new_zeros(batch, slot.shape[1] * length, rows).scatter_add(
            2, slot.flatten(1, 2), spread.flatten(1, 2)
        )
        return torch.bmm(mix, table).view(*lead, length, width)

    def range_bits(self, state: dict, address: Tensor) -> Tensor:
        """Bits of the ``range_len`` words from ``address`` ``(B, ...)`` -> ``(B, ..., L, bits)``."""
        return self.store.read(state, address, wrap=True)

    def read_hard(self, state: dict, address: Tensor) -> Tensor:
        """Decoded words of one range per start: ``(B, ...)`` -> ``(B, ..., range_len, word_dim)``."""
        return self.read(state, address)

    def candidates(self, high_logits: Tensor, low_logits: Tensor) -> tuple[Tensor, Tensor]:
        """Top-k x top-k start addresses and their weights: ``(B, ..., 256)`` x2 -> ``(B, ...,
        C)`` x2, best first (candidate 0 is the argmax address)."""
        lead = high_logits.shape[:-1]
        addresses, weights = self.store.candidates(
            high_logits.reshape(-1, high_logits.shape[-1]),
            low_logits.reshape(-1, low_logits.shape[-1]),
        )
        return addresses.view(*lead, -1), weights.view(*lead, -1)

    def read_soft(self, state: dict, high_logits: Tensor, low_logits: Tensor) -> Tensor:
        """Differentiable top-k x top-k read: ``(B, ..., 256)`` x2 -> ``(B, ..., range_len,
        word_dim)``."""
        return self.read(state, *self.candidates(high_logits, low_logits))

    def reconstruction_loss(self, obs: Tensor) -> Tensor:
        """Autoencoder loss through the straight-through bits (trains the encoder)."""
        return self.store.reconstruction_loss(obs)
