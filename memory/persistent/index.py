"""Nearest-neighbour search over unit-normalised keys (inner product = cosine).

``exact`` is a NumPy matrix product; ``faiss-flat`` the same search in FAISS;
``faiss-hnsw`` a graph index; ``faiss-ivf`` an inverted file that searches
exactly until ``ivf_train_size`` keys exist and is trained once then.  Ids are
line positions (0, 1, ...) in insertion order; ``search(..., upto=n)`` sees only
lines ``< n`` (the store uses it to read the store as it was at line ``n``).
"""

from __future__ import annotations

import math

import numpy as np

from memworld.memory.persistent.config import StoreConfig

INDEX_KINDS = ("exact", "faiss-flat", "faiss-hnsw", "faiss-ivf")
_SEARCH_BLOCK = 1 << 25  # floats of a (queries, keys) similarity block (128 MiB)


def normalise(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit norm (zero rows stay zero: similarity 0 to everything)."""
    x = np.asarray(x, dtype=np.float32)
    norm = np.linalg.norm(x, axis=-1, keepdims=True)
    return np.divide(x, norm, out=np.zeros_like(x), where=norm > 0)


def topk_rows(sims: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` largest entries of each row of (q, n) ``sims``, best first."""
    q, n = sims.shape
    if k == 1:  # novelty's nearest neighbour: a max, not a sort
        ids = sims.argmax(axis=1)[:, None]
    elif k >= n:
        ids = np.argsort(-sims, axis=1, kind="stable")
    else:
        part = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(sims, part, 1), axis=1, kind="stable")
        ids = np.take_along_axis(part, order, 1)
    return np.take_along_axis(sims, ids, 1), ids.astype(np.int64)


def pad(sims: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Pad (q, <k) results to (q, k) with similarity -inf and id -1."""
    q, have = ids.shape
    if have >= k:
        return sims, ids
    out_s = np.full((q, k), -np.inf, np.float32)
    out_i = np.full((q, k), -1, np.int64)
    out_s[:, :have], out_i[:, :have] = sims, ids
    return out_s, out_i


class ExactIndex:
    """Brute force: ``queries @ keys.T`` in blocks, then a partial sort."""

    kind = "exact"

    def __init__(self, dim: int, config: StoreConfig) -> None:
        self.dim = dim
        self.keys = np.zeros((1024, dim), np.float32)
        self.ntotal = 0

    def add(self, unit_keys: np.ndarray) -> None:
        m = len(unit_keys)
        if self.ntotal + m > len(self.keys):
            grown = np.zeros((max(2 * len(self.keys), self.ntotal + m), self.dim), np.float32)
            grown[: self.ntotal] = self.keys[: self.ntotal]
            self.keys = grown
        self.keys[self.ntotal : self.ntotal + m] = unit_keys
        self.ntotal += m

    def search(self, queries: np.ndarray, k: int, upto: int | None = None):
        n = self.ntotal if upto is None else min(upto, self.ntotal)
        q = len(queries)
        if n == 0 or q == 0:
            return pad(np.zeros((q, 0), np.float32), np.zeros((q, 0), np.int64), k)
        keys = self.keys[:n]
        rows = max(1, _SEARCH_BLOCK // n)
        parts = [topk_rows(queries[i : i + rows] @ keys.T, k) for i in range(0, q, rows)]
        sims = np.concatenate([p[0] for p in parts])
        ids = np.concatenate([p[1] for p in parts])
        return pad(sims, ids, k)


class FaissIndex:
    """FAISS flat, HNSW or IVF over inner product."""

    def __init__(self, dim: int, config: StoreConfig, kind: str) -> None:
        try:
            import faiss
        except ImportError as err:  # pragma: no cover - depends on the environment
            raise ImportError(
                f"index={kind!r} needs faiss: pip install 'memworld[pmll]' (faiss-cpu)"
            ) from err
        self.faiss, self.kind, self.dim, self.config = faiss, kind, dim, config
        self.pending: list[np.ndarray] = []  # IVF keys held (and searched exactly) before training
        if kind == "faiss-flat":
            self.index = faiss.IndexFlatIP(dim)
        elif kind == "faiss-hnsw":
            self.index = faiss.IndexHNSWFlat(dim, config.hnsw_m, faiss.METRIC_INNER_PRODUCT)
            self.index.hnsw.efConstruction = config.hnsw_ef_construction
        elif kind == "faiss-ivf":
            self.index = None
            self.exact = ExactIndex(dim, config)
        else:
            raise ValueError(f"unknown index {kind!r}; choose one of {INDEX_KINDS}")

    @property
    def ntotal(self) -> int:
        return self.exact.ntotal if self.index is None else self.index.ntotal

    def add(self, unit_keys: np.ndarray) -> None:
        unit_keys = np.ascontiguousarray(unit_keys, dtype=np.float32)
        if self.index is not None:
            self.index.add(unit_keys)
            return
        self.exact.add(unit_keys)
        if self.exact.ntotal >= self.config.ivf_train_size:
            self._train_ivf(self.exact.keys[: self.exact.ntotal])

    def _train_ivf(self, keys: np.ndarray) -> None:
        faiss, n = self.faiss, len(keys)
        nlist = self.config.ivf_nlist or int(np.clip(4 * math.sqrt(n), 16, 65536))
        nlist = max(1, min(nlist, n // 39))  # FAISS wants >= 39 training points per list
        quantizer = faiss.IndexFlatIP(self.dim)
        index = faiss.IndexIVFFlat(quantizer, self.dim, nlist, faiss.METRIC_INNER_PRODUCT)
        sample = keys
        if n > 256 * nlist:  # a fixed, seeded sample keeps training time bounded
            sample = keys[np.random.default_rng(0).choice(n, 256 * nlist, replace=False)]
        index.train(np.ascontiguousarray(sample))
        index.add(np.ascontiguousarray(keys))
        self.quantizer, self.index, self.exact = quantizer, index, None

    def _params(self, upto: int | None):
        faiss = self.faiss
        kwargs = {}
        if upto is not None and upto < self.ntotal:
            self._selector = faiss.IDSelectorRange(0, max(0, upto))  # kept alive for the call
            kwargs["sel"] = self._selector
        if self.kind == "faiss-hnsw":
            return faiss.SearchParametersHNSW(efSearch=self.config.hnsw_ef_search, **kwargs)
        if self.kind == "faiss-ivf":
            return faiss.SearchParametersIVF(nprobe=self.config.ivf_nprobe, **kwargs)
        return faiss.SearchParameters(**kwargs) if kwargs else None

    def search(self, queries: np.ndarray, k: int, upto: int | None = None):
        if self.index is None:
            return self.exact.search(queries, k, upto)
        q = len(queries)
        if self.ntotal == 0 or q == 0 or upto == 0:
            return pad(np.zeros((q, 0), np.float32), np.zeros((q, 0), np.int64), k)
        params = self._params(upto)
        threads = self.config.faiss_threads or (1 if q <= 16 else None)
        before = self.faiss.omp_get_max_threads()
        if threads is not None:
            self.faiss.omp_set_num_threads(threads)
        try:
            queries = np.ascontiguousarray(queries, np.float32)
            sims, ids = self.index.search(queries, k, params=params)
        finally:
            self.faiss.omp_set_num_threads(before)
        sims = np.where(ids >= 0, sims, -np.inf).astype(np.float32)
        return sims, ids.astype(np.int64)


def make_index(kind: str, dim: int, config: StoreConfig) -> ExactIndex | FaissIndex:
    if kind == "exact":
        return ExactIndex(dim, config)
    if kind not in INDEX_KINDS:
        raise ValueError(f"unknown index {kind!r}; choose one of {INDEX_KINDS}")
    return FaissIndex(dim, config, kind)
