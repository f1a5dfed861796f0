"""`make demo`: every task's oracle and random returns, and one video per task."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
from rich.console import Console
from rich.table import Table

import envs
from memworld.videos import write_video


def rollout_returns(env_id: str, policy: str, num_envs: int = 64, seed: int = 0) -> float:
    """Mean first-episode return over ``num_envs`` envs for the oracle or a random policy."""
    vec = gym.make_vec(env_id, num_envs=num_envs, vectorization_mode="vector_entry_point")
    vec.reset(seed=seed)
    vec.action_space.seed(seed)
    totals = np.zeros(num_envs)
    finished = np.zeros(num_envs, dtype=bool)
    while not finished.all():
        actions = vec.oracle_actions() if policy == "oracle" else vec.action_space.sample()
        _, reward, terminated, truncated, _ = vec.step(actions)
        totals += np.where(finished, 0.0, reward)
        finished |= terminated | truncated
    return float(totals.mean())


def record_oracle(env_id: str, path: Path, max_frames: int = 120, seed: int = 0) -> Path:
    """One oracle episode (at most ``max_frames`` frames) as a video."""
    env = gym.make(env_id, render_mode="rgb_array").unwrapped
    env.reset(seed=seed)
    frames = [env.render()]
    while len(frames) < max_frames:
        *_, terminated, truncated, _ = env.step(env.oracle_action())
        frames.append(env.render())
        if terminated or truncated:
            break
    return write_video(path, frames, fps=env.metadata.get("render_fps", 4))


def env_table(out_dir: Path, console: Console) -> None:
    table = Table(title="memworld tasks (Easy presets): oracle vs random, 64 episodes each")
    for col in ("task", "chance return", "oracle return", "random return", "video"):
        table.add_column(col, justify="left" if col in ("task", "video") else "right")
    for task, _, _ in envs.TASKS:
        env_id = f"memworld/{task}Easy-v0"
        chance = gym.make(env_id).unwrapped.chance_return
        oracle = rollout_returns(env_id, "oracle")
        rand = rollout_returns(env_id, "random")
        video = record_oracle(env_id, out_dir / f"{task}.mp4")
        table.add_row(task, f"{chance:+.3f}", f"{oracle:+.3f}", f"{rand:+.3f}", str(video))
    console.print(table)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="runs/demo", help="folder for the videos")
    args = parser.parse_args(argv)
    console = Console()
    start = time.perf_counter()
    env_table(Path(args.out), console)
    console.print(f"demo finished in {time.perf_counter() - start:.1f}s; videos in {args.out}/")


if __name__ == "__main__":
    main()
