"""PersistentStore: anchors, heuristics, backends, indexes, race/trace, concurrency, asyncio.

Integrity, rewind and encryption are in test_pmll_integrity.py; durability (the
SIGKILL crash test) in test_pmll_durability.py; the RL side (module, wrapper,
integrations, CLI) in test_pmll_rl.py.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import struct
import threading

import numpy as np
import pytest

from memworld.memory.persistent import (
    ConflictError,
    PersistentStore,
    StoreConfig,
    canonical_ctx,
)
from memworld.memory.persistent.config import strip_json_comments
from memworld.memory.persistent.index import ExactIndex, normalise
from memworld.memory.persistent.line import fnv1a64

DISK_BACKENDS = ["jsonl", "lmdb", "duckdb"]
TAU = 6 * 3600.0


def blake64(*parts: bytes) -> bytes:
    return hashlib.blake2b(b"".join(parts), digest_size=8).digest()


def f32(*xs: float) -> bytes:
    return struct.pack(f"<{len(xs)}f", *xs)


def filled(path=None, backend=None, lines=20, dim=4, seed=0, **kwargs) -> PersistentStore:
    """A store with ``lines`` random lines, timestamps 0, 10, 20, ... and ctx {"i": i}."""
    rng = np.random.default_rng(seed)
    store = PersistentStore(path, dim, backend=backend, clock=lambda: 1e4, **kwargs)
    store.put_many(
        rng.normal(size=(lines, dim)),
        rng.normal(size=(lines, dim)),
        [{"i": i, "url": "http://example.com/a//b"} for i in range(lines)],
        timestamps=10.0 * np.arange(lines),
    )
    return store


# ------------------------------------------------------------------ the chain
def test_anchor_chain_equals_blake2b_computed_here() -> None:
    store = PersistentStore(None, 2, value_dim=3)
    a0 = store.put([1.0, 0.5], [0.0, -2.0, 3.25], {"b": 1, "a": "x"})
    a1 = store.put([0.0, 1.0], [1.0, 1.0, 1.0], None)
    a2 = store.put([-1.5, 2.0], [0.5, 0.5, 0.5], {"z": [1.5, "é"], "n": None, "t": True})
    e0 = blake64(bytes(8), f32(1.0, 0.5), f32(0.0, -2.0, 3.25), b'{"a":"x","b":1}')
    e1 = blake64(e0, f32(0.0, 1.0), f32(1.0, 1.0, 1.0), b"{}")
    e2 = blake64(
        e1, f32(-1.5, 2.0), f32(0.5, 0.5, 0.5), '{"n":null,"t":true,"z":[1.5,"é"]}'.encode()
    )
    assert [a0, a1, a2] == [e0.hex(), e1.hex(), e2.hex()]
    assert store.head == e2.hex()
    assert [line.prev for line in reversed(store.peek(3))] == [bytes(8).hex(), e0.hex(), e1.hex()]
    assert canonical_ctx({"b": np.int64(2), "a": np.float32(0.5)}) == b'{"a":0.5,"b":2}'


def test_prev_anchor_is_optimistic_concurrency() -> None:
    store = PersistentStore(None, 2)
    first = store.put([1, 0], [1, 0], prev_anchor="0000000000000000")
    with pytest.raises(ConflictError, match="not the head"):
        store.put([0, 1], [0, 1], prev_anchor="0000000000000000")
    assert len(store) == 1
    second = store.put([0, 1], [0, 1], prev_anchor=first)
    assert store.head == second


def test_fnv1a64_test_vectors() -> None:
    assert fnv1a64(b"") == 0xCBF29CE484222325
    assert fnv1a64(b"a") == 0xAF63DC4C8601EC8C
    assert fnv1a64(b"foobar") == 0x85944171F73967E8


# ------------------------------------------------------------- the heuristics
def hand_store() -> PersistentStore:
    store = PersistentStore(None, 2)
    store.put([1, 0], [2, 0], {"i": 0}, timestamp=0.0)
    store.put([0, 1], [0, 4], {"i": 1}, timestamp=3600.0)
    store.put([1, 1], [1, 1], {"i": 2}, timestamp=7200.0)
    return store


def test_defaults_are_the_documents() -> None:
    cfg = StoreConfig()
    assert (cfg.alpha, cfg.beta, cfg.gamma, cfg.floor, cfg.tau) == (0.35, 0.5, 0.08, 0.15, TAU)
    assert cfg.k == 5


def test_recency_novelty_weights_and_bias_by_hand() -> None:
    store = hand_store()
    novelty = [line.novelty for line in reversed(store.peek(3))]
    np.testing.assert_allclose(novelty, [1.0, 1.0, 1.0 - np.sqrt(0.5)], rtol=1e-6)
    now = 9000.0
    q = np.array([1.0, 0.2])
    keys = np.array([[1, 0], [0, 1], [1, 1]], float)
    values = np.array([[2, 0], [0, 4], [1, 1]], float)
    s = keys @ q / np.linalg.norm(keys, axis=1) / np.linalg.norm(q)
    r = np.exp(-(now - np.array([0.0, 3600.0, 7200.0])) / TAU)
    w = 0.35 * r + 0.5 * s + 0.08 * np.array(novelty)
    lines = store.query(q, k=5, now=now)
    order = np.argsort(-w)
    assert [line.n for line in lines] == list(order)
    for line in lines:
        i = line.n
        assert line.similarity == pytest.approx(s[i], rel=1e-6)
        assert line.recency == pytest.approx(r[i], rel=1e-9)
        assert line.weight == pytest.approx(w[i], rel=1e-6)
        assert line.context == {"i": i}
    bias = store.bias_vector(q, k=5, now=now)
    np.testing.assert_allclose(bias, (w[:, None] * values).sum(0) / w.sum(), rtol=1e-6)
    # k=2 keeps the two best weights only.
    top = order[:2]
    expect = (w[top, None] * values[top]).sum(0) / w[top].sum()
    np.testing.assert_allclose(store.bias_vector(q, k=2, now=now), expect, rtol=1e-6)
    batch = store.bias_vector_batch(np.stack([q, q]), k=2, now=now)
    np.testing.assert_allclose(batch, np.stack([expect, expect]), rtol=1e-6)


def test_floor_excludes_weak_matches() -> None:
    store = hand_store()
    # cos to (0, 1) is 0 < 0.15: line 1 never appears; lines 0 and 2 do.
    assert sorted(line.n for line in store.query([1, 0], now=7200.0)) == [0, 2]
    # (1, -0.2): cos 0.98 to line 0, 0.555 to line 2, -0.196 to line 1.
    assert sorted(line.n for line in store.query([1, -0.2], now=7200.0)) == [0, 2]
    assert store.query([-1, 0]) == []
    np.testing.assert_array_equal(store.bias_vector([-1, 0]), [0.0, 0.0])
    strict = PersistentStore(None, 2, config=StoreConfig(floor=0.99))
    strict.put([1, 0], [1, 1])
    strict.put([1, 0.2], [5, 5])  # cos 0.98 to (1, 0): below the floor for the query (1, 0)
    np.testing.assert_array_equal(strict.bias_vector([1, 0]), [1.0, 1.0])


def test_config_file_with_comments_keeps_urls() -> None:
    text = '{\n // the weights\n "alpha": 0.2, /* block */ "note": "http://a.b//c /* x */"\n}'
    assert json.loads(strip_json_comments(text)) == {"alpha": 0.2, "note": "http://a.b//c /* x */"}


def test_config_from_file(tmp_path) -> None:
    (tmp_path / "c.jsonc").write_text('{"tau": 60, // one minute\n "k": 3}')
    cfg = StoreConfig.from_file(tmp_path / "c.jsonc")
    assert (cfg.tau, cfg.k, cfg.alpha) == (60, 3, 0.35)
    (tmp_path / "bad.json").write_text('{"tua": 60}')
    with pytest.raises(ValueError, match="unknown StoreConfig fields"):
        StoreConfig.from_file(tmp_path / "bad.json")


# ------------------------------------------------------------------ backends
def snapshot(store: PersistentStore) -> dict:
    n = len(store)
    table = store.table
    store.query(np.ones(store.dim))  # brings novelty up to date
    return {
        "anchor": table.anchor[:n].copy(),
        "t": table.t[:n].copy(),
        "key": table.key[:n].copy(),
        "value": table.value[:n].copy(),
        "ctx": list(table.ctx[:n]),
        "novelty": table.novelty[:n].copy(),
    }


def test_backends_store_identical_lines_and_anchors(tmp_path) -> None:
    reference = snapshot(filled(lines=30))
    for backend in DISK_BACKENDS:
        filled(tmp_path / backend, backend, lines=30).close()
        with PersistentStore(tmp_path / backend, clock=lambda: 1e4) as store:
            assert store.backend_name == backend
            got = snapshot(store)
            for name, value in reference.items():
                if name == "ctx":
                    assert got[name] == value, backend
                else:
                    np.testing.assert_array_equal(got[name], value, err_msg=f"{backend}.{name}")
            assert store.verify().ok


def test_reopen_appends_to_the_same_chain(tmp_path) -> None:
    for backend in DISK_BACKENDS:
        path = tmp_path / backend
        filled(path, backend, lines=5).close()
        with PersistentStore(path) as store:
            store.put(np.ones(4), np.ones(4), {"again": True})
        with PersistentStore(path) as store:
            assert len(store) == 6 and store.verify().ok
            assert store.line(-1).context == {"again": True}


def test_open_errors_say_what_to_do(tmp_path) -> None:
    filled(tmp_path / "s", "jsonl", lines=2).close()
    with pytest.raises(ValueError, match="dim=4"):
        PersistentStore(tmp_path / "s", dim=8)
    with pytest.raises(ValueError, match="backend='jsonl'"):
        PersistentStore(tmp_path / "s", backend="lmdb")
    with pytest.raises(ValueError, match="needs a path"):
        PersistentStore(None, 4, backend="lmdb")
    with pytest.raises(ValueError, match=r"shape \(m, 4\)"):
        PersistentStore(None, 4).put(np.ones(3), np.ones(4))


def test_jsonl_snapshot_segments_open_the_same_store(tmp_path) -> None:
    config = StoreConfig(snapshot_every=16)
    store = filled(tmp_path / "s", "jsonl", lines=20, config=config)
    reference = filled(lines=20)
    rng = np.random.default_rng(5)
    for m in (20, 10):  # a segment for lines 20..39; lines 40..49 stay in the log tail only
        keys = rng.normal(size=(m, 4))
        store.put_many(keys, keys, timestamps=np.zeros(m))
        reference.put_many(keys, keys, timestamps=np.zeros(m))
    store.close()
    segments = sorted(p.name for p in (tmp_path / "s" / "snapshot").glob("seg-*.npz"))
    assert segments == ["seg-000000000000-000000000020.npz", "seg-000000000020-000000000040.npz"]
    reopened = PersistentStore(tmp_path / "s", config=config, clock=lambda: 1e4)
    for name, value in snapshot(reference).items():
        got = snapshot(reopened)[name]
        assert got == value if name == "ctx" else np.array_equal(got, value), name
    assert reopened.verify().ok


def test_duckdb_temporal_queries_and_joins_on_context(tmp_path) -> None:
    store = filled(tmp_path / "d", "duckdb", lines=20)
    assert [line.n for line in store.between(50.0, 100.0)] == [5, 6, 7, 8, 9]
    rows = store.sql("SELECT n FROM lines WHERE t >= ? AND t < ? ORDER BY n", [50.0, 100.0])
    assert [r[0] for r in rows] == [5, 6, 7, 8, 9]
    store.sql("CREATE TABLE rewards (i INTEGER, reward DOUBLE)")
    store.sql("INSERT INTO rewards VALUES (3, 1.5), (4, -2.0)")
    joined = store.sql(
        "SELECT l.n, r.reward FROM lines l JOIN rewards r "
        "ON CAST(l.ctx->>'$.i' AS INTEGER) = r.i ORDER BY l.n"
    )
    assert joined == [(3, 1.5), (4, -2.0)]
    with pytest.raises(Exception, match="backend='duckdb'"):
        filled().sql("SELECT 1")


# ------------------------------------------------------------- the indexes
def test_faiss_flat_equals_exact() -> None:
    rng = np.random.default_rng(1)
    keys, queries = rng.normal(size=(3000, 16)), rng.normal(size=(40, 16))
    stores = {}
    for index in ("exact", "faiss-flat"):
        stores[index] = PersistentStore(
            None, 16, index=index, clock=lambda: 0.0, config=StoreConfig(floor=-1.0)
        )
        stores[index].put_many(keys, keys, timestamps=np.zeros(3000))
    exact, flat = stores["exact"].index, stores["faiss-flat"].index
    unit = normalise(queries)
    e_sims, e_ids = exact.search(unit, 10)
    f_sims, f_ids = flat.search(unit, 10)
    np.testing.assert_array_equal(e_ids, f_ids)
    np.testing.assert_allclose(e_sims, f_sims, atol=1e-5)
    for q in queries[:5]:
        a = stores["exact"].query(q, k=5)
        b = stores["faiss-flat"].query(q, k=5)
        assert [x.n for x in a] == [x.n for x in b]
    np.testing.assert_allclose(
        stores["exact"].bias_vector_batch(queries),
        stores["faiss-flat"].bias_vector_batch(queries),
        atol=1e-5,
    )
    np.testing.assert_allclose(
        stores["exact"].table.novelty[:3000], stores["faiss-flat"].table.novelty[:3000], atol=1e-5
    )


@pytest.mark.parametrize("index", ["faiss-hnsw", "faiss-ivf"])
def test_approximate_indexes_find_the_near_keys(index: str) -> None:
    rng = np.random.default_rng(2)
    centres = rng.normal(size=(50, 16))
    keys = centres[rng.integers(0, 50, 4000)] + 0.3 * rng.normal(size=(4000, 16))
    store = PersistentStore(None, 16, index=index, config=StoreConfig(ivf_train_size=2000))
    store.put_many(keys, keys)
    store.query(keys[0])
    if index == "faiss-ivf":
        assert store.index.index is not None, "IVF should have trained at 2,000 lines"
    exact = ExactIndex(16, store.config)
    exact.add(normalise(keys))
    queries = normalise(keys[:100] + 0.1 * rng.normal(size=(100, 16)))
    truth = exact.search(queries, 5)[1]
    found = store.index.search(queries, 5)[1]
    recall = np.mean([len(set(a) & set(b)) / 5 for a, b in zip(truth, found)])
    assert recall >= 0.9


# ------------------------------------------------------- history and audit
def test_race_commits_the_winner_and_decays_the_rest() -> None:
    store = PersistentStore(None, 2, clock=lambda: 0.0)
    store.put([1, 0], [1, 0])
    race = store.race([([1, 0.1], [9, 9], {"who": "a"}), ([0, 1], [5, 5], {"who": "b"})])
    # Candidate a is close to the stored key: higher support, it wins.
    support_a = 1 / np.sqrt(1.01)
    assert race.scores[0] == pytest.approx(0.35 + 0.5 * support_a + 0.08 * (1 - support_a))
    assert race.scores[1] == pytest.approx(0.35 + 0.08)
    assert race.winner == 0
    anchor = store.trace(race)
    assert store.head == anchor and len(store) == 3
    winner, loser = store.peek(2)
    assert winner.context["who"] == "a" and winner.status == "committed"
    assert loser.context["who"] == "b" and loser.status == "decayed"
    assert loser.context["_trace"]["race"] == race.head
    hits = {x.n: x for x in store.query([0, 1], k=5, now=0.0)}
    assert hits[1].weight == pytest.approx(0.1 * (0.35 + 0.5 * 1.0 + 0.08 * loser.novelty))
    assert store.verify().ok
    # Caller scores choose the other one; a write in between makes trace refuse.
    race = store.race([([1, 1], [0, 0]), ([1, -1], [0, 0])], scores=[0.1, 0.9])
    assert race.winner == 1
    store.put([3, 3], [3, 3])
    with pytest.raises(ConflictError, match="race"):
        store.trace(race)


def test_peek_returns_the_newest_lines_first() -> None:
    store = filled(lines=6)
    assert [line.context["i"] for line in store.peek(3)] == [5, 4, 3]
    assert len(store.peek(100)) == 6


# --------------------------------------------------------------- concurrency
def test_eight_threads_put_a_thousand_lines_each(tmp_path) -> None:
    store = PersistentStore(tmp_path / "s", 8, fsync="batch")
    errors = []

    def worker(w: int) -> None:
        rng = np.random.default_rng(w)
        try:
            for i in range(1000):
                store.put(rng.normal(size=8), rng.normal(size=8), {"w": w, "i": i})
                if i % 100 == 0:
                    store.query(rng.normal(size=8))
        except Exception as err:  # pragma: no cover - reported below
            errors.append(err)

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(store) == 8000 and store.verify().ok
    per_worker = [
        sorted(c["i"] for c in map(json.loads, store.table.ctx) if c["w"] == w) for w in range(8)
    ]
    assert all(ids == list(range(1000)) for ids in per_worker)
    store.close()
    assert len(PersistentStore(tmp_path / "s")) == 8000


def test_asyncio_api_has_the_sync_semantics() -> None:
    store = PersistentStore(None, 4, clock=lambda: 0.0)
    rng = np.random.default_rng(0)
    keys = rng.normal(size=(50, 4))

    async def main():
        anchors = await asyncio.gather(*(store.aput(k, k, {"i": i}) for i, k in enumerate(keys)))
        hits = await store.aquery(keys[3], 3)
        bias = await store.abias_vector(keys[3])
        batch = await store.abias_vector_batch(keys[:4])
        return anchors, hits, bias, batch

    anchors, hits, bias, batch = asyncio.run(main())
    assert sorted(anchors) == sorted(store.line(i).anchor for i in range(50))
    assert [h.n for h in hits] == [h.n for h in store.query(keys[3], 3)]
    np.testing.assert_array_equal(bias, store.bias_vector(keys[3]))
    np.testing.assert_array_equal(batch, store.bias_vector_batch(keys[:4]))

    async def more():
        with pytest.raises(ConflictError):
            await store.aput(keys[0], keys[0], prev_anchor="0000000000000000")
        return await store.aput_many(keys[:2], keys[:2], prev_anchor=store.head)

    assert asyncio.run(more()) == [store.line(50).anchor, store.line(51).anchor]
    assert len(store) == 52 and store.verify().ok
