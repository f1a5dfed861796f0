"""PersistentStore integrity: tampering found at the line, seals, rewind, encryption at rest."""

from __future__ import annotations

import base64
import json
import struct

import numpy as np
import pytest

from memworld.memory.persistent import (
    EncryptionKeyError,
    PersistentStore,
    ReadOnlyError,
    StoreConfig,
)
from memworld.memory.persistent.line import fnv1a64
from tests.test_pmll_store import DISK_BACKENDS, blake64, filled


# ------------------------------------------------------------------ integrity
def edit_jsonl(path, fn) -> None:
    log = path / "log.jsonl"
    lines = log.read_text().splitlines(keepends=True)
    log.write_text("".join(fn(lines)))


def change_value(line: str) -> str:
    obj = json.loads(line)
    obj["value"] = obj["key"]
    return json.dumps(obj) + "\n"


@pytest.mark.parametrize(
    "kind, problem",
    [("change", "changed"), ("ctx", "changed"), ("remove", "removed"), ("swap", "reordered")],
)
def test_tampering_with_a_jsonl_line_is_found_at_that_line(tmp_path, kind, problem) -> None:
    filled(tmp_path / "s", "jsonl", lines=20).close()
    edits = {
        "change": lambda ls: ls[:7] + [change_value(ls[7])] + ls[8:],
        "ctx": lambda ls: ls[:7] + [ls[7].replace('"i":7', '"i":70')] + ls[8:],
        "remove": lambda ls: ls[:7] + ls[8:],
        "swap": lambda ls: ls[:7] + [ls[8], ls[7]] + ls[9:],
    }
    edit_jsonl(tmp_path / "s", edits[kind])
    if kind in ("remove", "swap"):  # a broken link is reported as soon as the store opens
        with pytest.warns(UserWarning, match="the chain is broken at line 7"):
            store = PersistentStore(tmp_path / "s")
    else:
        store = PersistentStore(tmp_path / "s")
    report = store.verify()
    assert (report.ok, report.first_bad, report.problem) == (False, 7, problem), report.message


def test_a_rehashed_line_is_found_by_the_next_link(tmp_path) -> None:
    filled(tmp_path / "s", "jsonl", lines=20).close()

    def rehash(lines):
        obj = json.loads(lines[7])
        obj["ctx"] = {"forged": 1}
        kb, vb = base64.b64decode(obj["key"]), base64.b64decode(obj["value"])
        obj["anchor"] = blake64(bytes.fromhex(obj["prev"]), kb, vb, b'{"forged":1}').hex()
        return lines[:7] + [json.dumps(obj) + "\n"] + lines[8:]

    edit_jsonl(tmp_path / "s", rehash)
    with pytest.warns(UserWarning, match="the chain is broken at line 8"):
        report = PersistentStore(tmp_path / "s").verify()
    assert (report.first_bad, report.problem) == (7, "changed"), report.message


def test_tampering_in_lmdb_and_duckdb_is_found_at_that_line(tmp_path) -> None:
    import lmdb

    filled(tmp_path / "l", "lmdb", lines=20).close()
    env = lmdb.open(str(tmp_path / "l" / "lines.lmdb"), subdir=True)
    with env.begin(write=True) as txn:
        key = (7).to_bytes(8, "big")
        record = bytearray(txn.get(key))
        record[30] ^= 0x01  # one bit of the key vector
        txn.put(key, bytes(record))
        txn.delete((12).to_bytes(8, "big"))
    env.close()
    report = PersistentStore(tmp_path / "l").verify()
    assert (report.first_bad, report.problem) == (7, "changed")

    filled(tmp_path / "d", "duckdb", lines=20).close()
    import duckdb

    con = duckdb.connect(str(tmp_path / "d" / "lines.duckdb"))
    con.execute("DELETE FROM lines WHERE n = 9")
    con.close()
    report = PersistentStore(tmp_path / "d").verify()
    assert (report.first_bad, report.problem) == (9, "removed")


def test_seal_catches_truncation_and_timestamps(tmp_path) -> None:
    store = filled(tmp_path / "s", "jsonl", lines=20)
    seal = store.seal()
    assert json.loads((tmp_path / "s" / "seal.json").read_text()) == seal
    assert seal["lines"] == 20 and seal["final_anchor"] == store.head
    expect = fnv1a64(
        b"".join(
            int(a).to_bytes(8, "big") + struct.pack("<d", t)
            for a, t in zip(store.table.anchor[:20], store.table.t[:20])
        )
    )
    assert seal["fnv1a64"] == f"{expect:016x}"
    store.close()
    assert PersistentStore(tmp_path / "s").verify(tmp_path / "s" / "seal.json").ok
    edit_jsonl(tmp_path / "s", lambda ls: ls[:18])
    report = PersistentStore(tmp_path / "s").verify(seal)
    assert (report.first_bad, report.problem) == (18, "truncated")

    filled(tmp_path / "t", "jsonl", lines=20).seal()
    edit_jsonl(tmp_path / "t", lambda ls: ls[:4] + [ls[4].replace('"t":40.0', '"t":41.0')] + ls[5:])
    report = PersistentStore(tmp_path / "t").verify(tmp_path / "t" / "seal.json")
    assert report.problem == "checksum"


# ---------------------------------------------------------------------- rewind
def test_rewind_at_100k_lines_is_iterative_and_keeps_the_log(tmp_path) -> None:
    n, dim = 100_000, 4
    store = PersistentStore(
        tmp_path / "s", dim, config=StoreConfig(sync_every=10**9), fsync="never"
    )
    rng = np.random.default_rng(0)
    anchors = []
    for _ in range(0, n, 25_000):
        anchors += store.put_many(rng.normal(size=(25_000, dim)), rng.normal(size=(25_000, dim)))
    target = anchors[59_999]
    view = store.rewind(target)
    assert len(view) == 60_000 and view.head == target
    assert len(store.rewind(60_000)) == 60_000 and store.rewind(60_000).head == target
    assert len(store.rewind(0)) == 0
    assert view.verify().ok
    with pytest.raises(ReadOnlyError):
        view.put(np.ones(dim), np.ones(dim))
    assert len(store) == n and store.verify().ok
    store.put(np.ones(dim), np.ones(dim))
    assert len(view) == 60_000
    with pytest.raises(KeyError):
        store.rewind("0123456789abcdef")


# ---------------------------------------------------------------- encryption
@pytest.mark.parametrize("backend", DISK_BACKENDS)
def test_encryption_round_trip_and_wrong_key(tmp_path, backend) -> None:
    path = tmp_path / backend
    plain = filled(lines=10)
    store = filled(path, backend, lines=10, encryption_key="correct horse", fsync="always")
    store.seal()
    store.close()
    raw = b"".join(p.read_bytes() for p in path.rglob("*") if p.is_file())
    assert b"example.com" not in raw, "ctx is stored in clear"
    with PersistentStore(path, encryption_key="correct horse", clock=lambda: 1e4) as reopened:
        np.testing.assert_array_equal(reopened.table.value[:10], plain.table.value[:10])
        assert reopened.head == plain.head
        assert reopened.line(3).context == plain.line(3).context
        assert reopened.verify(path / "seal.json").ok
    with pytest.raises(EncryptionKeyError, match="wrong encryption key"):
        PersistentStore(path, encryption_key="wrong horse")
    with pytest.raises(EncryptionKeyError, match="is encrypted"):
        PersistentStore(path)
    key = bytes(range(32))
    filled(tmp_path / "raw", backend, lines=3, encryption_key=key).close()
    assert len(PersistentStore(tmp_path / "raw", encryption_key=key)) == 3
    with pytest.raises(EncryptionKeyError, match="wrong encryption key"):
        PersistentStore(tmp_path / "raw", encryption_key=bytes(32))


@pytest.mark.parametrize("index", ["exact", "faiss-hnsw"])
def test_a_rewound_view_reads_the_store_as_it_was(index: str) -> None:
    rng = np.random.default_rng(3)
    keys = rng.normal(size=(200, 4))
    store = PersistentStore(None, 4, index=index, clock=lambda: 0.0)
    store.put_many(keys, keys)
    before, bias = store.query(keys[5]), store.bias_vector(keys[5])
    near = keys[5] + 0.01 * rng.normal(size=(10, 4))  # later lines that would win the query
    store.put_many(near, near)
    assert {x.n for x in store.query(keys[5])} & set(range(200, 210))
    view = store.rewind(200)
    assert [x.n for x in view.query(keys[5])] == [x.n for x in before]
    np.testing.assert_array_equal(view.bias_vector(keys[5]), bias)
    store.put(keys[0], keys[0])  # the live store goes on; the view does not move
    assert len(view) == 200 and [x.n for x in view.query(keys[5])] == [x.n for x in before]
