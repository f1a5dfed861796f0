"""The embedded-database backends: LMDB (fast key/value) and DuckDB (analytical SQL).

LMDB (``lines.lmdb/``): one record per line under the 8-byte big-endian line
number; the value is ``anchor (u64) | prev (u64) | t (f64)`` little-endian,
then ``key || value || ctx`` (or the AES-GCM blob).  Each append is one
transaction, so a crash never leaves half a record; ``fsync="always"`` commits
with ``sync=True``, ``"batch"`` calls ``env.sync()`` every ``fsync_batch`` lines
or ``fsync_seconds``.  The map doubles when full.

DuckDB (``lines.duckdb``): table ``lines(n, anchor, prev, t, key, value, ctx,
enc)`` with anchors as hex text, vectors as little-endian float32 BLOBs and
``ctx`` as JSON, so SQL can filter by time and join on context fields
(``store.sql(...)``).  A single-row INSERT costs ~1 ms, so lines are inserted
in Arrow batches: under ``"always"`` every put is its own committed
transaction; under ``"batch"``/``"never"`` up to ``fsync_batch`` lines (or
``fsync_seconds``) wait in memory and a crash of the process loses them.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

import numpy as np

from memworld.memory.persistent.backends import Backend, decrypt_payload, encrypt_payload
from memworld.memory.persistent.line import PMLLError, from_hex, to_hex
from memworld.memory.persistent.lock import StoreLockedError, read_holder
from memworld.memory.persistent.table import Records, check_continues

_LMDB_HEADER = struct.Struct("<QQd")


class LmdbBackend(Backend):
    name = "lmdb"
    persistent = True

    def __init__(self, root, dim, value_dim, config, fsync, cipher, read_only=False) -> None:
        super().__init__(root, dim, value_dim, config, fsync, cipher, read_only)
        try:
            import lmdb
        except ImportError as err:  # pragma: no cover - depends on the environment
            raise ImportError("backend='lmdb' needs lmdb: pip install 'memworld[pmll]'") from err
        self.lmdb = lmdb
        options = dict(
            map_size=config.lmdb_map_size,
            subdir=True,
            sync=fsync == "always",
            metasync=fsync != "never",
            readonly=read_only,
            max_dbs=0,
        )
        try:  # readers take LMDB's reader lock too: they may sit beside the writer
            self.env = lmdb.open(str(root / "lines.lmdb"), lock=True, **options)
        except lmdb.Error as err:
            if "already open in this process" in str(err):
                raise StoreLockedError(
                    f"PMLL store {root} (lmdb) is already open in this process, and LMDB "
                    "allows one handle per process: share that handle (it is thread-safe), "
                    "or read from another process",
                    root,
                    read_holder(root),
                ) from err
            if not read_only:
                raise
            self.env = lmdb.open(str(root / "lines.lmdb"), lock=False, **options)
        self.fixed = _LMDB_HEADER.size + 4 * dim + 4 * value_dim

    def _begin(self):
        """A read transaction; adopts a map the writer grew since this handle opened."""
        try:
            return self.env.begin(buffers=False)
        except self.lmdb.MapResizedError:
            self.env.set_mapsize(0)
            return self.env.begin(buffers=False)

    def _decode(self, keys: list[bytes], vals: list[bytes]) -> Records:
        m, dim, vdim = len(vals), self.dim, self.value_dim
        n = np.frombuffer(b"".join(keys), ">u8").astype(np.int64)
        head = np.dtype([("anchor", "<u8"), ("prev", "<u8"), ("t", "<f8")])
        if self.cipher is None:
            rec = np.dtype([*head.descr, ("key", "<f4", (dim,)), ("value", "<f4", (vdim,))])
            rows = np.frombuffer(b"".join(v[: self.fixed] for v in vals), rec, count=m)
            keys_, values = rows["key"].astype(np.float32), rows["value"].astype(np.float32)
            ctx = [v[self.fixed :] for v in vals]
        else:
            rows = np.frombuffer(b"".join(v[: head.itemsize] for v in vals), head, count=m)
            keys_, values = np.zeros((m, dim), np.float32), np.zeros((m, vdim), np.float32)
            ctx = []
            for i, v in enumerate(vals):
                kb, vb, cb = decrypt_payload(
                    self.cipher, v[head.itemsize :], n[i], rows["anchor"][i], dim, vdim
                )
                keys_[i], values[i] = np.frombuffer(kb, "<f4"), np.frombuffer(vb, "<f4")
                ctx.append(cb)
        return Records(
            n,
            rows["anchor"].astype(np.uint64),
            rows["prev"].astype(np.uint64),
            rows["t"].astype(np.float64),
            keys_,
            values,
            ctx,
        )

    def read_new(self, start: int, head: int) -> Records:
        with self._begin() as txn:
            cursor = txn.cursor()
            items = list(cursor.iternext()) if cursor.set_range(start.to_bytes(8, "big")) else []
        if not items:
            return Records.empty(self.dim, self.value_dim)
        records = self._decode([k for k, _ in items], [v for _, v in items])
        check_continues(records, start, head, str(self.root / "lines.lmdb"))
        return records

    def iter_records(self, chunk: int = 65536) -> Iterator[Records]:
        with self._begin() as txn:
            keys, vals = [], []
            for key, value in txn.cursor():
                keys.append(key)
                vals.append(value)
                if len(vals) == chunk:
                    yield self._decode(keys, vals)
                    keys, vals = [], []
            if vals:
                yield self._decode(keys, vals)

    def _encode(self, records: Records, i: int) -> bytes:
        head = _LMDB_HEADER.pack(int(records.anchor[i]), int(records.prev[i]), float(records.t[i]))
        if self.cipher is not None:
            return head + encrypt_payload(self.cipher, records, i)
        key, value = np.asarray(records.key[i], "<f4"), np.asarray(records.value[i], "<f4")
        return head + key.tobytes() + value.tobytes() + records.ctx[i]

    def append(self, records: Records) -> None:
        items = [
            (int(records.n[i]).to_bytes(8, "big"), self._encode(records, i))
            for i in range(len(records))
        ]
        while True:
            try:
                with self.env.begin(write=True) as txn:
                    for key, value in items:
                        if not txn.put(key, value, append=True, overwrite=False):
                            raise PMLLError(  # raised inside: the transaction is aborted
                                f"{self.root / 'lines.lmdb'}: line {int.from_bytes(key, 'big')} "
                                "is already stored: something wrote to the store beside this "
                                "handle; nothing of this put was written; reopen and verify()"
                            )
                break
            except self.lmdb.MapFullError:
                self.env.set_mapsize(2 * self.env.info()["map_size"])
        if self.policy.due(len(records)):
            self.flush()

    def flush(self) -> None:
        if self.policy.unsynced and not self.read_only:
            self.env.sync(True)
        self.policy.done()

    def close(self, table=None) -> None:
        self.flush()
        self.env.close()


class DuckDBBackend(Backend):
    name = "duckdb"
    persistent = True
    columns = ("n", "anchor", "prev", "t", "key", "value", "ctx", "enc")

    def __init__(self, root, dim, value_dim, config, fsync, cipher, read_only=False) -> None:
        super().__init__(root, dim, value_dim, config, fsync, cipher, read_only)
        try:
            import duckdb
            import pyarrow
        except ImportError as err:  # pragma: no cover - depends on the environment
            raise ImportError(
                "backend='duckdb' needs duckdb and pyarrow: pip install 'memworld[pmll]' pyarrow"
            ) from err
        self.pa = pyarrow
        try:
            self.con = duckdb.connect(str(root / "lines.duckdb"), read_only=read_only)
        except (duckdb.IOException, duckdb.ConnectionException) as err:
            holder = read_holder(root)
            raise StoreLockedError(
                f"PMLL store {root} (duckdb) is held by another handle (writer: process "
                f"{holder.get('pid', '?')}); DuckDB lets no other process read or write beside "
                "a writer, nor a read-only handle beside a writer in one process: share the "
                "writing handle, or use backend='jsonl' or 'lmdb' for readers beside a writer "
                f"({type(err).__name__}: {str(err).splitlines()[0]})",
                root,
                holder,
            ) from err
        if not read_only:
            self.con.execute(
                "CREATE TABLE IF NOT EXISTS lines (n BIGINT, anchor VARCHAR, prev VARCHAR, "
                "t DOUBLE, key BLOB, value BLOB, ctx JSON, enc BLOB)"
            )
        self.pending: list[Records] = []

    def iter_records(self, chunk: int = 65536) -> Iterator[Records]:
        self.flush()
        cursor = self.con.execute(f"SELECT {', '.join(self.columns)} FROM lines ORDER BY rowid")
        while True:
            rows = cursor.fetchmany(chunk)
            if not rows:
                return
            cols = list(zip(*rows))
            yield self._decode(cols)

    def _decode(self, cols) -> Records:
        n, anchor, prev, t, key, value, ctx, enc = cols
        m, dim, vdim = len(n), self.dim, self.value_dim
        anchors = np.array([from_hex(a) for a in anchor], np.uint64)
        n = np.asarray(n, np.int64)
        if self.cipher is None:
            keys = np.frombuffer(b"".join(key), "<f4").reshape(m, dim).copy()
            values = np.frombuffer(b"".join(value), "<f4").reshape(m, vdim).copy()
            ctxs = [c.encode("utf-8") for c in ctx]
        else:
            keys, values = np.zeros((m, dim), np.float32), np.zeros((m, vdim), np.float32)
            ctxs = []
            for i in range(m):
                kb, vb, cb = decrypt_payload(self.cipher, enc[i], n[i], anchors[i], dim, vdim)
                keys[i], values[i] = np.frombuffer(kb, "<f4"), np.frombuffer(vb, "<f4")
                ctxs.append(cb)
        return Records(
            n,
            anchors,
            np.array([from_hex(p) for p in prev], np.uint64),
            np.asarray(t, np.float64),
            keys,
            values,
            ctxs,
        )

    def append(self, records: Records) -> None:
        self.pending.append(records)
        if self.policy.due(len(records)):
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            self.policy.done()
            return
        records = Records.concat(self.pending, self.dim, self.value_dim)
        pa, m = self.pa, len(records)
        if self.cipher is None:
            key = [records.key[i].astype("<f4").tobytes() for i in range(m)]
            value = [records.value[i].astype("<f4").tobytes() for i in range(m)]
            ctx, enc = [c.decode("utf-8") for c in records.ctx], [None] * m
        else:
            key = value = ctx = [None] * m
            enc = [encrypt_payload(self.cipher, records, i) for i in range(m)]
        batch = pa.table(
            {
                "n": records.n,
                "anchor": [to_hex(a) for a in records.anchor],
                "prev": [to_hex(p) for p in records.prev],
                "t": records.t,
                "key": pa.array(key, pa.binary()),
                "value": pa.array(value, pa.binary()),
                "ctx": pa.array(ctx, pa.string()),
                "enc": pa.array(enc, pa.binary()),
            }
        )
        self.con.register("pmll_batch", batch)
        try:
            inserted = self.con.execute(
                f"INSERT INTO lines SELECT {', '.join(self.columns)} FROM pmll_batch"
            ).fetchone()
        finally:
            self.con.unregister("pmll_batch")
        if inserted is None or inserted[0] != m:
            raise PMLLError(f"{self.root / 'lines.duckdb'}: inserted {inserted} rows of {m}")
        self.pending = []
        self.policy.done()

    def sql(self, query: str, params=None) -> list[tuple]:
        self.flush()
        return self.con.execute(query, params or []).fetchall()

    def close(self, table=None) -> None:
        self.flush()
        self.con.close()
