"""Env steps per second: memworld's scalar and batched envs against POPGym, in one run.

    python bench/env_throughput.py [--seconds 1.0] [--sizes 1 64 1024 4096] [--tasks ...]

Random actions (pre-drawn) on every task's Easy preset; for RepeatPrevious,
RepeatFirst, CountRecall and Autoencode also POPGym's single env and a
Gymnasium SyncVectorEnv of 16 POPGym envs. Prints a table with the ratio to
POPGym's single env and writes runs/bench/env_throughput.json.
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import gymnasium as gym
import numpy as np

from memworld import envs
from memworld.runs import write_results

POPGYM_PEERS = {
    "RepeatPrevious": "RepeatPreviousEasy",
    "RepeatFirst": "RepeatFirstEasy",
    "CountRecall": "CountRecallEasy",
    "Autoencode": "AutoencodeEasy",
}


def _actions(space: gym.Space, batch: int | None, rng: np.random.Generator, count: int = 64):
    shape = () if batch is None else (batch,)
    if isinstance(space, gym.spaces.Discrete):
        return rng.integers(space.start, space.start + space.n, size=(count, *shape))
    if isinstance(space, gym.spaces.MultiDiscrete):
        return rng.integers(
            space.start, space.start + space.nvec, size=(count, *shape, *space.shape)
        )
    low, high = space.low, space.high
    return rng.uniform(low, high, size=(count, *shape, *space.shape)).astype(space.dtype)


def time_scalar(env: gym.Env, seconds: float) -> float:
    """Steps/s of a single env, resetting by hand at episode ends."""
    acts = _actions(env.action_space, None, np.random.default_rng(0))
    acts = [a.item() if np.ndim(a) == 0 else a for a in acts]
    env.reset(seed=0)
    steps, start = 0, time.perf_counter()
    while True:
        for a in acts:
            _, _, terminated, truncated, _ = env.step(a)
            if terminated or truncated:
                env.reset()
        steps += len(acts)
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return steps / elapsed


def time_vector(vec: gym.vector.VectorEnv, seconds: float) -> float:
    """Env-steps/s of a vector env (num_envs steps per call)."""
    acts = _actions(vec.single_action_space, vec.num_envs, np.random.default_rng(0), count=16)
    vec.reset(seed=0)
    calls, start = 0, time.perf_counter()
    while True:
        for a in acts:
            vec.step(a)
        calls += len(acts)
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return calls * vec.num_envs / elapsed


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=1.0, help="time per measurement")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 64, 1024, 4096])
    parser.add_argument("--tasks", nargs="+", default=[t for t, _, _ in envs.TASKS])
    parser.add_argument("--out", default="runs/bench/env_throughput.json")
    args = parser.parse_args(argv)

    import popgym.envs as popgym_envs

    rows = []
    for task in args.tasks:
        env_id = f"memworld/{task}Easy-v0"
        result = {"task": task, "env_id": env_id}
        result["scalar"] = time_scalar(gym.make(env_id).unwrapped, args.seconds)
        for n in args.sizes:
            vec = gym.make_vec(env_id, num_envs=n, vectorization_mode="vector_entry_point")
            result[f"vector_{n}"] = time_vector(vec, args.seconds)
        # The same core without computing info["world_state"] (RL training needs no world state).
        vec = gym.make_vec(
            env_id,
            num_envs=args.sizes[-1],
            vectorization_mode="vector_entry_point",
            world_state=False,
        )
        result[f"vector_{args.sizes[-1]}_no_world_state"] = time_vector(vec, args.seconds)
        if task in POPGYM_PEERS:
            cls = getattr(popgym_envs, POPGYM_PEERS[task])
            result["popgym_single"] = time_scalar(cls(), args.seconds)
            sync = gym.vector.SyncVectorEnv([cls for _ in range(16)])
            result["popgym_sync16"] = time_vector(sync, args.seconds)
        rows.append(result)
        _print_row(result, args.sizes)

    report = {
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor(),
            "python": platform.python_version(),
            "numpy": np.__version__,
        },
        "seconds_per_measurement": args.seconds,
        "results": rows,
    }
    out = Path(args.out)
    write_results(out, report)
    print(f"wrote {out}")
    return report


def _print_row(r: dict, sizes: list[int]) -> None:
    if not getattr(_print_row, "header", False):
        cols = (
            ["task", "scalar"]
            + [f"vec{n}" for n in sizes]
            + [
                f"vec{sizes[-1]} no ws",
                "popgym",
                "popgym sync16",
                "scalar/popgym",
                f"vec{sizes[-1]}/popgym",
                "no ws/popgym",
            ]
        )
        print(" | ".join(f"{c:>14s}" for c in cols))
        _print_row.header = True
    peer = r.get("popgym_single")
    cells = [r["task"], f"{r['scalar']:,.0f}"] + [f"{r[f'vector_{n}']:,.0f}" for n in sizes]
    cells += [f"{r[f'vector_{sizes[-1]}_no_world_state']:,.0f}"]
    cells += [f"{peer:,.0f}" if peer else "-", f"{r['popgym_sync16']:,.0f}" if peer else "-"]
    cells += [
        f"{r['scalar'] / peer:.2f}x" if peer else "-",
        f"{r[f'vector_{sizes[-1]}'] / peer:,.0f}x" if peer else "-",
        f"{r[f'vector_{sizes[-1]}_no_world_state'] / peer:,.0f}x" if peer else "-",
    ]
    print(" | ".join(f"{c:>14s}" for c in cells), flush=True)


if __name__ == "__main__":
    main()
