"""The store's parameters: the heuristics of the PMLL document and the tuning knobs.

``StoreConfig.from_file`` reads JSON with ``//`` and ``/* */`` comments.  The
comments are removed by a scanner that knows when it is inside a string, so a
value such as ``"http://example.com"`` is left alone (a regular expression that
ignores strings would cut it at ``//``).
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

from memworld.memory.base import check_range


@dataclasses.dataclass(frozen=True)
class StoreConfig:
    """Parameters of a :class:`~memworld.memory.persistent.store.PersistentStore`.

    Args:
        alpha: weight of recency in ``w_i = alpha r_i + beta s_i + gamma n_i`` (0.35).
        beta: weight of cosine similarity to the query (0.50).
        gamma: weight of novelty at insertion (0.08).
        floor: lines with cosine similarity below this never reach a query or a
            bias vector (0.15).
        tau: recency time constant in seconds, ``r_i = exp(-(t_now - t_i) / tau)``
            (6 hours); use the same unit as the timestamps you pass.
        k: default number of lines a query returns (5).
        candidate_factor: a query takes the ``k * candidate_factor`` nearest keys
            by cosine, then ranks them by ``w_i`` (4).
        loser_decay: factor on ``w_i`` of a race loser kept for audit (0.1).
        fsync_batch: under ``fsync="batch"``, sync after this many lines (256) ...
        fsync_seconds: ... or once this many seconds have passed since the last sync (1.0).
        sync_every: novelty and the index are brought up to date in blocks; a put
            triggers it once this many lines are pending (4096); any read does too.
        snapshot_every: the JSONL backend writes a snapshot segment once this many
            lines follow the last one (100,000), and on close.
        hnsw_m, hnsw_ef_construction, hnsw_ef_search: FAISS HNSW graph parameters.
        ivf_nlist: IVF lists; None picks ``4 sqrt(N)`` (16..65,536) at training time.
        ivf_nprobe: IVF lists probed per query (32).
        ivf_train_size: the IVF index is trained once this many lines exist (it
            searches exactly before that) (20,000).
        lmdb_map_size: initial LMDB map size in bytes; it doubles when full (1 GiB).
        faiss_threads: OpenMP threads for FAISS searches; None uses one thread for
            searches of up to 16 queries (many threads only add overhead there) and
            FAISS's default for larger batches.
    """

    alpha: float = 0.35
    beta: float = 0.50
    gamma: float = 0.08
    floor: float = 0.15
    tau: float = 6 * 3600.0
    k: int = 5
    candidate_factor: int = 4
    loser_decay: float = 0.1
    fsync_batch: int = 256
    fsync_seconds: float = 1.0
    sync_every: int = 4096
    snapshot_every: int = 100_000
    hnsw_m: int = 32
    hnsw_ef_construction: int = 80
    hnsw_ef_search: int = 64
    ivf_nlist: int | None = None
    ivf_nprobe: int = 32
    ivf_train_size: int = 20_000
    lmdb_map_size: int = 1 << 30
    faiss_threads: int | None = None

    def __post_init__(self) -> None:
        for name in ("alpha", "beta", "gamma", "fsync_seconds"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"StoreConfig.{name} must be a finite number >= 0, got {value!r}")
        if not (math.isfinite(self.tau) and self.tau > 0):
            raise ValueError(f"StoreConfig.tau must be > 0 (seconds), got {self.tau!r}")
        if self.faiss_threads is not None and (
            not isinstance(self.faiss_threads, int) or self.faiss_threads < 1
        ):
            raise ValueError(
                f"StoreConfig.faiss_threads must be None or >= 1, got {self.faiss_threads!r}"
            )
        if not -1.0 <= self.floor <= 1.0:
            raise ValueError(
                f"StoreConfig.floor is a cosine similarity in [-1, 1], got {self.floor}"
            )
        if not 0.0 <= self.loser_decay <= 1.0:
            raise ValueError(f"StoreConfig.loser_decay must be in [0, 1], got {self.loser_decay}")
        for name in (
            "k",
            "candidate_factor",
            "fsync_batch",
            "sync_every",
            "snapshot_every",
            "hnsw_m",
            "hnsw_ef_construction",
            "hnsw_ef_search",
            "ivf_nprobe",
            "ivf_train_size",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"StoreConfig.{name} must be a positive integer, got {value!r}")
        if self.ivf_nlist is not None:
            check_range(
                "StoreConfig.ivf_nlist", self.ivf_nlist, 1, integer=True, fix="None picks 4 sqrt(N)"
            )
        check_range(
            "StoreConfig.lmdb_map_size", self.lmdb_map_size, 1, integer=True, fix="a size in bytes"
        )

    @classmethod
    def from_file(cls, path: str | Path, **overrides) -> StoreConfig:
        """Read a JSON (comments allowed) file of fields; ``overrides`` win."""
        fields = json.loads(strip_json_comments(Path(path).read_text(encoding="utf-8")))
        if not isinstance(fields, dict):
            raise ValueError(f"{path}: a store config is a JSON object of StoreConfig fields")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(fields) - known)
        if unknown:
            raise ValueError(
                f"{path}: unknown StoreConfig fields {unknown}; known: {sorted(known)}"
            )
        return cls(**{**fields, **overrides})


def strip_json_comments(text: str) -> str:
    """Remove ``//`` line comments and ``/* */`` block comments outside JSON strings."""
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        char = text[i]
        if char == '"':  # copy the whole string, escapes included
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            out.append(text[i : j + 1])
            i = j + 1
        elif text.startswith("//", i):
            end = text.find("\n", i)
            i = n if end < 0 else end  # keep the newline
        elif text.startswith("/*", i):
            end = text.find("*/", i + 2)
            if end < 0:
                raise ValueError("unterminated /* comment in JSON")
            out.append(" ")
            i = end + 2
        else:
            out.append(char)
            i += 1
    return "".join(out)
