"""One writer per store: an exclusive lock on ``writer.lock``, held while a writing handle is open.

A writing :class:`~memworld.memory.persistent.store.PersistentStore` takes an
exclusive, non-blocking ``flock`` on ``<store>/writer.lock`` when it opens and
releases it on ``close()`` (or when its process ends, however it ends: the
kernel drops the lock with the process, so a crashed writer never leaves a
stale lock).  ``flock`` locks belong to an open file, not to a process, so two
handles in one process exclude each other as two processes do.  The holder
writes its process id, host and start time into the file; a second writer gets
:class:`StoreLockedError` naming the path and that process.  Read-only handles
take no lock and may sit beside the writer.

Where ``fcntl`` is missing (Windows) the ``filelock`` package provides the same
exclusion (``pip install 'memworld[pmll]'``), without the holder's details.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

from memworld.memory.persistent.line import PMLLError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

LOCK_NAME = "writer.lock"


class StoreLockedError(PMLLError):
    """Another handle (in this process or another) holds the store's writer lock.

    ``path`` is the store's folder and ``holder`` what the holder recorded
    (``{"pid", "host", "since"}``; empty if it could not be read).
    """

    def __init__(self, message: str, path: Path, holder: dict) -> None:
        super().__init__(message)
        self.path, self.holder = path, holder


def read_holder(root: Path) -> dict:
    """What the current (or last) writer recorded in ``writer.lock`` ({} if nothing)."""
    try:
        holder = json.loads((root / LOCK_NAME).read_text() or "{}")
    except (OSError, ValueError):
        return {}
    return holder if isinstance(holder, dict) else {}


def writer_alive(root: Path) -> bool:
    """True if ``writer.lock`` names a live process on this host (a hint, not a lock test)."""
    holder = read_holder(root)
    pid = holder.get("pid")
    if not isinstance(pid, int) or holder.get("host") != socket.gethostname():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by another user
        return True
    return True


class WriterLock:
    """The exclusive writer lock of the store in ``root`` (taken on construction).

    Args:
        root: the store's folder (it must exist).
    """

    def __init__(self, root: Path) -> None:
        self.root, self.path, self.pid = root, root / LOCK_NAME, os.getpid()
        self._fd, self._fallback = -1, None
        if fcntl is None:  # pragma: no cover - Windows
            self._acquire_filelock()
            return
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise self._locked_error() from None
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        record = {"pid": self.pid, "host": socket.gethostname(), "since": time.time()}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(record).encode(), 0)

    def _acquire_filelock(self) -> None:  # pragma: no cover - Windows
        import filelock

        lock = filelock.FileLock(str(self.path) + ".filelock", timeout=0)
        try:
            lock.acquire()
        except filelock.Timeout:
            raise self._locked_error() from None
        self._fallback = lock

    def _locked_error(self) -> StoreLockedError:
        holder = read_holder(self.root)
        if holder.get("pid") is not None:
            who = f"process {holder['pid']} on {holder.get('host', '?')}"
            if holder.get("pid") == os.getpid():
                who += " (this process: another handle is still open)"
        else:
            who = "another handle"
        return StoreLockedError(
            f"PMLL store {self.root} is open for writing by {who}; a store has one writer at "
            "a time: close that handle, or open this one with read_only=True (it sees new "
            "lines after refresh()), or send the lines to the writing process",
            self.root,
            holder,
        )

    def __del__(self) -> None:  # a handle dropped without close() gives the lock up too
        try:
            self.release()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass

    @property
    def held(self) -> bool:
        return self._fd >= 0 or self._fallback is not None

    def release(self) -> None:
        """Give the lock up (idempotent); only the process that took it clears the record."""
        if self._fd >= 0:
            if os.getpid() == self.pid:
                os.ftruncate(self._fd, 0)
            os.close(self._fd)  # closing the last descriptor drops the flock
            self._fd = -1
        if self._fallback is not None:  # pragma: no cover - Windows
            self._fallback.release()
            self._fallback = None
