"""BatchedRNG: per-row counter streams, and the one-env block cache giving the same values."""

import numpy as np
import pytest

from memworld.envs.rng import _SINGLE_CACHE, BatchedRNG


def test_single_row_cache_matches_batched_stream_across_refills():
    one, many = BatchedRNG(1), BatchedRNG(3)
    one.seed(7)
    many.seed([7, 8, 9])
    row = np.array([0])
    sizes = [1, 3, (2, 5), _SINGLE_CACHE - 5, 1, 2 * _SINGLE_CACHE, 4]
    for size in sizes:
        np.testing.assert_array_equal(one.integers(row, 10, size), many.integers(row, 10, size))
        np.testing.assert_array_equal(one.random(row, size), many.random(row, size))
    assert one.counters[0] == many.counters[0]
    assert many.counters[1] == 0  # the other rows never advanced


def test_reseed_restarts_the_single_stream():
    rng = BatchedRNG(1)
    rng.seed(3)
    first = rng.integers(np.array([0]), 1000, 8)
    rng.seed(3)
    np.testing.assert_array_equal(rng.integers(np.array([0]), 1000, 8), first)
    rng.seed(4)
    assert not np.array_equal(rng.integers(np.array([0]), 1000, 8), first)


def test_empty_rows_draw_nothing():
    rng = BatchedRNG(1)
    rng.seed(0)
    assert rng.integers(np.array([], dtype=np.int64), 5, 3).shape == (0, 3)
    assert rng.counters[0] == 0


@pytest.mark.parametrize("seed", [-1, [1, 2]])
def test_bad_seed_is_named(seed):
    with pytest.raises(ValueError, match="seed"):
        BatchedRNG(1).seed(seed)


def test_integers_by_column_draws_what_one_column_calls_would():
    ahead, stepwise = BatchedRNG(3), BatchedRNG(3)
    ahead.seed(5)
    stepwise.seed(5)
    rows = np.array([0, 2])
    highs = np.array([7, 3, 7, 3, 2])
    want = np.concatenate([stepwise.integers(rows, int(h))[:, None] for h in highs], axis=1)
    np.testing.assert_array_equal(ahead.integers_by_column(rows, highs), want)
    assert ((want >= 0) & (want < highs)).all()
    np.testing.assert_array_equal(ahead.counters, stepwise.counters)
