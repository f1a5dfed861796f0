"""Memory lines and the canonical byte encoding behind the anchor chain.

Canonical encoding (format ``pmll/1``)
--------------------------------------
Every line ``n`` carries a 64-bit anchor::

    anchor_n = BLAKE2b(digest_size=8)( anchor_{n-1} || key || value || ctx )

- ``anchor_{n-1}``: the previous anchor as its 8 raw digest bytes; the line
  before line 0 is the genesis anchor, 8 zero bytes (``"0000000000000000"``).
- ``key``, ``value``: the vectors as little-endian float32, ``4 * dim`` and
  ``4 * value_dim`` bytes, no header (both widths are fixed per store).
- ``ctx``: canonical JSON of the context dict, UTF-8 encoded:
  ``json.dumps(ctx, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
  allow_nan=False)``.  NumPy scalars and arrays are turned into Python numbers
  and lists first; ``None`` means ``{}``.
- ``||`` is plain concatenation (unambiguous: the vector widths are fixed and
  ``ctx`` comes last).

Anchors are shown as 16 lowercase hex digits of the digest bytes, and held in
memory as the big-endian ``uint64`` of those bytes.  The timestamp, novelty and
similarity of a line are *not* chained: timestamps are covered by the seal's
checksum (:func:`fnv1a64` over ``anchor (8 bytes) || t (float64 LE)`` per
line), novelty and similarity are derived from the keys.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any

import numpy as np

GENESIS = 0  # anchor "before" line 0: eight zero bytes
FNV_OFFSET = 0xCBF29CE484222325
FNV_PRIME = 0x100000001B3
_MASK64 = 0xFFFFFFFFFFFFFFFF


class PMLLError(Exception):
    """Base class of the store's errors."""


class ConflictError(PMLLError):
    """A write named a ``prev_anchor`` that is no longer the head of the chain."""


class EncryptionKeyError(PMLLError):
    """The store is encrypted and the key is missing or wrong (or the reverse)."""


class CorruptStoreError(PMLLError):
    """The files on disk cannot be read as a store."""


class ReadOnlyError(PMLLError):
    """A write to a read-only store (a rewound view, or one opened read_only=True)."""


@dataclasses.dataclass(frozen=True)
class MemoryLine:
    """One experience: a key, a value, a context, and where it sits in the chain.

    ``recency`` and ``similarity`` are relative to the query that returned the
    line (1.0 and the insertion-time similarity when read by :meth:`peek`);
    ``novelty`` is fixed at insertion: ``1 - max_j cos(key, key_j)`` over the
    lines before it (1.0 for the first line).  ``weight`` is the composite
    ``decay * (alpha * recency + beta * similarity + gamma * novelty)``;
    ``status`` is ``"committed"`` or ``"decayed"`` (a race loser kept for audit).
    """

    n: int
    key: np.ndarray
    value: np.ndarray
    context: dict
    timestamp: float
    recency: float
    novelty: float
    similarity: float
    anchor: str
    prev: str
    weight: float = 0.0
    status: str = "committed"


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(
        f"context values must be JSON-serialisable (str, int, float, bool, None, list, dict), "
        f"got {type(obj).__name__}; convert it before put()"
    )


def canonical_ctx(ctx: dict | None) -> bytes:
    """The canonical UTF-8 JSON bytes of a context dict (see the module docstring)."""
    if ctx is None:
        ctx = {}
    if not isinstance(ctx, dict):
        raise TypeError(f"ctx must be a dict (or None), got {type(ctx).__name__}")
    try:
        text = json.dumps(
            ctx,
            sort_keys=True,
            separators=(",", ":"),
            ensure_ascii=False,
            allow_nan=False,
            default=_json_default,
        )
    except ValueError as err:
        raise ValueError(
            f"ctx is not canonical JSON ({err}): it cannot hold NaN, infinity or itself"
        ) from None
    except TypeError as err:
        if "not supported between" not in str(err):
            raise
        raise TypeError(
            "ctx keys must all be strings (JSON object keys, sorted for the canonical form); "
            f"a dict in ctx mixes key types ({err}); convert the keys with str()"
        ) from None
    except RecursionError:
        raise ValueError("ctx is nested too deeply (or refers to itself)") from None
    return text.encode("utf-8")


def vector_bytes(vec: np.ndarray) -> bytes:
    """Little-endian float32 bytes of a vector."""
    return np.ascontiguousarray(vec, dtype="<f4").tobytes()


def anchor_digest(prev: int, key: bytes, value: bytes, ctx: bytes) -> int:
    """``BLAKE2b-64(prev || key || value || ctx)`` as a big-endian integer."""
    h = hashlib.blake2b(prev.to_bytes(8, "big"), digest_size=8)
    h.update(key)
    h.update(value)
    h.update(ctx)
    return int.from_bytes(h.digest(), "big")


def to_hex(anchor: int) -> str:
    return f"{int(anchor):016x}"


def from_hex(anchor: str | int) -> int:
    if isinstance(anchor, int | np.integer):
        return int(anchor)
    text = str(anchor).strip().lower()
    if len(text) != 16 or any(c not in "0123456789abcdef" for c in text):
        raise ValueError(f"an anchor is 16 hex digits, got {anchor!r}")
    return int(text, 16)


def fnv1a64(data: bytes, h: int = FNV_OFFSET) -> int:
    """FNV-1a/64 of ``data``, continuing from ``h`` (so a long log can be fed in pieces)."""
    prime, mask = FNV_PRIME, _MASK64
    for byte in data:
        h = ((h ^ byte) * prime) & mask
    return h


def checksum_bytes(anchors: np.ndarray, timestamps: np.ndarray) -> bytes:
    """The per-line bytes the seal's checksum covers: ``anchor (8, big-endian) || t (float64 LE)``."""
    rows = np.empty(len(anchors), dtype=[("a", ">u8"), ("t", "<f8")])
    rows["a"] = anchors
    rows["t"] = timestamps
    return rows.tobytes()
