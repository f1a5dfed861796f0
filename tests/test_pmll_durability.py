"""PersistentStore durability: a writer killed with SIGKILL mid-writes, and a torn last record."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from memworld.memory.persistent import PersistentStore

REPO = Path(__file__).resolve().parents[1]
WRITER = textwrap.dedent(
    """
    import sys
    import numpy as np
    from memworld.memory.persistent.store import PersistentStore

    store = PersistentStore(sys.argv[1], 8, backend=sys.argv[2], fsync=sys.argv[3])
    rng = np.random.default_rng(0)
    i = 0
    while True:
        anchor = store.put(rng.normal(size=8), rng.normal(size=8), {"i": i})
        print(anchor, flush=True)  # acknowledged: put() returned
        i += 1
    """
)


CASES = [(backend, "always") for backend in ("jsonl", "lmdb", "duckdb")] + [
    pytest.param(backend, fsync, marks=pytest.mark.slow)
    for backend in ("jsonl", "lmdb", "duckdb")
    for fsync in ("batch", "never")
]


@pytest.mark.parametrize("backend, fsync", CASES)
def test_sigkill_mid_writes_keeps_every_acknowledged_line(tmp_path, backend, fsync) -> None:
    """A process crash loses no acknowledged line, whatever the fsync mode (fsync guards
    against the machine failing, not the process), except DuckDB's ``batch``/``never``
    lines still waiting in memory: there the store keeps a verified prefix of them."""
    path = tmp_path / "store"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path), backend, fsync],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=REPO,
        env=env,
        text=True,
    )
    acknowledged = []
    try:
        for line in writer.stdout:
            acknowledged.append(line.strip())
            if len(acknowledged) >= 150:
                writer.send_signal(signal.SIGKILL)  # mid-writes: the loop never pauses
                break
        else:
            pytest.fail(f"the writer died early: {writer.stderr.read()[-2000:]}")
        acknowledged += [x.strip() for x in writer.stdout if x.strip()]
    finally:
        writer.kill()
        writer.wait(timeout=30)
    assert writer.returncode == -signal.SIGKILL
    with PersistentStore(path) as store:
        kept = len(acknowledged)
        if backend == "duckdb" and fsync != "always":  # pending lines die with the process
            kept = min(len(store), kept)
        assert len(store) >= kept
        assert [store.line(i).anchor for i in range(kept)] == acknowledged[:kept]
        if kept:
            assert store.line(kept - 1).context == {"i": kept - 1}
        assert store.verify().ok
        store.put(np.ones(8), np.ones(8), {"after": "crash"})
    with PersistentStore(path) as store:
        assert store.verify().ok and store.line(-1).context == {"after": "crash"}


@pytest.mark.parametrize("torn", [b'{"n":12,"anchor":"5f3a', b"\x00" * 40])
def test_torn_last_record_is_dropped_with_a_warning(tmp_path, torn: bytes) -> None:
    path = tmp_path / "store"
    rng = np.random.default_rng(0)
    with PersistentStore(path, 4, fsync="always") as store:
        store.put_many(rng.normal(size=(12, 4)), rng.normal(size=(12, 4)))
        head = store.head
    log = path / "log.jsonl"
    size = log.stat().st_size
    with open(log, "ab") as f:
        f.write(torn)
    with pytest.warns(UserWarning, match=f"torn last record \\(unterminated, {len(torn)} bytes"):
        store = PersistentStore(path)
    assert len(store) == 12 and store.head == head and store.verify().ok
    assert log.stat().st_size == size, "the torn bytes are cut so the next append starts clean"
    store.put(np.ones(4), np.ones(4))
    store.close()
    reopened = PersistentStore(path)
    assert len(reopened) == 13 and reopened.verify().ok


def test_a_damaged_line_inside_the_log_is_an_error_not_a_silent_drop(tmp_path) -> None:
    path = tmp_path / "store"
    with PersistentStore(path, 4) as store:
        store.put_many(np.eye(4), np.eye(4))
    log = path / "log.jsonl"
    lines = log.read_bytes().split(b"\n")
    lines[1] = b"not json"
    log.write_bytes(b"\n".join(lines))
    with pytest.raises(Exception, match="log line 1 is not a valid record"):
        PersistentStore(path)
