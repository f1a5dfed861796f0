"""Race / Trace: score candidate updates together, commit the winner, keep the rest for audit.

``race(candidates)`` scores every candidate ``(key, value[, ctx])`` in one
batched search, with the composite weight a new line would get::

    score_c = alpha * 1 + beta * s_c + gamma * (1 - s_c)

where ``s_c`` is the candidate's cosine similarity to its nearest stored key
(0 below the floor or in an empty store; a new line's recency is 1), or uses the
caller's ``scores`` (log-probabilities, returns, ...).  Nothing is written.

``trace(race)`` appends the losers, then the winner, so the winner's anchor
becomes the head.  Each line's ctx gets ``"_trace": {"race": <head the race
saw>, "candidate": c, "score": score_c, "status": "committed" | "decayed"}``;
being in the ctx, the outcome is part of the chain.  Losers stay searchable
but their weight is multiplied by ``loser_decay``.  If another write moved the
head since the race, trace raises :class:`ConflictError`: race again.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from memworld.memory.persistent.index import normalise
from memworld.memory.persistent.line import ConflictError
from memworld.memory.persistent.table import TRACE_FIELD


@dataclasses.dataclass(frozen=True)
class Race:
    """The outcome of :meth:`PersistentStore.race` (nothing written yet)."""

    head: str
    keys: np.ndarray  # (c, dim)
    values: np.ndarray  # (c, value_dim)
    ctxs: list[dict]
    scores: np.ndarray  # (c,)
    winner: int


def _unpack(candidates) -> tuple[list, list, list[dict]]:
    keys, values, ctxs = [], [], []
    for cand in candidates:
        if isinstance(cand, dict):
            key, value, ctx = cand["key"], cand["value"], cand.get("ctx")
        else:
            key, value, *rest = cand
            ctx = rest[0] if rest else None
        ctx = dict(ctx or {})
        if TRACE_FIELD in ctx:
            raise ValueError(f"ctx field {TRACE_FIELD!r} is reserved for race/trace; rename it")
        keys.append(key)
        values.append(value)
        ctxs.append(ctx)
    if not keys:
        raise ValueError("race() needs at least one candidate (key, value[, ctx])")
    return keys, values, ctxs


def run_race(store, candidates, scores=None) -> Race:
    keys, values, ctxs = _unpack(candidates)
    keys = store._matrix(keys, store.dim, "candidate keys")
    values = store._matrix(values, store.value_dim, "candidate values")
    cfg = store.config
    with store._lock:
        store._sync()
        head = store.head
        if scores is None:
            support = store.index.search(normalise(keys), 1)[0][:, 0]
            s = np.where(support >= cfg.floor, support, 0.0)
            novelty = np.where(np.isfinite(support), 1.0 - support, 1.0)
            scores = cfg.alpha + cfg.beta * s + cfg.gamma * novelty
    scores = np.asarray(scores, np.float64).reshape(-1)
    if len(scores) != len(keys) or not np.isfinite(scores).all():
        raise ValueError(f"scores must be {len(keys)} finite numbers, one per candidate")
    return Race(head, keys, values, ctxs, scores, int(np.argmax(scores)))


def commit_trace(store, race: Race, winner: int | None = None) -> str:
    winner = race.winner if winner is None else int(winner)
    if not 0 <= winner < len(race.keys):
        raise IndexError(f"winner {winner} is not a candidate index (0..{len(race.keys) - 1})")
    order = [c for c in range(len(race.keys)) if c != winner] + [winner]
    ctxs = [
        {
            **race.ctxs[c],
            TRACE_FIELD: {
                "race": race.head,
                "candidate": c,
                "score": float(race.scores[c]),
                "status": "committed" if c == winner else "decayed",
            },
        }
        for c in order
    ]
    with store._lock:
        if store.head != race.head:
            raise ConflictError(
                f"the store moved since the race (head {store.head}, the race saw {race.head}); "
                "run race() again"
            )
        return store.put_many(race.keys[order], race.values[order], ctxs, race.head)[-1]
