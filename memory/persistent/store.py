"""``PersistentStore``: the Persistent Memory Logic Loop's store of hashed memory lines.

A line is ``(key, value, ctx)`` plus a timestamp, chained by a 64-bit BLAKE2b
anchor (encoding in :mod:`memworld.memory.persistent.line`).  Reads rank the nearest
keys by the composite weight of the PMLL document::

    r_i = exp(-(t_now - t_i) / tau)             recency (tau = 6 h)
    s_i = cos(q, k_i)                            similarity to the query, >= floor (0.15)
    n_i = 1 - max_{j<i} cos(k_i, k_j)            novelty, fixed at insertion (1 for line 0)
    w_i = decay_i (alpha r_i + beta s_i + gamma n_i)   alpha, beta, gamma = 0.35, 0.50, 0.08
    bias(q) = sum_i w_i v_i / sum_i w_i          over the k best lines (zeros if none pass)

``decay_i`` is 1, or ``loser_decay`` for a race loser kept for audit.  The
``k * candidate_factor`` nearest keys by cosine (from the index) are the
candidates that ``w_i`` ranks.  Novelty and the index are brought up to date in
blocks (on a read, or every ``sync_every`` puts), so a put costs a hash and an
append, and novelty is exactly what it would be if computed at each put.

All methods are thread-safe (one re-entrant lock); ``aput``/``aquery``/... run
the same methods in a worker thread and return the same values.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import numpy as np

from memworld.memory.base import check_range
from memworld.memory.persistent import crypto, integrity, race
from memworld.memory.persistent.aio import AsyncStoreMixin
from memworld.memory.persistent.backends import Backend, JsonlBackend
from memworld.memory.persistent.backends_db import DuckDBBackend, LmdbBackend
from memworld.memory.persistent.config import StoreConfig
from memworld.memory.persistent.derived import DerivedFile
from memworld.memory.persistent.index import make_index, normalise
from memworld.memory.persistent.line import (
    ConflictError,
    CorruptStoreError,
    PMLLError,
    ReadOnlyError,
    anchor_digest,
    canonical_ctx,
    from_hex,
    to_hex,
)
from memworld.memory.persistent.reads import StoreReads
from memworld.memory.persistent.table import LineTable, Records

BACKENDS = {"memory": Backend, "jsonl": JsonlBackend, "lmdb": LmdbBackend, "duckdb": DuckDBBackend}
FORMAT = "pmll/1"
_BLOCK = 512  # lines per novelty/index block: a small (block, block) Gram matrix is cheaper


class PersistentStore(StoreReads, AsyncStoreMixin):
    """A persistent, hash-chained store of memory lines with similarity search.

    Args:
        path: folder of the store (created if missing); None keeps it in memory.
        dim: key width; may be omitted when opening an existing store.
        value_dim: value width (default ``dim``).
        backend: ``"jsonl"`` (default on disk), ``"lmdb"``, ``"duckdb"``; ``"memory"`` when
            ``path`` is None.  An existing store keeps the backend it was created with.
        index: ``"exact"`` (NumPy), ``"faiss-flat"``, ``"faiss-hnsw"`` or ``"faiss-ivf"``.
        fsync: ``"always"`` (a put returns after its line is on disk), ``"batch"`` or ``"never"``.
        config: heuristics and tuning (:class:`StoreConfig`).
        encryption_key: AES key (16/24/32 bytes) or passphrase (str) for encryption at rest.
        clock: time source for timestamps and recency (``time.time``: seconds).
        read_only: open without writing anything (no torn-tail repair either).
    """

    def __init__(
        self,
        path: str | Path | None = None,
        dim: int | None = None,
        *,
        value_dim: int | None = None,
        backend: str | None = None,
        index: str = "exact",
        fsync: str = "batch",
        config: StoreConfig | None = None,
        encryption_key: bytes | str | None = None,
        clock=time.time,
        read_only: bool = False,
    ) -> None:
        self.config = config or StoreConfig()
        self.clock, self.read_only, self.index_kind = clock, read_only, index
        self._lock = threading.RLock()
        self.root = None if path is None else Path(path)
        meta = self._open_meta(dim, value_dim, backend, encryption_key)
        self.dim, self.value_dim, self.backend_name = (
            meta["dim"],
            meta["value_dim"],
            meta["backend"],
        )
        self.encrypted = meta.get("encryption") is not None
        self.backend = BACKENDS[self.backend_name](
            self.root, self.dim, self.value_dim, self.config, fsync, self._cipher, read_only
        )
        self.table = LineTable(self.dim, self.value_dim)
        self.table.append(self.backend.load())
        self.derived_file = None
        if self.backend.persistent:
            self.derived_file = DerivedFile(self.root / "derived.bin", self._cipher, read_only)
            novelty, similarity = self.derived_file.load(self.table.anchor[: len(self.table)])
            self.table.set_derived(0, novelty, similarity)
        self.index = make_index(index, self.dim, self.config)
        self.index.add(normalise(self.table.key[: self.table.derived]))
        self.closed = False

    def _open_meta(self, dim, value_dim, backend, secret) -> dict:
        self._cipher = None
        for name, value in (("dim", dim), ("value_dim", value_dim)):
            if value is not None:
                check_range(name, value, 1, integer=True, fix="None: dim (or the stored width)")
        if self.root is None:
            if backend not in (None, "memory"):
                raise ValueError(
                    f"backend={backend!r} needs a path; pass path= or backend='memory'"
                )
            if secret is not None:
                raise ValueError(
                    "encryption_key needs a path: an in-memory store has nothing at rest"
                )
            if dim is None:
                raise ValueError("dim (the key width) is required for a new store")
            return {
                "dim": dim,
                "value_dim": dim if value_dim is None else value_dim,
                "backend": "memory",
            }
        meta_path = self.root / "meta.json"
        if meta_path.exists():
            meta = json.loads(meta_path.read_text())
            if meta.get("format") != FORMAT:
                raise CorruptStoreError(
                    f"{meta_path}: format {meta.get('format')!r}, want {FORMAT}"
                )
            for name, asked in (("dim", dim), ("value_dim", value_dim), ("backend", backend)):
                if asked is not None and asked != meta[name]:
                    raise ValueError(
                        f"store {self.root} has {name}={meta[name]!r}, asked {asked!r}; "
                        f"open it with {name}={meta[name]!r} (or None) or use another path"
                    )
            self._cipher = crypto.open_cipher(meta.get("encryption"), secret, str(self.root))
            return meta
        if self.read_only:
            raise FileNotFoundError(
                f"no PMLL store at {self.root} (no meta.json) to open read-only"
            )
        if self.root.exists() and any(self.root.iterdir()):
            raise CorruptStoreError(f"{self.root} is not empty and has no meta.json: not a store")
        if dim is None:
            raise ValueError(f"{self.root} is a new store: pass dim (the key width)")
        backend = backend or "jsonl"
        if backend not in BACKENDS or backend == "memory":
            raise ValueError(
                f"backend must be one of jsonl, lmdb, duckdb for a path, got {backend!r}"
            )
        meta = {
            "format": FORMAT,
            "dim": int(dim),
            "value_dim": int(dim if value_dim is None else value_dim),
            "backend": backend,
            "created": time.time(),
            "encryption": None,
        }
        if secret is not None:
            meta["encryption"], self._cipher = crypto.new_encryption_meta(secret)
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "meta.json").write_text(json.dumps(meta, indent=1))
        return meta

    # ----------------------------------------------------------------- writes
    def put(
        self,
        key,
        value,
        ctx: dict | None = None,
        prev_anchor: str | None = None,
        *,
        timestamp: float | None = None,
    ) -> str:
        """Append one line; return its anchor (16 hex digits).

        ``prev_anchor``, if given, must be the current head (optimistic concurrency):
        otherwise :class:`ConflictError` is raised and nothing is written.
        """
        keys = self._matrix(key, self.dim, "key")
        values = self._matrix(value, self.value_dim, "value")
        if len(keys) != 1 or len(values) != 1:
            raise ValueError("put() takes one key and one value; use put_many() for more")
        stamps = None if timestamp is None else [timestamp]
        return self._append(keys, values, [canonical_ctx(ctx)], prev_anchor, stamps)[0]

    def put_many(
        self, keys, values, ctxs=None, prev_anchor: str | None = None, *, timestamps=None
    ) -> list[str]:
        """Append lines in order, as one write; return their anchors."""
        keys = self._matrix(keys, self.dim, "keys")
        values = self._matrix(values, self.value_dim, "values")
        m = len(keys)
        if len(values) != m:
            raise ValueError(f"got {m} keys and {len(values)} values; pass one value per key")
        ctxs = [None] * m if ctxs is None else list(ctxs)
        if len(ctxs) != m:
            raise ValueError(f"got {m} keys and {len(ctxs)} contexts; pass one ctx per key")
        return self._append(keys, values, [canonical_ctx(c) for c in ctxs], prev_anchor, timestamps)

    def _append(self, keys, values, ctx_bytes, prev_anchor, timestamps) -> list[str]:
        m = len(keys)
        with self._lock:
            self._check_writable()
            head = self.table.head
            if prev_anchor is not None and from_hex(prev_anchor) != head:
                raise ConflictError(
                    f"prev_anchor {prev_anchor} is not the head {to_hex(head)}: another writer "
                    "appended since you read it; re-read store.head, rebase and retry"
                )
            if timestamps is None:
                stamps = np.full(m, self.clock(), np.float64)
            else:
                stamps = np.asarray(timestamps, np.float64).reshape(-1)
                if len(stamps) != m or not np.isfinite(stamps).all():
                    raise ValueError(f"timestamps must be {m} finite numbers")
            key_le, value_le = np.asarray(keys, "<f4"), np.asarray(values, "<f4")
            anchors, prevs, prev = np.zeros(m, np.uint64), np.zeros(m, np.uint64), head
            for i in range(m):
                prevs[i] = prev
                prev = anchor_digest(prev, key_le[i].tobytes(), value_le[i].tobytes(), ctx_bytes[i])
                anchors[i] = prev
            first = len(self.table)
            records = Records(
                np.arange(first, first + m, dtype=np.int64),
                anchors,
                prevs,
                stamps,
                keys,
                values,
                ctx_bytes,
            )
            self.backend.append(records)  # on disk (per fsync) before it is visible
            self.table.append(records)
            self.backend.after_append(self.table)
            if len(self.table) - self.table.derived >= self.config.sync_every:
                self._sync()
        return [to_hex(a) for a in anchors]

    def _matrix(self, x, width: int, name: str) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        x = x.reshape(1, -1) if x.ndim == 1 else x
        if x.ndim != 2 or x.shape[1] != width:
            raise ValueError(f"{name} must have shape (m, {width}) or ({width},), got {x.shape}")
        if not np.isfinite(x).all():
            raise ValueError(f"{name} contain NaN or infinity; clean them before put()")
        return np.ascontiguousarray(x)

    def _check_writable(self) -> None:
        if self.closed:
            raise PMLLError("the store is closed; open it again")
        if self.read_only:
            raise ReadOnlyError(
                "this store is read-only (a rewound view, or opened read_only=True); "
                "write to the live store instead"
            )

    def _sync(self, upto: int | None = None) -> None:
        """Novelty, insertion similarity and the index for lines not yet derived, in blocks."""
        table = self.table
        upto = len(table) if upto is None else min(upto, len(table))
        while table.derived < upto:
            start = table.derived
            stop = min(len(table), start + _BLOCK)
            unit = normalise(table.key[start:stop])
            best = np.full(stop - start, -np.inf, np.float32)
            if start:  # nearest earlier line outside the block: the index holds lines < start
                best = self.index.search(unit, 1)[0][:, 0]
            earlier = np.tri(len(unit), k=-1, dtype=bool)  # only lines before, in the block
            gram = np.where(earlier, unit @ unit.T, -np.inf)
            best = np.maximum(best, gram.max(axis=1))
            similarity = np.where(np.isfinite(best), best, 0.0).astype(np.float32)
            novelty = np.where(np.isfinite(best), 1.0 - best, 1.0).astype(np.float32)
            table.set_derived(start, novelty, similarity)
            self.index.add(unit)
            if self.derived_file is not None:
                self.derived_file.append(start, table.anchor[stop - 1], novelty, similarity)

    # ------------------------------------------------- chain, audit, history
    @property
    def head(self) -> str:
        """Anchor of the newest line ("0000000000000000" when empty)."""
        with self._lock:
            return to_hex(self.table.head)

    def __len__(self) -> int:
        return len(self.table)

    def race(self, candidates, scores=None) -> race.Race:
        """Score candidate ``(key, value[, ctx])`` updates together; nothing is written."""
        return race.run_race(self, candidates, scores)

    def trace(self, result: race.Race, winner: int | None = None) -> str:
        """Commit a race's winner (losers kept, decayed); return the winner's anchor."""
        return race.commit_trace(self, result, winner)

    def rewind(self, anchor_or_n: str | int, verify: bool = False) -> PersistentStore:
        """A read-only view of the store up to a line (see :func:`integrity.rewind`)."""
        return integrity.rewind(self, anchor_or_n, verify)

    def seal(self, path: str | Path | None = None) -> dict:
        """Write ``seal.json`` (final anchor, lines, FNV-1a/64 checksum); return it."""
        return integrity.seal(self, path)

    def verify(self, seal: dict | str | Path | None = None) -> integrity.VerifyReport:
        """Re-walk the chain from disk; name the first changed, removed or reordered line."""
        return integrity.verify(self, seal)

    def reindex(self, index: str) -> None:
        """Rebuild the search index as another kind (novelty is kept)."""
        with self._lock:
            self._sync()
            self.index = make_index(index, self.dim, self.config)
            self.index.add(normalise(self.table.key[: len(self.table)]))
            self.index_kind = index

    def stats(self) -> dict:
        with self._lock:
            size, t = len(self.table), self.table.t[: len(self.table)]
            return {
                "path": None if self.root is None else str(self.root),
                "lines": size,
                "head": self.head,
                "dim": self.dim,
                "value_dim": self.value_dim,
                "backend": self.backend_name,
                "index": self.index_kind,
                "encrypted": self.encrypted,
                "decayed": int(self.table.decayed[:size].sum()),
                "first_t": float(t[0]) if size else None,
                "last_t": float(t[-1]) if size else None,
            }

    # ------------------------------------------------------------- lifecycle
    def flush(self) -> None:
        """Sync written lines to disk now, whatever the fsync mode."""
        with self._lock:
            self.backend.policy.unsynced = max(1, self.backend.policy.unsynced)
            self.backend.flush()

    def close(self) -> None:
        with self._lock:
            if self.closed:
                return
            if not self.read_only:
                self._sync()
            self.backend.close(self.table)
            self.closed = True

    def __enter__(self) -> PersistentStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        where = "memory" if self.root is None else str(self.root)
        return f"PersistentStore({where!r}, lines={len(self)}, backend={self.backend_name!r})"
