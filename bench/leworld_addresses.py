"""Where the past observation each step needs was written: can a fixed range find it?

    python bench/leworld_addresses.py [--tasks KeyDoorEasy ...] [--batches 4]

LeWorld writes observation t at address t of its episode's memory, and
``oracle_address`` is the address of the past observation step t needs (the last
sight of the queried object, of the key).  Per task, on the training batches
``memworld leworld train`` draws (16 rows x 48 steps, seed 123 here): the fraction
of steps whose oracle address lies in the first ``range_len`` words (then one
fixed range, never moved, covers it and an info request has nothing to redirect),
the number of distinct oracle addresses per episode, and the oracle's lag behind
the write pointer.  On KeyDoor these count the steps after the key's first sighting
(before it, nothing in the memory can tell its colour); the share of steps before it
is reported on its own.  Writes runs/bench/leworld_addresses.json.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from memworld.runs import write_results
from memworld.world_models.leworld.data import RolloutSource, sighted

TASKS = [
    f"{task}{level}"
    for task in ("KeyDoor", "OccludedDynamics")
    for level in ("Easy", "Medium", "Hard")
] + ["KeyDoorMediumRandomStart"]


def address_stats(env_id: str, batches: int, range_len: int, seq_len: int) -> dict:
    """Oracle-address statistics over ``batches`` batches of 16 episodes."""
    source = RolloutSource(env_id, num_envs=16, seq_len=seq_len, seed=123)
    first, distinct, lags, unseen = [], [], [], []
    for _ in range(batches):
        batch = source.batch()
        oracle, valid = batch.oracle_address.numpy(), batch.valid.numpy()
        seen = sighted(source.task, batch.obs.numpy(), source.env.unwrapped)
        unseen.append(~seen[valid])
        valid = valid & seen
        first.append(oracle[valid] < range_len)
        distinct += [len(np.unique(oracle[valid[:, i], i])) for i in range(oracle.shape[1])]
        lags.append((np.arange(oracle.shape[0])[:, None] - oracle)[valid])
    first_words, lag = np.concatenate(first), np.concatenate(lags)
    return {
        "steps": int(lag.size),
        "before_first_sight": float(np.concatenate(unseen).mean()),
        "in_first_range": float(first_words.mean()),
        "distinct_per_episode": float(np.mean(distinct)),
        "mean_lag": float(lag.mean()),
        "lag_at_least_range": float((lag >= range_len).mean()),
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tasks", nargs="+", default=TASKS)
    parser.add_argument("--batches", type=int, default=4)
    parser.add_argument("--range-len", type=int, default=8, help="words an SLM range covers")
    parser.add_argument("--seq-len", type=int, default=48)
    parser.add_argument("--out", default="runs/bench/leworld_addresses.json")
    args = parser.parse_args(argv)
    print(f"{'task':26s} {'steps':>6s} {'in words 0-' + str(args.range_len - 1):>14s} ", end="")
    print(f"{'distinct/episode':>17s} {'mean lag':>9s} {'lag >= range':>13s} {'unseen':>7s}")
    report = {}
    for task in args.tasks:
        stats = address_stats(task, args.batches, args.range_len, args.seq_len)
        report[task] = stats
        print(
            f"{task:26s} {stats['steps']:6d} {stats['in_first_range']:14.3f} "
            f"{stats['distinct_per_episode']:17.1f} {stats['mean_lag']:9.1f} "
            f"{stats['lag_at_least_range']:13.3f} {stats['before_first_sight']:7.3f}"
        )
    out = Path(args.out)
    write_results(out, {"config": vars(args), "tasks": report})
    print(f"wrote {out}")
    return report


if __name__ == "__main__":
    main()
