"""An append-only store of slot values whose reads cost O(read) in backward too.

SlotMemory's bank reads a few slots per step and appends the slots it writes.
Built from plain tensors this is quadratic in the chunk: growing the log with
``torch.cat`` copies it every step, and the backward of each indexing read
allocates a zero tensor the size of everything it indexed.  :class:`SlotLog`
keeps one preallocated buffer instead and three small autograd functions:

- ``_Init`` copies the chunk's starting memory ``m0`` into positions ``[0, N)``;
- ``_Write`` stores new values at fresh positions (never overwritten);
- ``_Read`` gathers values by position.

Backward runs on a shared gradient buffer: a read adds its output gradient at
the positions it read, and the write (or init) that produced a position takes
the gradient collected there as the gradient of its input.  The autograd
nodes hold only that gradient buffer (:class:`_GradSink`), never the log: the
log holds the latest anchor, so a node holding the log would make a reference
cycle through autograd's C++ graph that Python's collector cannot free.  Autograd must run
every read of a position before its write's backward, so the functions are
chained by a scalar *anchor*: each write consumes the current anchor and
returns the next one, and each read consumes the current anchor, so a read
depends on every earlier write and backward visits it first.  A write clears
the gradient it takes, so the graph can be backpropagated more than once
(``retain_graph=True``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.autograd import Function


class SlotLog:
    """Slot values of one forward call: ``m0`` at positions ``[0, N)``, a zero vector at ``N``
    (the value of an emptied slot), and up to ``capacity`` written vectors after it.

    Args:
        m0: ``(B, N, D)`` memory at the start of the call (may require grad).
        capacity: how many vectors per row may be written during the call.
    """

    def __init__(self, m0: Tensor, capacity: int) -> None:
        batch, num_slots, dim = m0.shape
        self.empty = num_slots
        self.size = num_slots + 1
        self.data = m0.new_empty(batch, self.size + capacity, dim)
        self.data[:, :num_slots] = m0.detach()
        self.data[:, num_slots] = 0.0
        # Row offsets into the flat (B * length, D) view: flat gathers (index_select and
        # index_add_) are several times cheaper on the CPU than advanced indexing.
        self.offsets = torch.arange(batch, device=m0.device)[:, None] * self.data.shape[1]
        self.sink = _GradSink(self.data, self.offsets)
        self.anchor = _Init.apply(m0, self.sink)

    def append(self, values: Tensor) -> Tensor:
        """Store ``values`` (B, M, D) at the next M positions; returns those positions (M,)."""
        count = values.shape[1]
        if self.size + count > self.data.shape[1]:
            raise RuntimeError(
                f"SlotLog is full ({self.data.shape[1] - self.empty - 1} writes); "
                "create it with a larger capacity"
            )
        start, self.size = self.size, self.size + count
        self.data[:, start : self.size] = values.detach()
        self.anchor = _Write.apply(self.anchor, values, slice(start, self.size), self.sink)
        return torch.arange(start, self.size, device=values.device)

    def read(self, positions: Tensor) -> Tensor:
        """``(B, M, D)`` values at ``positions`` (B, M), differentiable."""
        return _Read.apply(self.anchor, self.data, positions, self.sink)


class _GradSink:
    """The gradient buffer shared by one log's autograd nodes (allocated at the first use)."""

    def __init__(self, like: Tensor, offsets: Tensor) -> None:
        self.shape, self.dtype, self.device = like.shape, like.dtype, like.device
        self.offsets = offsets  # (B, 1) row offsets into the flat view
        self.grad: Tensor | None = None

    def buffer(self) -> Tensor:
        if self.grad is None:
            self.grad = torch.zeros(self.shape, dtype=self.dtype, device=self.device)
        return self.grad

    def take(self, positions: slice) -> Tensor:
        """The gradient collected at ``positions`` (a copy), clearing it for a later backward."""
        grad = self.buffer()[:, positions].clone()
        self.grad[:, positions] = 0.0
        return grad

    def flat_index(self, positions: Tensor) -> Tensor:
        """``(B * M,)`` indices into the flat ``(B * length, D)`` view of ``positions`` (B, M)."""
        return (positions + self.offsets).flatten()


class _Init(Function):
    @staticmethod
    def forward(ctx: Any, m0: Tensor, sink: _GradSink) -> Tensor:
        ctx.sink, ctx.num_slots = sink, m0.shape[1]
        return m0.new_zeros(())

    @staticmethod
    def backward(ctx: Any, _anchor: Tensor):
        return ctx.sink.take(slice(0, ctx.num_slots)), None


class _Write(Function):
    @staticmethod
    def forward(ctx: Any, anchor: Tensor, values: Tensor, positions: Tensor, sink: _GradSink):
        ctx.sink, ctx.positions = sink, positions
        return anchor.new_zeros(())

    @staticmethod
    def backward(ctx: Any, anchor_grad: Tensor):
        return anchor_grad, ctx.sink.take(ctx.positions), None, None


class _Read(Function):
    """Gathers by position; backward adds the gradient to the sink at those positions."""

    @staticmethod
    def forward(ctx: Any, anchor: Tensor, data: Tensor, positions: Tensor, sink: _GradSink):
        ctx.sink, ctx.index = sink, sink.flat_index(positions)
        values = data.view(-1, data.shape[-1]).index_select(0, ctx.index)
        return values.view(*positions.shape, -1)

    @staticmethod
    def backward(ctx: Any, grad: Tensor):
        flat = ctx.sink.buffer().view(-1, grad.shape[-1])
        flat.index_add_(0, ctx.index, grad.reshape(-1, grad.shape[-1]))
        return torch.zeros((), dtype=grad.dtype, device=grad.device), None, None, None
