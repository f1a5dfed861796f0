"""PMLL: one writer per store across processes and handles, read-only handles beside it,
paths through missing folders, and the SubprocVecEnv pattern (workers read, one process writes).
"""

from __future__ import annotations

import functools
import json
import multiprocessing
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from stable_baselines3.common.vec_env import SubprocVecEnv

from memworld import envs  # noqa: F401  (registers memworld/*)
from memworld.agents.pmll_wrapper import PersistentMemoryVecWriter, PersistentMemoryWrapper
from memworld.memory.persistent import PersistentStore, PMLLError, StoreLockedError

REPO = Path(__file__).resolve().parents[1]
DISK_BACKENDS = ["jsonl", "lmdb", "duckdb"]

# A writer in its own process, driven line by line from stdin:
#   open PATH BACKEND | put N | close | exit   -> one JSON line per command on stdout.
HOLDER = textwrap.dedent(
    """
    import json, os, sys
    import numpy as np
    from memworld.memory.persistent import PersistentStore

    store, rng = None, np.random.default_rng(1)
    for command in sys.stdin:
        op, *args = command.split()
        if op == "open":
            store = PersistentStore(args[0], 4, backend=args[1], fsync="always")
            out = {"pid": os.getpid()}
        elif op == "put":
            m = int(args[0])
            out = {"anchors": store.put_many(rng.normal(size=(m, 4)), rng.normal(size=(m, 4)))}
        elif op == "close":
            store.close()
            out = {"closed": True}
        else:
            break
        print(json.dumps(out), flush=True)
    """
)


class Holder:
    """A writing process: send a command, read its JSON answer."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", HOLDER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"},
            text=True,
        )

    def __call__(self, command: str) -> dict:
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            pytest.fail(f"the writer process died: {self.proc.stderr.read()[-2000:]}")
        return json.loads(line)

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=30)


def test_one_writer_across_processes_and_readers_beside_it(tmp_path) -> None:
    """Process B holds the store; process A is refused (it used to fork the chain or lose
    B's acknowledged puts); a read-only handle sees B's lines on refresh; after B closes,
    A writes and every acknowledged line is there, in one verified chain."""
    holder = Holder()
    try:
        for backend in DISK_BACKENDS:
            path = tmp_path / backend
            pid = holder(f"open {path} {backend}")["pid"]
            with pytest.raises(StoreLockedError, match=f"process {pid}") as caught:
                PersistentStore(path)
            assert str(path) in str(caught.value) and caught.value.holder["pid"] == pid
            first = holder("put 10")["anchors"]
            if backend == "duckdb":  # DuckDB's own file lock: no reader beside a writer
                with pytest.raises(StoreLockedError, match="DuckDB"):
                    PersistentStore(path, read_only=True)
            else:
                reader = PersistentStore(path, read_only=True)
                assert [reader.line(i).anchor for i in range(len(reader))] == first
                second = holder("put 7")["anchors"]
                assert reader.refresh() == 7 and reader.head == second[-1]
                assert reader.refresh() == 0
                assert len(reader.query(np.ones(4), k=3)) > 0
                reader.close()
                first += second
            holder("close")
            with PersistentStore(path) as store:  # B is gone: A is the writer now
                assert [store.line(i).anchor for i in range(len(first))] == first
                store.put_many(np.ones((10, 4)), np.ones((10, 4)))
                assert len(store) == len(first) + 10 and store.verify().ok
    finally:
        holder.stop()


@pytest.mark.parametrize("backend", DISK_BACKENDS)
def test_two_writing_handles_in_one_process_are_refused(tmp_path, backend) -> None:
    path = tmp_path / "s"
    first = PersistentStore(path, 4, backend=backend)
    with pytest.raises(StoreLockedError, match="this process"):
        PersistentStore(path)
    first.put(np.ones(4), np.ones(4))
    if backend == "jsonl":  # a JSONL reader may sit beside the writer in the same process
        reader = PersistentStore(path, read_only=True)
        first.put(np.ones(4) * 2, np.ones(4))
        assert len(reader) == 1 and reader.refresh() == 1 and reader.head == first.head
        reader.close()
    else:  # LMDB: one handle per process; DuckDB: no reader beside a writer
        with pytest.raises(StoreLockedError, match="share"):
            PersistentStore(path, read_only=True)
        first.put(np.ones(4) * 2, np.ones(4))
    del first  # dropped without close(): it syncs, and the lock goes with the handle
    with PersistentStore(path) as second:
        second.put(np.ones(4), np.ones(4))
        assert len(second) == 3 and second.verify().ok
        assert [int(line.n) for line in second.peek(3)] == [2, 1, 0]


def test_lmdb_put_that_is_not_stored_raises_and_is_not_acknowledged(tmp_path) -> None:
    store = PersistentStore(tmp_path / "s", 4, backend="lmdb")
    store.put(np.ones(4), np.ones(4))
    with store.backend.env.begin(write=True) as txn:  # a record written behind the store
        txn.put((1).to_bytes(8, "big"), b"foreign")
    with pytest.raises(PMLLError, match="line 1 is already stored"):
        store.put(np.zeros(4) + 2, np.ones(4))
    assert len(store) == 1


def _child_put(store, queue) -> None:
    try:
        store.put(np.ones(4), np.ones(4))
        queue.put("written")
    except StoreLockedError as err:
        queue.put(str(err))


def test_a_forked_process_cannot_write_through_the_parents_handle(tmp_path) -> None:
    store = PersistentStore(tmp_path / "s", 4)
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_child_put, args=(store, queue))
    child.start()
    child.join(60)
    assert "forked process cannot write" in queue.get(timeout=5)
    store.put(np.ones(4), np.ones(4))
    assert len(store) == 1 and store.verify().ok


def test_a_path_through_a_missing_folder_opens_the_existing_store(tmp_path) -> None:
    real = tmp_path / "enc"
    with PersistentStore(real, 2, encryption_key="pw") as store:
        store.put_many(np.eye(2), np.eye(2))
        head = store.head
    meta = (real / "meta.json").read_bytes()
    through = tmp_path / "missing" / ".." / "enc"
    with PersistentStore(through, dim=2, encryption_key="pw") as store:
        assert len(store) == 2 and store.head == head and store.root == real.resolve()
    with pytest.raises(ValueError, match="dim=2"):
        PersistentStore(through, dim=3, encryption_key="pw")
    assert (real / "meta.json").read_bytes() == meta, "opening never rewrites meta.json"
    assert PersistentStore(real, encryption_key="pw", read_only=True).head == head


def test_the_store_cannot_be_pickled_into_another_process(tmp_path) -> None:
    import pickle

    with pytest.raises(TypeError, match="pass the store's path"):
        pickle.dumps(PersistentStore(None, 2))


# ------------------------------------------------------------ SubprocVecEnv
def _worker_env(path: str) -> gym.Env:
    env = gym.make("memworld/RepeatFirst-v0", episode_length=1)
    return PersistentMemoryWrapper(env, store=path, value="next_obs", k=3)


@pytest.mark.parametrize(
    "start_method", ["fork", pytest.param("forkserver", marks=pytest.mark.slow)]
)
def test_subproc_vec_env_workers_read_and_the_main_process_writes(tmp_path, start_method) -> None:
    """Workers open the store by path, read-only; the main process appends every line.

    ``fork`` keeps the fast suite fast; SB3's default ``forkserver`` (slow, ~15 s of
    imports) pickles the same env function, which carries only the path.
    """
    path = tmp_path / "s"
    obs_dim = gym.spaces.flatdim(gym.make("memworld/RepeatFirst-v0").observation_space)
    store = PersistentStore(path, obs_dim, value_dim=obs_dim, fsync="always")
    make = functools.partial(_worker_env, str(path))
    venv = PersistentMemoryVecWriter(SubprocVecEnv([make, make], start_method=start_method), store)
    try:
        venv.seed(0)
        obs = venv.reset()
        assert np.all(obs[:, obs_dim:] == 0), "an empty store reads zeros"
        acknowledged = []
        for _ in range(8):
            obs, _, _, infos = venv.step(np.array([0, 1]))
            acknowledged += [info["pmll_anchor"] for info in infos]
            assert not any("pmll_line" in info for info in infos)
        # Each worker read (at its auto-reset) every line but this step's two: a row whose
        # one-hot observation is the key of one of them reads its values, another reads
        # zeros (a different one-hot is below the store's cosine floor).
        earlier = {tuple(line.key) for line in store.peek(len(store))[2:]}
        seen = np.array([tuple(row[:obs_dim]) in earlier for row in obs])
        assert seen.any(), seen
        read = np.abs(obs[:, obs_dim:]).sum(axis=1) > 0
        assert np.array_equal(read, seen), "the workers read the lines"
    finally:
        venv.close()
    store.close()
    with PersistentStore(path, read_only=True) as reopened:
        assert len(reopened) == 16 and reopened.verify().ok
        assert [reopened.line(i).anchor for i in range(16)] == acknowledged
        assert [reopened.line(i).context["env"] for i in range(4)] == [0, 1, 0, 1]
