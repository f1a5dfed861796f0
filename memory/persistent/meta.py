"""``meta.json``: deciding whether a path is a new store or an existing one, and reading it.

The path is resolved first (``Path.resolve``), so ``d/missing/../enc`` is the
store ``d/enc`` and not a new store beside it.  A new store's ``meta.json`` is
written to a temporary file, synced, and linked into place with ``os.link``
(``O_EXCL`` creation where hard links are missing), which fails if the name exists: two processes creating one store cannot both
win, and nobody ever reads a half-written ``meta.json``.  Opening never writes
``meta.json``.  A writing handle takes the writer lock
(:mod:`memworld.memory.persistent.lock`) before it looks at ``meta.json``.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from memworld.memory.base import check_range
from memworld.memory.persistent import crypto
from memworld.memory.persistent.line import CorruptStoreError
from memworld.memory.persistent.lock import LOCK_NAME

FORMAT = "pmll/1"
DISK_BACKENDS = ("jsonl", "lmdb", "duckdb")
_FIELDS = {"dim": int, "value_dim": int, "backend": str}


def resolve_root(path: str | Path) -> Path:
    """The store folder as an absolute path with ``..`` and symlinks resolved."""
    if not isinstance(path, str | os.PathLike):
        raise TypeError(f"path must be a str or os.PathLike (or None), got {type(path).__name__}")
    root = Path(path).expanduser().resolve()
    if root.exists() and not root.is_dir():
        raise ValueError(f"path {root} is a file; a store is a folder: pass a folder")
    return root


def open_meta(root: Path | None, read_only: bool, dim, value_dim, backend, secret):
    """``(meta, cipher)`` of the store at ``root``: read, or created when new and writable.

    A writing handle must hold the writer lock already.
    """
    for name, value in (("dim", dim), ("value_dim", value_dim)):
        if value is not None:
            check_range(name, value, 1, integer=True, fix="None: dim (or the stored width)")
    if root is None:
        if backend not in (None, "memory"):
            raise ValueError(f"backend={backend!r} needs a path; pass path= or backend='memory'")
        if secret is not None:
            raise ValueError("encryption_key needs a path: an in-memory store has nothing at rest")
        if dim is None:
            raise ValueError("dim (the key width) is required for a new store")
        return {
            "dim": dim,
            "value_dim": dim if value_dim is None else value_dim,
            "backend": "memory",
        }, None
    meta = read_meta(root)
    if meta is not None:
        check_asked(root, meta, {"dim": dim, "value_dim": value_dim, "backend": backend})
        return meta, crypto.open_cipher(meta.get("encryption"), secret, str(root))
    if read_only:
        raise FileNotFoundError(
            f"no PMLL store at {root} (no meta.json) to open read-only; create it "
            "first with a writing handle (PersistentStore(path, dim))"
        )
    if dim is None:
        raise ValueError(f"{root} is a new store: pass dim (the key width)")
    return create_meta(root, dim, value_dim, backend, secret)


def read_meta(root: Path) -> dict | None:
    """The store's ``meta.json`` (None if there is none), with a clear error if it is damaged."""
    meta_path = root / "meta.json"
    try:
        text = meta_path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as err:
        raise CorruptStoreError(f"{meta_path}: cannot read the store's meta.json ({err})") from err
    try:
        meta = json.loads(text)
    except ValueError as err:
        raise CorruptStoreError(
            f"{meta_path}: meta.json is not valid JSON ({err}); it was damaged or edited: "
            "restore it from a backup (the log holds the lines, meta.json their widths)"
        ) from err
    if not isinstance(meta, dict):
        raise CorruptStoreError(f"{meta_path}: meta.json must be a JSON object")
    if meta.get("format") != FORMAT:
        raise CorruptStoreError(f"{meta_path}: format {meta.get('format')!r}, want {FORMAT}")
    for name, kind in _FIELDS.items():
        value = meta.get(name)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise CorruptStoreError(
                f"{meta_path}: field {name!r} is {value!r}, want a {kind.__name__}; "
                "meta.json was damaged or edited"
            )
    if meta["dim"] < 1 or meta["value_dim"] < 1 or meta["backend"] not in DISK_BACKENDS:
        raise CorruptStoreError(
            f"{meta_path}: dim={meta['dim']}, value_dim={meta['value_dim']}, "
            f"backend={meta['backend']!r} is not a store's shape; meta.json was damaged or edited"
        )
    if meta.get("encryption") is not None and not isinstance(meta["encryption"], dict):
        raise CorruptStoreError(f"{meta_path}: field 'encryption' must be an object or null")
    return meta


def check_asked(root: Path, meta: dict, asked: dict) -> None:
    """Refuse an open that asks for another ``dim``, ``value_dim`` or ``backend``."""
    for name, value in asked.items():
        if value is not None and value != meta[name]:
            raise ValueError(
                f"store {root} has {name}={meta[name]!r}, asked {value!r}; "
                f"open it with {name}={meta[name]!r} (or None) or use another path"
            )


def create_meta(root: Path, dim: int, value_dim: int | None, backend: str | None, secret):
    """Write a new store's ``meta.json`` exclusively; return ``(meta, cipher)``."""
    others = sorted(p.name for p in root.iterdir() if p.name != LOCK_NAME)
    if others:
        raise CorruptStoreError(
            f"{root} is not empty ({', '.join(others[:5])}) and has no meta.json: not a store; "
            "pass an empty or new folder"
        )
    backend = backend or "jsonl"
    if backend not in DISK_BACKENDS:
        raise ValueError(f"backend must be one of jsonl, lmdb, duckdb for a path, got {backend!r}")
    meta = {
        "format": FORMAT,
        "dim": int(dim),
        "value_dim": int(dim if value_dim is None else value_dim),
        "backend": backend,
        "created": time.time(),
        "encryption": None,
    }
    cipher = None
    if secret is not None:
        meta["encryption"], cipher = crypto.new_encryption_meta(secret)
    data = json.dumps(meta, indent=1).encode("utf-8")
    tmp = root / f".meta.{os.getpid()}.tmp"
    try:
        _write_synced(tmp, data, os.O_TRUNC)
        try:
            os.link(tmp, root / "meta.json")  # fails if meta.json exists: never overwritten
        except FileExistsError:
            raise
        except OSError:  # a filesystem without hard links: O_EXCL creation instead
            _write_synced(root / "meta.json", data, os.O_EXCL)
    except FileExistsError:
        raise CorruptStoreError(
            f"{root / 'meta.json'} appeared while this store was being created: "
            "another process created it first; open it again"
        ) from None
    finally:
        tmp.unlink(missing_ok=True)
    return meta, cipher


def _write_synced(path: Path, data: bytes, flag: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | flag, 0o644)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def check_secret(secret) -> None:
    """``encryption_key`` is bytes (an AES key), a non-empty str (a passphrase) or None."""
    if secret is None:
        return
    if not isinstance(secret, bytes | bytearray | str):
        raise TypeError(
            "encryption_key must be bytes (a 16, 24 or 32-byte AES key) or str (a passphrase), "
            f"got {type(secret).__name__}; pass e.g. encryption_key='my passphrase'"
        )
    if len(secret) == 0:
        raise ValueError("encryption_key is empty; pass a passphrase or a 16/24/32-byte key")
