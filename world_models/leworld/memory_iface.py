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
"""

from __future__ import annotations

import math

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
        return self.store.initial_state(batch_size, device)

    def encode(self, obs: Tensor) -> Tensor:
        """``(B, obs_dim)`` -> bits ``(B, word_bits)``: 0/1 forward, sigmoid gradient backward."""
        return self.store.encode(obs)

    def write(self, state: dict, bits: Tensor, address: Tensor) -> dict:
        """Store each row's word at its ``address`` ``(B,)`` (in place; returns ``state``)."""
        self.store.write(state, address, bits, inplace=True, wrap=True)  # the pointer rings
        return state

    def range_bits(self, state: dict, address: Tensor) -> Tensor:
        """Bits of the ``range_len`` words from ``address`` ``(B, ...)`` -> ``(B, ..., L, bits)``."""
        return self.store.read(state, address, wrap=True)

    def read_hard(self, state: dict, address: Tensor) -> Tensor:
        """Decoded words of one range per row: ``(B,)`` -> ``(B, range_len, word_dim)``."""
        return self.store.read_vectors(state, address, wrap=True)

    def read_soft(self, state: dict, high_logits: Tensor, low_logits: Tensor) -> Tensor:
        """Differentiable top-k x top-k read: ``(B, 256), (B, 256)`` -> ``(B, range_len, word_dim)``."""
        return self.store.read_soft(state, high_logits, low_logits)

    def reconstruction_loss(self, obs: Tensor) -> Tensor:
        """Autoencoder loss through the straight-through bits (trains the encoder)."""
        return self.store.reconstruction_loss(obs)
