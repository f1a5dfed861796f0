"""Batched key/value stores with importance: the long-term memory kernels of DualMemory.

An :class:`LTMBatch` is ``B`` independent long-term memories of ``C`` slots
each, held as batch-first tensors and changed **in place** under
``torch.no_grad`` (stored entries never carry gradient):

- ``keys (B, C, Dk)``: unit-norm keys (zero where empty);
- ``values (B, C, Dv)``: stored values (zero where empty);
- ``importance (B, C)``: > 0 where filled, 0 where empty;
- ``filled (B, C)`` bool;
- ``written_at (B, C)`` long: the store's clock at the slot's last write or merge.

Operations (each vectorised over the B stores; retrieval is one ``bmm`` and one
``topk`` over all C slots, so it scales to 100,000 slots):

- :meth:`LTMBatch.write`: FIFO into the first empty slot; when full, replace the
  least important slot (the oldest one among equally important slots);
- :meth:`LTMBatch.retrieve`: top-k by ``sharpness * cos(q, k_i) + importance_weight
  * log(importance_i)``, softmax of the same logits over the k retrieved slots,
  read = weighted sum of their values.  The k scores are recomputed from the
  gathered keys, so the read is differentiable in the query (and sharpness),
  never in the store;
- :meth:`LTMBatch.mark_reads`: ``importance <- (1 - decay) * importance + read weight``;
- :meth:`LTMBatch.consolidate`: merge every pair of mutual nearest neighbours
  whose keys are closer than ``threshold`` (Euclidean, unit keys), repeated until
  no pair is left; a merge keeps the importance-weighted mean key (re-normalised)
  and value in the more important slot, sums the importances and frees the other;
- :meth:`LTMBatch.sample`: seeded sampling of filled entries (experience replay).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

# Smallest importance used inside a log, so an underflowed importance stays finite.
TINY = 1e-30
# Budget (elements) of one block of the pairwise-distance matrix in consolidate.
DISTANCE_BLOCK_ELEMENTS = 1 << 24


def gather_slots(table: Tensor, slots: Tensor) -> Tensor:
    """``table[b, slots[b, ...]]`` for a store field ``table (B, C, ...)`` and ``slots (B,
    ...)`` long: one ``index_select`` on the field seen as ``B * C`` rows, where indexing
    with a broadcast row index took ~10x as long at retrieval sizes on the CPU.  A field
    whose rows are not evenly packed (one layer of a ``(B, L, C, ...)`` state) is indexed
    on both axes instead, without copying it."""
    batch, capacity = table.shape[:2]
    rows = torch.arange(batch, device=slots.device).view(-1, *[1] * (slots.dim() - 1))
    if table.stride(0) != capacity * table.stride(1):
        return table[rows, slots]
    flat = (slots + rows * capacity).flatten()
    rest = table.shape[2:]
    return table.view(batch * capacity, *rest).index_select(0, flat).view(*slots.shape, *rest)


class Retrieval(NamedTuple):
    """What a top-k retrieval found, for Q queries into each of B stores."""

    read: Tensor  # (B, Q, Dv) weighted sum of the retrieved values
    values: Tensor  # (B, Q, k, Dv)
    indices: Tensor  # (B, Q, k) slot indices, best first
    similarity: Tensor  # (B, Q, k) cosine similarity of query and key
    weights: Tensor  # (B, Q, k) softmax weights over the k, 0 where invalid
    valid: Tensor  # (B, Q, k) bool: the retrieved slot is filled


@dataclass
class LTMBatch:
    """``B`` long-term memories of ``C`` slots; every method edits the tensors in place."""

    keys: Tensor  # (B, C, Dk)
    values: Tensor  # (B, C, Dv)
    importance: Tensor  # (B, C)
    filled: Tensor  # (B, C) bool
    written_at: Tensor  # (B, C) long

    FIELDS = ("keys", "values", "importance", "filled", "written_at")

    @classmethod
    def empty(
        cls, batch: int, capacity: int, key_dim: int, value_dim: int, device=None
    ) -> LTMBatch:
        return cls(
            keys=torch.zeros(batch, capacity, key_dim, device=device),
            values=torch.zeros(batch, capacity, value_dim, device=device),
            importance=torch.zeros(batch, capacity, device=device),
            filled=torch.zeros(batch, capacity, dtype=torch.bool, device=device),
            written_at=torch.zeros(batch, capacity, dtype=torch.long, device=device),
        )

    @property
    def capacity(self) -> int:
        return self.keys.shape[1]

    def count(self) -> Tensor:
        """``(B,)`` number of filled slots."""
        return self.filled.sum(dim=-1)

    # ----------------------------------------------------------------- rows
    def take(self, rows: Tensor) -> LTMBatch:
        """A copy of the stores ``rows`` (index tensor)."""
        return LTMBatch(*(getattr(self, f).index_select(0, rows) for f in self.FIELDS))

    @torch.no_grad()
    def put(self, rows: Tensor, other: LTMBatch) -> None:
        """Copy ``other`` (``len(rows)`` stores) back into the stores ``rows``."""
        for f in self.FIELDS:
            getattr(self, f).index_copy_(0, rows, getattr(other, f))

    @torch.no_grad()
    def clear(self, rows: Tensor) -> None:
        """Empty the stores ``rows`` (index tensor); only those rows are touched."""
        for f in self.FIELDS:
            getattr(self, f).index_fill_(0, rows, 0)

    # ---------------------------------------------------------------- writes
    def write_positions(self) -> Tensor:
        """``(B,)`` where the next entry goes: the first empty slot, else the least
        important slot, the oldest (smallest ``written_at``) among ties."""
        empty = ~self.filled
        first_empty = empty.to(torch.uint8).argmax(dim=-1)  # argmax returns the first max
        importance = self.importance.masked_fill(empty, float("inf"))
        least = importance.min(dim=-1, keepdim=True).values
        tied_age = self.written_at.masked_fill(importance != least, torch.iinfo(torch.long).max)
        evict = tied_age.argmin(dim=-1)
        return torch.where(empty.any(dim=-1), first_empty, evict)

    @torch.no_grad()
    def write(
        self, key: Tensor, value: Tensor, clock: Tensor, mask: Tensor, importance: float
    ) -> Tensor:
        """Store one entry per store where ``mask`` (B,) is True.

        ``key (B, Dk)`` is L2-normalised before storing, ``value (B, Dv)`` is stored
        as is, ``clock (B,)`` stamps ``written_at``.  Returns the ``(B,)`` slots used.
        """
        rows = torch.arange(self.keys.shape[0], device=self.keys.device)
        pos = self.write_positions()
        m = mask.view(-1, 1)
        self.keys[rows, pos] = torch.where(m, F.normalize(key, dim=-1), self.keys[rows, pos])
        self.values[rows, pos] = torch.where(m, value, self.values[rows, pos])
        self.importance[rows, pos] = torch.where(
            mask,
            torch.full_like(self.importance[rows, pos], importance),
            self.importance[rows, pos],
        )
        self.filled[rows, pos] = self.filled[rows, pos] | mask
        self.written_at[rows, pos] = torch.where(mask, clock, self.written_at[rows, pos])
        return pos

    @torch.no_grad()
    def write_many(self, keys: Tensor, values: Tensor, clock: Tensor, importance: float) -> Tensor:
        """Store ``N`` entries per store, in order: ``keys (B, N, Dk)``, ``values (B, N, Dv)``.

        Entries that find an empty slot are written at once (empty slots in index
        order, which is FIFO order); the rest are written one at a time, each
        replacing the least important slot, exactly as ``N`` calls of :meth:`write`.
        Entry ``j`` is stamped ``clock + j``.  Returns the ``(B, N)`` slots used
        (a later entry may have replaced an earlier one when ``N`` exceeds the room).
        """
        batch, n = keys.shape[:2]
        rows = torch.arange(batch, device=keys.device).view(-1, 1)
        entry = torch.arange(n, device=keys.device).view(1, -1)
        n_empty = (~self.filled).sum(dim=-1, keepdim=True)  # (B, 1)
        m = min(n, self.capacity)
        # Empty slots first, each group in index order: (B, C) -> first m positions.
        order = torch.argsort(self.filled.to(torch.uint8), dim=-1, stable=True)[:, :m]
        direct = entry[:, :m] < n_empty  # (B, m): entry j has an empty slot of its own
        positions = torch.zeros(batch, n, dtype=torch.long, device=keys.device)
        positions[:, :m] = order
        old = LTMBatch(*(getattr(self, f)[rows, order] for f in self.FIELDS))
        d = direct.unsqueeze(-1)
        self.keys[rows, order] = torch.where(d, F.normalize(keys[:, :m], dim=-1), old.keys)
        self.values[rows, order] = torch.where(d, values[:, :m], old.values)
        self.importance[rows, order] = torch.where(
            direct, torch.full_like(old.importance, importance), old.importance
        )
        self.filled[rows, order] = old.filled | direct
        self.written_at[rows, order] = torch.where(
            direct, clock.view(-1, 1) + entry[:, :m], old.written_at
        )
        for j in range(int(n_empty.min()), n):  # entries that must evict, one at a time
            mask = (j >= n_empty).view(-1)
            pos = self.write(keys[:, j], values[:, j], clock + j, mask, importance)
            positions[:, j] = torch.where(mask, pos, positions[:, j])
        return positions

    # ----------------------------------------------------------------- reads
    def retrieve(
        self,
        query: Tensor,
        top_k: int,
        sharpness: Tensor | float,
        importance_weight: float,
        candidates: Tensor | None = None,
    ) -> Retrieval:
        """Top-k importance-weighted retrieval for ``query (B, Q, Dk)``.

        ``sharpness`` is a float or a ``(B, Q)`` tensor (it may carry gradient).
        Slots are chosen by ``sharpness * cos + importance_weight * log(importance)``
        and weighted by the softmax of the same logits over the k chosen; empty
        slots are never chosen (weight 0 when fewer than k are filled).
        ``candidates (B, Q, n)`` long (``n >= top_k``, -1 for none) limits the
        choice to those slots (an index's search result); ``None`` scans every slot.
        """
        batch, n_query, _ = query.shape
        q = F.normalize(query, dim=-1)
        sharp = torch.as_tensor(sharpness, dtype=q.dtype, device=q.device).expand(batch, n_query)

        def prior(slots: Tensor | None = None) -> Tensor:
            """``importance_weight * log(importance)`` of every slot (B, C), or at ``slots``."""
            importance = self.importance if slots is None else gather_slots(self.importance, slots)
            return importance_weight * torch.log(importance.clamp_min(TINY))

        with torch.no_grad():
            scaled_q = (sharp.detach().unsqueeze(-1) * q.detach()).unsqueeze(-1)  # (B, Q, Dk, 1)
            if candidates is None:  # full scan, one fused pass: (B, Q, C)
                scan_prior = prior().masked_fill(~self.filled, float("-inf"))
                logits_all = torch.baddbmm(
                    scan_prior.unsqueeze(1), scaled_q.squeeze(-1), self.keys.transpose(1, 2)
                )  # sharp * (q . k) = (sharp * q) . k
                indices = logits_all.topk(top_k, dim=-1).indices  # (B, Q, k)
                found = None
            else:  # the candidates alone: nothing here reads every slot
                slots = candidates.clamp_min(0)
                logits_some = (gather_slots(self.keys, slots) @ scaled_q).squeeze(-1) + prior(slots)
                unusable = (candidates < 0) | ~gather_slots(self.filled, slots)
                best = logits_some.masked_fill(unusable, float("-inf")).topk(top_k, dim=-1)
                indices = slots.gather(-1, best.indices)
                found = best.values > float("-inf")  # a candidate, and a filled slot
        valid = gather_slots(self.filled, indices)  # (B, Q, k)
        if found is not None:
            valid = valid & found
        keys, values = gather_slots(self.keys, indices), gather_slots(self.values, indices)
        similarity = (keys * q.unsqueeze(2)).sum(dim=-1)  # differentiable in the query
        logits = sharp.unsqueeze(-1) * similarity + prior(indices)
        logits = logits.masked_fill(~valid, torch.finfo(logits.dtype).min)
        weights = torch.softmax(logits, dim=-1) * valid
        read = (weights.unsqueeze(-2) @ values).squeeze(-2)  # (B, Q, Dv)
        return Retrieval(read, values, indices, similarity, weights, valid)

    @torch.no_grad()
    def mark_reads(self, retrieval: Retrieval, decay: float) -> None:
        """Importance decays by ``(1 - decay)`` and grows by the read weight each slot got."""
        self.importance.mul_(1.0 - decay)
        flat = retrieval.indices.flatten(1)  # (B, Q * k)
        self.importance.scatter_add_(1, flat, retrieval.weights.detach().flatten(1))

    # --------------------------------------------------------- consolidation
    def nearest_neighbours(self) -> tuple[Tensor, Tensor]:
        """``(B, C)`` squared distance to, and index of, each slot's nearest other filled slot.

        Keys are unit vectors, so the nearest neighbour has the largest dot product
        and ``distance**2 = 2 - 2 * dot``.  Computed in row blocks so the score
        matrix never exceeds ``DISTANCE_BLOCK_ELEMENTS`` elements (10,000 slots:
        ~6 blocks of 1,677 rows).
        """
        batch, cap, _ = self.keys.shape
        # (B, 1, C): 0 for filled slots, -inf for empty ones, added to every block of dots
        empty_penalty = torch.zeros(batch, 1, cap, device=self.keys.device)
        empty_penalty.masked_fill_(~self.filled.unsqueeze(1), float("-inf"))
        keys_t = self.keys.transpose(1, 2)
        block = max(1, DISTANCE_BLOCK_ELEMENTS // (batch * cap))
        dist2, index = [], []
        for lo in range(0, cap, block):
            hi = min(cap, lo + block)
            dots = torch.baddbmm(empty_penalty, self.keys[:, lo:hi], keys_t)  # (B, hi - lo, C)
            own = torch.arange(lo, hi, device=dots.device)
            dots[:, own - lo, own] = float("-inf")  # a slot is not its own neighbour
            best = dots.max(dim=-1)
            dist2.append((2.0 - 2.0 * best.values).clamp_min(0))
            index.append(best.indices)
        return torch.cat(dist2, dim=1), torch.cat(index, dim=1)

    @torch.no_grad()
    def consolidate(self, threshold: float) -> Tensor:
        """Merge near-duplicate slots until none are closer than ``threshold``; ``(B,)`` merges.

        Each round merges every pair of mutual nearest neighbours closer than the
        threshold (disjoint pairs, so a round is one vectorised update); a cluster
        of m near-copies needs about log2(m) rounds.
        """
        merges = torch.zeros(self.keys.shape[0], dtype=torch.long, device=self.keys.device)
        slots = torch.arange(self.capacity, device=self.keys.device)
        while True:
            dist2, partner = self.nearest_neighbours()
            mutual = self.filled & (dist2 < threshold**2) & (partner.gather(1, partner) == slots)
            mine, theirs = self.importance, self.importance.gather(1, partner)
            keeper = mutual & ((mine > theirs) | ((mine == theirs) & (slots < partner)))
            b, i = keeper.nonzero(as_tuple=True)
            if b.numel() == 0:
                return merges
            j = partner[b, i]
            w_i, w_j = self.importance[b, i], self.importance[b, j]
            total = w_i + w_j
            share = torch.where(total > 0, w_i / total.clamp_min(TINY), 0.5).unsqueeze(-1)
            self.keys[b, i] = F.normalize(
                share * self.keys[b, i] + (1 - share) * self.keys[b, j], dim=-1
            )
            self.values[b, i] = share * self.values[b, i] + (1 - share) * self.values[b, j]
            self.importance[b, i] = total
            self.written_at[b, i] = torch.maximum(self.written_at[b, i], self.written_at[b, j])
            for f in self.FIELDS:
                getattr(self, f)[b, j] = 0
            merges.index_add_(0, b, torch.ones_like(b))

    # -------------------------------------------------------------- sampling
    def sample(
        self, n: int, generator: torch.Generator | None = None, by_importance: bool = False
    ) -> tuple[Tensor, Tensor, Tensor]:
        """``n`` filled entries per store: ``keys (B, n, Dk)``, ``values (B, n, Dv)``, ``indices (B, n)``.

        Uniform over filled slots (or proportional to importance), without
        replacement when every store holds at least ``n`` entries, else with.
        """
        count = self.count()
        if bool((count == 0).any()):
            raise ValueError("cannot sample from an empty long-term memory; store_experience first")
        if by_importance:
            weights = torch.where(self.filled, self.importance.clamp_min(TINY), 0.0)
        else:
            weights = self.filled.float()
        replacement = n > int(count.min())
        indices = torch.multinomial(weights, n, replacement=replacement, generator=generator)
        rows = torch.arange(indices.shape[0], device=indices.device).view(-1, 1)
        return self.keys[rows, indices], self.values[rows, indices], indices
