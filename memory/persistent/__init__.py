"""PMLL: the Persistent Memory Logic Loop, a persistent hash-chained store of memory lines.

A persistent, hash-chained store of memory lines (:class:`PersistentStore`)
with JSONL, LMDB and DuckDB backends and exact or FAISS search; the
``PersistentMemory`` module (memory/persistent/module.py) that puts it behind
the memory protocol; and the logits-bias and low-rank delta-W integrations.
One writing handle per store at a time (:class:`StoreLockedError` otherwise);
read-only handles may sit beside it.  docs/pmll.md describes the files, the
locking and the damage policy.
"""

from memworld.memory.persistent.config import StoreConfig
from memworld.memory.persistent.integrity import VerifyReport
from memworld.memory.persistent.line import (
    GENESIS,
    ConflictError,
    CorruptStoreError,
    EncryptionKeyError,
    MemoryLine,
    PMLLError,
    ReadOnlyError,
    canonical_ctx,
)
from memworld.memory.persistent.lock import StoreLockedError
from memworld.memory.persistent.race import Race
from memworld.memory.persistent.store import PersistentStore

__all__ = [
    "GENESIS",
    "ConflictError",
    "CorruptStoreError",
    "EncryptionKeyError",
    "MemoryLine",
    "PMLLError",
    "PersistentStore",
    "Race",
    "ReadOnlyError",
    "StoreConfig",
    "StoreLockedError",
    "VerifyReport",
    "canonical_ctx",
]
