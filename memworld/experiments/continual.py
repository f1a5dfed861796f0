"""Experiment 2: continual learning under distribution shift, and forgetting curves.

Each module is trained on task 0 of a :class:`memworld.envs.DistributionShift` (an
answer mapping of a recall task), then on task 1, and so on, continuing the
same model. After every stage it is evaluated on every task; the return on
earlier tasks while later ones are learned are the forgetting curves.
Forgetting of task j = best return on j - final return on j.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from memworld.experiments.common import experiment_folder, pyplot, savefig
from memworld.runs import write_results
from memworld.train import TrainConfig, build_model, make_env

SHIFT_ID = "memworld/DistributionShift-v0"


@dataclasses.dataclass(frozen=True)
class ContinualConfig:
    """Args:
    task: the recall task whose answer mapping shifts.
    modules: memory modules trained with MemoryPPO.
    num_tasks: mappings learned one after the other.
    steps_per_task: env steps on each mapping.
    seeds: seeds per module.
    n_envs: envs per run.
    episodes: evaluation episodes per (stage, task).
    hyperparams: MemoryPPO keyword arguments (e.g. ``n_steps``).
    """

    task: str = "memworld/RepeatFirstEasy-v0"
    modules: tuple[str, ...] = ("slot", "dual", "lstm", "window_attention")
    num_tasks: int = 3
    steps_per_task: int = 20_000
    seeds: tuple[int, ...] = (0,)
    n_envs: int = 8
    episodes: int = 16
    hyperparams: dict = dataclasses.field(default_factory=dict)


def _env_kwargs(config: ContinualConfig, task_id: int) -> dict:
    return dict(task=config.task, shift_every=None, num_tasks=config.num_tasks, task_id=task_id)


def _evaluate(model, config: ContinualConfig, task_id: int, seed: int) -> float:
    from stable_baselines3.common.evaluation import evaluate_policy

    env = make_env(
        TrainConfig(
            env=SHIFT_ID,
            memory="lstm",
            n_envs=min(config.episodes, 8),
            seed=seed + 10_000,
            env_kwargs=_env_kwargs(config, task_id),
        )
    )
    mean, _ = evaluate_policy(model, env, n_eval_episodes=config.episodes, deterministic=True)
    env.close()
    return float(mean)


def run(config: ContinualConfig, root: str | Path = "runs/experiments") -> Path:
    """Train every module through the task sequence; write results.json and forgetting.png."""
    with experiment_folder("continual", root) as out:
        curves = {}
        for module in config.modules:
            for seed in config.seeds:
                returns = np.zeros((config.num_tasks, config.num_tasks))  # [stage, task]
                model = None
                for stage in range(config.num_tasks):
                    train_config = TrainConfig(
                        env=SHIFT_ID,
                        memory=module,
                        seed=seed,
                        n_envs=config.n_envs,
                        steps=config.steps_per_task,
                        env_kwargs=_env_kwargs(config, stage),
                        hyperparams=config.hyperparams,
                    )
                    env = make_env(train_config)
                    if model is None:
                        model = build_model(train_config, env)
                    else:
                        model.set_env(env)
                    model.learn(config.steps_per_task, reset_num_timesteps=False)
                    env.close()
                    for task_id in range(config.num_tasks):
                        returns[stage, task_id] = _evaluate(model, config, task_id, seed)
                curves.setdefault(module, []).append(returns)
        table = {}
        for module, runs in curves.items():
            mean = np.mean(runs, axis=0)
            forgetting = [float(mean[:, j].max() - mean[-1, j]) for j in range(config.num_tasks)]
            table[module] = {
                "returns_stage_by_task": mean.tolist(),
                "forgetting": forgetting,
                "mean_forgetting": float(np.mean(forgetting[:-1])) if config.num_tasks > 1 else 0.0,
            }
        write_results(out / "results.json", {"config": config, "table": table})
        plot(table, config, out / "forgetting.png")
        return out


def plot(table: dict, config: ContinualConfig, path: Path) -> Path:
    plt = pyplot()
    fig, axes = plt.subplots(1, len(table), figsize=(4 * len(table), 3.2), squeeze=False)
    for ax, (module, row) in zip(axes[0], table.items()):
        returns = np.asarray(row["returns_stage_by_task"])
        for task_id in range(config.num_tasks):
            ax.plot(
                range(1, config.num_tasks + 1),
                returns[:, task_id],
                marker="o",
                label=f"task {task_id}",
            )
        ax.set_title(f"{module}: forgetting {row['mean_forgetting']:+.2f}", fontsize=9)
        ax.set_xlabel("trained through task")
        ax.set_ylabel("return")
        ax.set_ylim(-1.05, 1.05)
        ax.legend(fontsize=7)
    return savefig(fig, path)
