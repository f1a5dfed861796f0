"""The memory interface the LeWorld system uses, on top of ``memory.bit_store.BitStore``.

The system only calls :class:`LeWorldMemory`'s methods: ``initial_state``,
``encode``, ``write``, ``range_bits``, ``read_hard``, ``read_soft``,
``reconstruction_loss``. Everything else is :class:`memory.bit_store.BitStore`:

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

from memory.bit_store import BitStore
from memory.bits import pack_bits, unpack_bits
from world_models.leworld.config import MemoryConfig

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

    def _read_decoded(self, state: dict, address: Tensor, weights: Tensor | None) -> Tensor:
        """Decoded ranges at candidate starts ``address`` ``(B, C)``, summed with ``weights``
        ``(B, C)`` (``None``: one candidate) -> ``(B, range_len, word_dim)``.

        The weights are summed per table row first (``(B, range_len, 1 + writes)``, tiny) and
        then multiply the table: no ``(B, C, range_len, word_dim)`` tensor of decoded words.
        """
        index = self.store.range_index(address, wrap=True)  # (B, C, L)
        batch, _, length = index.shape
        slot = torch.gather(state["slot"], 1, index.flatten(1)).view(index.shape)
        table = self._table(state, batch)
        if weights is None:  # one range: pick its rows
            offsets = torch.arange(batch, device=slot.device)[:, None] * table.shape[1]
            rows = (slot[:, 0] + offsets).flatten()
            return table.reshape(-1, self.word_dim).index_select(0, rows).view(batch, length, -1)
        mix = weights.new_zeros(batch, length, table.shape[1]).scatter_add(
            2, slot.transpose(1, 2), weights[:, None, :].expand(-1, length, -1)
        )
        return torch.bmm(mix, table)

    def range_bits(self, state: dict, address: Tensor) -> Tensor:
        """Bits of the ``range_len`` words from ``address`` ``(B, ...)`` -> ``(B, ..., L, bits)``."""
        return self.store.read(state, address, wrap=True)

    def read_hard(self, state: dict, address: Tensor) -> Tensor:
        """Decoded words of one range per row: ``(B,)`` -> ``(B, range_len, word_dim)``."""
        return self._read_decoded(state, address[:, None], None)

    def read_soft(self, state: dict, high_logits: Tensor, low_logits: Tensor) -> Tensor:
        """Differentiable top-k x top-k read: ``(B, 256), (B, 256)`` -> ``(B, range_len, word_dim)``."""
        addresses, weights = self.store.candidates(high_logits, low_logits)  # (B, C)
        return self._read_decoded(state, addresses, weights)

    def reconstruction_loss(self, obs: Tensor) -> Tensor:
        """Autoencoder loss through the straight-through bits (trains the encoder)."""
        return self.store.reconstruction_loss(obs)
