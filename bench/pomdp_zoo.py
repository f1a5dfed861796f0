"""RL Zoo's velocity-free control tasks: sb3-contrib RecurrentPPO and MemoryPPO side by side.

    python bench/pomdp_zoo.py [--quick] [--presets ...] [--algos ...] [--variants ...]
                              [--seeds 0 1 2] [--steps N] [--progress] [--table]

Presets (hyper-parameters in ``PRESETS``):

- ``CartPoleNoVel-v1`` and ``PendulumNoVel-v1``: RL Zoo's tuned ``ppo_lstm``
  settings for these tasks (hyperparams/ppo_lstm.yml), 100k env steps.
- ``CartPoleNoVel-user``: settings a user might carry over from another task,
  with no reward normalisation (``gamma=0.999``, 20 epochs, ``lr=1e-3``, ReLU,
  no orthogonal init): returns reach the hundreds, the case MemoryPPO's value
  normalisation is for.

The tasks are Gymnasium's CartPole-v1 and Pendulum-v1 with the velocities
removed by :class:`NoVelocity` (an ``ObservationWrapper``; no extra
dependency): CartPole keeps cart position and pole angle, Pendulum keeps
``cos`` and ``sin`` of the angle.  Every algorithm sees the same settings;
RecurrentPPO uses its ``MlpLstmPolicy`` (an actor LSTM and a critic LSTM),
MemoryPPO a GRU or an LSTM of the same width.  Each (preset, algo, seed) is
trained, then evaluated on ``--eval-episodes`` deterministic episodes of a
separately seeded env; one JSON per run is written under ``--out``, so runs
can go in parallel processes; ``--table`` prints the table of every JSON there.

Training env-steps/s are reported next to RecurrentPPO's: under a shared CPU
only the ratio within one run means anything.  ``--quick``: 1 seed, 512
steps (at least one rollout), 2 episodes, under ``--out``/quick (a smoke test).
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.logger import configure
from stable_baselines3.common.vec_env import VecEnv
from torch import nn

from memworld.agents import MemoryPPO
from memworld.runs import write_results

OUT_DIR = Path("runs/bench/pomdp_zoo")


class NoVelocity(gym.ObservationWrapper):
    """Keep only the observation entries at ``keep`` (positions, not velocities).

    Args:
        env: a Gymnasium env with a 1-d ``Box`` observation.
        keep: indices of the entries to keep.
    """

    def __init__(self, env: gym.Env, keep: tuple[int, ...]) -> None:
        super().__init__(env)
        self.keep = np.asarray(keep)
        box = env.observation_space
        self.observation_space = gym.spaces.Box(
            box.low[self.keep], box.high[self.keep], dtype=box.dtype
        )

    def observation(self, observation: np.ndarray) -> np.ndarray:
        return observation[self.keep]


TASKS = {  # name -> (Gymnasium id, entries kept)
    "CartPoleNoVel": ("CartPole-v1", (0, 2)),  # x, theta (no x_dot, theta_dot)
    "PendulumNoVel": ("Pendulum-v1", (0, 1)),  # cos, sin (no theta_dot)
}


def linear(start: float) -> Callable[[float], float]:
    """RL Zoo's ``lin_<start>``: ``start`` times the remaining progress (1 -> 0)."""

    def schedule(progress_remaining: float) -> float:
        return progress_remaining * start

    return schedule


# Shared settings of each preset; ``policy`` is given to both algorithms.  ``memory_ppo``
# holds what MemoryPPO spells differently: its minibatches are whole sequences, so a
# batch_size must be a multiple of the sequence length (bptt_len, else n_steps).
PRESETS: dict[str, dict[str, Any]] = {
    "CartPoleNoVel-v1": dict(
        task="CartPoleNoVel",
        n_envs=8,
        steps=100_000,
        ppo=dict(
            n_steps=32,
            batch_size=256,
            gae_lambda=0.8,
            gamma=0.98,
            n_epochs=20,
            ent_coef=0.0,
            learning_rate=linear(1e-3),
            clip_range=linear(0.2),
        ),
        policy={},
        hidden=256,
        memory_ppo={},
    ),
    "PendulumNoVel-v1": dict(
        task="PendulumNoVel",
        n_envs=4,
        steps=100_000,
        ppo=dict(
            n_steps=1024,
            gae_lambda=0.95,
            gamma=0.9,
            n_epochs=10,
            ent_coef=0.0,
            learning_rate=1e-3,
            clip_range=0.2,
            use_sde=True,
            sde_sample_freq=4,
        ),
        policy={},
        hidden=256,
        # RecurrentPPO's default batch_size 128: 4 sequences of 32 steps.
        memory_ppo=dict(batch_size=128, bptt_len=32),
    ),
    "CartPoleNoVel-user": dict(
        task="CartPoleNoVel",
        n_envs=8,
        steps=100_000,
        ppo=dict(
            n_steps=32,
            batch_size=256,
            n_epochs=20,
            gamma=0.999,
            gae_lambda=0.98,
            learning_rate=1e-3,
            ent_coef=0.0,
        ),
        policy=dict(ortho_init=False, activation_fn=nn.ReLU, net_arch=dict(pi=[64], vf=[64])),
        hidden=64,
        memory_ppo={},
    ),
}

# MemoryPPO variants compared in docs/memoryppo.md: policy_kwargs on top of the defaults.
VARIANTS: dict[str, dict[str, Any]] = {
    "default": {},
    "no_norm": dict(value_norm=None),
    "running": dict(value_norm="running"),
    "popart": dict(value_norm="popart"),
    "no_value_grad": dict(value_norm=None, value_grad_to_memory=0.0),
    "no_value_grad_popart": dict(value_grad_to_memory=0.0),
    "separate": dict(value_norm=None, shared_memory=False),
    "separate_popart": dict(shared_memory=False),
}
# Variants that change MemoryPPO's own arguments, not the policy's.
ALGO_VARIANTS: dict[str, dict[str, Any]] = {
    "kl01": dict(target_kl=0.01),  # a KL limit per update (docs/memoryppo.md)
    "kl02": dict(target_kl=0.02),
}
ALGOS = ["recurrent_ppo", "memory_ppo_gru", "memory_ppo_lstm"]


def make_env(task: str, n_envs: int, seed: int) -> VecEnv:
    env_id, keep = TASKS[task]
    return make_vec_env(
        env_id, n_envs=n_envs, seed=seed, wrapper_class=NoVelocity, wrapper_kwargs=dict(keep=keep)
    )


def build(algo: str, variant: str, preset: dict[str, Any], env: VecEnv, seed: int) -> BaseAlgorithm:
    if algo == "recurrent_ppo":
        from sb3_contrib import RecurrentPPO

        policy_kwargs = dict(preset["policy"], lstm_hidden_size=preset["hidden"])
        return RecurrentPPO(
            "MlpLstmPolicy",
            env,
            seed=seed,
            device="cpu",
            policy_kwargs=policy_kwargs,
            **preset["ppo"],
        )
    if variant not in VARIANTS and variant not in ALGO_VARIANTS:
        raise ValueError(
            f"variant={variant!r} is not a MemoryPPO variant; use one of "
            f"{[*VARIANTS, *ALGO_VARIANTS]}"
        )
    memory = algo.removeprefix("memory_ppo_")
    policy_kwargs = dict(
        preset["policy"],
        memory=memory,
        memory_kwargs=dict(hidden_dim=preset["hidden"]),
        **VARIANTS.get(variant, {}),
    )
    return MemoryPPO(
        "MlpPolicy",
        env,
        seed=seed,
        device="cpu",
        policy_kwargs=policy_kwargs,
        **{**preset["ppo"], **preset["memory_ppo"], **ALGO_VARIANTS.get(variant, {})},
    )


def run_name(algo: str, variant: str) -> str:
    """``recurrent_ppo``, or ``memory_ppo_<memory>/<variant>``: a run's name in results."""
    return algo if algo == "recurrent_ppo" else f"{algo}/{variant}"


def run_one(
    preset_name: str,
    algo: str,
    variant: str,
    seed: int,
    steps: int,
    episodes: int,
    progress: Path | None = None,
) -> dict:
    """Train and evaluate one run; with ``progress``, SB3's per-update log goes to
    ``progress/progress.csv`` and the result gets the median approximate KL and clip
    fraction of the updates (how far each update moved the policy)."""
    preset = PRESETS[preset_name]
    env = make_env(preset["task"], preset["n_envs"], seed)
    eval_env = make_env(preset["task"], min(episodes, 10), seed + 10_000)
    obs_dim = int(env.observation_space.shape[0])
    model = build(algo, variant, preset, env, seed)
    if progress is not None:
        model.set_logger(configure(str(progress), ["csv"]))
    start = time.perf_counter()
    model.learn(steps)
    seconds = time.perf_counter() - start
    mean, std = evaluate_policy(model, eval_env, n_eval_episodes=episodes, deterministic=True)
    env.close()
    eval_env.close()
    updates = {} if progress is None else update_medians(progress / "progress.csv")
    return {
        "preset": preset_name,
        "algo": run_name(algo, variant),
        "seed": seed,
        "obs_dim": obs_dim,
        "env_steps": int(model.num_timesteps),
        "train_seconds": seconds,
        "steps_per_second": model.num_timesteps / seconds,
        "eval_return": float(mean),
        "eval_return_std": float(std),
        "eval_episodes": episodes,
        **updates,
    }


def update_medians(csv_path: Path) -> dict[str, float]:
    """Median ``train/approx_kl`` and ``train/clip_fraction`` over the updates in an SB3
    CSV log (rows without an update, such as the first rollout's, are skipped)."""
    with csv_path.open() as f:
        rows = [r for r in csv.DictReader(f) if r.get("train/approx_kl")]
    return {
        "median_approx_kl": float(np.median([float(r["train/approx_kl"]) for r in rows])),
        "median_clip_fraction": float(np.median([float(r["train/clip_fraction"]) for r in rows])),
    }


def table(out: Path) -> list[dict]:
    """Mean return and env-steps/s per (preset, algo) over the JSONs under ``out``."""
    runs = [json.loads(p.read_text()) for p in sorted(out.glob("*.json"))]
    rows = []
    for preset in dict.fromkeys(r["preset"] for r in runs):
        mine = [r for r in runs if r["preset"] == preset]
        peer = {r["seed"]: r["steps_per_second"] for r in mine if r["algo"] == "recurrent_ppo"}
        for algo in dict.fromkeys(r["algo"] for r in mine):
            group = sorted((r for r in mine if r["algo"] == algo), key=lambda r: r["seed"])
            ratios = [r["steps_per_second"] / peer[r["seed"]] for r in group if r["seed"] in peer]
            rows.append(
                {
                    "preset": preset,
                    "algo": algo,
                    "seeds": [r["seed"] for r in group],
                    "returns": [r["eval_return"] for r in group],
                    "mean_return": float(np.mean([r["eval_return"] for r in group])),
                    "steps_per_second": float(np.mean([r["steps_per_second"] for r in group])),
                    "x_recurrent_ppo": float(np.mean(ratios)) if ratios else None,
                    "median_approx_kl": (
                        float(np.median([r["median_approx_kl"] for r in group]))
                        if all("median_approx_kl" in r for r in group)
                        else None
                    ),
                }
            )
    print(
        "| preset | algo | seeds | return per seed | mean return | env-steps/s | x RecurrentPPO "
        "| KL per update |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        ratio = "-" if r["x_recurrent_ppo"] is None else f"{r['x_recurrent_ppo']:.1f}"
        kl = "-" if r["median_approx_kl"] is None else f"{r['median_approx_kl']:.4f}"
        returns = ", ".join(f"{x:.1f}" for x in r["returns"])
        seeds = ",".join(str(s) for s in r["seeds"])
        print(
            f"| {r['preset']} | {r['algo']} | {seeds} | {returns} | {r['mean_return']:.1f} | "
            f"{r['steps_per_second']:.0f} | {ratio} | {kl} |"
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 seed, 512 steps, 2 episodes")
    parser.add_argument("--presets", nargs="+", default=list(PRESETS)[:2], choices=list(PRESETS))
    parser.add_argument("--algos", nargs="+", default=ALGOS, choices=ALGOS)
    parser.add_argument(
        "--variants",
        nargs="+",
        default=["default"],
        choices=[*VARIANTS, *ALGO_VARIANTS],
        help="MemoryPPO variants (see VARIANTS and ALGO_VARIANTS)",
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=None, help="env steps (default: the preset's)")
    parser.add_argument("--eval-episodes", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--out", type=Path, default=OUT_DIR)
    parser.add_argument(
        "--progress",
        action="store_true",
        help="keep each run's per-update SB3 log (progress.csv) under --out and add the "
        "median KL per update to the table",
    )
    parser.add_argument("--table", action="store_true", help="only print the table of --out")
    args = parser.parse_args()
    if args.table:
        table(args.out)
        return
    if args.quick:
        args.seeds, args.steps, args.eval_episodes = args.seeds[:1], 512, 2
        if args.out == OUT_DIR:
            args.out = OUT_DIR / "quick"
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    for preset in args.presets:
        steps = args.steps or PRESETS[preset]["steps"]
        for seed in args.seeds:
            for algo in args.algos:
                variants = ["-"] if algo == "recurrent_ppo" else args.variants
                for variant in variants:
                    tag = run_name(algo, variant).replace("/", "-")
                    progress = args.out / f"{preset}_{tag}_s{seed}" if args.progress else None
                    result = run_one(
                        preset, algo, variant, seed, steps, args.eval_episodes, progress
                    )
                    result["torch_threads"] = torch.get_num_threads()
                    result["quick"] = args.quick
                    write_results(args.out / f"{preset}_{tag}_s{seed}.json", result)
                    print(
                        f"{preset} {result['algo']} seed {seed}: return {result['eval_return']:.1f} "
                        f"({result['steps_per_second']:.0f} env-steps/s)",
                        flush=True,
                    )
    table(args.out)


if __name__ == "__main__":
    main()
