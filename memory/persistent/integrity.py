"""Walking the chain: ``verify``, ``seal`` and ``rewind``, all iterative.

``verify`` re-reads the backend's source of truth (for JSONL, the log itself,
not the snapshot), recomputes every anchor from ``prev || key || value || ctx``
and checks that each line's ``prev`` is the anchor of the line before it.  The
first disagreement is named:

- ``changed``: line i does not hash to its anchor (or its anchor was rewritten,
  which the next line's ``prev`` reveals: then line i is the one named);
- ``removed``: line i's ``prev`` points past a line that is gone;
- ``reordered``: line i's ``prev`` belongs to a line that comes later;
- ``truncated``: the seal counts more lines than there are;
- ``checksum``: chain intact but a field outside it (a timestamp) changed;
- ``seal``: the seal itself is damaged (verify fails: "seal damaged").

``seal`` verifies the chain first (a damaged store is never sealed), then
writes ``seal.json``: final anchor, line count, the FNV-1a/64 of ``anchor (8
bytes, big-endian) || t (float64 LE)`` over the lines in order, and
``seal_checksum``, the FNV-1a/64 of the seal's other fields as canonical JSON.
A seal that is not a JSON object of those fields with a matching
``seal_checksum`` makes ``verify`` fail with problem ``"seal"`` ("seal damaged").
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path

import numpy as np

from memworld.memory.persistent.backends import Backend
from memworld.memory.persistent.index import make_index, normalise
from memworld.memory.persistent.line import (
    FNV_OFFSET,
    GENESIS,
    CorruptStoreError,
    EncryptionKeyError,
    PMLLError,
    ReadOnlyError,
    anchor_digest,
    checksum_bytes,
    fnv1a64,
    from_hex,
    to_hex,
)


@dataclasses.dataclass(frozen=True)
class VerifyReport:
    """What :func:`verify` found: ``ok``, the lines walked, and the first bad line."""

    ok: bool
    lines: int
    first_bad: int | None = None
    problem: str | None = None
    message: str = "chain verified"

    def __bool__(self) -> bool:
        return self.ok


def _chunks(store):
    if store.backend.persistent:
        yield from store.backend.iter_records()
    else:
        for start in range(0, len(store.table), 65536):
            yield store.table.records(start, min(len(store.table), start + 65536))


SEAL_FORMAT = "pmll-seal/2"
_SEAL_FIELDS = ("format", "final_anchor", "lines", "fnv1a64", "checksum_covers", "sealed_at")


def seal_checksum(fields: dict) -> str:
    """FNV-1a/64 of the seal's fields (all but ``seal_checksum``) as canonical JSON."""
    body = {k: v for k, v in fields.items() if k != "seal_checksum"}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return f"{fnv1a64(text.encode('utf-8')):016x}"


def _hex16(value) -> bool:
    return (
        isinstance(value, str) and len(value) == 16 and all(c in "0123456789abcdef" for c in value)
    )


def check_seal(seal) -> str | None:
    """Why ``seal`` (a parsed seal.json) is damaged, or None if it is whole."""
    if not isinstance(seal, dict):
        return f"a seal is a JSON object, got {type(seal).__name__}"
    missing = [name for name in (*_SEAL_FIELDS, "seal_checksum") if name not in seal]
    if missing:
        return f"fields {missing} are missing"
    if seal["format"] != SEAL_FORMAT:
        return f"format {seal['format']!r}, want {SEAL_FORMAT!r} (seal the store again)"
    lines = seal["lines"]
    if not isinstance(lines, int) or isinstance(lines, bool) or lines < 0:
        return f"'lines' is {lines!r}, want an integer >= 0"
    if not (_hex16(seal["final_anchor"]) and _hex16(seal["fnv1a64"])):
        return "'final_anchor' and 'fnv1a64' must be 16 lowercase hex digits"
    try:
        expected = seal_checksum(seal)
    except (TypeError, ValueError) as err:
        return f"its fields are not canonical JSON ({err})"
    if seal["seal_checksum"] != expected:
        return f"seal_checksum {seal['seal_checksum']!r} does not match its fields ({expected})"
    return None


def _load_seal(seal):
    """``(seal dict, None)`` or ``(None, why it is damaged)``."""
    if isinstance(seal, str | Path):
        try:
            seal = json.loads(Path(seal).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise FileNotFoundError(f"no seal at {seal}; pass the path of a seal.json") from None
        except (OSError, ValueError) as err:
            return None, f"{seal} is not readable JSON ({err})"
    why = check_seal(seal)
    return (None, why) if why else (seal, None)


def verify(store, seal=None) -> VerifyReport:
    """Re-walk the chain from line 0; compare with ``seal`` (dict or path) if given."""
    if seal is not None:
        seal, damage = _load_seal(seal)
        if damage:
            return VerifyReport(False, 0, None, "seal", f"seal damaged: {damage}")
    with store._lock:
        if store.backend.persistent and not store.read_only:
            store.backend.flush()
        expected_prev, i, checksum = GENESIS, 0, FNV_OFFSET
        sealed = seal["lines"] if seal else 0
        broken: tuple[int, int] | None = None  # (position, n recorded there) of a broken link
        later_n: list[np.ndarray] = []
        last_anchor = GENESIS
        chunks = _chunks(store)
        while True:
            try:
                rec = next(chunks, None)
            except (CorruptStoreError, EncryptionKeyError) as err:
                bad = getattr(err, "line", None)
                return VerifyReport(False, i, bad, "changed", f"unreadable record: {err}")
            if rec is None:
                break
            if broken is not None:
                later_n.append(rec.n)
                continue
            key, value = rec.key.astype("<f4"), rec.value.astype("<f4")
            for j in range(len(rec)):
                prev, anchor, n = int(rec.prev[j]), int(rec.anchor[j]), int(rec.n[j])
                digest = anchor_digest(prev, key[j].tobytes(), value[j].tobytes(), rec.ctx[j])
                if digest != anchor:
                    return VerifyReport(
                        False,
                        i,
                        i,
                        "changed",
                        f"line {i} was changed: its "
                        f"content hashes to {to_hex(digest)}, not {to_hex(anchor)}",
                    )
                if prev != expected_prev:
                    broken = (i, n)
                    later_n.append(rec.n[j + 1 :])
                    break
                if n != i:
                    return VerifyReport(False, i, i, "changed", f"line {i} carries number {n}")
                expected_prev = last_anchor = anchor
                i += 1
            take = min(len(rec), sealed - (i - len(rec)))
            if broken is None and take > 0:
                checksum = fnv1a64(checksum_bytes(rec.anchor[:take], rec.t[:take]), checksum)
        if broken is not None:
            return _classify(*broken, np.concatenate(later_n) if later_n else np.zeros(0))
        if seal:
            return _check_seal(seal, i, last_anchor, checksum, store)
        return VerifyReport(True, i)


def _classify(i: int, n: int, later: np.ndarray) -> VerifyReport:
    if n == i:  # this line is intact: the one before it was changed and re-hashed
        return VerifyReport(
            False,
            i,
            i - 1,
            "changed",
            f"line {i - 1} was changed and its "
            f"anchor recomputed: line {i} still points to the original",
        )
    if n > i and not np.any((later >= i) & (later < n)):
        return VerifyReport(
            False,
            i,
            i,
            "removed",
            f"line {i} is missing: the line at position "
            f"{i} was written as line {n} (lines {i}..{n - 1} removed)",
        )
    return VerifyReport(
        False,
        i,
        i,
        "reordered",
        f"line {i} is out of order: the line at position {i} was written as line {n}",
    )


def _check_seal(seal: dict, lines: int, last_anchor: int, checksum: int, store) -> VerifyReport:
    sealed = int(seal["lines"])
    if lines < sealed:
        return VerifyReport(
            False,
            lines,
            lines,
            "truncated",
            f"the seal counts {sealed} lines, "
            f"the store has {lines}: lines {lines}..{sealed - 1} were removed",
        )
    sealed_anchor = int(store.table.anchor[sealed - 1]) if sealed else GENESIS
    if lines == sealed:
        sealed_anchor = last_anchor
    if sealed_anchor != from_hex(seal["final_anchor"]):
        return VerifyReport(
            False,
            lines,
            sealed - 1,
            "changed",
            f"line {sealed - 1} has anchor "
            f"{to_hex(sealed_anchor)}, the seal says {seal['final_anchor']}: the "
            "chain was rewritten",
        )
    if f"{checksum:016x}" != seal["fnv1a64"]:
        return VerifyReport(
            False,
            lines,
            None,
            "checksum",
            "the chain is intact but the log "
            "checksum differs from the seal: a timestamp was changed",
        )
    return VerifyReport(True, lines, message=f"chain verified; matches the seal of {sealed} lines")


def seal(store, path=None) -> dict:
    """Verify the store, then write (and return) its seal as it is now."""
    with store._lock:
        store.flush()
        report = verify(store)
        if not report.ok:
            raise CorruptStoreError(
                f"refusing to seal a store that does not verify: {report.message}"
            )
        size = len(store.table)
        checksum = FNV_OFFSET
        for start in range(0, size, 65536):
            stop = min(size, start + 65536)
            checksum = fnv1a64(
                checksum_bytes(store.table.anchor[start:stop], store.table.t[start:stop]), checksum
            )
        out = {
            "format": SEAL_FORMAT,
            "final_anchor": store.head,
            "lines": size,
            "fnv1a64": f"{checksum:016x}",
            "checksum_covers": "per line: anchor (8 bytes, big-endian) || t (float64, LE)",
            "sealed_at": time.time(),
        }
        out["seal_checksum"] = seal_checksum(out)
        if path is None and store.root is not None:
            path = store.root / "seal.json"
        if path is not None:
            tmp = Path(f"{path}.tmp")
            tmp.write_text(json.dumps(out, indent=1))
            os.replace(tmp, path)
        return out


class PrefixIndex:
    """The first ``n`` ids of another index: a rewound view searches the live index."""

    def __init__(self, inner, n: int) -> None:
        self.inner, self.ntotal, self.kind = inner, n, inner.kind

    def add(self, unit_keys) -> None:
        raise ReadOnlyError("a rewound view's index is read-only")

    def search(self, queries, k: int, upto: int | None = None):
        return self.inner.search(
            queries, k, self.ntotal if upto is None else min(upto, self.ntotal)
        )


def rewind(store, anchor_or_n, verify_prefix: bool = False):
    """A read-only in-memory store holding the lines up to ``anchor_or_n``.

    An int ``n`` keeps the first ``n`` lines; an anchor keeps the lines up to and
    including it.  The live store and its log are untouched.
    """
    with store._lock:
        size = len(store.table)
        if isinstance(anchor_or_n, int | np.integer):
            n = int(anchor_or_n)
            if not 0 <= n <= size:
                raise IndexError(f"rewind({n}): the store has {size} lines; pass 0..{size}")
        else:
            pos = store.table.find(from_hex(anchor_or_n))
            if pos < 0:
                raise KeyError(f"no line has anchor {anchor_or_n}; list anchors with peek()/line()")
            n = pos + 1
        view = type(store).__new__(type(store))
        view.__dict__.update(store.__dict__)
        view.table = store.table.prefix(n)
        view.read_only, view.root, view.derived_file, view.closed = True, None, None, False
        view._writer_lock = None  # the live store keeps its lock; closing the view is a no-op
        view.backend = Backend(None, store.dim, store.value_dim, store.config, "never", None, True)
        if store.table.derived >= n:  # search the live index, restricted to ids < n
            view.index = PrefixIndex(store.index, n)  # shared, so the live store's lock too
        else:  # lines not derived yet: the view derives them itself, lazily
            view._lock = type(store._lock)()
            view.index = make_index(store.index_kind, store.dim, store.config)
            view.index.add(normalise(view.table.key[: view.table.derived]))
    if verify_prefix:
        report = verify(view)
        if not report.ok:
            raise PMLLError(
                f"rewind({anchor_or_n!r}): the prefix does not verify: {report.message}"
            )
    return view
