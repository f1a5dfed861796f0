"""DistributionShift: a continual-learning wrapper that changes a task's answer mapping."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.vector import VectorEnv


class DistributionShift(VectorEnv):
    """Cycle a task through ``num_tasks`` hidden answer mappings.

    In task ``j`` the action the agent must take is ``perm_j[a*]``, where ``a*``
    is the wrapped task's answer and ``perm_j`` a fixed permutation of the
    action labels (task 0 is the identity). Each env row counts its own
    finished episodes and moves to the next task every ``shift_every`` of them,
    so an agent must keep learning (and may forget). ``info["task_id"]`` (N,)
    says which mapping each row is in. The permutations come from
    ``np.random.default_rng(mapping_seed)``, so they are the same in every
    process; the wrapped task's own randomness comes from ``reset(seed=...)``.

    Args:
        num_envs: envs in the batch.
        task: memworld id of a task with a ``Discrete`` action space.
        shift_every: episodes per task in each row; ``None`` never shifts
            (a fixed task, e.g. to evaluate on an earlier one).
        num_tasks: number of mappings cycled through (>= 1).
        task_id: the task each row starts in.
        mapping_seed: seed of the permutations.
        autoreset_mode, render_mode, world_state: as for every memworld task.
        **task_kwargs: parameters of the wrapped task.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 4}

    def __init__(
        self,
        num_envs: int = 1,
        task: str = "memworld/RepeatFirstEasy-v0",
        shift_every: int | None = 10,
        num_tasks: int = 3,
        task_id: int = 0,
        mapping_seed: int = 0,
        autoreset_mode: Any = "next_step",
        render_mode: str | None = None,
        world_state: bool = True,
        **task_kwargs: Any,
    ) -> None:
        import envs  # noqa: F401  (registers the ids)

        if shift_every is not None and (not isinstance(shift_every, int) or shift_every < 1):
            raise ValueError(f"shift_every must be a positive integer or None, got {shift_every!r}")
        if not isinstance(num_tasks, int) or num_tasks < 1:
            raise ValueError(f"num_tasks must be a positive integer, got {num_tasks!r}")
        if not 0 <= task_id < num_tasks:
            raise ValueError(f"task_id must be in [0, {num_tasks - 1}], got {task_id!r}")
        self.inner = gym.make_vec(
            task,
            num_envs=num_envs,
            vectorization_mode="vector_entry_point",
            autoreset_mode=autoreset_mode,
            render_mode=render_mode,
            world_state=world_state,
            **task_kwargs,
        )
        if not isinstance(self.inner.single_action_space, spaces.Discrete):
            raise ValueError(
                f"DistributionShift permutes Discrete actions; {task} has "
                f"{self.inner.single_action_space}; choose a recall task"
            )
        self.num_envs = num_envs
        self.shift_every, self.num_tasks, self.start_task = shift_every, num_tasks, task_id
        self.single_observation_space = self.inner.single_observation_space
        self.single_action_space = self.inner.single_action_space
        self.observation_space = self.inner.observation_space
        self.action_space = self.inner.action_space
        self.render_mode = render_mode
        self.metadata = {**self.metadata, "autoreset_mode": self.inner.autoreset_mode}
        n = int(self.single_action_space.n)
        rng = np.random.default_rng(mapping_seed)
        self.perms = np.stack([np.arange(n)] + [rng.permutation(n) for _ in range(num_tasks - 1)])
        self.inverse = np.argsort(self.perms, axis=1)
        self.episodes = np.zeros(num_envs, dtype=np.int64)
        self.task_id = np.full(num_envs, task_id, dtype=np.int64)

    def reset(self, *, seed: int | list[int] | None = None, options: dict | None = None):
        obs, info = self.inner.reset(seed=seed, options=options)
        mask = None if options is None else options.get("reset_mask")
        if mask is None:  # a full reset starts the curriculum again
            self.episodes[:] = 0
            self.task_id[:] = self.start_task
        info["task_id"] = self.task_id.copy()
        return obs, info

    def step(self, actions):
        actions = np.asarray(actions)
        if actions.shape != (self.num_envs,) or actions.dtype.kind not in "iu":
            raise ValueError(
                f"actions must be an integer array of shape ({self.num_envs},), got "
                f"{actions.dtype} {actions.shape}"
            )
        n = self.single_action_space.n
        if actions.min() < 0 or actions.max() >= n:
            raise ValueError(f"actions must be in [0, {n - 1}], got {actions.tolist()}")
        inner_actions = self.inverse[self.task_id, actions]
        obs, reward, terminated, truncated, info = self.inner.step(inner_actions)
        info["task_id"] = self.task_id.copy()  # the task these rewards were earned in
        done = terminated | truncated
        if self.shift_every is not None and done.any():
            self.episodes[done] += 1
            shifts = self.episodes // self.shift_every
            self.task_id[:] = (self.start_task + shifts) % self.num_tasks
        return obs, reward, terminated, truncated, info

    def oracle_actions(self) -> np.ndarray:
        return self.perms[self.task_id, self.inner.oracle_actions()]

    @property
    def chance_return(self) -> float:
        return self.inner.chance_return

    @property
    def max_return(self) -> float:
        return self.inner.max_return

    def render(self):
        return self.inner.render()

    def close(self, **kwargs: Any) -> None:
        self.inner.close()


def register() -> None:
    """Register ``memworld/DistributionShift-v0`` (vector entry point only)."""
    if "memworld/DistributionShift-v0" not in gym.registry:
        gym.register(
            id="memworld/DistributionShift-v0",
            vector_entry_point="envs.shift:DistributionShift",
        )
