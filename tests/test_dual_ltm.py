"""LongTermMemory (DualMemory's key/value store): FIFO and importance eviction, retrieval,
consolidation and experience replay, on hand-made cases."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from memworld.memory.dual.ltm import LongTermMemory
from memworld.memory.dual.store import LTMBatch

E = torch.eye(3)


def store(capacity: int = 4, **kwargs) -> LongTermMemory:
    return LongTermMemory(key_dim=3, value_dim=2, capacity=capacity, **{"top_k": 3, **kwargs})


def test_fifo_order_before_full_then_oldest_goes_first():
    ltm = store(capacity=4)
    for i in range(3):
        assert ltm.store_experience(E[i], torch.tensor([i, 0.0])).tolist() == [i]
    assert len(ltm) == 3
    assert ltm.filled.tolist() == [True, True, True, False]
    assert ltm.values[:3, 0].tolist() == [0.0, 1.0, 2.0]
    assert ltm.written_at[:3].tolist() == [0, 1, 2]
    # Unread entries are equally important: a full store replaces the oldest (FIFO).
    positions = ltm.store_experience(torch.ones(3, 3), torch.tensor([[3.0, 0], [4, 0], [5, 0]]))
    assert positions.tolist() == [3, 0, 1]
    assert ltm.values[:, 0].tolist() == [4.0, 5.0, 2.0, 3.0]


def test_eviction_replaces_the_least_important_slot():
    ltm = store(capacity=3, importance_decay=0.01)
    ltm.store_experience(E, torch.tensor([[0.0, 0], [1, 0], [2, 0]]))
    ltm.query(E[1], top_k=1)  # decay all by 0.99, slot 1 gains weight 1
    ltm.query(E[2], top_k=1)
    torch.testing.assert_close(ltm.importance, torch.tensor([0.99**2, 0.99 * 1.99, 0.99**2 + 1]))
    assert ltm.store_experience(torch.tensor([1.0, 1, 1]), torch.tensor([9.0, 9])).tolist() == [0]
    assert ltm.values[:, 0].tolist() == [9.0, 1.0, 2.0]
    assert ltm.importance[0] == 1.0  # the new entry starts at initial_importance


def test_importance_increases_for_slots_that_are_read():
    ltm = store(capacity=4, importance_decay=0.01, sharpness=10.0)
    ltm.store_experience(E, torch.tensor([[1.0, 0], [0, 1], [5, 5]]))
    found = ltm.query(torch.tensor([1.0, 1.0, 0.0]), top_k=2)  # cos 0.707 to slots 0 and 1
    assert sorted(found.indices.tolist()) == [0, 1]
    torch.testing.assert_close(found.weights, torch.tensor([0.5, 0.5]))
    torch.testing.assert_close(found.read, torch.tensor([0.5, 0.5]))
    torch.testing.assert_close(found.similarity, torch.full((2,), 1 / math.sqrt(2)))
    torch.testing.assert_close(ltm.importance, torch.tensor([1.49, 1.49, 0.99, 0.0]))


def test_retrieval_is_weighted_by_importance():
    ltm = store(capacity=4, importance_weight=1.0, sharpness=10.0)
    ltm.store_experience(torch.tensor([[1.0, 1, 0], [1, -1, 0]]), torch.tensor([[1.0, 0], [0, 1]]))
    ltm.importance[1] = 3.0  # equally similar to the query below, three times as important
    found = ltm.query(torch.tensor([1.0, 0.0, 0.0]), top_k=2, update_importance=False)
    assert found.indices.tolist() == [1, 0]
    torch.testing.assert_close(found.weights, torch.tensor([0.75, 0.25]))  # ∝ importance ** 1


def test_query_returns_the_stored_value_for_its_key():
    gen = torch.Generator().manual_seed(0)
    ltm = LongTermMemory(key_dim=16, value_dim=4, capacity=64)
    keys, values = torch.randn(50, 16, generator=gen), torch.randn(50, 4, generator=gen)
    ltm.store_experience(keys, values)
    found = ltm.query(keys * 2.0, top_k=1)  # scale does not matter: cosine similarity
    assert found.indices[:, 0].tolist() == list(range(50))
    torch.testing.assert_close(found.read, values)
    torch.testing.assert_close(found.similarity[:, 0], torch.ones(50))


def test_query_on_an_empty_or_sparse_store_reads_zero_weight_from_empty_slots():
    ltm = store(capacity=4)
    found = ltm.query(E[0], top_k=3)
    assert not found.valid.any() and torch.equal(found.read, torch.zeros(2))
    ltm.store_experience(E[0], torch.tensor([2.0, 3.0]))
    found = ltm.query(E[1], top_k=3)
    assert found.valid.tolist() == [True, False, False]
    torch.testing.assert_close(found.read, torch.tensor([2.0, 3.0]))


def test_consolidation_merges_near_identical_keys_importance_weighted():
    ltm = store(capacity=6)
    near = F.normalize(torch.tensor([1.0, 0.01, 0.0]), dim=0)  # 0.01 from e0
    medium = F.normalize(torch.tensor([0.0, 1.0, 0.15]), dim=0)  # ~0.15 from e1: kept
    keys = torch.stack([E[0], near, E[1], medium, E[2]])
    values = torch.tensor([[1.0, 0], [0, 1], [5, 5], [6, 6], [7, 7]])
    ltm.store_experience(keys, values)
    ltm.importance[:2] = torch.tensor([1.0, 3.0])
    assert ltm.consolidate(threshold=0.1) == 1
    assert len(ltm) == 4 and ltm.merges == 1
    # Slot 1 (more important) keeps the merge, slot 0 is freed.
    assert ltm.filled.tolist() == [False, True, True, True, True, False]
    torch.testing.assert_close(ltm.keys[1], F.normalize(0.25 * E[0] + 0.75 * near, dim=0))
    torch.testing.assert_close(ltm.values[1], torch.tensor([0.25, 0.75]))
    assert ltm.importance[1] == 4.0 and ltm.written_at[1] == 1
    torch.testing.assert_close(ltm.keys[2:5], keys[2:])  # distant keys left alone
    torch.testing.assert_close(ltm.values[2:5], values[2:])
    # The freed place is reused before the empty tail (first empty slot).
    assert ltm.store_experience(torch.ones(3), torch.zeros(2)).tolist() == [0]


def test_consolidation_merges_a_cluster_of_copies_into_one():
    ltm = store(capacity=8)
    ltm.store_experience(E[0].repeat(5, 1), torch.arange(5.0).view(5, 1).repeat(1, 2))
    ltm.store_experience(E[2], torch.zeros(2))
    assert ltm.consolidate() == 4
    assert len(ltm) == 2
    kept = ltm.filled.nonzero().flatten()[0]
    torch.testing.assert_close(ltm.values[kept], torch.tensor([2.0, 2.0]))  # equal importances
    assert ltm.importance[kept] == 5.0


def test_sample_experiences_is_seeded_and_returns_only_filled_entries():
    ltm = store(capacity=10)
    with pytest.raises(ValueError, match="store_experience"):
        ltm.sample_experiences(2)
    ltm.store_experience(E.repeat(2, 1)[:4], torch.arange(1.0, 5.0).view(4, 1).repeat(1, 2))
    draws = [ltm.sample_experiences(3, torch.Generator().manual_seed(7)) for _ in range(2)]
    assert torch.equal(draws[0][0], draws[1][0]) and torch.equal(draws[0][1], draws[1][1])
    assert len(set(draws[0][1][:, 0].tolist())) == 3  # without replacement
    _, values = ltm.sample_experiences(40, torch.Generator().manual_seed(1))
    assert set(values[:, 0].tolist()) <= {1.0, 2.0, 3.0, 4.0}
    assert len(set(values[:, 0].tolist())) == 4


def test_mix_experiences_replaces_the_memory_sample_ratio_of_a_batch():
    ltm = store(capacity=10)  # memory_sample_ratio 0.2, as in the document
    ltm.store_experience(E, torch.full((3, 2), -1.0))
    keys, values = torch.zeros(10, 3), torch.zeros(10, 2)
    mixed_keys, mixed_values, replayed = ltm.mix_experiences(keys, values, torch.Generator())
    assert replayed.tolist() == [False] * 8 + [True] * 2
    assert torch.equal(mixed_values[:8], values[:8]) and (mixed_values[8:] == -1).all()
    assert (mixed_keys[8:].sum(-1) == 1).all()


def test_write_many_equals_one_write_at_a_time():
    gen = torch.Generator().manual_seed(3)
    first = LTMBatch.empty(2, 5, 4, 3)
    keys, values = torch.randn(2, 8, 4, generator=gen), torch.randn(2, 8, 3, generator=gen)
    first.write_many(keys[:, :3], values[:, :3], torch.zeros(2, dtype=torch.long), 1.0)
    first.importance[0, 1] = first.importance[1, 2] = 2.0  # make eviction order non-trivial
    second = LTMBatch(*(getattr(first, f).clone() for f in LTMBatch.FIELDS))
    clock = torch.full((2,), 3, dtype=torch.long)
    first.write_many(keys[:, 3:], values[:, 3:], clock, 1.0)
    for j in range(5):
        second.write(
            keys[:, 3 + j], values[:, 3 + j], clock + j, torch.ones(2, dtype=torch.bool), 1.0
        )
    for f in LTMBatch.FIELDS:
        assert torch.equal(getattr(first, f), getattr(second, f)), f
