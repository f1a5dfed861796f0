"""Reading the store: ``query``, ``bias_vector`` (single and batched), ``peek``, ``line``.

For a query ``q`` the index returns the ``k * candidate_factor`` nearest keys by
cosine; those with ``s_i >= floor`` are weighted ::

    w_i = decay_i (alpha r_i + beta s_i + gamma n_i),  r_i = exp(-(t_now - t_i) / tau)

and the ``k`` heaviest are the answer; ``bias(q) = sum w_i v_i / sum w_i`` over
them (zeros when none passes).  ``as_of=n`` reads the store as it was after
``n`` lines (the index search is restricted to ids ``< n``).
"""

from __future__ import annotations

import json

import numpy as np

from memworld.memory.base import check_range
from memworld.memory.persistent.backends_db import DuckDBBackend
from memworld.memory.persistent.index import normalise
from memworld.memory.persistent.line import MemoryLine, PMLLError, to_hex


class StoreReads:
    """Read methods of :class:`~memworld.memory.persistent.store.PersistentStore` (a mixin)."""

    def _rank(self, queries, k, now, as_of):
        """(m, k) line ids (-1: none), weights, similarities, recencies, best first."""
        if k is None:
            k = self.config.k
        check_range("k", k, 1, integer=True, fix="the lines per query, e.g. k=5")
        if as_of is not None:
            check_range("as_of", as_of, 0, integer=True, fix="None reads every line")
        queries = normalise(self._matrix(queries, self.dim, "queries", key=True))
        cfg = self.config
        with self._lock:
            self._sync()
            now = self.clock() if now is None else now
            size = max(1, len(self.table))  # no query returns more lines than the store holds
            k = min(int(k), size)
            candidates = min(k * cfg.candidate_factor, size)
            sims, ids = self.index.search(queries, candidates, as_of)
            valid = (ids >= 0) & (sims >= cfg.floor)
            safe = np.where(valid, ids, 0)
            recency = np.exp(-np.maximum(now - self.table.t[safe], 0.0) / cfg.tau)
            decay = np.where(self.table.decayed[safe], cfg.loser_decay, 1.0)
            weight = decay * (
                cfg.alpha * recency + cfg.beta * sims + cfg.gamma * self.table.novelty[safe]
            )
            weight = np.where(valid, weight, -np.inf)
            order = np.argsort(-weight, axis=1, kind="stable")[:, :k]
            ids, weight, sims, recency = (
                np.take_along_axis(a, order, 1) for a in (ids, weight, sims, recency)
            )
            return np.where(np.isfinite(weight), ids, -1), weight, sims, recency

    def query(
        self, q, k: int | None = None, *, now: float | None = None, as_of: int | None = None
    ) -> list[MemoryLine]:
        """The ``k`` best lines for ``q`` (cosine >= floor), ranked by ``w_i``.

        ``now`` overrides the clock for recency; ``as_of=n`` reads only lines ``< n``.
        """
        return self.query_batch(np.reshape(q, (1, -1)), k, now=now, as_of=as_of)[0]

    def query_batch(self, queries, k=None, *, now=None, as_of=None) -> list[list[MemoryLine]]:
        """:meth:`query` for (m, dim) queries at once."""
        ids, weight, sims, recency = self._rank(queries, k, now, as_of)
        with self._lock:
            return [
                [
                    self._line(i, recency[r, j], sims[r, j], weight[r, j])
                    for j, i in enumerate(row)
                    if i >= 0
                ]
                for r, row in enumerate(ids)
            ]

    def bias_vector(self, q, k: int | None = None, *, now=None, as_of=None) -> np.ndarray:
        """``sum w_i v_i / sum w_i`` over the lines :meth:`query` returns (zeros if none)."""
        return self.bias_vector_batch(np.reshape(q, (1, -1)), k, now=now, as_of=as_of)[0]

    def bias_vector_batch(self, queries, k=None, *, now=None, as_of=None) -> np.ndarray:
        """(m, value_dim) bias vectors for (m, dim) queries."""
        ids, weight, _, _ = self._rank(queries, k, now, as_of)
        w = np.where(ids >= 0, weight, 0.0)
        with self._lock:
            values = self.table.value[np.maximum(ids, 0)]  # (m, k, value_dim)
        total = w.sum(axis=1, keepdims=True)
        bias = np.einsum("mk,mkv->mv", w, values)
        return np.divide(bias, total, out=np.zeros_like(bias), where=total > 0).astype(np.float32)

    def _line(self, i: int, recency=1.0, similarity=None, weight=0.0) -> MemoryLine:
        table = self.table
        sim = table.similarity[i] if similarity is None else similarity
        return MemoryLine(
            n=int(i),
            key=table.key[i].copy(),
            value=table.value[i].copy(),
            context=json.loads(table.ctx[i]),
            timestamp=float(table.t[i]),
            recency=float(recency),
            novelty=float(table.novelty[i]),
            similarity=float(sim),
            anchor=to_hex(table.anchor[i]),
            prev=to_hex(table.anchor[i - 1] if i else 0),
            weight=float(weight),
            status="decayed" if table.decayed[i] else "committed",
        )

    def line(self, n: int) -> MemoryLine:
        """Line ``n`` (negative counts from the end)."""
        with self._lock:
            size = len(self.table)
            if not -size <= n < size:
                raise IndexError(f"line {n} out of range for a store of {size} lines")
            self._sync(n % size + 1)
            return self._line(n % size)

    def peek(self, n: int = 1) -> list[MemoryLine]:
        """The newest ``n`` lines, newest first (recency as of now, insertion similarity)."""
        with self._lock:
            self._sync()
            now, size = self.clock(), len(self.table)
            picks = range(size - 1, max(size - n, 0) - 1, -1)
            return [
                self._line(i, np.exp(-max(now - self.table.t[i], 0) / self.config.tau))
                for i in picks
            ]

    def between(self, t0: float, t1: float) -> list[MemoryLine]:
        """Lines with ``t0 <= timestamp < t1``, in chain order."""
        with self._lock:
            self._sync()
            t = self.table.t[: len(self.table)]
            return [self._line(i) for i in np.flatnonzero((t >= t0) & (t < t1))]

    def sql(self, query: str, params=None) -> list[tuple]:
        """Run SQL on the DuckDB backend's ``lines`` table (plaintext stores only)."""
        if not isinstance(self.backend, DuckDBBackend):
            raise PMLLError(f"sql() needs backend='duckdb'; this store uses {self.backend_name!r}")
        with self._lock:
            return self.backend.sql(query, params)
