"""The graph index option of DualMemory's long-term store: recall against the exact scan,
stale entries never returned, and the exact scan still the default."""

from __future__ import annotations

import pickle

import pytest
import torch
import torch.nn.functional as F

from memworld import memory
from memworld.memory.dual.ltm import LongTermMemory

pytest.importorskip("faiss")


def filled_store(index: str, capacity: int = 3000, seed: int = 0, **kwargs) -> LongTermMemory:
    gen = torch.Generator().manual_seed(seed)
    store = LongTermMemory(16, 4, capacity=capacity, top_k=5, index=index, **kwargs)
    store.store_experience(
        torch.randn(capacity, 16, generator=gen), torch.randn(capacity, 4, generator=gen)
    )
    return store


def recall(a: torch.Tensor, b: torch.Tensor) -> float:
    hits = sum(len(set(x.tolist()) & set(y.tolist())) for x, y in zip(a, b))
    return hits / a.numel()


def test_hnsw_recall_on_random_data() -> None:
    exact, graph = filled_store("exact"), filled_store("hnsw")
    queries = torch.randn(64, 16, generator=torch.Generator().manual_seed(1))
    want = exact.query(queries, update_importance=False)
    got = graph.query(queries, update_importance=False)
    assert recall(want.indices, got.indices) >= 0.95
    # Where the same slots are found, the read is the exact path's.
    same = (want.indices == got.indices).all(-1)
    assert same.sum() >= 48
    torch.testing.assert_close(got.read[same], want.read[same], rtol=0, atol=1e-6)


def test_hnsw_never_returns_overwritten_or_missing_slots() -> None:
    store = filled_store("hnsw", capacity=200)
    store.query(torch.randn(4, 16))  # builds the graph
    gen = torch.Generator().manual_seed(2)
    new_keys = torch.randn(50, 16, generator=gen)
    slots = store.store_experience(new_keys, torch.randn(50, 4, generator=gen))  # evictions
    found = store.query(new_keys, top_k=1, update_importance=False)
    # Each new key finds its own slot (cosine 1), never the stale entry of the slot it replaced.
    assert torch.equal(found.indices[:, 0], slots)
    assert bool(found.valid.all())
    torch.testing.assert_close(found.similarity[:, 0], torch.ones(50))


def test_hnsw_with_fewer_entries_than_top_k() -> None:
    store = LongTermMemory(8, 2, capacity=16, top_k=5, index="hnsw")
    store.store_experience(F.normalize(torch.randn(3, 8), dim=-1), torch.randn(3, 2))
    found = store.query(torch.randn(8), update_importance=False)
    assert found.valid.sum() == 3
    assert torch.allclose(found.weights.sum(), torch.tensor(1.0))


def test_hnsw_rebuilds_after_consolidation_load_and_pickle() -> None:
    store = filled_store("hnsw", capacity=100)
    key = store.keys[7].clone()
    store.store_experience(key + 1e-4, torch.zeros(4))  # a near-duplicate of slot 7
    store.query(key)
    assert store.consolidate() >= 1
    assert store._index is None  # rebuilt on the next query
    found = store.query(key, top_k=1, update_importance=False)
    assert bool(found.valid.all()) and float(found.similarity[0]) > 0.99
    copy = pickle.loads(pickle.dumps(store))
    assert copy._index is None
    torch.testing.assert_close(copy.query(key, top_k=1).indices, found.indices)
    other = LongTermMemory(16, 4, capacity=100, top_k=5, index="hnsw")
    other.query(torch.randn(16))
    other.load_state_dict(store.state_dict())
    torch.testing.assert_close(other.query(key, top_k=1).indices, found.indices)


def test_exact_is_the_default_and_unchanged() -> None:
    module = memory.make("dual", input_dim=4, ltm_capacity=64)
    assert module.experience.index_kind == "exact"
    store = filled_store("exact", capacity=300)
    q = torch.randn(5, 16)
    # The exact path: a scan of every slot by sharpness * cos + weight * log(importance).
    logits = store.sharpness * F.normalize(q, dim=-1) @ store.keys.T
    logits = logits + store.importance_weight * torch.log(store.importance)
    found = store.query(q, update_importance=False)
    assert torch.equal(found.indices, logits.topk(5, dim=-1).indices)


def test_index_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="index must be one of"):
        LongTermMemory(4, 4, capacity=8, index="annoy")
    with pytest.raises(ValueError, match="index_candidates"):
        LongTermMemory(4, 4, capacity=8, top_k=5, index="hnsw", index_candidates=2)
    module = memory.make("dual", input_dim=4, ltm_capacity=64, ltm_index="hnsw")
    assert module.experience.index_kind == "hnsw"


def test_candidate_path_over_every_slot_equals_the_scan() -> None:
    # retrieve() given every slot as a candidate (in a shuffled order, some listed as -1)
    # ranks exactly like the full scan; importance is uneven so the prior matters.
    store = filled_store("exact", capacity=300, seed=3)
    store.importance.copy_(torch.rand(300, generator=torch.Generator().manual_seed(4)) + 0.01)
    batch = store.store()
    q = torch.randn(1, 6, 16, generator=torch.Generator().manual_seed(5))
    scan = batch.retrieve(q, 5, 7.0, 0.3)
    every = torch.randperm(300, generator=torch.Generator().manual_seed(6)).expand(1, 6, 300)
    every = torch.cat([every, torch.full((1, 6, 4), -1)], dim=-1)
    some = batch.retrieve(q, 5, 7.0, 0.3, candidates=every)
    assert torch.equal(some.indices, scan.indices)
    torch.testing.assert_close(some.read, scan.read)
    torch.testing.assert_close(some.weights, scan.weights)


def test_slot_index_keeps_the_first_live_hits_and_counts_stale_ids() -> None:
    from memworld.memory.dual.index import SlotIndex

    index = SlotIndex(4, capacity=10)
    keys = F.normalize(torch.eye(4)[[0, 0, 1, 1, 2, 3]] + 0.01 * torch.arange(6.0)[:, None], dim=-1)
    index.add(torch.arange(6), keys)
    index.forget(torch.tensor([0, 0, 2]))  # a repeated slot counts once
    assert (index.live, index.stale) == (4, 2)
    index.add(torch.tensor([1, 2]), keys[[1, 2]])  # slot 1 re-added: its old id goes stale
    assert (index.live, index.stale) == (5, 3)
    assert index.live == int((index.id_of_slot >= 0).sum())
    found = index.search(F.normalize(torch.tensor([[1.0, 0.0, 0.0, 0.0]]), dim=-1), 3)
    # Live slots by cosine to e0: 1 (its new id), then the rest; never slot 0, never twice.
    assert found[0, 0] == 1 and 0 not in found[0].tolist()
    assert len(set(found[0].tolist())) == 3


def test_index_search_width_is_an_argument() -> None:
    with pytest.raises(ValueError, match="index_ef_search"):
        LongTermMemory(4, 4, capacity=8, index="hnsw", index_ef_search=0)
    module = memory.make(
        "dual", input_dim=4, ltm_capacity=64, ltm_index="hnsw", ltm_index_ef_search=16
    )
    module.experience.store_experience(
        torch.randn(10, module.key_dim), torch.randn(10, module.value_dim)
    )
    module.experience.query(torch.randn(module.key_dim))
    assert module.experience.slot_index().ef_search == 16


def test_gather_slots_on_packed_and_strided_fields() -> None:
    from memworld.memory.dual.store import gather_slots

    state = torch.arange(2 * 3 * 5 * 4.0).view(2, 3, 5, 4)  # (B, L, C, D): three layers
    slots = torch.tensor([[4, 0, 4], [1, 2, 3]])
    for layer in range(3):
        table = state[:, layer]  # a layer's (B, C, D): rows 5 apart in each batch row
        want = torch.stack([table[b, slots[b]] for b in range(2)])
        assert torch.equal(gather_slots(table, slots), want)
        assert torch.equal(gather_slots(table.contiguous(), slots), want)
        flags = table[..., 0] > 30  # a (B, C) field
        assert torch.equal(
            gather_slots(flags, slots), torch.stack([flags[b, slots[b]] for b in range(2)])
        )
