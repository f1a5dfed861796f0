"""Experiment 1: accuracy against recall distance, for every memory module and baselines.

With ``task="Recall"`` each module is trained by supervised learning to name a
cue shown ``distance`` steps before the query, across random distractors
(memworld/experiments/recall.py): what the module can carry, with no
exploration in the way.  With ``RepeatPrevious`` (distance = ``delay``) or
``MemoryLength`` (distance = ``memory_length``) each module is trained with
MemoryPPO (the memoryless baseline with PPO's MLP); both tasks give
+-1/answers per answer, so accuracy = (return + 1) / 2.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

from memworld import memory
from memworld.experiments.common import experiment_dir, experiment_folder, pyplot, savefig
from memworld.experiments.recall import train_recall
from memworld.runs import write_results
from memworld.train import TrainConfig, evaluate, train

# Recall: the longest distance of modules whose chunks cost seconds a step at length 64
# on a 2-core machine (``max_distance``'s default; pass {} to lift it).
SLOW_MODULE_CAPS = {"slot": 4, "dual": 16, "bit": 16}
DISTANCE_PARAM = {"RepeatPrevious": "delay", "MemoryLength": "memory_length", "Recall": "distance"}


@dataclasses.dataclass(frozen=True)
class DistanceConfig:
    """Args:
    task: ``Recall`` (supervised), ``RepeatPrevious`` or ``MemoryLength`` (RL).
    modules: memory modules; ``"mlp"`` is a model without memory; ``"all"`` stands
        for every registered module.
    distances: recall distances to train at.
    steps: env steps per run (RL tasks).
    updates: gradient updates per (module, seed) (``Recall``: one model per module is
        trained on all its distances, each batch at one of them, and evaluated at each).
    batch_size: sequences per update (``Recall``).
    max_distance: per module, the longest distance it is trained and evaluated at
        (``Recall``; for modules too slow at long chunks; the table leaves the rest out).
    train_max_distance: if given, models train only on the distances up to it and are
        evaluated at every distance (``Recall``): how far past its training range a
        learned memory still holds the cue, at a fraction of the training cost.
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
    updates: int = 200
    batch_size: int = 16
    max_distance: dict = dataclasses.field(default_factory=lambda: dict(SLOW_MODULE_CAPS))
    train_max_distance: int | None = None
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
    if "all" in config.modules:
        names = [m for m in config.modules if m != "all"]
        modules = tuple(dict.fromkeys([*memory.names(), *names]))
        config = dataclasses.replace(config, modules=modules)
    if config.task == "Recall":
        return _run_recall(config, root)
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


def _run_recall(config: DistanceConfig, root: str | Path) -> Path:
    """Supervised recall: per (module, seed) one model trained on the mixture of the
    distances up to the module's ``max_distance``, evaluated at each of them."""
    num_symbols = config.extra_env_kwargs.get("num_symbols", 4)
    with experiment_folder("distance", root) as out:
        rows = []
        for module in config.modules:
            cap = config.max_distance.get(module, max(config.distances))
            distances = tuple(d for d in config.distances if d <= cap)
            for seed in config.seeds:
                result = train_recall(
                    module,
                    distances,
                    seed,
                    config.updates,
                    config.batch_size,
                    num_symbols,
                    train_distances=tuple(
                        d for d in distances if d <= (config.train_max_distance or d)
                    ),
                )
                for distance, accuracy in result["accuracy"].items():
                    rows.append(
                        {"module": module, "distance": distance, "seed": seed, "accuracy": accuracy}
                    )
                    rows[-1].update({k: v for k, v in result.items() if k != "accuracy"})
                curve = " ".join(f"{d}:{a:.2f}" for d, a in result["accuracy"].items())
                print(
                    f"{module:>16s} seed {seed} ({result['train_seconds']:.0f} s + "
                    f"{result['eval_seconds']:.0f} s eval): {curve}",
                    flush=True,
                )
            _write_results(out, config, rows)  # after each module: a partial table survives
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
    same = ("task", "steps", "updates", "batch_size", "train_max_distance", "extra_env_kwargs")
    first = results[0]["config"]
    for folder, result in zip(folders, results):
        differ = [k for k in same if result["config"].get(k) != first.get(k)]
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
        updates=first.get("updates", DistanceConfig.updates),
        batch_size=first.get("batch_size", DistanceConfig.batch_size),
        train_max_distance=first.get("train_max_distance"),
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
    fig, ax = plt.subplots(figsize=(8, 4.5))
    colors = plt.get_cmap("tab20").colors
    markers, styles = "osD^vP*Xh<>", ["-", "--", "-.", ":"]
    # Curves often coincide (at 1.0 or at chance): markers and line styles tell them apart.
    for i, (module, by_distance) in enumerate(table.items()):
        distances = [int(d) for d in by_distance]
        ax.plot(
            distances,
            list(by_distance.values()),
            marker=markers[i % len(markers)],
            ls=styles[i % len(styles)],
            color=colors[(2 * i) % 20 + (2 * i) // 20 % 2],
            markersize=7 - 4 * i / max(1, len(table) - 1),
            label=module,
        )
    symbols = config.extra_env_kwargs.get("num_symbols", 4)
    chance = 0.5 if config.task == "MemoryLength" else 1.0 / symbols
    ax.axhline(chance, color="grey", ls=":", label="chance")
    ax.set_xscale("log", base=2)
    ax.set_xlabel(f"recall distance ({DISTANCE_PARAM[config.task]})")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1.02)
    trained = f", trained to {config.train_max_distance}" if config.train_max_distance else ""
    budget = (
        f"{config.updates:,} updates of {config.batch_size}{trained}"
        if config.task == "Recall"
        else f"{config.steps:,} steps"
    )
    ax.set_title(f"{config.task}: accuracy vs distance ({budget} per run)", fontsize=9)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    return savefig(fig, path)
