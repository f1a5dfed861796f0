"""A graph index over a long-term store's keys, for retrieval in sublinear time.

:class:`memworld.memory.dual.ltm.LongTermMemory` retrieves by an exact scan of
every slot by default (one matrix product and one top-k, O(C) a query: about
12 ms for 64 queries at 100,000 slots on one CPU core).  With
``index="hnsw"`` it asks this index for the ``candidates`` slots whose keys
are nearest to each query by cosine (a FAISS HNSW graph, O(log C) a query),
then ranks those candidates exactly by the full retrieval logits
(``sharpness * cos + importance_weight * log(importance)``) and keeps the
best ``top_k``.  The read and its gradients are then those of the exact path
on the slots found.

What can differ from the exact scan:

- the graph search is approximate: a slot among the exact top-k by cosine can
  be missed (measured recall in docs/speed.md);
- importance only reorders the candidates: a slot whose cosine is outside the
  nearest ``candidates`` but whose importance would lift it into the top-k is
  not found.  With ``importance_weight=0.1`` a slot needs ``e^10`` times the
  importance of another to make up 0.1 of cosine at sharpness 10.

Bookkeeping.  FAISS's graph cannot delete, so an id is one insertion: a slot
that is overwritten (eviction) or changed (consolidation) gets a new id and
its old id becomes stale; stale ids are dropped from search results, and the
graph is rebuilt from the store when more than half of its ids are stale.  The
index lives outside the module's buffers (it is not saved in a ``state_dict``
and is rebuilt from the keys on the first query after a load or a copy).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

INDEX_KINDS = ("exact", "hnsw")


def check_index_args(index: str, candidates: int, top_k: int, ef_search: int = 64) -> None:
    """Refuse an unknown index kind, fewer candidates than ``top_k`` or a search width < 1."""
    if index not in INDEX_KINDS:
        raise ValueError(f"index must be one of {INDEX_KINDS}, got {index!r}; 'exact' scans all")
    if not isinstance(candidates, int) or candidates < top_k:
        raise ValueError(
            f"index_candidates must be an integer >= top_k={top_k}, got {candidates!r}; "
            "4 * top_k is a usual choice"
        )
    if not isinstance(ef_search, int) or isinstance(ef_search, bool) or ef_search < 1:
        raise ValueError(
            f"index_ef_search must be a positive integer, got {ef_search!r}; 64 is the "
            "default, 16 (with index_candidates=16) the fastest setting in docs/speed.md"
        )


class SlotIndex:
    """HNSW graph (inner product on unit keys) mapping insertion ids to store slots.

    Args:
        key_dim: width of a key.
        capacity: slots of the store.
        m: graph degree (FAISS ``M``; default 32).
        ef_construction: search width while inserting (default 80).
        ef_search: search width of a query (default 64; at least the candidates asked for).
            At 100,000 random 32-wide unit keys, 64 queries: 64 kept recall@8 at 0.97-0.99
            in a third of the time of 96 (`python bench/memory_stores.py --index-sweep`).
    """

    def __init__(
        self,
        key_dim: int,
        capacity: int,
        m: int = 32,
        ef_construction: int = 80,
        ef_search: int = 64,
    ) -> None:
        try:
            import faiss
        except ImportError as err:  # pragma: no cover - depends on the environment
            raise ImportError(
                "index='hnsw' needs faiss: pip install 'memworld[pmll]' (faiss-cpu)"
            ) from err
        self.faiss, self.key_dim, self.capacity = faiss, key_dim, capacity
        self.m, self.ef_construction, self.ef_search = m, ef_construction, ef_search
        self.clear()

    def clear(self) -> None:
        """An empty graph."""
        self.graph = self.faiss.IndexHNSWFlat(self.key_dim, self.m, self.faiss.METRIC_INNER_PRODUCT)
        self.graph.hnsw.efConstruction = self.ef_construction
        self.slot_of_id = np.zeros(0, dtype=np.int64)  # (ids,) the slot each id was added for
        self.id_of_slot = np.full(self.capacity, -1, dtype=np.int64)  # (C,) live id, -1: none
        self.live = 0  # slots with a live id: (id_of_slot >= 0).sum(), kept without a scan

    @property
    def stale(self) -> int:
        """Ids whose slot has since been overwritten or emptied."""
        return len(self.slot_of_id) - self.live

    def rebuild(self, keys: Tensor, filled: Tensor) -> None:
        """Index every filled slot of ``keys (C, Dk)`` afresh (``filled (C,)`` bool)."""
        self.clear()
        slots = torch.nonzero(filled.cpu()).flatten()
        if slots.numel():
            self.add(slots, keys.detach().cpu()[slots])

    def add(self, slots: Tensor, keys: Tensor) -> None:
        """Index the entries now at ``slots (N,)`` (distinct) with their unit ``keys (N, Dk)``."""
        slots_np = slots.cpu().numpy().astype(np.int64)
        first = len(self.slot_of_id)
        self.graph.add(np.ascontiguousarray(keys.detach().cpu().numpy(), dtype=np.float32))
        self.slot_of_id = np.concatenate([self.slot_of_id, slots_np])
        self.live += int((self.id_of_slot[slots_np] < 0).sum())
        self.id_of_slot[slots_np] = np.arange(first, first + len(slots_np))

    def forget(self, slots: Tensor) -> None:
        """The entries at ``slots`` were removed or changed: their ids become stale."""
        slots_np = np.unique(slots.cpu().numpy())
        self.live -= int((self.id_of_slot[slots_np] >= 0).sum())
        self.id_of_slot[slots_np] = -1

    def search(self, queries: Tensor, n: int) -> Tensor:
        """Slots of the ``n`` nearest live keys of each unit query ``(Q, Dk)``: ``(Q, n)`` long,
        -1 where fewer were found."""
        q = len(queries)
        found = np.full((q, n), -1, dtype=np.int64)
        if self.graph.ntotal == 0 or q == 0:
            return torch.from_numpy(found)
        # Stale ids take places in the result: ask for enough to keep n live ones on average.
        live = max(1, self.graph.ntotal - self.stale)
        ask = min(self.graph.ntotal, int(np.ceil(n * self.graph.ntotal / live)))
        params = self.faiss.SearchParametersHNSW(efSearch=max(self.ef_search, ask))
        before = self.faiss.omp_get_max_threads()
        self.faiss.omp_set_num_threads(1)  # a few queries: threads cost more than they give
        try:
            x = np.ascontiguousarray(queries.detach().cpu().numpy(), dtype=np.float32)
            _, ids = self.graph.search(x, ask, params=params)
        finally:
            self.faiss.omp_set_num_threads(before)
        slots = np.where(ids >= 0, self.slot_of_id[np.maximum(ids, 0)], -1)
        live_hit = (ids >= 0) & (self.id_of_slot[np.maximum(slots, 0)] == ids)
        # Keep the first n live hits of each row, best first: hit j of a row goes to column
        # (live hits up to j) - 1.
        column = np.cumsum(live_hit, axis=1) - 1
        rows, places = np.nonzero(live_hit & (column < n))
        found[rows, column[rows, places]] = slots[rows, places]
        return torch.from_numpy(found)
