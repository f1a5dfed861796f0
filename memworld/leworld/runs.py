"""A LeWorld run folder: its config, its rebuilt system and data, and its evaluation.

``memworld leworld train`` writes the folder (:mod:`memworld.leworld.cli`);
``memworld leworld eval``, ``bench/leworld_phase3.py`` and the world-model experiment
read it, or draw the same held-out episodes, through this module.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported lazily at run time: `memworld --help` does not load torch
    from memworld.world_models.leworld.config import TrainingConfig
    from memworld.world_models.leworld.data import Batch

LEWORLD_TRAIN = "memworld leworld train"  # the command that writes these run folders
# Held-out batches of num_envs episodes (128 episodes at the default 16): with 32, a
# KeyDoorEasy seed's last per-step points averaged 2-5 episodes each.
EVAL_BATCHES = 8
# The held-out episodes come from the stream of seed + HELD_OUT_SEED, apart from training's.
HELD_OUT_SEED = 10_000


def build(config: dict):
    """A run's ``TrainingConfig``, its ``RolloutSource`` (which refuses a task without a
    world state) and a factory of fresh systems, from its config.json contents."""
    from memworld.world_models.leworld import LeWorldSystem
    from memworld.world_models.leworld.config import from_dict, training_from_dict
    from memworld.world_models.leworld.data import RolloutSource

    training = training_from_dict(config["training"])
    source = RolloutSource(
        training.env_id, training.num_envs, training.seq_len, training.seed, training.oracle_prob
    )
    system_config = from_dict(config["system"])

    def factory():
        return LeWorldSystem(system_config, source.obs_dim, source.state_dim)

    return training, source, factory


def held_out_batches(training: TrainingConfig, batches: int = EVAL_BATCHES) -> list[Batch]:
    """The evaluation episodes of a run with ``TrainingConfig`` ``training``: ``batches``
    batches of ``num_envs`` episodes from a stream seeded apart from the training batches'
    (more batches extend the default ones: their first ``EVAL_BATCHES`` are the same)."""
    from memworld.world_models.leworld.data import RolloutSource

    held_out = RolloutSource(
        training.env_id,
        training.num_envs,
        training.seq_len,
        training.seed + HELD_OUT_SEED,
        training.oracle_prob,
    )
    return [held_out.batch() for _ in range(batches)]


def eval_batches(episodes: int | None, num_envs: int) -> int:
    """Held-out batches for ``episodes`` episodes of a run with ``num_envs`` envs
    (``EVAL_BATCHES`` for ``None``); a clear error unless a positive multiple of ``num_envs``."""
    if episodes is None:
        return EVAL_BATCHES
    if episodes <= 0 or episodes % num_envs:
        lower = max(episodes // num_envs, 1) * num_envs
        raise SystemExit(
            f"--episodes must be a positive multiple of the run's num_envs ({num_envs}), "
            f"got {episodes}; use {lower} or {lower + num_envs}"
        )
    return episodes // num_envs


def evaluate_run(
    path: Path, show: bool = True, config: dict | None = None, episodes: int | None = None
) -> dict:
    """Evaluate one run folder against its baselines; writes eval.json and the plots.

    ``config``: the run's config.json as :func:`memworld.runs.read_run_config` returns it,
    where the caller has read it already. ``episodes``: held-out episodes (default
    ``EVAL_BATCHES * num_envs``, 128); more narrow the standard errors.
    """
    import torch

    from memworld.runs import read_run_config, write_json
    from memworld.world_models.leworld.baselines import GRUWorldModel
    from memworld.world_models.leworld.evaluation import evaluate, plot, table
    from memworld.world_models.leworld.training import latest_checkpoint

    if config is None:
        config = read_run_config(path, "training", LEWORLD_TRAIN)
    training, source, factory = build(config)
    batches = eval_batches(episodes, training.num_envs)
    system = factory()
    checkpoint = latest_checkpoint(path)
    if checkpoint is None:
        raise SystemExit(
            f"{path} has no checkpoints/; train it first with `memworld leworld train`"
        )
    system.load_state_dict(torch.load(checkpoint, map_location="cpu", weights_only=False)["system"])
    baselines = None
    if (path / "baselines.pt").exists():
        saved = torch.load(path / "baselines.pt", map_location="cpu", weights_only=False)
        no_memory = factory()
        no_memory.load_state_dict(saved["no_memory"])
        hidden = saved["gru"]["gru.weight_hh_l0"].shape[1]
        gru = GRUWorldModel(source.obs_dim, source.state_dim, hidden)
        gru.load_state_dict(saved["gru"])
        baselines = {"no_memory": no_memory, "gru": gru}
    episodes = batches * training.num_envs
    print(f"[eval     ] {path}: {episodes} held-out episodes", file=sys.stderr, flush=True)
    result = evaluate(system, held_out_batches(training, batches), baselines, training.seed)
    results = {training.seed: result}
    write_json(
        path / "eval.json",
        {
            "env": training.env_id,
            "checkpoint": checkpoint.name,
            "episodes": episodes,
            "seeds": results,
        },
    )
    plot(results, path)
    if show:
        print(table(results))
    return results
