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
the gradient collected there as the gradient of its input.  Autograd must run
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
        self.grad: Tensor | None = None
        self.rows = torch.arange(batch, device=m0.device)[:, None]
        self.anchor = _Init.apply(m0, self)

    def grad_buffer(self) -> Tensor:
        if self.grad is None:
            self.grad = torch.zeros_like(self.data)
        return self.grad

    def read(self, positions: Tensor) -> Tensor:
        """``(B, M, D)`` values at ``positions`` (B, M), differentiable."""
        return _Read.apply(self.anchor, positions, self)

    def append(self, values: Tensor) -> Tensor:
        """Store ``values`` (B, M, D) at the next M positions; returns those positions (M,)."""
        count = values.shape[1]
        if self.size + count > self.data.shape[1]:
            raise RuntimeError(
                f"SlotLog is full ({self.data.shape[1] - self.empty - 1} writes); "
                "create it with a larger capacity"
            )
        positions = torch.arange(self.size, self.size + count, device=values.device)
        self.size += count
        self.anchor = _Write.apply(self.anchor, values, positions, self)
        return positions


class _Init(Function):
    @staticmethod
    def forward(ctx: Any, m0: Tensor, log: SlotLog) -> Tensor:
        ctx.log = log
        log.data[:, : log.empty] = m0
        log.data[:, log.empty] = 0.0
        return m0.new_zeros(())

    @staticmethod
    def backward(ctx: Any, _anchor: Tensor):
        log = ctx.log
        grad = log.grad_buffer()[:, : log.empty].clone()
        log.grad[:, : log.empty] = 0.0
        return grad, None


class _Write(Function):
    @staticmethod
    def forward(ctx: Any, anchor: Tensor, values: Tensor, positions: Tensor, log: SlotLog):
        ctx.log, ctx.positions = log, positions
        log.data[:, positions] = values
        return anchor.new_zeros(())

    @staticmethod
    def backward(ctx: Any, anchor_grad: Tensor):
        log, positions = ctx.log, ctx.positions
        grad = log.grad_buffer()[:, positions].clone()
        log.grad[:, positions] = 0.0
        return anchor_grad, grad, None, None


class _Read(Function):
    @staticmethod
    def forward(ctx: Any, anchor: Tensor, positions: Tensor, log: SlotLog) -> Tensor:
        ctx.log, ctx.positions = log, positions
        ctx.anchor_shape = anchor.shape
        return log.data[log.rows, positions]

    @staticmethod
    def backward(ctx: Any, grad: Tensor):
        log = ctx.log
        log.grad_buffer().index_put_((log.rows, ctx.positions), grad, accumulate=True)
        return grad.new_zeros(ctx.anchor_shape), None, None
