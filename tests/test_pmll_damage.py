"""PMLL: every damaged file is reported (never repaired silently), and bad input gets a clear error.

The log's lines, snapshot segments, derived.bin, seal.json and meta.json are
each damaged by hand; the store names what it found, keeps every whole line
and rebuilds what is only a cache.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from memworld.memory.persistent import CorruptStoreError, PersistentStore, PMLLError, StoreConfig
from memworld.memory.persistent.cli import main as pmll_cli
from tests.test_pmll_store import filled


def flip(path, at: float | int) -> None:
    """Flip one bit of a file at a byte offset (a float: that fraction of its size)."""
    data = bytearray(path.read_bytes())
    pos = int(at * len(data)) if isinstance(at, float) else at
    data[pos] ^= 0x10
    path.write_bytes(bytes(data))


# --------------------------------------------------------------------- the log
def test_a_whole_last_line_that_does_not_parse_is_an_error_not_a_torn_write(tmp_path) -> None:
    filled(tmp_path / "s", "jsonl", lines=12).close()
    log = tmp_path / "s" / "log.jsonl"
    lines = log.read_bytes().split(b"\n")  # 12 lines and the empty string after the last \n
    lines[11] = lines[11].replace(b'"n":11', b'"n":1!')  # one byte, newline kept
    log.write_bytes(b"\n".join(lines))
    size = log.stat().st_size
    with pytest.raises(CorruptStoreError, match="log line 11 is not a valid record") as caught:
        PersistentStore(tmp_path / "s")
    assert caught.value.line == 11
    assert log.stat().st_size == size, "nothing is cut from a damaged log"


def test_a_damaged_snapshot_segment_is_ignored_and_rebuilt_from_the_log(tmp_path) -> None:
    config = StoreConfig(snapshot_every=16)
    store = filled(tmp_path / "s", "jsonl", lines=20, config=config)  # segment 0..20
    store.put_many(np.eye(4)[np.arange(20) % 4], np.ones((20, 4)))  # segment 20..40
    anchors = store.table.anchor[:40].copy()
    store.close()
    segments = sorted((tmp_path / "s" / "snapshot").glob("seg-*.npz"))
    assert len(segments) == 2
    flip(segments[0], 0.5)
    with pytest.warns(UserWarning, match="ignoring damaged snapshot segment .*seg-000000000000"):
        reopened = PersistentStore(tmp_path / "s", config=config)
    np.testing.assert_array_equal(reopened.table.anchor[:40], anchors)
    assert reopened.verify().ok
    assert not list((tmp_path / "s" / "snapshot").glob("seg-*.npz")), "deleted, to be rebuilt"
    reopened.put_many(np.ones((16, 4)), np.ones((16, 4)))  # 56 lines: one new segment 0..56
    reopened.close()
    assert [p.name for p in (tmp_path / "s" / "snapshot").glob("seg-*.npz")] == [
        "seg-000000000000-000000000056.npz"
    ]
    assert len(PersistentStore(tmp_path / "s", config=config)) == 56


# ------------------------------------------------------------------ derived.bin
def test_a_flipped_byte_in_derived_bin_is_caught_and_novelty_recomputed(tmp_path) -> None:
    reference = filled(lines=30)
    reference.query(np.ones(4))
    filled(tmp_path / "s", "jsonl", lines=30).close()
    derived = tmp_path / "s" / "derived.bin"
    flip(derived, len(derived.read_bytes()) - 10)  # a similarity of the last lines
    with pytest.warns(UserWarning, match="derived.bin: ignoring the derived cache .*CRC"):
        store = PersistentStore(tmp_path / "s")
    store.query(np.ones(4))
    np.testing.assert_array_equal(store.table.novelty[:30], reference.table.novelty[:30])
    np.testing.assert_array_equal(store.table.similarity[:30], reference.table.similarity[:30])
    assert np.all((store.table.novelty[:30] >= 0) & (store.table.novelty[:30] <= 2))


# ---------------------------------------------------------------------- seal.json
@pytest.mark.parametrize(
    "damage",
    ["{}", "not json", "lines-as-text", "lines-negative", "anchor-edited", "checksum-dropped"],
)
def test_any_damage_to_the_seal_fails_verify(tmp_path, damage, capsys) -> None:
    store = filled(tmp_path / "s", "jsonl", lines=20)
    seal = store.seal()
    store.close()
    edits = {
        "{}": "{}",
        "not json": json.dumps(seal)[:-3],
        "lines-as-text": json.dumps({**seal, "lines": "20"}),
        "lines-negative": json.dumps({**seal, "lines": -1}),
        "anchor-edited": json.dumps({**seal, "final_anchor": "0" * 16}),
        "checksum-dropped": json.dumps({k: v for k, v in seal.items() if k != "seal_checksum"}),
    }
    path = tmp_path / "s" / "seal.json"
    path.write_text(edits[damage])
    report = PersistentStore(tmp_path / "s").verify(path)
    assert (report.ok, report.problem) == (False, "seal"), report.message
    assert report.message.startswith("seal damaged")
    assert pmll_cli(["verify", str(tmp_path / "s")]) == 1
    assert "seal damaged" in capsys.readouterr().out


def test_seal_refuses_a_store_that_does_not_verify(tmp_path, capsys) -> None:
    filled(tmp_path / "s", "jsonl", lines=10).close()
    log = tmp_path / "s" / "log.jsonl"
    log.write_text(log.read_text().replace('"i":3', '"i":4'))
    with pytest.raises(CorruptStoreError, match="refusing to seal.*line 3 was changed"):
        PersistentStore(tmp_path / "s").seal()
    assert pmll_cli(["seal", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: refusing to seal") and err.count("\n") == 1
    assert not (tmp_path / "s" / "seal.json").exists()


# ---------------------------------------------------------------------- meta.json
@pytest.mark.parametrize(
    "text, match", [("{", "not valid JSON"), ('{"format": "pmll/1", "dim": "4"}', "'dim'")]
)
def test_a_damaged_meta_json_is_named(tmp_path, text, match) -> None:
    filled(tmp_path / "s", "jsonl", lines=2).close()
    (tmp_path / "s" / "meta.json").write_text(text)
    with pytest.raises(CorruptStoreError, match=f"meta.json.*{match}"):
        PersistentStore(tmp_path / "s")


# --------------------------------------------------------------------- bad input
def test_k_is_an_integer_at_least_one_and_capped_at_the_store_size() -> None:
    store = filled(lines=6)
    for k in (1.5, 0, True, "3"):
        with pytest.raises(ValueError, match="k must be an integer"):
            store.query(np.ones(4), k=k)
    assert len(store.query(np.ones(4), k=10**12)) == len(store.query(np.ones(4), k=6))
    assert store.bias_vector(np.ones(4), k=10**12).shape == (4,)


def test_keys_whose_norm_overflows_are_refused() -> None:
    store = PersistentStore(None, 2)
    with pytest.raises(ValueError, match="row 0 has a norm beyond float32's range"):
        store.put([3e38, 3e38], [1.0, 1.0])
    with pytest.raises(ValueError, match="float32's range"):
        store.put([1e39, 0.0], [1.0, 1.0])
    with pytest.raises(ValueError, match="norm"):
        store.query([3e38, 3e38])
    store.put([3e18, 3e18], [1.0, 1.0])  # large but fine: found again
    assert [line.n for line in store.query([1.0, 1.0])] == [0]
    assert len(store) == 1


def test_clear_errors_for_ctx_keys_key_types_and_closed_stores(tmp_path) -> None:
    store = PersistentStore(None, 2)
    with pytest.raises(TypeError, match="ctx keys must all be strings"):
        store.put([1.0, 0.0], [1.0, 0.0], {1: "a", "b": 2})
    with pytest.raises(TypeError, match="encryption_key must be bytes .* or str"):
        PersistentStore(tmp_path / "e", 2, encryption_key=123)
    assert not (tmp_path / "e").exists()
    for backend in ("jsonl", "lmdb", "duckdb"):
        closed = filled(tmp_path / backend, backend, lines=3)
        closed.close()
        for call in (closed.verify, closed.seal, closed.flush):
            with pytest.raises(PMLLError, match="is closed; open it again"):
                call()


def test_cli_errors_are_one_line_and_exit_2(tmp_path, capsys) -> None:
    filled(tmp_path / "s", "jsonl", lines=5).close()
    for argv, match in [
        (["query", str(tmp_path / "s"), "--line", "99"], "--line 99: the store has 5 lines"),
        (["query", str(tmp_path / "s"), "--vector", "1,x"], "give 4 comma-separated"),
        (["query", str(tmp_path / "s"), "--line", "1", "-k", "0"], "k must be an integer"),
        (["stats", str(tmp_path / "nothing")], "no PMLL store"),
    ]:
        assert pmll_cli(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("error: ") and match in err and err.count("\n") == 1, err
