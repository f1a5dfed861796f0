"""Experiment 1: accuracy against recall distance, for every memory module and baselines.

Each module is trained with MemoryPPO (the memoryless baseline with PPO's MLP)
on RepeatPrevious (distance = ``delay``) or MemoryLength (distance =
``memory_length``) at increasing distances. Both tasks give +-1/answers per
answer, so accuracy = (return + 1) / 2.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

from memworld.experiments.common import experiment_dir, experiment_folder, pyplot, savefig
from memworld.runs import write_results
from memworld.train import TrainConfig, evaluate, train

DISTANCE_PARAM = {"RepeatPrevious": "delay", "MemoryLength": "memory_length"}


@dataclasses.dataclass(frozen=True)
class DistanceConfig:
    """Args:
    task: ``RepeatPrevious`` or ``MemoryLength``.
    modules: memory modules trained with MemoryPPO; ``"mlp"`` is PPO without memory.
    distances: recall distances to train at.
    steps: env steps per run.
    seeds: seeds per (module, distance).
    n_envs: envs per run.
    episodes: evaluation episodes per run.
    extra_env_kwargs: further task parameters (e.g. ``episode_length``).
    hyperparams: algorithm keyword arguments (e.g. ``n_steps``).
    """

    task: str = "RepeatPrevious"
    modules: tuple[str, ...] = (
        "gru",
        "lstm",
        "slot",
        "dual",
        "framestack",
        "window_attention",
        "mlp",
    )
    distances: tuple[int, ...] = (2, 4, 8, 16, 32)
    steps: int = 30_000
    seeds: tuple[int, ...] = (0,)
    n_envs: int = 8
    episodes: int = 20
    extra_env_kwargs: dict = dataclasses.field(default_factory=dict)
    hyperparams: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.task not in DISTANCE_PARAM:
            raise ValueError(f"task must be one of {list(DISTANCE_PARAM)}, got {self.task!r}")


def run(config: DistanceConfig, root: str | Path = "runs/experiments") -> Path:
    """Train every (module, distance, seed); write results.json and accuracy_vs_distance.png."""
    with experiment_folder("distance", root) as out:
        rows = []
        for module in config.modules:
            for distance in config.distances:
                for seed in config.seeds:
                    env_kwargs = {DISTANCE_PARAM[config.task]: distance, **config.extra_env_kwargs}
                    if config.task == "RepeatPrevious":
                        env_kwargs.setdefault("episode_length", max(52, 2 * distance + 8))
                    train_config = TrainConfig(
                        env=f"memworld/{config.task}-v0",
                        algo="ppo" if module == "mlp" else "memoryppo",
                        memory=None if module == "mlp" else module,
                        steps=config.steps,
                        n_envs=config.n_envs,
                        seed=seed,
                        env_kwargs=env_kwargs,
                    )
                    run_path = train(train_config, root=out / "runs", progress=False)
                    result = evaluate(run_path, episodes=config.episodes)
                    rows.append(
                        {
                            "module": module,
                            "distance": distance,
                            "seed": seed,
                            "return": result["mean_return"],
                            "accuracy": (result["mean_return"] + 1) / 2,
                            "run": str(run_path),
                        }
                    )
        return _write_results(out, config, rows)


def merge(folders: list[str | Path], root: str | Path = "runs/experiments") -> Path:
    """One table and plot from several distance runs (e.g. one module per run).

    Rows are pooled over ``folders`` (each holding a results.json of
    :func:`run`), so a (module, distance) present in several runs averages all
    of their seeds.  The runs must share task, steps and env parameters.
    """
    results = [json.loads((Path(f) / "results.json").read_text()) for f in folders]
    if not results:
        raise ValueError("folders is empty; pass the distance experiment folders to merge")
    same = ("task", "steps", "extra_env_kwargs")
    first = results[0]["config"]
    for folder, result in zip(folders, results):
        differ = [k for k in same if result["config"][k] != first[k]]
        if differ:
            raise ValueError(
                f"{folder} differs from {folders[0]} in {differ}; merge runs of one setting only"
            )
    rows = [row for result in results for row in result["runs"]]
    config = DistanceConfig(
        task=first["task"],
        modules=tuple(dict.fromkeys(r["module"] for r in rows)),
        distances=tuple(sorted({r["distance"] for r in rows})),
        steps=first["steps"],
        seeds=tuple(sorted({r["seed"] for r in rows})),
        extra_env_kwargs=first["extra_env_kwargs"],
    )
    out = experiment_dir("distance", root)
    return _write_results(out, config, rows, merged_from=[str(f) for f in folders])


def _write_results(out: Path, config: DistanceConfig, rows: list[dict], **extra) -> Path:
    """results.json (config, rows, table and ``extra``) and the plot under ``out``."""
    table = summarise(rows)
    write_results(out / "results.json", {"config": config, "runs": rows, "table": table, **extra})
    plot(table, config, out / "accuracy_vs_distance.png")
    return out


def summarise(rows: list[dict]) -> dict[str, dict[str, float]]:
    """Mean accuracy over seeds: ``table[module][distance]``."""
    table: dict[str, dict[str, float]] = {}
    for module in dict.fromkeys(r["module"] for r in rows):
        mine = [r for r in rows if r["module"] == module]
        table[module] = {
            str(d): float(np.mean([r["accuracy"] for r in mine if r["distance"] == d]))
            for d in sorted({r["distance"] for r in mine})
        }
    return table


def plot(table: dict, config: DistanceConfig, path: Path) -> Path:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for module, by_distance in table.items():
        distances = [int(d) for d in by_distance]
        ax.plot(distances, list(by_distance.values()), marker="o", label=module)
    symbols = config.extra_env_kwargs.get("num_symbols", 4)
    chance = 0.5 if config.task == "MemoryLength" else 1.0 / symbols
    ax.axhline(chance, color="grey", ls=":", label="chance")
    ax.set_xscale("log", base=2)
    ax.set_xlabel(f"recall distance ({DISTANCE_PARAM[config.task]})")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1.02)
    ax.set_title(f"{config.task}: accuracy vs distance ({config.steps:,} steps per run)")
    ax.legend(fontsize=8)
    return savefig(fig, path)
