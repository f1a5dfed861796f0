"""JSONL snapshot segments: the columns of a run of lines, so opening skips parsing them.

``snapshot/seg-START-STOP.npz`` holds lines ``START..STOP-1`` (``n``, anchors,
timestamps, key, value, ctx bytes) and the log offset after them, written to a
temporary file, synced and renamed into place.  Segments are a cache of the
log: one that cannot be read (a damaged zip, a failed CRC or decryption, arrays
of the wrong shape, line numbers that do not run on) is ignored with a warning,
together with every segment after it, and the lines are re-read from the log;
a writing handle deletes those segments so that the next snapshot rebuilds them.
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import numpy as np

from memworld.memory.persistent.crypto import Cipher
from memworld.memory.persistent.table import Records


def _read_segment(path: Path, cipher: Cipher | None, start: int, stop: int, dim, value_dim):
    blob = path.read_bytes()
    if cipher is not None:
        blob = cipher.decrypt(blob, path.name.encode(), where=str(path))
    with np.load(io.BytesIO(blob)) as arrays:
        columns = {name: arrays[name] for name in arrays.files}  # reading checks each CRC
    m = stop - start
    ctx_off, ctx_blob = columns["ctx_off"], columns["ctx_blob"].tobytes()
    shapes = {
        "n": (m,),
        "anchor": (m,),
        "prev": (m,),
        "t": (m,),
        "key": (m, dim),
        "value": (m, value_dim),
        "ctx_off": (m + 1,),
    }
    for name, shape in shapes.items():
        if columns[name].shape != shape:
            raise ValueError(f"column {name} has shape {columns[name].shape}, want {shape}")
    if not np.array_equal(columns["n"], np.arange(start, stop)):
        raise ValueError(f"line numbers are not {start}..{stop - 1}")
    if int(ctx_off[-1]) != len(ctx_blob) or (np.diff(ctx_off) < 0).any():
        raise ValueError("ctx offsets do not fit the ctx bytes")
    records = Records(
        columns["n"].astype(np.int64),
        columns["anchor"].astype(np.uint64),
        columns["prev"].astype(np.uint64),
        columns["t"].astype(np.float64),
        columns["key"].astype(np.float32),
        columns["value"].astype(np.float32),
        [ctx_blob[a:b] for a, b in zip(ctx_off[:-1], ctx_off[1:])],
    )
    return records, int(columns["log_offset"])


def load_segments(
    snap_dir: Path, cipher: Cipher | None, read_only: bool, dim: int, value_dim: int
) -> tuple[list[Records], int]:
    """The readable run of segments from line 0, and the log offset after the last one."""
    paths = sorted(snap_dir.glob("seg-*.npz")) if snap_dir.exists() else []
    parts, stop, offset = [], 0, 0
    for i, path in enumerate(paths):
        try:
            start, end = (int(x) for x in path.name.split(".")[0].split("-")[1:3])
            if start != stop or end <= start:
                raise ValueError(
                    f"covers lines {start}..{end - 1}, the previous ones end at {stop}"
                )
            records, seg_offset = _read_segment(path, cipher, start, end, dim, value_dim)
            if parts and records.prev[0] != parts[-1].anchor[-1]:
                raise ValueError("its first line does not continue the previous segment")
        except Exception as err:  # noqa: BLE001 - any damage: the log has every line
            action = "left in place (read-only)" if read_only else "deleted, to be rebuilt"
            warnings.warn(
                f"ignoring damaged snapshot segment {path} ({type(err).__name__}: {err}); "
                f"lines from {stop} on are re-read from the log; it and later segments are "
                f"{action}",
                stacklevel=4,
            )
            if not read_only:
                for later in paths[i:]:
                    later.unlink(missing_ok=True)
            break
        parts.append(records)
        stop, offset = end, seg_offset
    return parts, offset


def discard_segments(snap_dir: Path, first: int, read_only: bool) -> None:
    """Delete the segments from the ``first``-th on (a writing handle rebuilds them)."""
    if read_only or not snap_dir.exists():
        return
    for path in sorted(snap_dir.glob("seg-*.npz"))[first:]:
        path.unlink(missing_ok=True)


def write_segment(snap_dir: Path, records: Records, log_offset: int, cipher: Cipher | None):
    """Write ``records`` (lines ``n[0]..n[-1]``) as a segment, atomically."""
    start, stop = int(records.n[0]), int(records.n[-1]) + 1
    lens = np.fromiter((len(c) for c in records.ctx), np.int64, count=stop - start)
    buf = io.BytesIO()
    np.savez(
        buf,
        n=records.n,
        anchor=records.anchor,
        prev=records.prev,
        t=records.t,
        key=records.key,
        value=records.value,
        ctx_blob=np.frombuffer(b"".join(records.ctx), np.uint8),
        ctx_off=np.concatenate([[0], np.cumsum(lens)]),
        log_offset=np.int64(log_offset),
    )
    name = f"seg-{start:012d}-{stop:012d}.npz"
    blob = buf.getvalue()
    if cipher is not None:
        blob = cipher.encrypt(blob, name.encode())
    snap_dir.mkdir(exist_ok=True)
    tmp = snap_dir / (name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(blob)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, snap_dir / name)
