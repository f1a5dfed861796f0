"""Counter-based random streams, one per env, drawn in batches.

Every env ``i`` owns a 64-bit key and a counter.  A draw for a set of rows
hashes ``(key, counter)`` with SplitMix64 and advances only those rows'
counters, so an env's stream depends on its own seed and on how many numbers
*it* has drawn, never on its neighbours.  That is what makes row ``i`` of a
vector env seeded ``s`` equal to a scalar env seeded ``s + i``, step for step,
across auto-resets (Gymnasium and SB3 seed env ``i`` with ``seed + i`` too).
"""

from __future__ import annotations

import math

import numpy as np

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_11, _32 = np.uint64(11), np.uint64(32)
_TO_UNIT = 1.0 / float(1 << 53)
_SINGLE_CACHE = 1024  # words drawn ahead for a one-env stream (the scalar env)

Index = np.ndarray


def splitmix64(z: np.ndarray) -> np.ndarray:
    """The SplitMix64 finaliser on a uint64 array (wrapping arithmetic)."""
    z = z ^ (z >> np.uint64(30))
    z = z * _M1
    z = z ^ (z >> np.uint64(27))
    z = z * _M2
    return z ^ (z >> np.uint64(31))


_SEED_LIMIT = 1 << 64  # a seed is a uint64


def check_seed(seed, num_envs: int = 1) -> None:
    """Refuse a seed that is not None, an int or ``num_envs`` ints that fit a uint64.

    An int ``s`` seeds env ``i`` with ``s + i``, so ``s + num_envs - 1`` must stay
    below ``2**64`` (no silent wrap to small seeds); booleans are refused.
    """
    if seed is None:
        return
    if isinstance(seed, bool | np.bool_):
        raise ValueError(f"seed must be an int or None, got {seed!r}; pass e.g. seed=0")
    if isinstance(seed, int | np.integer):
        high = _SEED_LIMIT - num_envs
        if not 0 <= int(seed) <= high:
            where = "" if num_envs == 1 else f" (env i gets seed + i for {num_envs} envs)"
            raise ValueError(
                f"seed must be an integer in [0, 2**64 - {num_envs}] = [0, {high}]{where}, "
                f"got {seed!r}; pass a smaller seed"
            )
        return
    if isinstance(seed, str | bytes | dict) or not hasattr(seed, "__len__"):
        raise ValueError(f"seed must be an int, a list of {num_envs} ints or None, got {seed!r}")
    values = list(np.asarray(seed, dtype=object).reshape(-1)) if np.ndim(seed) else [seed]
    ok = len(values) == num_envs and np.ndim(seed) == 1
    for value in values if ok else ():
        if isinstance(value, bool | np.bool_) or not isinstance(value, int | np.integer):
            ok = False
        elif not 0 <= int(value) < _SEED_LIMIT:
            ok = False
    if not ok:
        raise ValueError(
            f"seed must be an int or a list of {num_envs} ints in [0, 2**64), got {seed!r}"
        )


class BatchedRNG:
    """Independent seeded random streams for ``num_envs`` envs.

    Args:
        num_envs: number of streams.
    """

    def __init__(self, num_envs: int) -> None:
        self.num_envs = num_envs
        self.keys = np.zeros(num_envs, dtype=np.uint64)
        self.counters = np.zeros(num_envs, dtype=np.uint64)
        self.seed(None)

    def seed(self, seed: int | list[int] | None) -> None:
        """Seed env ``i`` with ``seed + i`` (or ``seed[i]``); ``None`` draws fresh OS entropy."""
        check_seed(seed, self.num_envs)
        if seed is None:
            base = np.random.SeedSequence().generate_state(1, dtype=np.uint64)[0]
            seeds = base + np.arange(self.num_envs, dtype=np.uint64)
        elif isinstance(seed, int | np.integer):
            seeds = np.uint64(seed) + np.arange(self.num_envs, dtype=np.uint64)
        else:
            seeds = np.array([int(s) for s in seed], dtype=np.uint64)
        self.keys[:] = splitmix64(seeds * _GOLDEN + _GOLDEN)
        self.counters[:] = 0
        self._cache = np.zeros(0, dtype=np.uint64)  # words for counters [_base, _base + len)
        self._base = self._pos = 0

    def _bits(self, idx: Index, n: int) -> np.ndarray:
        """(rows, n) uint64 random words for rows ``idx``; advances their counters by n."""
        if self.num_envs == 1 and len(idx) == 1:
            return self._single_bits(n)
        keys = self.keys[idx][:, None]
        steps = self.counters[idx][:, None] + np.arange(n, dtype=np.uint64)
        self.counters[idx] += np.uint64(n)
        return splitmix64(keys + steps * _GOLDEN)

    def _single_bits(self, n: int) -> np.ndarray:
        """The one-env case, served from words hashed ahead in a block (same values).

        Hashing one word costs a dozen tiny numpy calls; the scalar env draws
        one or two per step, so drawing ``_SINGLE_CACHE`` at once is several
        times faster per step and gives exactly the counter-based stream.
        """
        start = self._pos - self._base
        if start < 0 or start + n > len(self._cache):
            self._base, start = self._pos, 0
            steps = np.uint64(self._pos) + np.arange(max(n, _SINGLE_CACHE), dtype=np.uint64)
            self._cache = splitmix64(self.keys[0] + steps * _GOLDEN)
        self._pos += n
        self.counters[0] = self._pos
        return self._cache[None, start : start + n]

    def random(self, idx: Index, size: int | tuple[int, ...] = ()) -> np.ndarray:
        """Uniform float64 in [0, 1) with shape ``(rows, *size)``."""
        size = (size,) if isinstance(size, int) else tuple(size)
        u = (self._bits(idx, math.prod(size)) >> _11).astype(np.float64) * _TO_UNIT
        return u.reshape(u.shape[0], *size)

    def integers(
        self, idx: Index, high: int | np.ndarray, size: int | tuple[int, ...] = ()
    ) -> np.ndarray:
        """Uniform int64 in ``[0, high)`` (``high < 2**32``); ``high`` may be per row, shape (rows,)."""
        size = (size,) if isinstance(size, int) else tuple(size)
        if isinstance(high, int | np.integer):
            high = np.uint64(high)
        else:
            high = np.asarray(high, dtype=np.uint64)
            if high.ndim:
                high = high.reshape(-1, 1)
        # Lemire's multiply-shift on the top 32 bits: exact in uint64, bias < high / 2**32.
        draws = ((self._bits(idx, math.prod(size)) >> _32) * high) >> _32
        return draws.astype(np.int64).reshape(draws.shape[0], *size)

    def integers_by_column(self, idx: Index, highs: np.ndarray) -> np.ndarray:
        """``(rows, len(highs))`` int64, column ``j`` uniform in ``[0, highs[j])``.

        The same numbers as ``len(highs)`` one-column :meth:`integers` calls in a row,
        so a task can draw ahead what it used to draw step by step.
        """
        highs = np.asarray(highs, dtype=np.uint64).reshape(-1)
        return (((self._bits(idx, highs.size) >> _32) * highs) >> _32).astype(np.int64)

    def normal(self, idx: Index, size: int | tuple[int, ...] = ()) -> np.ndarray:
        """Standard normal float64 (Box-Muller) with shape ``(rows, *size)``."""
        size = (size,) if isinstance(size, int) else tuple(size)
        u = self.random(idx, (2, *size))
        radius = np.sqrt(-2.0 * np.log1p(-u[:, 0]))
        return radius * np.cos(2.0 * np.pi * u[:, 1])

    def permutations(self, idx: Index, n: int) -> np.ndarray:
        """A uniform random permutation of ``range(n)`` per row, shape (rows, n)."""
        return np.argsort(self.random(idx, n), axis=1, kind="stable")

    def state(self) -> dict[str, np.ndarray]:
        return {"keys": self.keys.copy(), "counters": self.counters.copy()}
