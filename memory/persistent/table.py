"""Columnar storage of lines: what backends exchange and what the store holds in memory.

A :class:`Records` batch is the persisted part of some lines (position, anchors,
timestamp, key, value, canonical ctx bytes).  :class:`LineTable` holds every
line of an open store in growable NumPy columns, plus the derived columns
(novelty and similarity at insertion) for the first ``derived`` lines.
"""

from __future__ import annotations

import dataclasses
import json
import warnings

import numpy as np

from memworld.memory.persistent.line import GENESIS, CorruptStoreError

TRACE_FIELD = "_trace"  # ctx field that race/trace writes; "status": "decayed" marks a loser


@dataclasses.dataclass
class Records:
    """A batch of persisted lines, columnar.

    Shapes: ``n, anchor, prev, t`` (m,); ``key`` (m, dim); ``value`` (m, value_dim);
    ``ctx`` a list of m canonical-JSON byte strings.
    """

    n: np.ndarray  # int64
    anchor: np.ndarray  # uint64
    prev: np.ndarray  # uint64
    t: np.ndarray  # float64
    key: np.ndarray  # float32
    value: np.ndarray  # float32
    ctx: list[bytes]

    def __len__(self) -> int:
        return len(self.n)

    @classmethod
    def empty(cls, dim: int, value_dim: int) -> Records:
        return cls(
            np.zeros(0, np.int64),
            np.zeros(0, np.uint64),
            np.zeros(0, np.uint64),
            np.zeros(0, np.float64),
            np.zeros((0, dim), np.float32),
            np.zeros((0, value_dim), np.float32),
            [],
        )

    @classmethod
    def concat(cls, parts: list[Records], dim: int, value_dim: int) -> Records:
        parts = [p for p in parts if len(p)]
        if not parts:
            return cls.empty(dim, value_dim)
        if len(parts) == 1:
            return parts[0]
        return cls(
            np.concatenate([p.n for p in parts]),
            np.concatenate([p.anchor for p in parts]),
            np.concatenate([p.prev for p in parts]),
            np.concatenate([p.t for p in parts]),
            np.concatenate([p.key for p in parts]),
            np.concatenate([p.value for p in parts]),
            [c for p in parts for c in p.ctx],
        )

    def slice(self, start: int, stop: int) -> Records:
        return Records(
            self.n[start:stop],
            self.anchor[start:stop],
            self.prev[start:stop],
            self.t[start:stop],
            self.key[start:stop],
            self.value[start:stop],
            self.ctx[start:stop],
        )


def is_decayed(ctx: bytes) -> bool:
    """True where a line's ctx marks it as a race loser (cheap test before parsing)."""
    if TRACE_FIELD.encode() not in ctx:
        return False
    trace = json.loads(ctx).get(TRACE_FIELD)
    return isinstance(trace, dict) and trace.get("status") == "decayed"


class LineTable:
    """All lines of an open store in growable columns (capacity doubles as it fills)."""

    def __init__(self, dim: int, value_dim: int, capacity: int = 1024) -> None:
        self.dim, self.value_dim = dim, value_dim
        self.size = 0
        self.derived = 0  # lines whose novelty and similarity are known
        capacity = max(1, capacity)
        self.anchor = np.zeros(capacity, np.uint64)
        self.t = np.zeros(capacity, np.float64)
        self.key = np.zeros((capacity, dim), np.float32)
        self.value = np.zeros((capacity, value_dim), np.float32)
        self.novelty = np.zeros(capacity, np.float32)
        self.similarity = np.zeros(capacity, np.float32)
        self.decayed = np.zeros(capacity, bool)
        self.ctx: list[bytes] = []

    def __len__(self) -> int:
        return self.size

    @property
    def head(self) -> int:
        return int(self.anchor[self.size - 1]) if self.size else GENESIS

    def _reserve(self, total: int) -> None:
        capacity = len(self.anchor)
        if total <= capacity:
            return
        while capacity < total:
            capacity *= 2
        for name in ("anchor", "t", "key", "value", "novelty", "similarity", "decayed"):
            old = getattr(self, name)
            new = np.zeros((capacity, *old.shape[1:]), old.dtype)
            new[: self.size] = old[: self.size]
            setattr(self, name, new)

    def append(self, records: Records) -> None:
        m = len(records)
        if m == 0:
            return
        self._reserve(self.size + m)
        lo, hi = self.size, self.size + m
        self.anchor[lo:hi] = records.anchor
        self.t[lo:hi] = records.t
        self.key[lo:hi] = records.key
        self.value[lo:hi] = records.value
        self.decayed[lo:hi] = [is_decayed(c) for c in records.ctx]
        self.ctx.extend(records.ctx)
        self.size = hi

    def set_derived(self, start: int, novelty: np.ndarray, similarity: np.ndarray) -> None:
        stop = start + len(novelty)
        self.novelty[start:stop] = novelty
        self.similarity[start:stop] = similarity
        self.derived = max(self.derived, stop)

    def records(self, start: int = 0, stop: int | None = None) -> Records:
        """The persisted columns of lines ``start..stop-1`` (views, not copies)."""
        stop = self.size if stop is None else stop
        prev = np.empty(stop - start, np.uint64)
        if stop > start:
            prev[0] = self.anchor[start - 1] if start else GENESIS
            prev[1:] = self.anchor[start : stop - 1]
        return Records(
            np.arange(start, stop, dtype=np.int64),
            self.anchor[start:stop],
            prev,
            self.t[start:stop],
            self.key[start:stop],
            self.value[start:stop],
            self.ctx[start:stop],
        )

    def prefix(self, n: int) -> LineTable:
        """A new table holding copies of the first ``n`` lines."""
        out = LineTable(self.dim, self.value_dim, capacity=n)
        for name in ("anchor", "t", "key", "value", "novelty", "similarity", "decayed"):
            getattr(out, name)[:n] = getattr(self, name)[:n]
        out.ctx = self.ctx[:n]
        out.size, out.derived = n, min(n, self.derived)
        return out

    def find(self, anchor: int) -> int:
        """Position of the line with this anchor, or -1."""
        hits = np.flatnonzero(self.anchor[: self.size] == np.uint64(anchor))
        return int(hits[0]) if len(hits) else -1


def warn_broken_chain(records: Records, where: str) -> None:
    """Warn (once, naming the line) when loaded lines are misnumbered or do not link up.

    The cheap part of ``verify`` (numbers and links, no hashes), run at open so a
    damaged or forked log is reported before it is written to; ``verify()`` names
    what happened.
    """
    m = len(records)
    if m == 0:
        return
    bad = np.flatnonzero(records.n != np.arange(m))
    links = np.concatenate([[np.uint64(GENESIS)], records.anchor[:-1]])
    broken = np.flatnonzero(records.prev != links)
    if len(bad) or len(broken):
        first = int(min([*bad[:1], *broken[:1]]))
        warnings.warn(
            f"{where}: the chain is broken at line {first} (misnumbered or not linked to the "
            "line before); the store was damaged or written by two writers: run verify() "
            "before writing to it",
            stacklevel=4,
        )


def check_continues(records: Records, start: int, head: int, where: str) -> None:
    """Refuse lines read on refresh that do not continue the chain this handle holds."""
    if len(records) and (int(records.n[0]) != start or int(records.prev[0]) != head):
        raise CorruptStoreError(
            f"{where}: the line read after line {start - 1} does not continue the chain this "
            "handle loaded (the store was rewritten or damaged); open it again and verify()"
        )
