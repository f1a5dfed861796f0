"""``derived.bin``: novelty and similarity at insertion, cached next to a disk backend.

Novelty needs a nearest-neighbour search per line, so it is computed in blocks
(see ``StoreConfig.sync_every``) and cached here rather than in the chained
records.  The file is a sequence of chunks::

    header: start (uint64) | count (uint64) | last anchor (uint64) | payload bytes (uint32)
    payload: novelty float32[count] || similarity float32[count]   (AES-GCM when encrypted)

little-endian.  A chunk is used only if it continues the previous one and its
last anchor matches the loaded line; anything after a torn or stale chunk is
ignored and recomputed from the keys.  The file is a cache: never fsynced.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

import numpy as np

from memworld.memory.persistent.crypto import Cipher
from memworld.memory.persistent.line import EncryptionKeyError

_HEADER = struct.Struct("<QQQI")


class DerivedFile:
    def __init__(self, path: Path, cipher: Cipher | None, read_only: bool = False) -> None:
        self.path, self.cipher, self.read_only = path, cipher, read_only

    def load(self, anchors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Cached (novelty, similarity) for the first lines of ``anchors`` (as many as match)."""
        novelty, similarity, covered, good_end = [], [], 0, 0
        data = self.path.read_bytes() if self.path.exists() else b""
        pos = 0
        while pos + _HEADER.size <= len(data):
            start, count, last, size = _HEADER.unpack_from(data, pos)
            body = data[pos + _HEADER.size : pos + _HEADER.size + size]
            if start != covered or len(body) < size or start + count > len(anchors):
                break
            if int(anchors[start + count - 1]) != last:
                break
            if self.cipher is not None:
                try:
                    body = self.cipher.decrypt(body, data[pos : pos + _HEADER.size], "derived.bin")
                except EncryptionKeyError:
                    break
            values = np.frombuffer(body, "<f4")
            if len(values) != 2 * count:
                break
            novelty.append(values[:count])
            similarity.append(values[count:])
            covered += count
            pos += _HEADER.size + size
            good_end = pos
        if good_end < len(data) and not self.read_only:
            os.truncate(self.path, good_end)
        if not novelty:
            return np.zeros(0, np.float32), np.zeros(0, np.float32)
        return np.concatenate(novelty), np.concatenate(similarity)

    def append(self, start: int, last_anchor: int, novelty: np.ndarray, similarity: np.ndarray):
        if self.read_only or len(novelty) == 0:
            return
        body = novelty.astype("<f4").tobytes() + similarity.astype("<f4").tobytes()
        size = len(body) + (28 if self.cipher is not None else 0)
        header = _HEADER.pack(start, len(novelty), int(last_anchor), size)
        if self.cipher is not None:
            body = self.cipher.encrypt(body, header)
        with open(self.path, "ab") as f:
            f.write(header + body)
