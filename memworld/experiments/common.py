"""Shared pieces of the experiments: folders, probing a trained memory, plotting."""

from __future__ import annotations

import contextlib
import datetime as _dt
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from stable_baselines3.common.callbacks import BaseCallback

from memworld.monitor import MemoryMonitor


@contextlib.contextmanager
def experiment_folder(name: str, root: str | Path = "runs/experiments") -> Iterator[Path]:
    """:func:`experiment_dir` for the body of an experiment; if the body fails before any
    file is written under the folder (a module name or a task parameter refused at the
    first run), the empty folder is removed again. A folder with results stays."""
    path = experiment_dir(name, root)
    try:
        yield path
    except BaseException:
        if not any(p.is_file() for p in path.rglob("*")):
            shutil.rmtree(path, ignore_errors=True)
        raise


def experiment_dir(name: str, root: str | Path = "runs/experiments") -> Path:
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    path = Path(root) / name / stamp
    n = 1
    while path.exists():
        n += 1
        path = Path(root) / name / f"{stamp}-{n}"
    path.mkdir(parents=True)
    return path


def rollout_states(model, env_id: str, env_kwargs: dict, num_envs: int, steps: int, seed: int):
    """Roll a MemoryPPO policy for ``steps`` steps.

    Returns the per-step states (after each step's observation) and the (T, B)
    episode-start flags of those steps.
    """
    import gymnasium as gym

    from memworld import envs  # noqa: F401

    vec = gym.make_vec(
        env_id,
        num_envs=num_envs,
        vectorization_mode="vector_entry_point",
        autoreset_mode="same_step",
        world_state=False,
        **env_kwargs,
    )
    obs, _ = vec.reset(seed=seed)
    state, starts, states, all_starts = None, np.ones(num_envs, dtype=bool), [], []
    for _ in range(steps):
        actions, state = model.predict(obs, state=state, episode_start=starts, deterministic=True)
        states.append(state)
        all_starts.append(starts)
        obs, _, terminated, truncated, _ = vec.step(actions)
        starts = terminated | truncated
    vec.close()
    return states, np.stack(all_starts)


def diagnostics_of(model, state: dict[str, np.ndarray]) -> dict[str, float]:
    torch_state = {k: torch.as_tensor(v, device=model.device) for k, v in state.items()}
    return model.policy.memory_diagnostics(torch_state)


class DiagnosticsProbe(BaseCallback):
    """After every rollout, roll the current policy briefly and record its memory diagnostics.

    Args:
        monitor: where the diagnostics go (x axis: env steps trained).
        env_id: task to probe on.
        env_kwargs: its parameters.
        steps: steps per probe.
    """

    def __init__(self, monitor: MemoryMonitor, env_id: str, env_kwargs: dict, steps: int = 32):
        super().__init__()
        self.monitor, self.env_id, self.env_kwargs, self.steps = monitor, env_id, env_kwargs, steps

    def _on_step(self) -> bool:
        return True

    def _on_rollout_end(self) -> None:
        states, _ = rollout_states(self.model, self.env_id, self.env_kwargs, 4, self.steps, 999)
        self.monitor.record(self.num_timesteps, diagnostics_of(self.model, states[-1]))


def savefig(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
