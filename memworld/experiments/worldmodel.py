"""Experiment 4: every memory module as a world model, error over the episode and against
recall distance.

Each module reads the observations of a world-state task through
:class:`memworld.world_models.memory_world_model.MemoryWorldModel` and predicts the next
world state. All modules of a seed train on the same batches (one rollout stream
per seed) and are evaluated on the same held-out episodes (a stream seeded apart),
as LeWorld and its baselines are. ``none`` is the head without memory.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np
import torch

from memworld.experiments.common import experiment_folder, pyplot, savefig
from memworld.leworld.runs import EVAL_BATCHES, HELD_OUT_SEED  # `leworld eval`'s episodes
from memworld.memory.base import check_range
from memworld.runs import write_results


@dataclasses.dataclass(frozen=True)
class WorldModelConfig:
    """Args:
    env: a task with ``info["world_state"]`` (id or short name).
    modules: memory modules (``memworld list memory``); ``"none"`` is no memory.
    steps: Adam updates per module and seed (one batch each).
    seeds: seeds (each its own batch stream and initial weights).
    num_envs: episodes per batch.
    seq_len: steps per episode.
    lr: Adam step size.
    eval_batches: held-out batches of ``num_envs`` episodes.
    """

    env: str = "OccludedDynamicsMedium"
    modules: tuple[str, ...] = ("none", "gru", "lstm", "window_attention", "slot", "dual", "bit")
    steps: int = 300
    seeds: tuple[int, ...] = (0,)
    num_envs: int = 16
    seq_len: int = 64
    lr: float = 1e-3
    eval_batches: int = EVAL_BATCHES

    def __post_init__(self) -> None:
        from memworld import memory

        known = ("none", *memory.names())
        unknown = [m for m in self.modules if m not in known]
        if unknown or not self.modules:
            raise ValueError(f"modules must be some of {list(known)}, got {list(self.modules)}")
        for name in ("steps", "num_envs", "seq_len", "eval_batches"):
            check_range(name, getattr(self, name), 1, integer=True)
        check_range("lr", self.lr, 0, open_low=True)
        if not self.seeds:
            raise ValueError("seeds is empty; give at least one, e.g. (0,)")
        for seed in self.seeds:
            check_range("seeds", seed, 0, 2**31 - 1 - HELD_OUT_SEED, integer=True)


def run(config: WorldModelConfig, root: str | Path = "runs/experiments") -> Path:
    """Train and evaluate every (module, seed); write results.json and two plots."""
    from memworld.world_models.leworld.data import RolloutSource
    from memworld.world_models.memory_world_model import (
        MemoryWorldModel,
        evaluate_world_model,
        train_world_model,
    )

    def source(seed: int) -> RolloutSource:
        return RolloutSource(config.env, config.num_envs, config.seq_len, seed)

    held_out = {seed: source(seed + HELD_OUT_SEED) for seed in config.seeds}  # checks env
    with experiment_folder("worldmodel", root) as out:
        rows = []
        for seed in config.seeds:
            batches = [held_out[seed].batch() for _ in range(config.eval_batches)]
            for module in config.modules:
                train = source(seed)  # the same batches for every module of this seed
                torch.manual_seed(seed)
                model = MemoryWorldModel(train.obs_dim, train.state_dim, module)
                start = time.perf_counter()
                history = train_world_model(model, train, config.steps, lr=config.lr)
                seconds = time.perf_counter() - start
                result = evaluate_world_model(model, batches)
                params = sum(p.numel() for p in model.parameters())
                rows.append(
                    {"module": module, "seed": seed, "params": params, "train_seconds": seconds}
                    | result
                    | {"train_mse_last10": float(np.mean(history[-10:]))}
                )
                print(
                    f"{module:17s} seed {seed}  held-out MSE {result['mse']:.4f}  "
                    f"({params:,} params, {seconds:.0f} s)",
                    flush=True,
                )
        table = summarise(rows)
        write_results(
            out / "results.json",
            {"config": config, "env": train.env_id, "runs": rows, "table": table},
        )
        plot(table, rows, train.env_id, out)
        print(format_table(table, rows[0]["distance_bins"]))
        return out


def summarise(rows: list[dict]) -> dict[str, dict]:
    """Per module, means over seeds: MSE, MSE per recall-distance bin, params."""
    table = {}
    for module in dict.fromkeys(r["module"] for r in rows):
        mine = [r for r in rows if r["module"] == module]
        by_distance = []
        for i in range(len(mine[0]["by_distance"])):
            values = [r["by_distance"][i] for r in mine if r["by_distance"][i] is not None]
            by_distance.append(float(np.mean(values)) if values else None)
        table[module] = {
            "mse": float(np.mean([r["mse"] for r in mine])),
            "by_distance": by_distance,
            "params": mine[0]["params"],
            "seeds": len(mine),
        }
    return table


def format_table(table: dict[str, dict], bins: list[str]) -> str:
    """A Markdown table: module, params, MSE, MSE per non-empty recall-distance bin."""
    keep = [
        i for i in range(len(bins)) if any(r["by_distance"][i] is not None for r in table.values())
    ]
    head = ["module", "params", "MSE"] + [f"d {bins[i]}" for i in keep]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for module, row in table.items():
        cells = [module, f"{row['params']:,}", f"{row['mse']:.4f}"]
        cells += [
            "-" if row["by_distance"][i] is None else f"{row['by_distance'][i]:.4f}" for i in keep
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(table: dict[str, dict], rows: list[dict], env_id: str, out: Path) -> None:
    """per_step_mse.png (mean over seeds) and mse_vs_distance.png."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    for module in table:
        curves = np.array(
            [
                [np.nan if v is None else v for v in r["per_step"]]
                for r in rows
                if r["module"] == module
            ]
        )
        ax.plot(np.nanmean(curves, axis=0), label=module)
    ax.set(xlabel="step of the episode", ylabel="held-out next-state MSE", title=env_id)
    ax.legend(fontsize=8)
    savefig(fig, out / "per_step_mse.png")
    bins = rows[0]["distance_bins"]
    fig, ax = plt.subplots(figsize=(7, 4))
    for module, row in table.items():
        points = [(i, v) for i, v in enumerate(row["by_distance"]) if v is not None]
        ax.plot([i for i, _ in points], [v for _, v in points], marker="o", label=module)
    ax.set_xticks(range(len(bins)), bins)
    ax.set(
        xlabel="recall distance (steps since the needed observation)", ylabel="MSE", title=env_id
    )
    ax.legend(fontsize=8)
    savefig(fig, out / "mse_vs_distance.png")
