"""`make demo`: every task's oracle and random returns with one video per task, then a
memory agent (MemoryPPO + GRU) trained next to a memoryless PPO, and a video of it."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
from rich.console import Console
from rich.table import Table

from memworld import envs
from memworld.video.writer import write_video


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


def train_section(out_dir: Path, console: Console, env_id: str, steps: int) -> None:
    """Train MemoryPPO+GRU and a memoryless PPO; compare returns; record the memory agent."""
    from memworld.train import TrainConfig, evaluate, train
    from memworld.video.record import record

    table = Table(title=f"{env_id}: {steps:,} env steps each, 8 envs, 50 deterministic episodes")
    for col in ("agent", "mean return", "train time (s)", "run folder"):
        table.add_column(col)
    videos = []
    for algo, memory in (("memoryppo", "gru"), ("ppo", None)):
        console.print(f"training {algo}{'+' + memory if memory else ''} on {env_id} ...")
        config = TrainConfig(env=env_id, algo=algo, memory=memory, steps=steps, n_envs=8, seed=0)
        start = time.perf_counter()
        run = train(config, root=out_dir / "train")
        seconds = time.perf_counter() - start
        result = evaluate(run, episodes=50)
        label = "MemoryPPO (GRU memory)" if memory else "PPO (MLP, no memory)"
        table.add_row(label, f"{result['mean_return']:+.3f}", f"{seconds:.0f}", str(run))
        if memory:
            videos = record(run, episodes=1)
    console.print(table)
    console.print(f"video of the trained memory agent with its memory panel: {videos[0]}")


def leworld_section(out_dir: Path, console: Console, env_id: str, steps: int) -> None:
    """Train the LeWorld small preset and its baselines briefly; print the evaluation table."""
    from memworld.leworld import cli as leworld_cli

    console.print(
        f"training LeWorld (small preset) on {env_id}: {steps} updates over the three phases, "
        "then the no-memory and GRU baselines ..."
    )
    args = f"leworld train --preset small --num-envs 8 --steps {steps} --env {env_id}".split()
    leworld_cli.main([*args, "--root", str(out_dir / "leworld")])


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The demo's options (``python -m memworld.demo`` and ``memworld demo`` share them)."""
    from memworld.args import env_arg

    parser.add_argument("--out", default="runs/demo", help="folder for the videos")
    parser.add_argument(
        "--env", type=env_arg, default="memworld/RepeatPreviousEasy-v0", help="task to train on"
    )
    parser.add_argument("--steps", type=int, default=40_000, help="env steps per agent")
    parser.add_argument("--skip-train", action="store_true", help="only the oracle/random table")
    parser.add_argument(
        "--leworld-env",
        type=env_arg,
        default="memworld/OccludedDynamicsEasy-v0",
        help="LeWorld's task",
    )
    parser.add_argument(
        "--leworld-steps", type=int, default=60, help="LeWorld small-preset updates (0: skip)"
    )


def run(args: argparse.Namespace) -> None:
    """The demo, for parsed :func:`add_arguments` options."""
    console = Console()
    start = time.perf_counter()
    env_table(Path(args.out), console)
    if not args.skip_train:
        train_section(Path(args.out), console, args.env, args.steps)
        if args.leworld_steps > 0:
            leworld_section(Path(args.out), console, args.leworld_env, args.leworld_steps)
    console.print(f"demo finished in {time.perf_counter() - start:.1f}s; videos in {args.out}/")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    add_arguments(parser)
    run(parser.parse_args(argv))


if __name__ == "__main__":
    main()
