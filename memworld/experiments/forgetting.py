"""Experiment 3: learned forgetting dynamics of a slot memory.

Trains a MemoryPPO agent with ``SlotMemory`` and records, over training, its
diagnostics (read entropy via read sparsity, write rate, slot ages, live
slots) with a :class:`MemoryMonitor`. The trained agent is then rolled out and
every write is tracked: a *write event* is a step where a slot's content moves
by more than ``write_threshold`` (relative norm); the written content *survives*
while the slot's cosine similarity to it stays above ``survival_cosine`` and its
norm above ``survival_norm`` times the written norm (decay forgets too).
Survival times are censored at episode ends and summarised by a Kaplan-Meier
estimate (fraction of written contents still present after t steps). Plots:
diagnostics over training, a memory heatmap (slot norm over time), slot
survival; results.json holds lifetimes, write frequency and read entropy.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from memworld.experiments.common import (
    DiagnosticsProbe,
    experiment_folder,
    pyplot,
    rollout_states,
    savefig,
)
from memworld.monitor import MemoryMonitor
from memworld.runs import write_results


@dataclasses.dataclass(frozen=True)
class ForgettingConfig:
    """Args:
    env: task to train on.
    env_kwargs: its parameters.
    memory: a slot-bank module (its state has ``memory`` (B, N, D)).
    memory_kwargs: its parameters.
    steps: env steps of training.
    hyperparams: MemoryPPO keyword arguments (e.g. ``n_steps``).
    n_envs: envs per rollout.
    seed: seed.
    probe_envs: envs rolled out after training for the survival analysis.
    probe_steps: steps of that rollout.
    write_threshold: relative content change that counts as a write.
    survival_cosine: a written content survives while cos(slot, content) exceeds this...
    survival_norm: ...and the slot norm exceeds this fraction of the written norm.
    """

    env: str = "memworld/RepeatPreviousMedium-v0"
    env_kwargs: dict = dataclasses.field(default_factory=dict)
    memory: str = "slot"
    memory_kwargs: dict = dataclasses.field(default_factory=lambda: {"num_slots": 32})
    steps: int = 30_000
    hyperparams: dict = dataclasses.field(default_factory=dict)
    n_envs: int = 8
    seed: int = 0
    probe_envs: int = 8
    probe_steps: int = 200
    write_threshold: float = 0.2
    survival_cosine: float = 0.5
    survival_norm: float = 0.5


def kaplan_meier(durations: np.ndarray, observed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Kaplan-Meier survival curve: (times, S(t)) with S stepping down at each observed end.

    Args:
        durations: how long each content lasted (or was followed, if censored).
        observed: True where the content was lost (overwritten / decayed), False if censored.
    """
    durations = np.asarray(durations, dtype=float)
    observed = np.asarray(observed, dtype=bool)
    times = np.unique(durations[observed])
    survival, s = [], 1.0
    for t in times:
        at_risk = np.sum(durations >= t)
        events = np.sum((durations == t) & observed)
        s *= 1.0 - events / at_risk
        survival.append(s)
    return np.concatenate([[0.0], times]), np.concatenate([[1.0], survival])


def write_events(
    memories: np.ndarray,
    starts: np.ndarray,
    write_threshold: float,
    survival_cosine: float,
    survival_norm: float = 0.0,
) -> tuple[np.ndarray, np.ndarray, int]:
    """Durations and loss flags of every write in ``memories`` (T, B, N, D).

    ``starts`` (T, B) marks steps that begin an episode (the content is censored there).
    Returns (durations, observed, number of writes).
    """
    steps, batch, slots, _ = memories.shape
    norms = np.linalg.norm(memories, axis=-1) + 1e-8  # (T, B, N)
    durations, observed = [], []
    for t in range(1, steps):
        change = np.linalg.norm(memories[t] - memories[t - 1], axis=-1) / norms[t]
        for b, n in zip(*np.nonzero((change > write_threshold) & ~starts[t][:, None])):
            content = memories[t, b, n] / norms[t, b, n]
            lost = None
            for u in range(t + 1, steps):
                if starts[u, b]:
                    break
                faded = norms[u, b, n] < survival_norm * norms[t, b, n]
                if faded or memories[u, b, n] @ content / norms[u, b, n] < survival_cosine:
                    lost = u
                    break
            end = lost if lost is not None else (u if t + 1 < steps else t)
            durations.append(end - t)
            observed.append(lost is not None)
    return np.asarray(durations), np.asarray(observed, dtype=bool), len(durations)


def run(config: ForgettingConfig, root: str | Path = "runs/experiments") -> Path:
    from memworld.tb import memworld_logger
    from memworld.train import TrainConfig, build_model, make_env

    with experiment_folder("forgetting", root) as out:
        train_config = TrainConfig(
            env=config.env,
            algo="memoryppo",
            memory=config.memory,
            steps=config.steps,
            n_envs=config.n_envs,
            seed=config.seed,
            memory_kwargs=config.memory_kwargs,
            env_kwargs=config.env_kwargs,
            hyperparams=config.hyperparams,
        )
        env = make_env(train_config)
        model = build_model(train_config, env)
        model.set_logger(memworld_logger(out))
        monitor = MemoryMonitor(config.memory)
        model.learn(config.steps, callback=DiagnosticsProbe(monitor, config.env, config.env_kwargs))
        env.close()
        model.save(out / "model.zip")
        monitor.to_json(out / "diagnostics.json")
        monitor.plot(
            out / "diagnostics_over_training.png", f"{config.memory}: diagnostics over training"
        )

        states, starts = rollout_states(
            model,
            config.env,
            config.env_kwargs,
            config.probe_envs,
            config.probe_steps,
            seed=config.seed + 1,
        )
        if "memory" not in states[0]:
            raise ValueError(f"memory {config.memory!r} has no slot bank ('memory' in its state)")
        memories = np.stack([s["memory"] for s in states])  # (T, B, N, D)
        durations, observed, writes = write_events(
            memories, starts, config.write_threshold, config.survival_cosine, config.survival_norm
        )
        times, survival = kaplan_meier(durations, observed) if writes else (np.zeros(1), np.ones(1))
        result = {
            "config": config,
            "writes": writes,
            "write_frequency_per_step_per_env": writes / (config.probe_steps * config.probe_envs),
            "mean_observed_lifetime": float(durations[observed].mean()) if observed.any() else None,
            "median_survival_steps": _median(times, survival),
            "survival": {"t": times.tolist(), "S": survival.tolist()},
            "diagnostics_summary": monitor.summary(),
        }
        write_results(out / "results.json", result)
        _plot_heatmap(memories[:, 0], out / "memory_heatmap.png")
        _plot_survival(times, survival, out / "slot_survival.png")
        return out


def _median(times: np.ndarray, survival: np.ndarray) -> float | None:
    below = np.nonzero(survival <= 0.5)[0]
    return float(times[below[0]]) if below.size else None


def _plot_heatmap(memory: np.ndarray, path: Path) -> Path:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.imshow(
        np.linalg.norm(memory, axis=-1).T, aspect="auto", cmap="viridis", interpolation="nearest"
    )
    ax.set_xlabel("step")
    ax.set_ylabel("slot")
    ax.set_title("slot content norm over an episode (env 0)")
    return savefig(fig, path)


def _plot_survival(times: np.ndarray, survival: np.ndarray, path: Path) -> Path:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.step(times, survival, where="post")
    ax.set_xlabel("steps since written")
    ax.set_ylabel("fraction of contents still present")
    ax.set_ylim(0, 1.02)
    ax.set_title("slot survival (Kaplan-Meier)")
    return savefig(fig, path)
