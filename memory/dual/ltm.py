"""LongTermMemory: a stand-alone key/value store with importance (lmcode-dual-memory.md).

One store of ``capacity`` slots (default 10,000, the document's slots per
layer) held in buffers, so it moves with ``.to(device)`` and is saved in a
``state_dict``.  It is the document's ``store_experience`` / ``query_memory`` /
``consolidate_memories`` API, plus experience replay (``sample_experiences``,
``mix_experiences`` with the document's ``memory_sample_ratio=0.2``).  The
kernels are those of :class:`memworld.memory.dual.store.LTMBatch` with a batch of one
store; :class:`memworld.memory.dual.DualMemory` runs the same kernels over one store per
batch row.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from memworld.memory.base import check_positive_int
from memworld.memory.dual.index import SlotIndex, check_index_args
from memworld.memory.dual.store import LTMBatch, Retrieval


def check_ltm_args(
    capacity: int,
    top_k: int,
    importance_decay: float,
    consolidation_threshold: float,
    memory_sample_ratio: float,
    prefix: str = "",
) -> None:
    """Check the store's arguments; ``prefix`` is how the caller names them (``ltm_``)."""
    check_positive_int(f"{prefix}capacity", capacity)
    check_positive_int(f"{prefix}top_k", top_k)
    if top_k > capacity:
        raise ValueError(
            f"{prefix}top_k={top_k} must be <= {prefix}capacity={capacity}; lower it or add slots"
        )
    if not 0.0 <= importance_decay < 1.0:
        raise ValueError(f"importance_decay must be in [0, 1), got {importance_decay}")
    if consolidation_threshold < 0:
        raise ValueError(
            f"consolidation_threshold must be >= 0 (a key distance), got {consolidation_threshold}"
        )
    if not 0.0 <= memory_sample_ratio <= 1.0:
        raise ValueError(f"memory_sample_ratio must be in [0, 1], got {memory_sample_ratio}")


def rows_of(name: str, x: Tensor, dim: str, width: int) -> Tensor:
    """``x (width,)`` or ``(N, width)`` as ``(N, width)``; any other shape is refused
    (reshaping it would glue or split rows into wrong entries)."""
    if x.dim() not in (1, 2) or x.shape[-1] != width:
        raise ValueError(
            f"{name} must have shape (N, {dim}={width}) or ({dim}={width},), "
            f"got {tuple(x.shape)}; pass one row per entry"
        )
    return x.reshape(-1, width)


class LongTermMemory(nn.Module):
    """A key/value store with per-slot importance, top-k retrieval and consolidation.

    Args:
        key_dim: width of a key (keys are stored L2-normalised).
        value_dim: width of a value.
        capacity: number of slots (default 10,000, as in the document).
        top_k: entries a query retrieves (default 5, the document's ``query_memory`` example).
        sharpness: inverse temperature of the retrieval softmax over cosine
            similarity (default 10).
        importance_weight: weight of ``log(importance)`` in the retrieval logits (default 0.1).
        importance_decay: per-query decay of every importance (default 0.01, the
            document's memory update rate).
        initial_importance: importance of a newly stored entry (default 1).
        consolidation_threshold: key distance under which :meth:`consolidate`
            merges two entries (default 0.1, the document's ``consolidate_memories``).
        memory_sample_ratio: share of a batch that :meth:`mix_experiences` replaces
            by stored experience (default 0.2, the document's ``MemoryDataset``).
        index: ``"exact"`` (default: every query scans every slot) or ``"hnsw"``: a
            FAISS graph finds ``index_candidates`` slots by cosine, ranked exactly
            after (sublinear in ``capacity``; approximate, see memory/dual/index.py).
        index_candidates: slots the graph returns per query (default None: ``4 * top_k``).
        index_ef_search: the graph's search width per query, raised to the candidates
            asked for when smaller (default 64; docs/speed.md measures the trade of time
            against recall).
    """

    def __init__(
        self,
        key_dim: int = 64,
        value_dim: int = 64,
        capacity: int = 10_000,
        top_k: int = 5,
        sharpness: float = 10.0,
        importance_weight: float = 0.1,
        importance_decay: float = 0.01,
        initial_importance: float = 1.0,
        consolidation_threshold: float = 0.1,
        memory_sample_ratio: float = 0.2,
        index: str = "exact",
        index_candidates: int | None = None,
        index_ef_search: int = 64,
    ) -> None:
        super().__init__()
        check_positive_int("key_dim", key_dim)
        check_positive_int("value_dim", value_dim)
        check_ltm_args(
            capacity, top_k, importance_decay, consolidation_threshold, memory_sample_ratio
        )
        if initial_importance <= 0:
            raise ValueError(f"initial_importance must be > 0, got {initial_importance}")
        self.key_dim, self.value_dim, self.capacity = key_dim, value_dim, capacity
        self.top_k, self.sharpness = top_k, float(sharpness)
        self.importance_weight = float(importance_weight)
        self.importance_decay = float(importance_decay)
        self.initial_importance = float(initial_importance)
        self.consolidation_threshold = float(consolidation_threshold)
        self.memory_sample_ratio = float(memory_sample_ratio)
        empty = LTMBatch.empty(1, capacity, key_dim, value_dim)
        for name in LTMBatch.FIELDS:
            self.register_buffer(name, getattr(empty, name)[0])
        self.register_buffer("clock", torch.zeros((), dtype=torch.long))  # entries ever stored
        self.register_buffer("merges", torch.zeros((), dtype=torch.long))  # consolidation merges
        self.index_candidates = 4 * top_k if index_candidates is None else index_candidates
        check_index_args(index, self.index_candidates, top_k, index_ef_search)
        self.index_kind, self.index_ef_search = index, index_ef_search
        self._index: SlotIndex | None = None  # built on the first query (never saved)

    def __getstate__(self) -> dict:
        # The FAISS graph is not picklable; a copy rebuilds it from its keys when queried.
        return {**self.__dict__, "_index": None}

    def _load_from_state_dict(self, *args, **kwargs) -> None:
        self._index = None  # the keys are replaced: rebuild the graph on the next query
        super()._load_from_state_dict(*args, **kwargs)

    def slot_index(self) -> SlotIndex:
        """The graph over the filled slots' keys (``index="hnsw"``), built if needed."""
        if self._index is None:
            self._index = SlotIndex(self.key_dim, self.capacity, ef_search=self.index_ef_search)
            self._index.rebuild(self.keys, self.filled)
        elif self._index.stale > len(self._index.slot_of_id) // 2:
            self._index.rebuild(self.keys, self.filled)
        return self._index

    def store(self) -> LTMBatch:
        """The buffers as a batch of one store (views: kernels edit the buffers)."""
        return LTMBatch(*(getattr(self, f).unsqueeze(0) for f in LTMBatch.FIELDS))

    def __len__(self) -> int:
        return int(self.filled.sum())

    @torch.no_grad()
    def store_experience(self, key: Tensor, value: Tensor) -> Tensor:
        """Store ``key (Dk,) or (N, Dk)`` with ``value (Dv,) or (N, Dv)``; returns the slots used.

        FIFO into empty slots; when full, each entry replaces the least important
        slot (the oldest among equally important ones).
        """
        key, value = (
            rows_of("key", key, "key_dim", self.key_dim),
            rows_of("value", value, "value_dim", self.value_dim),
        )
        keys, values = key.unsqueeze(0), value.unsqueeze(0)
        if keys.shape[1] != values.shape[1]:
            raise ValueError(
                f"got {keys.shape[1]} keys but {values.shape[1]} values; pass one value per key"
            )
        positions = self.store().write_many(
            keys.to(self.keys), values.to(self.values), self.clock.view(1), self.initial_importance
        )
        self.clock += keys.shape[1]
        if self._index is not None:  # the new entries replace whatever those slots held
            slots = positions[0].unique()
            self._index.forget(slots)
            self._index.add(slots, self.keys[slots])
        return positions[0]

    def query(
        self, query: Tensor, top_k: int | None = None, update_importance: bool = True
    ) -> Retrieval:
        """Retrieve the ``top_k`` best entries for ``query (Dk,) or (Q, Dk)``.

        Returns a :class:`Retrieval` without the store axis (``values (Q, k, Dv)``,
        ``indices (Q, k)``, ``read (Q, Dv)``, ...; no ``Q`` axis for a single query).
        The read is differentiable in ``query``.  Reading raises the importance
        of the slots read (by their weights) after decaying all importances.
        """
        single = query.dim() == 1
        q = rows_of("query", query, "key_dim", self.key_dim).unsqueeze(0)
        k = self.top_k if top_k is None else top_k
        if not 1 <= k <= self.capacity:
            raise ValueError(f"top_k must be in [1, capacity={self.capacity}], got {k}")
        store = self.store()
        candidates = None
        if self.index_kind == "hnsw":
            n = max(k, self.index_candidates)
            candidates = self.slot_index().search(F.normalize(q[0].detach(), dim=-1), n)
            candidates = candidates.to(q.device).unsqueeze(0)  # (1, Q, n)
        found = store.retrieve(q, k, self.sharpness, self.importance_weight, candidates)
        if update_importance:
            store.mark_reads(found, self.importance_decay)
        return Retrieval(*(t[0, 0] if single else t[0] for t in found))

    @torch.no_grad()
    def consolidate(self, threshold: float | None = None) -> int:
        """Merge entries whose keys are closer than ``threshold`` (default
        ``consolidation_threshold``); returns the number of merges (slots freed)."""
        thr = self.consolidation_threshold if threshold is None else float(threshold)
        merged = int(self.store().consolidate(thr)[0])
        self.merges += merged
        if merged:
            self._index = None  # merged keys moved and partners were freed: rebuild when queried
        return merged

    def sample_experiences(
        self, n: int, generator: torch.Generator | None = None, by_importance: bool = False
    ) -> tuple[Tensor, Tensor]:
        """``n`` stored entries, ``keys (n, Dk)`` and ``values (n, Dv)``, drawn with ``generator``."""
        check_positive_int("n", n)
        keys, values, _ = self.store().sample(n, generator, by_importance)
        return keys[0], values[0]

    def mix_experiences(
        self, keys: Tensor, values: Tensor, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Experience replay: replace the last ``round(memory_sample_ratio * N)`` rows of a
        batch ``keys (N, Dk)``, ``values (N, Dv)`` by stored entries.

        Returns the mixed keys, values and a ``(N,)`` bool mask of the replayed rows.
        """
        n = keys.shape[0]
        n_memory = min(int(round(self.memory_sample_ratio * n)), n)
        replayed = torch.zeros(n, dtype=torch.bool, device=keys.device)
        if n_memory == 0 or len(self) == 0:
            return keys, values, replayed
        memory_keys, memory_values = self.sample_experiences(n_memory, generator)
        replayed[n - n_memory :] = True
        keys = torch.cat([keys[: n - n_memory], memory_keys.to(keys)])
        values = torch.cat([values[: n - n_memory], memory_values.to(values)])
        return keys, values, replayed

    @torch.no_grad()
    def diagnostics(self) -> dict[str, float]:
        """Fill, importance mean/max/entropy over filled slots, merges done."""
        return ltm_diagnostics(self.store(), prefix="")


class ExperienceReplay:
    """The experience-store methods of a module that owns ``self.experience``.

    DualMemory keeps one :class:`LongTermMemory` shared across episodes (the
    document's replay store); these delegate to it, so the module itself is the
    replay API.
    """

    experience: LongTermMemory

    def store_experience(self, key: Tensor, value: Tensor) -> Tensor:
        """Store ``key (N, key_dim)``, ``value (N, hidden_dim)`` in the shared experience store."""
        return self.experience.store_experience(key, value)

    def query(self, query: Tensor, top_k: int | None = None) -> Retrieval:
        """Top-k retrieval from the experience store (see :meth:`LongTermMemory.query`)."""
        return self.experience.query(query, top_k)

    def sample_experiences(
        self, n: int, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        """``n`` stored ``(keys, values)`` from the experience store, drawn with ``generator``."""
        return self.experience.sample_experiences(n, generator)

    def mix_experiences(
        self, keys: Tensor, values: Tensor, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Replace ``memory_sample_ratio`` of a batch by stored experience (see LongTermMemory)."""
        return self.experience.mix_experiences(keys, values, generator)

    def consolidate(self, threshold: float | None = None) -> int:
        """Consolidate the experience store; returns the number of merges."""
        return self.experience.consolidate(threshold)


@torch.no_grad()
def ltm_diagnostics(store: LTMBatch, prefix: str) -> dict[str, float]:
    """Fill and importance distribution of a batch of stores, averaged over stores.

    ``importance_entropy`` is the entropy of importance normalised over each
    store's filled slots (log(count) when all are equally important).
    """
    filled = store.filled
    importance = torch.where(filled, store.importance, 0.0)  # (B, C)
    count = filled.sum(dim=-1)  # (B,)
    share = importance / importance.sum(dim=-1, keepdim=True).clamp_min(1e-30)
    entropy = -torch.xlogy(share, share).sum(dim=-1)
    any_filled = filled.any()
    return {
        f"{prefix}fill": float(count.float().mean() / store.capacity),
        f"{prefix}count": float(count.float().mean()),
        f"{prefix}importance_mean": float(importance.sum() / count.sum().clamp_min(1)),
        f"{prefix}importance_max": float(importance.max()) if any_filled else 0.0,
        f"{prefix}importance_entropy": float(entropy.mean()),
    }
