"""Bit-level word storage with a learned bit codec and product-key addressing (leworld-slm-blm.md).

The document's "Artificial Memory" is RAM: 64K words x 32 bits, accessed by
address ranges, plus a ~21K-parameter learned encoder/decoder between vectors
and bits.  :class:`BitStore` is that memory, usable on its own (the LeWorld
system calls it directly) and inside :class:`memworld.memory.bit.BitMemory`.

Storage.  A state is a dict of batch-first tensors, one memory per row:

- ``words``   ``(B, num_words)`` int32: the packed words; bit ``j`` of a word
  is ``(word >> j) & 1`` (bit 31 is the sign bit of the int32);
- ``written`` ``(B, num_words)`` bool: which words were ever written since the
  row's last reset (an unwritten word reads as all-zero bits).

64 rows of 65,536 words cost 16 MiB of words (plus 4 MiB of flags).

Addressing.  An address is a high half and a low half of ``addr_bits_per_half``
bits each: ``address = half_size * high + low`` with ``half_size = 2 **
addr_bits_per_half``; the default 8 + 8 bits give 65,536 addresses from
256 + 256 logits.  The hard address is the argmax of each half.  The soft read
is Product Key Memory's (Lample et al. 2019): the top-k highs x the top-k lows
give k*k candidate addresses, scored ``high_logit + low_logit`` (the argmax
address always among them) and weighted by a softmax over those scores; with
``keep`` set, only the best ``keep`` candidates are read (PKM keeps k).

Ranges and the end of memory.  An access covers ``range_len`` (1..num_words)
consecutive words from its start address; the memory is a ring, so a range
that runs past the last word continues at word 0.  A start address must be an
integer in ``[0, num_words)`` (others are refused) unless the call passes
``wrap=True``, which takes addresses modulo ``num_words`` (for a step-counting
write pointer).  A write never loses data silently: longer than memory is refused.

Gradients.  Stored words are integers: nothing flows back through storage.
:meth:`encode` is straight-through (hard 0/1 forward, sigmoid gradient
backward), so the encoder learns from :meth:`reconstruction_loss`; the decoder
learns from that loss and from whatever consumes a read; the address logits
learn through the soft read's candidate weights.

Where the document is vague, and what was chosen:

- It gives the total (21K) but not the layout: one hidden layer each way,
  ``vector -> hidden -> 32 logits`` and ``32 bits -> hidden -> vector``, with
  ``vector_dim=64, codec_hidden=108`` giving 21,048 parameters.  The decoder
  sees bits as +-1, so an all-zero word is not a zero input.
- Range length 8, top-k 4 are this repository's defaults.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from memworld.memory.base import State, check_positive_int, check_range
from memworld.memory.bit.bits import (
    BitCodec,
    pack_bits,
    product_address,
    product_candidates,
    unpack_bits,
)


class BitStore(nn.Module):
    """Packed bit memory (``num_words`` x ``word_bits`` per row) with a learned codec.

    Args:
        vector_dim: width of the vectors the codec encodes and decodes (default 64).
        addr_bits_per_half: bits of each address half; ``num_words = 4 ** addr_bits_per_half``
            (default 8: 256 high x 256 low = 65,536 words).
        word_bits: bits per word, at most 32 (default 32).
        range_len: words one access covers by default (default 8).
        top_k: candidates per address half in the soft read (default 4: 16 addresses).
        keep: how many of the top_k**2 candidates the soft read keeps, best first
            (default None: all; Product Key Memory keeps top_k).
        codec_hidden: hidden width of the encoder and of the decoder (default 108:
            21,048 codec parameters at ``vector_dim=64``, the document's ~21K).

    State tensors are described in the module docstring; every method takes and
    returns such a dict and never changes its input unless ``inplace=True``.
    """

    def __init__(
        self,
        vector_dim: int = 64,
        addr_bits_per_half: int = 8,
        word_bits: int = 32,
        range_len: int = 8,
        top_k: int = 4,
        keep: int | None = None,
        codec_hidden: int = 108,
    ) -> None:
        super().__init__()
        for name, value in (
            ("addr_bits_per_half", addr_bits_per_half),
            ("range_len", range_len),
            ("top_k", top_k),
        ):
            check_positive_int(name, value)
        if addr_bits_per_half > 12:
            raise ValueError(
                f"addr_bits_per_half={addr_bits_per_half} means {4**addr_bits_per_half:,} words "
                "per row; use at most 12 (16.7M words)"
            )
        self.half_size = 2**addr_bits_per_half
        self.num_words = self.half_size**2
        if range_len > self.num_words:
            raise ValueError(f"range_len={range_len} exceeds num_words={self.num_words}")
        if top_k > self.half_size:
            raise ValueError(f"top_k={top_k} exceeds the address half size {self.half_size}")
        if keep is not None and not 1 <= keep <= top_k**2:
            raise ValueError(f"keep must be in 1..top_k**2={top_k**2} or None (all), got {keep}")
        self.addr_bits_per_half = addr_bits_per_half
        self.vector_dim = vector_dim
        self.word_bits = word_bits
        self.range_len = range_len
        self.top_k = top_k
        self.keep = keep
        self.codec = BitCodec(vector_dim, word_bits, codec_hidden)

    # ----------------------------------------------------------------- state
    def initial_state(self, batch_size: int, device: torch.device | str = "cpu") -> State:
        """All-zero words, nothing written: ``words (B, N)`` int32, ``written (B, N)`` bool."""
        n = self.num_words
        return {
            "words": torch.zeros(batch_size, n, dtype=torch.int32, device=device),
            "written": torch.zeros(batch_size, n, dtype=torch.bool, device=device),
        }

    def reset_rows(self, state: State, starts: Tensor) -> State:
        """Rows where ``starts`` (B,) is True back to zero words, nothing written."""
        rows = starts.view(-1, 1)
        return {
            **state,
            "words": torch.where(rows, torch.zeros_like(state["words"]), state["words"]),
            "written": torch.where(rows, torch.zeros_like(state["written"]), state["written"]),
        }

    # ----------------------------------------------------------------- codec
    def encode(self, vectors: Tensor) -> Tensor:
        """``(..., vector_dim)`` -> bits ``(..., word_bits)``: 0/1 forward, sigmoid gradient backward."""
        return self.codec.encode(vectors)

    def decode(self, bits: Tensor) -> Tensor:
        """``(..., word_bits)`` -> ``(..., vector_dim)``."""
        return self.codec.decode(bits)

    def reconstruction_loss(self, vectors: Tensor) -> Tensor:
        """Mean squared error of ``decode(encode(v))`` against ``v`` (trains encoder and decoder)."""
        return (self.decode(self.encode(vectors)) - vectors).square().mean()

    # ------------------------------------------------------------ addressing
    def address(self, high_logits: Tensor, low_logits: Tensor) -> Tensor:
        """Hard address ``half_size * argmax(high) + argmax(low)``, ``(B,)`` long."""
        self._check_logits(high_logits, low_logits)
        return product_address(high_logits, low_logits)

    def candidates(
        self,
        high_logits: Tensor,
        low_logits: Tensor,
        k: int | None = None,
        keep: int | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Soft-read candidates, best first: addresses ``(B, C)`` and softmax weights ``(B, C)``.

        ``k`` and ``keep`` default to the store's ``top_k`` and ``keep``.
        """
        self._check_logits(high_logits, low_logits)
        k = self.top_k if k is None else k
        check_range("k", k, 1, self.half_size, integer=True, fix="None uses top_k")
        return product_candidates(high_logits, low_logits, k, self.keep if keep is None else keep)

    def _check_logits(self, high_logits: Tensor, low_logits: Tensor) -> None:
        h = self.half_size
        if high_logits.shape[-1] != h or low_logits.shape[-1] != h:
            raise ValueError(
                f"address logits must have {h} entries per half (addr_bits_per_half="
                f"{self.addr_bits_per_half}), got {high_logits.shape[-1]} and {low_logits.shape[-1]}"
            )

    def range_index(
        self, address: Tensor, range_len: int | None = None, wrap: bool = False, what="range_len"
    ) -> Tensor:  # ``what`` names the length in errors
        """``(B, ...)`` start addresses -> ``(B, ..., range_len)`` word indices (a range wraps at
        the end of memory).  Addresses outside ``[0, num_words)`` are refused unless ``wrap``."""
        n, length = self.num_words, self.range_len if range_len is None else range_len
        fix = "None uses the store's range_len" if what == "range_len" else "split the write"
        check_range(what, length, 1, n, integer=True, fix=fix)
        if address.is_floating_point() or address.is_complex() or address.dtype == torch.bool:
            raise ValueError(f"address must be an integer tensor, got {address.dtype}; use .long()")
        outside = None if wrap else (address < 0) | (address >= n)
        if outside is not None and bool(outside.any()):  # one host sync
            raise ValueError(
                f"address must be in [0, {n - 1}] (num_words={n}), got {address[outside][0]}; "
                "pass wrap=True to take addresses modulo num_words (a ring)"
            )
        offsets = torch.arange(length, device=address.device)
        return torch.remainder(address.long()[..., None] + offsets, n)

    # ---------------------------------------------------------------- writes
    def write(
        self, state: State, address: Tensor, bits: Tensor, inplace: bool = False, wrap: bool = False
    ) -> State:
        """Store hard bits at ``address`` (B,): one word ``(B, W)`` or a range ``(B, L, W)``.

        A range fills ``address, address + 1, ...`` (continuing at word 0 past the
        end).  Bits may be float (rounded at 0.5) or bool; no gradient is stored.
        ``wrap``: take addresses modulo ``num_words`` instead of refusing them.
        """
        if bits.dim() == 2:
            bits = bits[:, None]  # (B, 1, W)
        batch, length, width = bits.shape
        if width != self.word_bits or address.shape != (batch,):
            raise ValueError(
                f"write needs address (B,) and bits (B, W) or (B, L, W) with W={self.word_bits}, "
                f"got address {tuple(address.shape)} and bits {tuple(bits.shape)}"
            )
        return self.write_words(state, address, pack_bits(bits), inplace=inplace, wrap=wrap)

    def write_words(
        self,
        state: State,
        address: Tensor,
        words: Tensor,
        inplace: bool = False,
        wrap: bool = False,
    ) -> State:
        """Store packed int32 words (see :func:`pack_bits`) at ``address`` (B,): ``(B,)`` or ``(B, L)``."""
        if words.dim() == 1:
            words = words[:, None]  # (B, 1)
        index = self.range_index(address, words.shape[1], wrap, "number of words written")  # (B, L)
        stored = state["words"] if inplace else state["words"].clone()
        written = state["written"] if inplace else state["written"].clone()
        stored.scatter_(1, index, words.to(torch.int32))
        written.scatter_(1, index, True)
        return {**state, "words": stored, "written": written}

    def write_vectors(
        self, state: State, address: Tensor, vectors: Tensor, inplace: bool = False
    ) -> State:
        """Encode ``(B, vector_dim)`` or ``(B, L, vector_dim)`` and :meth:`write` the bits."""
        return self.write(state, address, self.encode(vectors), inplace=inplace)

    # ----------------------------------------------------------------- reads
    def read(
        self, state: State, address: Tensor, range_len: int | None = None, wrap: bool = False
    ) -> Tensor:
        """Bits of the ranges starting at ``address`` ``(B, ...)`` -> ``(B, ..., L, W)`` float 0/1."""
        index = self.range_index(address, range_len, wrap)  # (B, ..., L)
        words = torch.gather(state["words"], 1, index.flatten(1)).view(index.shape)
        return unpack_bits(words, self.word_bits)

    def is_written(
        self, state: State, address: Tensor, range_len: int | None = None, wrap: bool = False
    ) -> Tensor:
        """Whether each word of the ranges at ``address`` ``(B, ...)`` was written: ``(B, ..., L)`` bool."""
        index = self.range_index(address, range_len, wrap)
        return torch.gather(state["written"], 1, index.flatten(1)).view(index.shape)

    def read_vectors(
        self, state: State, address: Tensor, range_len: int | None = None, wrap: bool = False
    ) -> Tensor:
        """Decoded ranges at ``address`` ``(B, ...)`` -> ``(B, ..., L, vector_dim)``."""
        return self.decode(self.read(state, address, range_len, wrap))

    def read_hard(
        self, state: State, high_logits: Tensor, low_logits: Tensor, range_len: int | None = None
    ) -> Tensor:
        """Decoded range at the argmax address: ``(B, H), (B, H)`` -> ``(B, L, vector_dim)``."""
        address = self.address(high_logits, low_logits)  # in range: no check needed
        return self.read_vectors(state, address, range_len, wrap=True)

    def read_soft(
        self,
        state: State,
        high_logits: Tensor,
        low_logits: Tensor,
        k: int | None = None,
        range_len: int | None = None,
        keep: int | None = None,
    ) -> Tensor:
        """Differentiable read: softmax-weighted sum of the top-k x top-k candidate ranges.

        ``(B, H), (B, H)`` -> ``(B, L, vector_dim)``; equals :meth:`read_hard`
        when the logits are peaked enough that one candidate takes all the weight.
        """
        addresses, weights = self.candidates(high_logits, low_logits, k, keep)
        decoded = self.read_vectors(state, addresses, range_len, wrap=True)  # (B, C, L, V)
        return torch.einsum("bc,bclv->blv", weights, decoded)

    # ----------------------------------------------------------- statistics
    @torch.no_grad()
    def fraction_written(self, state: State) -> float:
        return float(state["written"].float().mean())

    @torch.no_grad()
    def bit_error(self, state: State, max_words: int = 4096) -> float:
        """Fraction of bits that change when (up to ``max_words``) written words are decoded and re-encoded."""
        words = state["words"][state["written"]][:max_words]
        if words.numel() == 0:
            return 0.0
        bits = unpack_bits(words, self.word_bits)
        return float((self.encode(self.decode(bits)) != bits).float().mean())

    def extra_repr(self) -> str:
        return (
            f"num_words={self.num_words} ({self.half_size}x{self.half_size}), "
            f"word_bits={self.word_bits}, range_len={self.range_len}, top_k={self.top_k}, "
            f"keep={self.keep}, "
            f"codec_params={sum(p.numel() for p in self.codec.parameters()):,}"
        )
