"""``derived.bin``: novelty and similarity at insertion, cached next to a disk backend.

Novelty needs a nearest-neighbour search per line, so it is computed in blocks
(see ``StoreConfig.sync_every``) and cached here rather than in the chained
records.  The file starts with the 8 bytes ``PMLLDRV2`` and is then a sequence
of chunks::

    header: start (uint64) | count (uint64) | last anchor (uint64) | payload bytes (uint32)
            | CRC-32 of the header's first 28 bytes and the payload (uint32)
    payload: novelty float32[count] || similarity float32[count]   (AES-GCM when encrypted)

little-endian.  A chunk is used only if it continues the previous one, its last
anchor matches the loaded line, its CRC matches and its values are in range
(novelty in [0, 2], similarity in [-1, 1]).  The file is a cache, never
fsynced: a torn last chunk (a crash mid-append) is dropped quietly; any other
bad chunk is reported with a warning, and from it on the values are recomputed
from the keys (a writing handle cuts the file there and appends them again).
"""

from __future__ import annotations

import os
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np

from memworld.memory.persistent.crypto import Cipher
from memworld.memory.persistent.index import normalise
from memworld.memory.persistent.line import EncryptionKeyError

MAGIC = b"PMLLDRV2"
BLOCK = 512  # lines per novelty/index block: a small (block, block) Gram matrix is cheaper
_HEADER = struct.Struct("<QQQII")
_CRC_AT = _HEADER.size - 4  # the CRC covers the header before it


class DerivedFile:
    """The derived-column cache of one store.

    Args:
        path: the file (``derived.bin`` in the store's folder).
        cipher: the store's cipher (None for a plaintext store).
        read_only: never write or cut the file.
    """

    def __init__(self, path: Path, cipher: Cipher | None, read_only: bool = False) -> None:
        self.path, self.cipher, self.read_only = path, cipher, read_only

    def _bad(self, pos: int, why: str) -> None:
        warnings.warn(
            f"{self.path}: ignoring the derived cache from byte {pos} ({why}); novelty and "
            "similarity are recomputed from the keys",
            stacklevel=4,
        )

    def load(self, anchors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Cached (novelty, similarity) for the first lines of ``anchors`` (as many as match)."""
        novelty, similarity, covered = [], [], 0
        data = self.path.read_bytes() if self.path.exists() else b""
        if data and not data.startswith(MAGIC):
            self._bad(0, "not a PMLLDRV2 file: an older format or damage")
            data = b""
        pos = good_end = len(MAGIC) if data else 0
        while pos + _HEADER.size <= len(data):
            start, count, last, size, crc = _HEADER.unpack_from(data, pos)
            body = data[pos + _HEADER.size : pos + _HEADER.size + size]
            if len(body) < size:
                break  # torn last chunk: a crash mid-append
            if zlib.crc32(body, zlib.crc32(data[pos : pos + _CRC_AT])) != crc:
                self._bad(pos, "CRC mismatch")
                break
            if start != covered or start + count > len(anchors):
                break  # lines this handle has not loaded (a read-only view of a live store)
            if int(anchors[start + count - 1]) != last:
                self._bad(pos, f"its last anchor is not line {start + count - 1}'s")
                break
            if self.cipher is not None:
                try:
                    body = self.cipher.decrypt(body, data[pos : pos + _CRC_AT], "derived.bin")
                except EncryptionKeyError:
                    self._bad(pos, "it does not decrypt")
                    break
            values = np.frombuffer(body, "<f4")
            nov, sim = values[:count], values[count:]
            if len(values) != 2 * count or not (
                np.all((nov >= 0) & (nov <= 2)) and np.all((sim >= -1) & (sim <= 1))
            ):
                self._bad(pos, "values out of range")
                break
            novelty.append(nov)
            similarity.append(sim)
            covered += count
            pos += _HEADER.size + size
            good_end = pos
        if not self.read_only and self.path.exists() and good_end < self.path.stat().st_size:
            os.truncate(self.path, good_end)
        if not novelty:
            return np.zeros(0, np.float32), np.zeros(0, np.float32)
        return np.concatenate(novelty), np.concatenate(similarity)

    def append(self, start: int, last_anchor: int, novelty: np.ndarray, similarity: np.ndarray):
        if self.read_only or len(novelty) == 0:
            return
        body = novelty.astype("<f4").tobytes() + similarity.astype("<f4").tobytes()
        size = len(body) + (28 if self.cipher is not None else 0)
        head = _HEADER.pack(start, len(novelty), int(last_anchor), size, 0)[:_CRC_AT]
        if self.cipher is not None:
            body = self.cipher.encrypt(body, head)
        crc = zlib.crc32(body, zlib.crc32(head))
        with open(self.path, "ab") as f:
            if f.tell() == 0:
                f.write(MAGIC)
            f.write(head + struct.pack("<I", crc) + body)


def derive_pending(table, index, derived_file: DerivedFile | None, upto: int | None = None):
    """Novelty, insertion similarity and index entries of the lines not derived yet, in blocks.

    Within a block, each line's nearest earlier line is found with a small Gram matrix;
    the index (holding every line before the block) gives the nearest one outside it,
    so novelty is exactly what a search at each put would give.
    """
    upto = len(table) if upto is None else min(upto, len(table))
    while table.derived < upto:
        start = table.derived
        stop = min(len(table), start + BLOCK)
        unit = normalise(table.key[start:stop])
        best = np.full(stop - start, -np.inf, np.float32)
        if start:  # nearest earlier line outside the block: the index holds lines < start
            best = index.search(unit, 1)[0][:, 0]
        earlier = np.tri(len(unit), k=-1, dtype=bool)  # only lines before, in the block
        gram = np.where(earlier, unit @ unit.T, -np.inf)
        best = np.maximum(best, gram.max(axis=1))
        similarity = np.where(np.isfinite(best), best, 0.0).astype(np.float32)
        novelty = np.where(np.isfinite(best), 1.0 - best, 1.0).astype(np.float32)
        table.set_derived(start, novelty, similarity)
        index.add(unit)
        if derived_file is not None:
            derived_file.append(start, table.anchor[stop - 1], novelty, similarity)
