"""BitMemory's fast path: what does not depend on the controller state runs once a chunk.

- The controller's input projection of ``x_t`` (the GRU's ``W_ih`` on the input part
  of ``[x_t, read_{t-1}]``) is one matrix product for the chunk; the step loop adds
  the read part and runs the GRU's gates.
- Decoding: a word is a 32-bit integer, and the decoder is a function of its bits,
  so every distinct word the chunk can read (those in the state's store and those
  the chunk writes) is decoded once, into a table; the store keeps, per address,
  the table row of its word, and a read gathers table rows.  The reference decodes
  every candidate word of every step (``B x candidates x range_len`` words a step).

Every value is the reference's (:meth:`memworld.memory.bit.BitMemory.forward_reference`)
computed in another order, so outputs, states and gradients agree to float rounding
(tests/test_fast_dual_bit.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from memworld.memory.base import State
from memworld.memory.bit.bits import address_entropy, pack_bits, unpack_bits

if TYPE_CHECKING:
    from memworld.memory.bit.module import BitMemory


def chunk_forward(
    module: BitMemory, x: Tensor, state: State, starts: Tensor
) -> tuple[Tensor, State]:
    """BitMemory's forward for a chunk ``x (T, B, D)``; ``starts (T, B)`` bool."""
    store, cell = module.store, module.controller
    steps, batch, dim = x.shape
    # The rows that start at each step, from one host sync for the whole chunk: a reset
    # zeroes those rows of the (B, N) store only, not a masked fill of all of it.
    counts = starts.sum(dim=1).tolist()
    start_rows = starts.nonzero()[:, 1].split(counts) if any(counts) else None
    bits = store.encode(x)  # (T, B, W), straight-through
    module._last_recon = (store.decode(bits) - x).square().mean()
    packed = pack_bits(bits)  # (T, B) int32
    words, written = state["words"].clone(), state["written"].clone()
    # The table of decoded words: every distinct word stored now or written by the chunk,
    # when that is fewer words than the chunk's reads decode (not for one rollout step).
    reads_per_step = (store.keep if module.training else 1) * store.range_len
    table = row_of = row_written = row_zero = sink = None
    if int(written.sum()) + steps * batch < steps * batch * reads_per_step:
        known = torch.cat([words.flatten(), packed.flatten(), packed.new_zeros(1)])
        distinct, inverse = torch.unique(known, return_inverse=True)
        table = store.decode(unpack_bits(distinct, store.word_bits))  # (U, V)
        if table.requires_grad:  # every step's reads add their gradient to the table once
            sink = []
            table = TableTap.apply(table, sink)
        row_of = inverse[: words.numel()].view_as(words)  # (B, N) table row of each address
        row_written = inverse[words.numel() : -1].view(steps, batch)  # (T, B)
        row_zero = inverse[-1]  # the all-zero word: what an unwritten (or reset) address reads
    # GRU input projection: the x part for the chunk at once, the read part in the loop.
    w_x, w_read = cell.weight_ih.split([dim, module.read_dim], dim=1)
    gates_x = (x @ w_x.T + cell.bias_ih).unbind(0)  # T x (B, 3H)
    h, read, pointer = state["h"], state["read"], state["pointer"]
    hidden, reads = [], []
    for t in range(steps):
        if counts[t]:
            rows, index = starts[t], start_rows[t]
            h = torch.where(rows.view(-1, 1), 0.0, h)  # the initial h and read are zeros
            read = torch.where(rows.view(-1, 1), 0.0, read)
            pointer = torch.where(rows, 0, pointer)
            words.index_fill_(0, index, 0)
            written.index_fill_(0, index, False)
            if table is not None:
                row_of.index_fill_(0, index, row_zero)
        h = gru_step(cell, gates_x[t] + read @ w_read.T, h)
        address = module._write_address(h, pointer)
        with torch.no_grad():
            at = torch.remainder(address, store.num_words).view(-1, 1)
            words.scatter_(1, at, packed[t].view(-1, 1))
            written.scatter_(1, at, True)
            if table is not None:
                row_of.scatter_(1, at, row_written[t].view(-1, 1))
        high, low = module.read_head(h).chunk(2, dim=-1)
        source = (table, sink, row_of) if table is not None else (None, None, words)
        read, read_address = read_table(module, source, written, high, low, address)
        pointer = torch.remainder(pointer + 1, store.num_words)
        hidden.append(h)
        reads.append(read)
    new_state = {
        **state,
        "words": words,
        "written": written,
        "pointer": pointer,
        "h": h,
        "read": read,
        "read_entropy": address_entropy(high, low).detach(),
        "write_address": address.detach(),
        "read_address": read_address,
    }
    return torch.stack(hidden) + module.fuse(torch.stack(reads)), new_state


def gru_step(cell: torch.nn.GRUCell, gates_in: Tensor, h: Tensor) -> Tensor:
    """``nn.GRUCell`` given its input projection ``W_ih x + b_ih`` ``(B, 3H)``."""
    gates_h = h @ cell.weight_hh.T + cell.bias_hh
    in_r, in_z, in_n = gates_in.chunk(3, dim=-1)
    h_r, h_z, h_n = gates_h.chunk(3, dim=-1)
    reset = torch.sigmoid(in_r + h_r)
    update = torch.sigmoid(in_z + h_z)
    new = torch.tanh(in_n + reset * h_n)
    return (1 - update) * new + update * h


def read_table(
    module: BitMemory,
    source: tuple[Tensor | None, list | None, Tensor],
    written: Tensor,
    high: Tensor,
    low: Tensor,
    write_address: Tensor,
) -> tuple[Tensor, Tensor]:
    """:meth:`BitMemory._read` with decoded words gathered from a table: ``source`` is the
    table, its gradient sink (see :class:`TableRows`) and each address's table row ``(B,
    N)``; or ``(None, None, words (B, N))`` to decode the words read, as the reference."""
    store = module.store
    table, sink, row_of = source
    if module.training:
        addresses, weights = store.candidates(high, low)  # (B, C), (B, C)
    else:
        addresses = store.address(high, low)[:, None]  # (B, 1)
        weights = torch.ones_like(addresses, dtype=high.dtype)
    if module.read_addressing == "relative":
        addresses = torch.remainder(write_address[:, None] - addresses, store.num_words)
    index = store.range_index(addresses, wrap=True).flatten(1)  # (B, C * L)
    batch, candidates = addresses.shape
    if table is None:
        decoded = store.decode(unpack_bits(torch.gather(row_of, 1, index), store.word_bits))
    else:
        rows = torch.gather(row_of, 1, index).flatten()
        decoded = (
            table.index_select(0, rows) if sink is None else TableRows.apply(table, rows, sink)
        )
    decoded = decoded.view(batch, candidates, store.range_len, -1)
    flags = torch.gather(written, 1, index).view(batch, candidates, store.range_len, 1)
    words = torch.cat([decoded, flags.to(high.dtype)], dim=-1)  # (B, C, L, V + 1)
    best = addresses.gather(1, weights.detach().argmax(dim=1, keepdim=True)).squeeze(1)
    # A weighted sum over the candidates, elementwise: as a batched product of one row its
    # backward is a (B, C, 1) x (B, 1, L * (V + 1)) product, slow on CPU.
    return (weights[:, :, None] * words.flatten(2)).sum(dim=1), best


class TableTap(torch.autograd.Function):
    """Identity on the decoded-word table whose backward adds the gradients the step
    reads (:class:`TableRows`) left in ``sink``: one ``index_add`` for the chunk instead
    of a zero-filled table-sized gradient per step.  (No double backward.)"""

    @staticmethod
    def forward(ctx, table: Tensor, sink: list) -> Tensor:
        ctx.sink = sink
        return table.clone()

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:
        if ctx.sink:
            rows = torch.cat([r for r, _ in ctx.sink])
            grad = grad.index_add(0, rows, torch.cat([g for _, g in ctx.sink]))
            ctx.sink.clear()
        return grad, None


class TableRows(torch.autograd.Function):
    """``table.index_select(0, rows)`` whose backward leaves ``(rows, grad)`` in ``sink``
    for :class:`TableTap` (autograd runs the tap's backward after every read's)."""

    @staticmethod
    def forward(ctx, table: Tensor, rows: Tensor, sink: list) -> Tensor:
        ctx.save_for_backward(rows)
        ctx.sink = sink
        return table.index_select(0, rows)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[None, None, None]:
        (rows,) = ctx.saved_tensors
        ctx.sink.append((rows, grad))
        return None, None, None
