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

import os
import threading
import time
from pathlib import Path

import numpy as np

from memworld.memory.persistent import integrity, race
from memworld.memory.persistent.aio import AsyncStoreMixin
from memworld.memory.persistent.backends import FSYNC_MODES, Backend, JsonlBackend
from memworld.memory.persistent.backends_db import DuckDBBackend, LmdbBackend
from memworld.memory.persistent.config import StoreConfig
from memworld.memory.persistent.derived import DerivedFile, derive_pending
from memworld.memory.persistent.index import INDEX_KINDS, make_index, normalise
from memworld.memory.persistent.line import (
    ConflictError,
    PMLLError,
    ReadOnlyError,
    anchor_digest,
    canonical_ctx,
    from_hex,
    to_hex,
)
from memworld.memory.persistent.lock import LOCK_NAME, StoreLockedError, WriterLock
from memworld.memory.persistent.meta import check_secret, open_meta, resolve_root
from memworld.memory.persistent.reads import StoreReads
from memworld.memory.persistent.table import LineTable, Records

BACKENDS = {"memory": Backend, "jsonl": JsonlBackend, "lmdb": LmdbBackend, "duckdb": DuckDBBackend}


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
        read_only: open without writing anything and without the writer lock, so it may
            sit beside the writing handle (in another process); :meth:`refresh` reads the
            lines written since.  A store has one writing handle at a time: a second one
            raises :class:`StoreLockedError` naming the holder.
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
        self.clock, self.read_only, self.index_kind = clock, bool(read_only), index
        self._lock = threading.RLock()
        self._writer_lock: WriterLock | None = None
        self.closed = True  # until every part is open
        if fsync not in FSYNC_MODES:  # checked before anything is created on disk
            raise ValueError(f"fsync must be one of {FSYNC_MODES}, got {fsync!r}")
        if index not in INDEX_KINDS:
            raise ValueError(f"index must be one of {INDEX_KINDS}, got {index!r}")
        check_secret(encryption_key)
        self.root = None if path is None else resolve_root(path)
        created = self.root is not None and not self.root.exists()
        try:
            if self.root is not None and not self.read_only:  # the lock before meta.json
                self.root.mkdir(parents=True, exist_ok=True)
                self._writer_lock = WriterLock(self.root)
            meta, self._cipher = open_meta(
                self.root, self.read_only, dim, value_dim, backend, encryption_key
            )
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
        except BaseException:
            self._abandon(created)
            raise
        self.closed = False

    def _abandon(self, created: bool) -> None:
        """Undo a failed open: close the backend, drop the lock, remove a folder we made."""
        backend = getattr(self, "backend", None)
        if backend is not None:
            try:
                backend.close(None)
            except Exception:  # noqa: BLE001 - the original error is the one to report
                pass
        if self._writer_lock is not None:
            self._writer_lock.release()
            self._writer_lock = None
        if created and self.root is not None and not (self.root / "meta.json").exists():
            (self.root / LOCK_NAME).unlink(missing_ok=True)
            try:
                self.root.rmdir()
            except OSError:
                pass

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
        keys = self._matrix(key, self.dim, "key", key=True)
        values = self._matrix(value, self.value_dim, "value")
        if len(keys) != 1 or len(values) != 1:
            raise ValueError("put() takes one key and one value; use put_many() for more")
        stamps = None if timestamp is None else [timestamp]
        return self._append(keys, values, [canonical_ctx(ctx)], prev_anchor, stamps)[0]

    def put_many(
        self, keys, values, ctxs=None, prev_anchor: str | None = None, *, timestamps=None
    ) -> list[str]:
        """Append lines in order, as one write; return their anchors."""
        keys = self._matrix(keys, self.dim, "keys", key=True)
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

    def _matrix(self, x, width: int, name: str, key: bool = False) -> np.ndarray:
        try:
            with np.errstate(over="ignore"):
                x = np.asarray(x, dtype=np.float32)
        except (TypeError, ValueError) as err:
            raise ValueError(f"{name} must be an array of numbers, got {type(x).__name__}") from err
        x = x.reshape(1, -1) if x.ndim == 1 else x
        if x.ndim != 2 or x.shape[1] != width:
            raise ValueError(f"{name} must have shape (m, {width}) or ({width},), got {x.shape}")
        if not np.isfinite(x).all():
            raise ValueError(
                f"{name} contain NaN, infinity or numbers beyond float32's range (3.4e38); "
                "clean them before put()"
            )
        if key:  # cosine needs the norm: a key whose norm overflows would match nothing
            with np.errstate(over="ignore"):
                norm = np.linalg.norm(x, axis=1)
            if not np.isfinite(norm).all():
                row = int(np.flatnonzero(~np.isfinite(norm))[0])
                raise ValueError(
                    f"{name}: row {row} has a norm beyond float32's range (largest entry "
                    f"{float(np.abs(x[row]).max()):.3g}); keys are compared by cosine, so "
                    "scale them down (e.g. divide by their norm)"
                )
        return np.ascontiguousarray(x)

    def _check_open(self) -> None:
        if self.closed:
            where = "" if self.root is None else f" {self.root}"
            raise PMLLError(f"the store{where} is closed; open it again with PersistentStore(path)")

    def _check_writable(self) -> None:
        self._check_open()
        if self.read_only:
            raise ReadOnlyError(
                "this store is read-only (a rewound view, or opened read_only=True); "
                "write to the live store instead"
            )
        lock = self._writer_lock
        if lock is not None and lock.pid != os.getpid():
            raise StoreLockedError(
                f"this handle on {self.root} was opened by process {lock.pid}; a forked process "
                "cannot write through it: send the lines to that process, or open the store "
                "here (read_only=True beside the writer)",
                self.root,
                {"pid": lock.pid},
            )

    def _sync(self, upto: int | None = None) -> None:
        """Novelty, insertion similarity and the index for lines not yet derived, in blocks."""
        derive_pending(self.table, self.index, self.derived_file, upto)

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
        """Verify the chain, then write ``seal.json`` (final anchor, lines, checksums); return it.

        Raises :class:`CorruptStoreError` (and writes nothing) if the chain does not verify.
        """
        self._check_open()
        return integrity.seal(self, path)

    def verify(self, seal: dict | str | Path | None = None) -> integrity.VerifyReport:
        """Re-walk the chain from disk; name the first changed, removed or reordered line."""
        self._check_open()
        return integrity.verify(self, seal)

    def refresh(self) -> int:
        """Read the lines the writer appended since this read-only handle loaded; return how many.

        A writing handle already holds every line (it is the only writer): 0.
        """
        with self._lock:
            self._check_open()
            if not self.read_only or not self.backend.persistent:
                return 0
            records = self.backend.read_new(len(self.table), self.table.head)
            self.table.append(records)
            return len(records)

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
            self._check_open()
            self.backend.policy.unsynced = max(1, self.backend.policy.unsynced)
            self.backend.flush()

    def close(self) -> None:
        """Sync, close the files and give the writer lock up (idempotent)."""
        with self._lock:
            if self.closed:
                return
            try:
                if not self.read_only:
                    self._sync()
                self.backend.close(self.table)
            finally:
                self.closed = True
                if self._writer_lock is not None:
                    self._writer_lock.release()

    def __del__(self) -> None:  # a handle dropped without close() still syncs and unlocks
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown, or a half-built handle
            pass

    def __getstate__(self):
        raise TypeError(
            "a PersistentStore handle cannot be pickled or sent to another process; pass the "
            "store's path instead (PersistentMemoryWrapper(env, store=path) opens it read-only)"
        )

    def __enter__(self) -> PersistentStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        where = "memory" if self.root is None else str(self.root)
        return f"PersistentStore({where!r}, lines={len(self)}, backend={self.backend_name!r})"
