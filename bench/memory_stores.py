"""The stores behind DualMemory and BitMemory: long-term retrieval and bit-store word I/O.

    python bench/memory_stores.py [--dual-sizes 10000 100000] [--index-sweep] [--repeats 5]
                                  [--index-settings 32:64 16:16] [--threads 1]

- ``bench_dual``: top-k retrieval from a full long-term store, ``query(q (64, Dk),
  top_k=8)``, by the exact scan and by the HNSW graph (``ltm_index="hnsw"``) at each
  ``--index-settings`` pair ``candidates:efSearch``, timed in the same rounds as the
  scan and back to back, with the graph's recall@8 of the exact top-8.
- ``bench_bit``: word reads and writes per second on BitMemory's packed bit store.
- ``--index-sweep``: what an approximate index can give at all on these keys: FAISS
  IVF (``nlist``, ``nprobe``) and HNSW (``M``, ``efSearch``) graphs over the same
  random unit keys of DualMemory's key width, 64 queries of 32 candidates (the
  ``4 * top_k`` that DualMemory asks an index for), each timed beside FAISS's exact
  inner-product scan (``IndexFlatIP``) in the same rounds, with recall@8 for queries
  near stored keys and for random ones.  It is the floor under the retrieval row of
  docs/speed.md.

bench/memory_ops.py runs ``bench_dual`` and ``bench_bit`` when ``dual`` and ``bit`` are
among its modules.  Run as a script, this file writes runs/bench/memory_stores.json.
"""

from __future__ import annotations

import argparse
import inspect
import time
from pathlib import Path

import numpy as np
import torch
from timing import format_case, guarded, interleaved_medians, median_seconds

from memworld import memory
from memworld.runs import write_results


def capacity_kwarg(cls: type) -> str:
    """The constructor argument of ``cls`` that sets the long-term capacity."""
    params = [p for p in inspect.signature(cls.__init__).parameters if "capacity" in p]
    if not params:
        raise TypeError(f"{cls.__name__}.__init__ has no *capacity* argument")
    return params[0]


def bench_dual(args: argparse.Namespace, device: torch.device) -> list[dict]:
    """Top-k retrieval from a full long-term store: ``query(q (64, D), top_k=8)`` by the exact
    scan and by the HNSW graph (``ltm_index="hnsw"``) at each ``--index-settings`` pair of
    (candidates, efSearch), timed in the same rounds as the exact scan ("after exact": the
    scan has just swept the store through the caches) and back to back ("alone"), with the
    recall@8 of the exact top-8 for queries near stored keys and for random ones."""
    rows = []
    cls = memory.make("dual", input_dim=args.dim).__class__
    kinds = ("exact", "hnsw") if "ltm_index" in inspect.signature(cls.__init__).parameters else ()
    settings = getattr(args, "index_settings", None) or [(32, 64)]
    for capacity in args.dual_sizes:

        def case(capacity: int = capacity) -> dict:
            torch.manual_seed(0)
            modules = {
                kind: memory.make(
                    "dual", input_dim=args.dim, ltm_index=kind, **{capacity_kwarg(cls): capacity}
                )
                .to(device)
                .eval()
                for kind in kinds or ("exact",)
            }
            some = next(iter(modules.values()))
            gen = torch.Generator().manual_seed(0)
            keys = torch.randn(capacity, some.key_dim, generator=gen)
            values = torch.randn(capacity, some.value_dim, generator=gen)
            queries = {
                "near": keys[: args.batch].to(device) + 0.01,
                "random": torch.randn(args.batch, some.key_dim, generator=gen).to(device),
            }
            result: dict = {"query_batch": args.batch}
            with torch.no_grad():
                for kind, module in modules.items():
                    module.store_experience(keys.to(device), values.to(device))
                    if kind == "hnsw":
                        start = time.perf_counter()
                        module.experience.slot_index()
                        result["hnsw_build_s"] = time.perf_counter() - start

            def query(kind: str, q: torch.Tensor, setting: tuple[int, int] | None = None):
                store = modules[kind].experience
                if setting is not None:  # the same graph searched with other widths
                    store.index_candidates, store.slot_index().ef_search = setting
                # update_importance=False: every round reads the same store
                return store.query(q, top_k=8, update_importance=False)

            fns = {"exact": lambda: query("exact", queries["near"])}
            if "hnsw" in modules:
                for c, ef in settings:
                    fns[f"hnsw_c{c}_ef{ef}"] = lambda s=(c, ef): query("hnsw", queries["near"], s)
            with torch.no_grad():
                medians = interleaved_medians(fns, device, args.repeats)
                result["exact_query_s"] = medians.pop("exact")
                result["exact_queries_per_s"] = args.batch / result["exact_query_s"]
                want = {name: query("exact", q).indices.tolist() for name, q in queries.items()}
                for (c, ef), (name, seconds) in zip(settings, medians.items()):
                    result[f"{name}_query_s"] = seconds  # after the exact scan
                    result[f"{name}_alone_s"] = median_seconds(fns[name], device, args.repeats)
                    result[f"{name}_over_exact"] = seconds / result["exact_query_s"]
                    for kind, q in queries.items():
                        got = query("hnsw", q, (c, ef)).indices.tolist()
                        hits = sum(len(set(a) & set(b)) for a, b in zip(want[kind], got))
                        result[f"{name}_recall_{kind}"] = hits / (8 * args.batch)
            return result

        rows.append({"capacity": capacity, **guarded(case)})
        print(f"  dual capacity={capacity:>7d}: {format_case(rows[-1])}", flush=True)
    return rows


def bench_bit(args: argparse.Namespace, device: torch.device) -> dict:
    """Word reads and writes per second on the packed bit store of a ``BitMemory``."""

    def case() -> dict:
        torch.manual_seed(0)
        module = memory.make("bit", input_dim=args.dim).to(device).eval()
        store = module.store if hasattr(module, "store") else module
        state = module.initial_state(args.batch, device)
        words = getattr(store, "num_words", 65536)
        address = torch.randint(0, words, (args.batch,), device=device)
        bits = torch.randint(0, 2, (args.batch, getattr(store, "word_bits", 32)), device=device)
        with torch.no_grad():
            written = store.write(state, address, bits.bool())
            state = written[0] if isinstance(written, tuple) else written
            write_s = median_seconds(
                lambda: store.write(state, address, bits.bool()), device, args.repeats
            )
            read_s = median_seconds(lambda: store.read(state, address), device, args.repeats)
        return {"writes_per_s": args.batch / write_s, "reads_per_s": args.batch / read_s}

    result = guarded(case)
    print(f"  bit: {format_case(result)}", flush=True)
    return result


def bench_index_sweep(args: argparse.Namespace) -> list[dict]:
    """IVF and HNSW settings against FAISS's exact scan on DualMemory-shaped keys (see the
    module docstring); one row per (kind, build setting, search setting) and capacity."""
    import faiss

    faiss.omp_set_num_threads(args.threads)
    key_dim = memory.make("dual", input_dim=8).key_dim
    rng = np.random.default_rng(0)
    rows = []
    for capacity in args.dual_sizes:
        keys = unit(rng.standard_normal((capacity, key_dim)))
        queries = {
            "near": unit(keys[: args.queries] + 0.01),
            "random": unit(rng.standard_normal((args.queries, key_dim))),
        }
        exact = faiss.IndexFlatIP(key_dim)
        exact.add(keys)
        want = {name: exact.search(q, 8)[1] for name, q in queries.items()}
        near = queries["near"]
        for kind, build, index, build_s, settings in index_settings(faiss, keys, key_dim):
            for setting in settings:

                def search(index=index, params=setting[1], near=near) -> None:
                    index.search(near, 4 * 8, params=params)

                def scan(exact=exact, near=near) -> None:
                    exact.search(near, 4 * 8)

                medians = interleaved_medians(
                    {"exact": scan, "index": search},
                    torch.device("cpu"),
                    args.repeats,
                )
                row = {
                    "capacity": capacity,
                    "index": f"{kind} {build} {setting[0]}",
                    "build_s": round(build_s, 2),
                    "query_ms": 1e3 * medians["index"],
                    "exact_ms": 1e3 * medians["exact"],
                    "over_exact": medians["index"] / medians["exact"],
                }
                for name, q in queries.items():
                    found = index.search(q, 4 * 8, params=setting[1])[1][:, :8]
                    hits = sum(len(set(a) & set(b)) for a, b in zip(want[name], found))
                    row[f"recall_{name}"] = hits / want[name].size
                rows.append(row)
                print(f"  {format_case(row)}", flush=True)
    return rows


def unit(x: np.ndarray) -> np.ndarray:
    """Rows of ``x`` scaled to unit norm, float32 and contiguous (what FAISS takes)."""
    return np.ascontiguousarray(x / np.linalg.norm(x, axis=1, keepdims=True), dtype=np.float32)


def index_settings(faiss, keys: np.ndarray, key_dim: int):
    """Yield ``(kind, build setting, built index, build seconds, [(search setting, params),
    ...])``."""
    for nlist in (256, 1024):
        start = time.perf_counter()
        ivf = faiss.IndexIVFFlat(
            faiss.IndexFlatIP(key_dim), key_dim, nlist, faiss.METRIC_INNER_PRODUCT
        )
        ivf.train(keys)
        ivf.add(keys)
        probes = [(f"nprobe={n}", faiss.SearchParametersIVF(nprobe=n)) for n in (4, 16, 64)]
        yield "ivf", f"nlist={nlist}", ivf, time.perf_counter() - start, probes
    for m in (16, 32):
        start = time.perf_counter()
        graph = faiss.IndexHNSWFlat(key_dim, m, faiss.METRIC_INNER_PRODUCT)
        graph.hnsw.efConstruction = 80
        graph.add(keys)
        widths = [(f"ef={ef}", faiss.SearchParametersHNSW(efSearch=ef)) for ef in (32, 64, 96)]
        yield "hnsw", f"M={m}", graph, time.perf_counter() - start, widths


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dual-sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--index-sweep", action="store_true", help="IVF/HNSW settings vs exact")
    parser.add_argument(
        "--index-settings",
        nargs="+",
        default=["32:64"],
        help="DualMemory's graph searches as candidates:efSearch pairs (default 32:64, "
        "the module's default at top_k=8)",
    )
    parser.add_argument("--repeats", type=int, default=5, help="paired rounds (median)")
    parser.add_argument("--batch", type=int, default=64, help="queries per retrieval")
    parser.add_argument("--dim", type=int, default=64, help="DualMemory's input width")
    parser.add_argument("--threads", type=int, default=1, help="torch and FAISS threads")
    parser.add_argument("--out", default="runs/bench/memory_stores.json")
    args = parser.parse_args()
    args.queries = args.batch
    args.index_settings = [tuple(int(v) for v in pair.split(":")) for pair in args.index_settings]
    torch.set_num_threads(args.threads)
    print(f"torch threads: {torch.get_num_threads()}")
    device = torch.device("cpu")
    report: dict = {"torch_threads": args.threads, "dual_memory": bench_dual(args, device)}
    report["bit_memory"] = bench_bit(args, device)
    if args.index_sweep:
        report["index_sweep"] = bench_index_sweep(args)
    write_results(Path(args.out), report)


if __name__ == "__main__":
    main()
