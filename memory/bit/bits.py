"""Bits and product-key addresses for :class:`memworld.memory.bit.store.BitStore` (leworld-slm-blm.md).

Packing 0/1 bits into int32 words and back, straight-through hard bits, product-key
addresses (``num_low * high + low``) and their top-k candidates, and the learned
vector <-> bits codec.  See memory/bit/store.py for the store and the choices made.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from memworld.memory.base import check_positive_int

MAX_WORD_BITS = 32


def pack_bits(bits: Tensor) -> Tensor:
    """``(..., W)`` 0/1 bits (float or bool, ``W <= 32``) -> ``(...)`` int32 words.

    Bit ``j`` has weight ``2**j``; bit 31 becomes the int32 sign bit.  Values are
    rounded to the nearest of 0/1 (a straight-through bit is exactly 0 or 1).
    """
    width = bits.shape[-1]
    if width > MAX_WORD_BITS:
        raise ValueError(f"words hold at most 32 bits, got {width}; use word_bits <= 32")
    shifts = torch.arange(width, device=bits.device, dtype=torch.int64)
    packed = ((bits.detach() > 0.5).long() << shifts).sum(-1)  # exact in int64: < 2**32
    # Two's complement into int32, written out so it does not rely on a narrowing cast.
    return torch.where(packed >= 2**31, packed - 2**32, packed).to(torch.int32)


def unpack_bits(words: Tensor, word_bits: int = MAX_WORD_BITS) -> Tensor:
    """``(...)`` int32 words -> ``(..., word_bits)`` float 0/1 bits (inverse of :func:`pack_bits`)."""
    shifts = torch.arange(word_bits, device=words.device, dtype=torch.int64)
    # int64 keeps the sign-extended bit 31 exact under the arithmetic shift.
    return ((words.long()[..., None] >> shifts) & 1).float()


def straight_through_bits(logits: Tensor) -> Tensor:
    """Hard ``logits > 0`` bits forward, the sigmoid's gradient backward."""
    probs = torch.sigmoid(logits)
    return (logits > 0).float() + (probs - probs.detach())  # exactly 0/1 forward


def product_address(high_logits: Tensor, low_logits: Tensor) -> Tensor:
    """Hard address ``half_size * argmax(high) + argmax(low)``: ``(B, H), (B, H)`` -> ``(B,)`` long."""
    return high_logits.argmax(-1) * low_logits.shape[-1] + low_logits.argmax(-1)


def product_candidates(
    high_logits: Tensor, low_logits: Tensor, k: int, keep: int | None = None
) -> tuple[Tensor, Tensor]:
    """Product Key Memory's top-k x top-k candidates and their softmax weights.

    ``(B, H), (B, H)`` -> addresses ``(B, C)`` long and weights ``(B, C)`` (rows
    sum to 1; ``softmax(high_logit + low_logit)`` over the candidates), best
    first, so candidate 0 is the hard :func:`product_address`.  ``C = k*k``, or
    ``keep`` when given: the best ``keep`` of the k*k, as PKM keeps k.
    """
    half = low_logits.shape[-1]
    if not 1 <= k <= min(half, high_logits.shape[-1]):
        raise ValueError(f"top_k must be in 1..{half} (the size of an address half), got {k}")
    if keep is not None and not 1 <= keep <= k * k:
        raise ValueError(f"keep must be in 1..top_k**2={k * k} or None (all), got {keep}")
    top_high, index_high = high_logits.topk(k, dim=-1)  # (B, k), sorted
    top_low, index_low = low_logits.topk(k, dim=-1)
    scores = (top_high[:, :, None] + top_low[:, None, :]).flatten(1)  # (B, k*k)
    addresses = (index_high[:, :, None] * half + index_low[:, None, :]).flatten(1)
    scores, order = scores.topk(keep or k * k, dim=-1)  # best first
    return addresses.gather(1, order), torch.softmax(scores, dim=-1)


def logits_entropy(logits: Tensor) -> Tensor:
    """Entropy (nats) of ``softmax(logits)`` over the last axis: ``(..., H)`` -> ``(...)``."""
    log_p = torch.log_softmax(logits, dim=-1)
    return -(log_p.exp() * log_p).sum(-1)


def address_entropy(high_logits: Tensor, low_logits: Tensor) -> Tensor:
    """Entropy (nats) of the product distribution over all addresses: ``H(high) + H(low)``, ``(B,)``."""
    return logits_entropy(high_logits) + logits_entropy(low_logits)


class BitCodec(nn.Module):
    """Vector <-> bits: ``vector -> hidden -> word_bits`` logits and ``bits -> hidden -> vector``.

    Args:
        vector_dim: width of an encoded/decoded vector.
        word_bits: bits per word (<= 32).
        hidden: hidden width of the encoder and of the decoder.
    """

    def __init__(self, vector_dim: int, word_bits: int = 32, hidden: int = 108) -> None:
        super().__init__()
        for name, value in (
            ("vector_dim", vector_dim),
            ("word_bits", word_bits),
            ("hidden", hidden),
        ):
            check_positive_int(name, value)
        if word_bits > MAX_WORD_BITS:
            raise ValueError(f"word_bits must be <= 32 (one int32 per word), got {word_bits}")
        self.encoder = nn.Sequential(
            nn.Linear(vector_dim, hidden), nn.GELU(), nn.Linear(hidden, word_bits)
        )
        self.decoder = nn.Sequential(
            nn.Linear(word_bits, hidden), nn.GELU(), nn.Linear(hidden, vector_dim)
        )

    def encode(self, vectors: Tensor) -> Tensor:
        """``(..., vector_dim)`` -> straight-through bits ``(..., word_bits)``."""
        return straight_through_bits(self.encoder(vectors))

    def decode(self, bits: Tensor) -> Tensor:
        """``(..., word_bits)`` 0/1 bits -> ``(..., vector_dim)``."""
        return self.decoder(2.0 * bits - 1.0)
