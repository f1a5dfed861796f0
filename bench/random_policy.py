"""Returns of a uniformly random policy: the floor under the sweep table.

    python bench/random_policy.py [--episodes 2000] [--tasks KeyDoorEasy TMazeEasy ...]

Random actions (seeded) on each task's batched env through the same SB3 adapter the
trainers use; prints per task the mean return and the fraction of episodes whose
return is positive, negative and zero, and writes runs/bench/random_policy.json.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from env_throughput import _actions

from memworld.agents import make_vec_env
from memworld.runs import write_results

SWEEP_TASKS = [
    "RepeatPreviousEasy",
    "RepeatFirstEasy",
    "CountRecallEasy",
    "AutoencodeEasy",
    "MemoryLengthEasy",
    "AssociativeRecallEasy",
    "TMazeEasy",
    "KeyDoorEasy",
]


def random_returns(task: str, episodes: int, n_envs: int = 64, seed: int = 0) -> np.ndarray:
    """Returns of the first ``episodes`` episodes a random policy finishes on ``task``."""
    env = make_vec_env(f"memworld/{task}-v0", n_envs=n_envs, seed=seed)
    rng = np.random.default_rng(seed)
    env.reset()
    returns: list[float] = []
    while len(returns) < episodes:
        for action in _actions(env.action_space, n_envs, rng, count=16):
            _, _, dones, infos = env.step(action)
            returns += [infos[i]["episode"]["r"] for i in np.flatnonzero(dones)]
    env.close()
    return np.asarray(returns[:episodes])


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--episodes", type=int, default=2000)
    parser.add_argument("--tasks", nargs="+", default=SWEEP_TASKS)
    args = parser.parse_args(argv)
    if args.episodes < 1:
        parser.error(f"--episodes must be >= 1, got {args.episodes}")
    print(f"{'task':<24}{'mean':>8}{'> 0':>8}{'< 0':>8}{'= 0':>8}")
    results = {}
    for task in args.tasks:
        r = random_returns(task, args.episodes)
        row = dict(
            mean=float(r.mean()),
            positive=float((r > 0).mean()),
            negative=float((r < 0).mean()),
            zero=float((r == 0).mean()),
        )
        results[task] = row
        print(f"{task:<24}" + "".join(f"{row[k]:>8.3f}" for k in row))
    out = Path("runs/bench/random_policy.json")
    write_results(out, dict(episodes=args.episodes, results=results))
    print(f"wrote {out}")
    return results


if __name__ == "__main__":
    main()
