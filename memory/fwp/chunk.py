"""The fast-weight memory's chunk path in closed form, and the recurrence it is held to.

The update is linear in the fast weights, so a chunk's reads are the carried weights
decayed to each step plus a causal, decayed linear attention over the chunk's own writes:
:func:`fwp_block` for one block, :func:`fwp_blocks` for every block of a chunk at once
(only the weights carried from block to block go block by block), :func:`fwp_reference`
one step at a time.  The module is in memory/fwp/module.py.
"""

from __future__ import annotations

import torch
from torch import Tensor


def feature_map(z: Tensor) -> Tensor:
    """A softmax over the last axis: positive features that sum to one."""
    return torch.softmax(z, dim=-1)


def fwp_block(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    log_decay: Tensor,
    weights: Tensor,
    starts: Tensor,
) -> tuple[Tensor, Tensor]:
    """Reads and the final fast weights of one block of ``C`` steps, all at once.

    Args:
        query, key: (B, H, C, dk) feature-mapped queries and keys.
        value: (B, H, C, dv) values, already scaled by the write strength.
        log_decay: (H,) ``log gamma`` (negative).
        weights: (B, H, dv, dk) fast weights carried into the block.
        starts: (C, B) bool, episode starts (the row's fast weights are zeroed before it).

    Returns:
        reads (B, H, C, dv) and the fast weights after the block (B, H, dv, dk).
    """
    steps = query.shape[2]
    segment = starts.long().cumsum(dim=0).transpose(0, 1)  # (B, C): 0 = carried episode
    position = torch.arange(steps, device=query.device)
    lag = position[:, None] - position[None, :]  # (C, C): t - s
    same = (segment[:, :, None] == segment[:, None, :]) & (lag >= 0)  # (B, C, C)
    decay = torch.exp(log_decay[:, None, None] * lag.clamp(min=0))  # (H, C, C): gamma^(t-s)
    scores = query @ key.transpose(-1, -2)  # (B, H, C, C)
    scores = torch.where(same[:, None], scores * decay, 0)
    reads = scores @ value  # (B, H, C, dv)
    from_carried = (segment == 0)[:, None, :, None]  # (B, 1, C, 1)
    carried_decay = torch.exp(log_decay[:, None] * (position + 1))  # (H, C): gamma^(t+1)
    carried_reads = (query @ weights.transpose(-1, -2)) * carried_decay[..., None]
    reads = reads + torch.where(from_carried, carried_reads, 0)
    # Fast weights after the block: the last step's episode's writes, decayed to the end.
    in_last = (segment == segment[:, -1:])[:, None, :, None]  # (B, 1, C, 1)
    write_decay = torch.exp(log_decay[:, None] * (steps - 1 - position))[..., None]  # (H, C, 1)
    written = torch.where(in_last, value * write_decay, 0).transpose(-1, -2) @ key
    kept = torch.where(
        (segment[:, -1] == 0)[:, None, None, None],
        weights * torch.exp(log_decay * steps)[:, None, None],
        0,
    )
    return reads, kept + written


def fwp_blocks(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    log_decay: Tensor,
    weights: Tensor,
    starts: Tensor,
    block: int,
) -> tuple[Tensor, Tensor]:
    """:func:`fwp_block` over ``T / block`` blocks at once (``T`` a multiple of ``block``).

    Within each block the reads are the same decayed causal attention as in
    :func:`fwp_block`, computed for every block in one batched product; only the fast
    weights carried from one block into the next go block by block (a loop of
    ``T / block`` small updates, not of ``T`` steps).  Arguments as in :func:`fwp_block`.
    """
    batch, heads, steps, _ = query.shape
    blocks = steps // block
    # (B, H, nb, C, .) views: block j holds steps j * C .. j * C + C - 1.
    query, key, value = (t.view(batch, heads, blocks, block, -1) for t in (query, key, value))
    segment = starts.view(blocks, block, batch).long().cumsum(dim=1).permute(2, 0, 1)  # (B, nb, C)
    position = torch.arange(block, device=query.device)
    lag = position[:, None] - position[None, :]  # (C, C): t - s
    same = (segment[..., :, None] == segment[..., None, :]) & (lag >= 0)  # (B, nb, C, C)
    decay = torch.exp(log_decay[:, None, None] * lag.clamp(min=0))  # (H, C, C)
    # Masks as float factors folded into small tensors before they meet the big ones
    # (a broadcast torch.where is several times slower than a product on the CPU).
    decay = same[:, None] * torch.exp(log_decay[:, None, None] * lag.clamp(min=0))[:, None]
    reads = (query @ key.transpose(-1, -2) * decay) @ value  # decay (B, H, nb, C, C)
    # What each block writes into the fast weights by its end, and whether it keeps the past.
    in_last = (segment == segment[..., -1:])[:, None, :, :, None]  # (B, 1, nb, C, 1)
    write_decay = torch.exp(log_decay[:, None] * (block - 1 - position))[:, None, :, None]
    written = (value * (in_last * write_decay)).transpose(-1, -2) @ key  # (B, H, nb, dv, dk)
    # gamma^C where the block keeps the fast weights it was entered with, 0 where it starts
    # an episode: (B, H, nb, 1, 1).
    block_decay = torch.exp(log_decay * block)[:, None, None, None]  # (H, 1, 1, 1)
    kept = (segment[..., -1] == 0)[:, None, :, None, None] * block_decay
    entering = []  # fast weights at each block's start: (B, H, dv, dk) each
    # unbind, not indexing: its backward is one stack, not a zero-filled copy per block.
    for kept_j, written_j in zip(kept.unbind(2), written.unbind(2)):
        entering.append(weights)
        weights = torch.addcmul(written_j, weights, kept_j)
    carried = torch.stack(entering, dim=2)  # (B, H, nb, dv, dk)
    carried_decay = torch.exp(log_decay[:, None] * (position + 1))[:, None, :, None]  # (H,1,C,1)
    from_carried = (segment == 0)[:, None, :, :, None]  # (B, 1, nb, C, 1)
    reads = reads + query @ carried.transpose(-1, -2) * (from_carried * carried_decay)
    return reads.view(batch, heads, steps, -1), weights


def fwp_reference(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    log_decay: Tensor,
    weights: Tensor,
    starts: Tensor,
) -> tuple[Tensor, Tensor]:
    """:func:`fwp_block`'s recurrence one step at a time (the spec it is held to)."""
    gamma = torch.exp(log_decay)[:, None, None]  # (H, 1, 1)
    reads = []
    for t in range(query.shape[2]):
        keep = ~starts[t][:, None, None, None]  # (B, 1, 1, 1)
        weights = torch.where(keep, gamma * weights, 0)
        weights = weights + value[:, :, t, :, None] * key[:, :, t, None, :]  # write
        reads.append((weights @ query[:, :, t, :, None]).squeeze(-1))  # read
    return torch.stack(reads, dim=2), weights
