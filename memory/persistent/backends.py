"""Where lines live: in memory, or in an append-only JSONL log with snapshot segments.

Every disk backend keeps its files in the store's folder and exchanges
:class:`~memworld.memory.persistent.table.Records`.  ``load()`` reads all lines for
opening; ``iter_records()`` re-reads the source of truth in pieces for
``verify`` (for JSONL that is the log, never the snapshot).  ``fsync``:
``"always"`` syncs before a put returns, ``"batch"`` every ``fsync_batch``
lines or ``fsync_seconds``, ``"never"`` leaves it to the OS (and to close).

JSONL log (``log.jsonl``), one line per record, human-readable except the
vectors, which are base64 of little-endian float32 so they round-trip exactly::

    {"n":0,"anchor":"…","prev":"0000000000000000","t":1700000000.0,"ctx":{…},"key":"…","value":"…"}

(with encryption: ``{"n":…,"anchor":…,"prev":…,"t":…,"enc":"…"}``).  A record
is written with one ``write`` call, so a crash can leave at most the last line
unterminated (torn); a writing handle drops it at open with a warning giving its
byte count and truncates the log to the last whole line.  Any whole line that
does not parse is damage, not a crash: :class:`CorruptStoreError` names it and
nothing is cut.  A failed append is cut back, so no half record stays behind it.  Snapshot segments (``snapshot/seg-START-STOP.npz``) hold the columns of
lines ``START..STOP-1`` and the log offset after them, so opening a large store
reads the arrays and parses only the log tail.
"""

from __future__ import annotations

import base64
import json
import os
import struct
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from memworld.memory.persistent.crypto import Cipher
from memworld.memory.persistent.line import (
    CorruptStoreError,
    EncryptionKeyError,
    canonical_ctx,
    from_hex,
    to_hex,
)
from memworld.memory.persistent.lock import writer_alive
from memworld.memory.persistent.snapshots import discard_segments, load_segments, write_segment
from memworld.memory.persistent.table import (
    LineTable,
    Records,
    check_continues,
    warn_broken_chain,
)

FSYNC_MODES = ("always", "batch", "never")
_sync = getattr(os, "fdatasync", os.fsync)
_CLOSE_SNAPSHOT_MIN = 4096  # close() writes a segment only for a tail this long


def record_aad(n: int, anchor: int) -> bytes:
    return struct.pack("<Q", int(n)) + int(anchor).to_bytes(8, "big")


def encrypt_payload(cipher: Cipher, records: Records, i: int) -> bytes:
    key, value = np.asarray(records.key[i], "<f4"), np.asarray(records.value[i], "<f4")
    plain = key.tobytes() + value.tobytes()
    return cipher.encrypt(plain + records.ctx[i], record_aad(records.n[i], records.anchor[i]))


def decrypt_payload(cipher: Cipher, blob: bytes, n: int, anchor: int, dim: int, value_dim: int):
    try:
        plain = cipher.decrypt(blob, record_aad(n, anchor), where=f"line {n}")
    except EncryptionKeyError as err:
        err.line = int(n)
        raise
    split = 4 * dim
    return plain[:split], plain[split : split + 4 * value_dim], plain[split + 4 * value_dim :]


class SyncPolicy:
    """Decides when appended lines are synced to disk."""

    def __init__(self, mode: str, batch: int, seconds: float) -> None:
        if mode not in FSYNC_MODES:
            raise ValueError(f"fsync must be one of {FSYNC_MODES}, got {mode!r}")
        self.mode, self.batch, self.seconds = mode, batch, seconds
        self.unsynced, self.last = 0, time.monotonic()

    def due(self, appended: int) -> bool:
        self.unsynced += appended
        if self.mode == "always":
            return True
        if self.mode == "never" or self.unsynced == 0:
            return False
        return self.unsynced >= self.batch or time.monotonic() - self.last >= self.seconds

    def done(self) -> None:
        self.unsynced, self.last = 0, time.monotonic()


class Backend:
    """Base: nothing is persisted (``backend="memory"``)."""

    name = "memory"
    persistent = False

    def __init__(
        self,
        root: Path | None,
        dim: int,
        value_dim: int,
        config,
        fsync: str,
        cipher: Cipher | None,
        read_only: bool = False,
    ) -> None:
        self.root, self.dim, self.value_dim, self.config = root, dim, value_dim, config
        self.cipher, self.read_only = cipher, read_only
        self.policy = SyncPolicy(fsync, config.fsync_batch, config.fsync_seconds)

    def load(self) -> Records:
        return Records.concat(list(self.iter_records()), self.dim, self.value_dim)

    def iter_records(self, chunk: int = 65536) -> Iterator[Records]:
        return iter(())

    def append(self, records: Records) -> None:
        pass

    def read_new(self, start: int, head: int) -> Records:
        """Lines another process appended since this (read-only) handle last read."""
        return Records.empty(self.dim, self.value_dim)

    def flush(self) -> None:
        pass

    def after_append(self, table: LineTable) -> None:
        """Hook run after lines are appended to the table (JSONL snapshots here)."""

    def close(self, table: LineTable | None = None) -> None:
        pass


class JsonlBackend(Backend):
    """Append-only JSON-lines log plus snapshot segments (the default backend)."""

    name = "jsonl"
    persistent = True

    def __init__(self, root, dim, value_dim, config, fsync, cipher, read_only=False) -> None:
        super().__init__(root, dim, value_dim, config, fsync, cipher, read_only)
        self.log_path = root / "log.jsonl"
        self.snap_dir = root / "snapshot"
        if not read_only:
            self.log_path.touch(exist_ok=True)
        self.fd = -1
        self.snap_stop = 0  # lines covered by snapshot segments
        self.read_end = 0  # log offset after the last whole line loaded (read-only refresh)
        self.log_end = 0  # log size after the last complete append (a failed one is cut back)

    # ------------------------------------------------------------- encoding
    def _encode(self, records: Records) -> bytes:
        out = []
        for i in range(len(records)):
            head = (
                f'{{"n":{int(records.n[i])},"anchor":"{to_hex(records.anchor[i])}",'
                f'"prev":"{to_hex(records.prev[i])}","t":{float(records.t[i])!r}'
            )
            if self.cipher is not None:
                enc = base64.b64encode(encrypt_payload(self.cipher, records, i)).decode()
                out.append(f'{head},"enc":"{enc}"}}\n')
            else:
                key = base64.b64encode(records.key[i].astype("<f4").tobytes()).decode()
                value = base64.b64encode(records.value[i].astype("<f4").tobytes()).decode()
                ctx = records.ctx[i].decode("utf-8")
                out.append(f'{head},"ctx":{ctx},"key":"{key}","value":"{value}"}}\n')
        return "".join(out).encode("utf-8")

    def _decode(self, lines: list[bytes], first_line: int) -> Records:
        m, dim, vdim = len(lines), self.dim, self.value_dim
        n = np.zeros(m, np.int64)
        anchor, prev = np.zeros(m, np.uint64), np.zeros(m, np.uint64)
        t = np.zeros(m, np.float64)
        keys, values = np.zeros((m, dim), np.float32), np.zeros((m, vdim), np.float32)
        ctxs = []
        for i, raw in enumerate(lines):
            try:
                obj = json.loads(raw)
                n[i], t[i] = obj["n"], obj["t"]
                anchor[i], prev[i] = from_hex(obj["anchor"]), from_hex(obj["prev"])
                if self.cipher is not None:
                    kb, vb, cb = decrypt_payload(
                        self.cipher, base64.b64decode(obj["enc"]), n[i], anchor[i], dim, vdim
                    )
                    ctx = cb
                else:
                    kb, vb = base64.b64decode(obj["key"]), base64.b64decode(obj["value"])
                    ctx = canonical_ctx(obj["ctx"])
                keys[i] = np.frombuffer(kb, "<f4", count=dim)
                values[i] = np.frombuffer(vb, "<f4", count=vdim)
            except (ValueError, KeyError, TypeError) as err:
                error = CorruptStoreError(
                    f"{self.log_path}: log line {first_line + i} is not a valid record ({err}); "
                    "the log was damaged or edited"
                )
                error.line = first_line + i
                raise error from err
            ctxs.append(ctx)
        return Records(n, anchor, prev, t, keys, values, ctxs)

    # -------------------------------------------------------------- reading
    def _read_lines(self, offset: int) -> tuple[list[bytes], int, int]:
        """Whole lines from ``offset``, the offset after the last whole line, and the file size."""
        with open(self.log_path, "rb") as f:
            f.seek(offset)
            data = f.read()
        end = data.rfind(b"\n") + 1
        return data[:end].split(b"\n")[:-1], offset + end, offset + len(data)

    def load(self) -> Records:
        parts, offset = load_segments(
            self.snap_dir, self.cipher, self.read_only, self.dim, self.value_dim
        )
        stop = int(parts[-1].n[-1]) + 1 if parts else 0
        if parts and not self._boundary_ok(offset):
            warnings.warn(
                f"snapshot of {self.root} does not match the log; ignoring it and re-reading "
                "the log (the snapshot is rebuilt)",
                stacklevel=3,
            )
            discard_segments(self.snap_dir, 0, self.read_only)
            parts, offset, stop = [], 0, 0
        lines, end, size = self._read_lines(offset)
        tail = self._decode(lines, stop)  # a whole line that does not parse: CorruptStoreError
        if len(tail) and parts and int(tail.n[0]) != stop:
            warnings.warn(
                f"snapshot of {self.root} does not match the log; ignoring it and re-reading "
                "the log (the snapshot is rebuilt)",
                stacklevel=3,
            )
            discard_segments(self.snap_dir, 0, self.read_only)
            parts, stop = [], 0
            lines, end, size = self._read_lines(0)
            tail = self._decode(lines, 0)
        if end < size:
            self._torn_tail(end, size)
        self.snap_stop, self.read_end = stop, end
        records = Records.concat([*parts, tail], self.dim, self.value_dim)
        warn_broken_chain(records, str(self.log_path))
        return records

    def _boundary_ok(self, offset: int) -> bool:
        if offset > self.log_path.stat().st_size:
            return False
        if offset == 0:
            return True
        with open(self.log_path, "rb") as f:
            f.seek(offset - 1)
            return f.read(1) == b"\n"

    def _torn_tail(self, keep: int, size: int) -> None:
        """An unterminated last line: a write cut short (or, read-only, one in progress)."""
        if self.read_only:
            if not writer_alive(self.root):
                warnings.warn(
                    f"{self.log_path}: ignoring a torn last record (unterminated, {size - keep} "
                    f"bytes after byte {keep}), left by a crash mid-write; a writing handle "
                    "cuts it",
                    stacklevel=4,
                )
            return
        warnings.warn(
            f"{self.log_path}: dropped a torn last record (unterminated, {size - keep} bytes "
            f"after byte {keep}), left by a crash mid-write; every whole line is kept",
            stacklevel=4,
        )
        os.truncate(self.log_path, keep)

    def read_new(self, start: int, head: int) -> Records:
        """Whole lines appended by the writer since the last load or refresh."""
        if os.stat(self.log_path).st_size <= self.read_end:  # the usual case: one stat
            return Records.empty(self.dim, self.value_dim)
        lines, end, _ = self._read_lines(self.read_end)
        records = self._decode(lines, start)
        check_continues(records, start, head, str(self.log_path))
        self.read_end = end
        return records

    def iter_records(self, chunk: int = 65536) -> Iterator[Records]:
        first, pending = 0, []
        with open(self.log_path, "rb") as f:
            for raw in f:
                if not raw.endswith(b"\n"):
                    break  # torn tail: not part of the log
                pending.append(raw)
                if len(pending) == chunk:
                    yield self._decode(pending, first)
                    first, pending = first + len(pending), []
        if pending:
            yield self._decode(pending, first)

    # -------------------------------------------------------------- writing
    def append(self, records: Records) -> None:
        if self.fd < 0:
            self.fd = os.open(self.log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            self.log_end = os.fstat(self.fd).st_size
        data = memoryview(self._encode(records))
        size = len(data)
        try:
            while data:
                written = os.write(self.fd, data)
                if written <= 0:
                    raise OSError(f"{self.log_path}: write returned {written}")
                data = data[written:]
            if self.policy.due(len(records)):
                self.flush()
        except BaseException:
            os.ftruncate(self.fd, self.log_end)  # no half record stays behind a failed put
            raise
        self.log_end += size

    def flush(self) -> None:
        if self.fd >= 0 and self.policy.unsynced:
            _sync(self.fd)
        self.policy.done()

    def after_append(self, table: LineTable) -> None:
        if len(table) - self.snap_stop >= self.config.snapshot_every:
            self.snapshot(table)

    def snapshot(self, table: LineTable) -> None:
        """Write the lines after the last segment as a new segment."""
        start, stop = self.snap_stop, len(table)
        if stop <= start or self.read_only:
            return
        self.flush()
        write_segment(
            self.snap_dir, table.records(start, stop), os.path.getsize(self.log_path), self.cipher
        )
        self.snap_stop = stop

    def close(self, table: LineTable | None = None) -> None:
        if table is not None and len(table) - self.snap_stop >= _CLOSE_SNAPSHOT_MIN:
            self.snapshot(table)
        if self.fd >= 0:
            self.flush()
            os.close(self.fd)
            self.fd = -1
