"""PMLL store benchmark: puts, queries, bias vectors and open time.

    python bench/pmll.py [--quick] [--dim 128] [--out runs/bench/pmll.json]

1. Put throughput per backend (jsonl, lmdb, duckdb) and fsync mode, one line
   per ``put`` call and 256 per ``put_many``, into a fresh store (exact index,
   novelty included).  Peer: a bare LMDB transaction per line with the same
   bytes and no chain, hashing or index (``sync=False``).
2. For 10^4, 10^5 (and 10^6 without ``--quick``) lines of width ``--dim``:
   ``query(q, k=5)`` latency p50/p99 and recall@5 of each index against exact
   search, and ``bias_vector_batch`` for 64 queries at once.  Keys are drawn
   around N/1000 cluster centres (within-cluster cosine ~0.8), queries are
   stored keys plus small noise; timestamps span 24 hours.  Peer: the exact
   NumPy search (the ``exact`` row).  Novelty at insertion is computed once per
   size (exact up to 50,000 lines, then through an IVF index), then the store
   is re-indexed for each index kind.
3. Open time of a store of the largest size on each disk backend (10^5 with
   ``--quick``, 10^6 otherwise), and its size on disk.
4. A read-only handle's ``refresh()`` before every read (what a SubprocVecEnv
   worker's wrapper does) against the same read alone, on a 10^4-line JSONL
   store, in alternating rounds; printed as a ratio (``--reader-only`` runs only
   this).  On a shared machine only such ratios mean anything.

Writes runs/bench/pmll.json; temporary stores live in runs/bench/pmll_tmp and
are deleted at the end.  Targets (issue 7): query p50 <= 5 ms at 10^6 x 128
with recall@5 >= 0.95; LMDB puts >= 20,000 lines/s with ``fsync="batch"``;
JSONL usable at 10^6 lines.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import shutil
import time
from pathlib import Path

import numpy as np

from memworld.memory.persistent import PersistentStore, StoreConfig
from memworld.memory.persistent.index import ExactIndex, normalise
from memworld.runs import write_results

INDEXES = ("exact", "faiss-flat", "faiss-hnsw", "faiss-ivf")
BACKENDS = ("jsonl", "lmdb", "duckdb")


def clustered(n: int, dim: int, rng: np.random.Generator) -> np.ndarray:
    centres = rng.normal(size=(max(10, n // 1000), dim)).astype(np.float32)
    keys = centres[rng.integers(0, len(centres), n)]
    return keys + 0.5 * rng.normal(size=(n, dim)).astype(np.float32)


def ivf_config(n: int, **kwargs) -> StoreConfig:
    nlist = int(np.clip(4 * math.sqrt(n), 16, 8192))
    return StoreConfig(ivf_nlist=nlist, ivf_train_size=min(n, 50_000), **kwargs)


def rate(lines: int, seconds: float) -> float:
    return lines / seconds if seconds > 0 else float("inf")


# ----------------------------------------------------------------------- puts
def bench_puts(args, tmp: Path) -> list[dict]:
    rng = np.random.default_rng(0)
    rows = []
    for backend in BACKENDS:
        for fsync in ("always", "batch", "never"):
            lines = args.put_lines_always if fsync == "always" else args.put_lines
            keys = rng.normal(size=(lines, args.dim)).astype(np.float32)
            ctxs = [{"step": i, "episode": i // 100} for i in range(lines)]
            row = {"backend": backend, "fsync": fsync, "lines": lines}
            for mode in ("put", "put_many"):
                path = tmp / f"put-{backend}-{fsync}-{mode}"
                store = PersistentStore(path, args.dim, backend=backend, fsync=fsync)
                start = time.perf_counter()
                if mode == "put":
                    for i in range(lines):
                        store.put(keys[i], keys[i], ctxs[i])
                else:
                    for i in range(0, lines, 256):
                        store.put_many(keys[i : i + 256], keys[i : i + 256], ctxs[i : i + 256])
                store.flush()
                row[f"{mode}_lines_per_s"] = rate(lines, time.perf_counter() - start)
                store.close()
                shutil.rmtree(path)
            rows.append(row)
            print(
                f"  puts {backend:6s} fsync={fsync:6s} {row['put_lines_per_s']:>10,.0f} /s single"
                f"  {row['put_many_lines_per_s']:>10,.0f} /s put_many",
                flush=True,
            )
    rows.append(bare_lmdb_peer(args, tmp, rng))
    return rows


def bare_lmdb_peer(args, tmp: Path, rng) -> dict:
    import lmdb

    lines = args.put_lines
    payload = [
        rng.normal(size=2 * args.dim).astype("<f4").tobytes() + b'{"step":0}' for _ in range(lines)
    ]
    env = lmdb.open(str(tmp / "peer.lmdb"), map_size=1 << 32, sync=False)
    start = time.perf_counter()
    for i, value in enumerate(payload):
        with env.begin(write=True) as txn:
            txn.put(i.to_bytes(8, "big"), value, append=True)
    env.sync(True)
    seconds = time.perf_counter() - start
    env.close()
    shutil.rmtree(tmp / "peer.lmdb")
    print(f"  peer: bare LMDB txn/line {rate(lines, seconds):>10,.0f} /s", flush=True)
    return {
        "backend": "peer: bare lmdb",
        "fsync": "batch",
        "lines": lines,
        "put_lines_per_s": rate(lines, seconds),
        "put_many_lines_per_s": None,
    }


# -------------------------------------------------------------------- queries
def percentile_ms(times: list[float], q: float) -> float:
    return float(np.percentile(times, q) * 1e3)


def bench_queries(args, n: int) -> list[dict]:
    rng = np.random.default_rng(n)
    keys = clustered(n, args.dim, rng)
    values = rng.normal(size=(n, 16)).astype(np.float32)
    picks = rng.integers(0, n, args.queries)
    queries = keys[picks] + 0.1 * rng.normal(size=(args.queries, args.dim)).astype(np.float32)
    now = time.time()
    stamps = now - 86_400 * rng.random(n)
    store = PersistentStore(
        None, args.dim, value_dim=16, index="faiss-ivf", config=ivf_config(n, sync_every=10**9)
    )
    start = time.perf_counter()
    for i in range(0, n, 50_000):
        store.put_many(
            keys[i : i + 50_000], values[i : i + 50_000], timestamps=stamps[i : i + 50_000]
        )
    put_s = time.perf_counter() - start
    start = time.perf_counter()
    store._sync()
    novelty_s = time.perf_counter() - start
    print(
        f"  n={n:,}: put_many {rate(n, put_s):,.0f} lines/s, novelty+IVF index {novelty_s:.1f} s",
        flush=True,
    )
    exact = ExactIndex(args.dim, store.config)
    exact.add(normalise(keys))
    truth = exact.search(normalise(queries), 5)[1]
    batch64 = queries[:64]
    rows = []
    for kind in INDEXES:
        start = time.perf_counter()
        store.reindex(kind)
        build_s = time.perf_counter() - start
        found = store.index.search(normalise(queries), 5)[1]
        recall = float(np.mean([len(set(a) & set(b)) / 5 for a, b in zip(truth, found)]))
        times = []
        for q in queries:
            start = time.perf_counter()
            store.query(q, 5, now=now)
            times.append(time.perf_counter() - start)
        bias = []
        for _ in range(5):
            start = time.perf_counter()
            store.bias_vector_batch(batch64, 5, now=now)
            bias.append(time.perf_counter() - start)
        row = {
            "lines": n,
            "dim": args.dim,
            "index": kind,
            "build_s": build_s,
            "query_p50_ms": percentile_ms(times, 50),
            "query_p99_ms": percentile_ms(times, 99),
            "recall_at_5": recall,
            "bias64_ms": float(np.median(bias) * 1e3),
            "novelty_build_s": novelty_s,
            "put_many_lines_per_s": rate(n, put_s),
        }
        rows.append(row)
        print(
            f"    {kind:10s} build {build_s:7.2f} s  p50 {row['query_p50_ms']:7.2f} ms  "
            f"p99 {row['query_p99_ms']:7.2f} ms  recall@5 {recall:.3f}  "
            f"bias64 {row['bias64_ms']:7.2f} ms",
            flush=True,
        )
    return rows


# ----------------------------------------------------------------------- open
def disk_mb(path: Path) -> float:
    # Allocated blocks, not st_size: LMDB's data file is sparse up to its map size.
    return sum(p.stat().st_blocks * 512 for p in path.rglob("*") if p.is_file()) / 2**20


def bench_open(args, n: int, tmp: Path) -> list[dict]:
    rng = np.random.default_rng(1)
    keys = clustered(n, args.dim, rng)
    rows = []
    for backend in BACKENDS:
        path = tmp / f"open-{backend}"
        start = time.perf_counter()
        store = PersistentStore(
            path, args.dim, backend=backend, fsync="never", index="faiss-ivf", config=ivf_config(n)
        )
        for i in range(0, n, 50_000):
            store.put_many(
                keys[i : i + 50_000],
                keys[i : i + 50_000],
                [{"i": j} for j in range(i, min(n, i + 50_000))],
            )
        store.close()
        write_s = time.perf_counter() - start
        start = time.perf_counter()
        reopened = PersistentStore(path)
        open_s = time.perf_counter() - start
        assert len(reopened) == n
        start = time.perf_counter()
        ok = reopened.verify().ok
        verify_s = time.perf_counter() - start
        reopened.close()
        row = {
            "backend": backend,
            "lines": n,
            "write_s": write_s,
            "open_s": open_s,
            "verify_s": verify_s,
            "verified": ok,
            "disk_mb": disk_mb(path),
        }
        rows.append(row)
        print(
            f"  open {backend:6s} {n:,} lines: write {write_s:6.1f} s, open {open_s:6.2f} s, "
            f"verify {verify_s:6.1f} s, {row['disk_mb']:,.0f} MB",
            flush=True,
        )
        shutil.rmtree(path)
    return rows


def bench_reader(args, tmp: Path, rounds: int = 5, reads: int = 300) -> dict:
    """A read-only handle's ``refresh()`` before each read (the SubprocVecEnv worker pattern)
    against the same read alone, round by round in alternating order (JSONL, 10^4 lines)."""
    rng = np.random.default_rng(2)
    path = tmp / "reader"
    writer = PersistentStore(path, args.dim, fsync="never")
    keys = clustered(10_000, args.dim, rng)
    writer.put_many(keys, keys)
    writer.flush()
    reader = PersistentStore(path, read_only=True)
    queries = keys[rng.integers(0, len(keys), reads)]
    reader.bias_vector(queries[0])  # novelty and index built once, outside the timing

    def plain() -> float:
        start = time.perf_counter()
        for q in queries:
            reader.bias_vector(q)
        return time.perf_counter() - start

    def refreshed() -> float:
        start = time.perf_counter()
        for q in queries:
            reader.refresh()
            reader.bias_vector(q)
        return time.perf_counter() - start

    ratios = []
    for r in range(rounds):
        if r % 2:
            t_refresh, t_plain = refreshed(), plain()
        else:
            t_plain, t_refresh = plain(), refreshed()
        ratios.append(t_refresh / t_plain)
    reader.close()
    writer.close()
    shutil.rmtree(path)
    row = {
        "lines": 10_000,
        "reads_per_round": reads,
        "rounds": rounds,
        "refresh_plus_read_over_read": ratios,
        "median_ratio": float(np.median(ratios)),
    }
    print(
        f"  reader: refresh()+bias_vector / bias_vector = {row['median_ratio']:.3f} "
        f"(median of {rounds} rounds: {', '.join(f'{x:.3f}' for x in ratios)})",
        flush=True,
    )
    return row


def print_tables(report: dict) -> None:
    print("\n| backend | fsync | put (lines/s) | put_many x256 (lines/s) |")
    print("|---|---|---|---|")
    for r in report["puts"]:
        many = "-" if r["put_many_lines_per_s"] is None else f"{r['put_many_lines_per_s']:,.0f}"
        print(f"| {r['backend']} | {r['fsync']} | {r['put_lines_per_s']:,.0f} | {many} |")
    print("\n| lines | index | build (s) | query p50 (ms) | p99 (ms) | recall@5 | bias x64 (ms) |")
    print("|---|---|---|---|---|---|---|")
    for r in report["queries"]:
        print(
            f"| {r['lines']:,} | {r['index']} | {r['build_s']:.2f} | {r['query_p50_ms']:.2f} | "
            f"{r['query_p99_ms']:.2f} | {r['recall_at_5']:.3f} | {r['bias64_ms']:.2f} |"
        )
    print("\n| backend | lines | write (s) | open (s) | verify (s) | disk (MB) |")
    print("|---|---|---|---|---|---|")
    for r in report["open"]:
        print(
            f"| {r['backend']} | {r['lines']:,} | {r['write_s']:.1f} | {r['open_s']:.2f} | "
            f"{r['verify_s']:.1f} | {r['disk_mb']:,.0f} |"
        )


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="10^4 and 10^5 lines only")
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--put-lines", type=int, default=10_000)
    parser.add_argument("--put-lines-always", type=int, default=500)
    parser.add_argument("--sizes", help="comma-separated store sizes (overrides --quick)")
    parser.add_argument("--out", default="runs/bench/pmll.json")
    parser.add_argument("--tmp", default="runs/bench/pmll_tmp")
    parser.add_argument(
        "--reader-only", action="store_true", help="only the read-only refresh() measurement"
    )
    args = parser.parse_args(argv)
    sizes = [10_000, 100_000] if args.quick else [10_000, 100_000, 1_000_000]
    if args.sizes:
        sizes = [int(x) for x in args.sizes.split(",")]
    tmp = Path(args.tmp)
    tmp.mkdir(parents=True, exist_ok=True)
    report = {
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "load_avg": os.getloadavg(),
        },
        "args": vars(args),
        "sizes": sizes,
    }
    try:
        if not args.reader_only:
            print("put throughput", flush=True)
            report["puts"] = bench_puts(args, tmp)
            print("queries", flush=True)
            report["queries"] = [row for n in sizes for row in bench_queries(args, n)]
            print("open", flush=True)
            report["open"] = bench_open(args, sizes[-1], tmp)
        print("reader refresh", flush=True)
        report["reader"] = bench_reader(args, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    report["load_avg_after"] = os.getloadavg()
    out = Path(args.out)
    write_results(out, report)
    if not args.reader_only:
        print_tables(report)
    print(f"\nwrote {out}")
    return report


if __name__ == "__main__":
    main()
