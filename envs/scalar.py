"""The single-env view of a task: its batched core with ``num_envs=1``.

An open-loop task's scalar env lays each episode out over time when it starts
(:class:`memworld.envs.timeline.Timeline`) and steps it in plain Python; every other
task's steps its one-row core.  Either way it returns the core's numbers.
"""

from __future__ import annotations

from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from memworld.envs.core import ResetNeeded, VecTask
from memworld.envs.rng import check_seed
from memworld.envs.timeline import Timeline


class TaskEnv(gym.Env):
    """The single-env view of a :class:`VecTask` (its core with ``num_envs=1``).

    Subclasses set ``vector_cls``; construct with the task's parameters.

    Args:
        render_mode: ``None`` or ``"rgb_array"``.
        world_state: put the hidden state in ``info["world_state"]`` (default True).
        **params: the task's parameters.
    """

    vector_cls: ClassVar[type[VecTask]]
    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["rgb_array"], "render_fps": 4}

    def __init__(
        self, render_mode: str | None = None, world_state: bool = True, **params: Any
    ) -> None:
        self._core = self.vector_cls(
            num_envs=1,
            render_mode=render_mode,
            autoreset_mode="disabled",
            world_state=world_state,
            **params,
        )
        self.params = self._core.params
        self.render_mode = render_mode
        self.observation_space = self._core.single_observation_space
        self.action_space = self._core.single_action_space
        self._action_shape = (1, *self.action_space.shape)
        space = self.action_space
        self._discrete_n = (
            int(space.n) if isinstance(space, spaces.Discrete) and space.start == 0 else None
        )
        # open-loop tasks: each episode laid out over time at reset, then stepped in Python
        self._timeline = Timeline(self._core) if Timeline.fits(self._core) else None
        self._t, self._done, self._last_action, self._last_reward = 0, True, 0, 0.0

    @property
    def core(self) -> VecTask:
        """The one-row vector env underneath, brought up to date with this env."""
        if self._timeline is not None and self._core._has_reset:
            core = self._core
            core.t[0] = core.elapsed[0] = self._t
            core.last_actions[0], core.last_rewards[0] = self._last_action, self._last_reward
            core._done[0] = self._done
        return self._core

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        if seed is not None and not isinstance(seed, int | np.integer):
            raise ValueError(f"seed must be an int or None, got {seed!r}")
        check_seed(seed)
        super().reset(seed=None if seed is None else int(seed))
        line = self._timeline
        if line is None:
            obs, info = self._core.reset(seed=seed)
            return obs[0], _row(info)
        self._core._start(seed, self._core._all_rows)
        line.load(self._core)
        self._t, self._done, self._last_action, self._last_reward = 0, False, 0, 0.0
        return line.obs[0], line.info(0)

    def step(self, action: Any):
        line = self._timeline
        if line is None:
            return self._step_core(action)
        if self._done:
            self._core._require_reset()
            raise ResetNeeded("the episode has ended; call reset() before step()")
        if not (type(action) is int and 0 <= action < self._discrete_n):
            shaped = np.asarray(action).reshape(self._action_shape)
            action = int(self._core._check_actions(shaped)[0])
        t = self._t
        reward = line.rewards[t][action]
        terminated = line.terminated[t]
        self._t = t = t + 1
        limit = self.params.max_episode_steps
        truncated = not terminated and limit is not None and t >= limit
        self._done = terminated or truncated
        self._last_action, self._last_reward = action, reward
        return line.obs[t], reward, terminated, truncated, line.info(t)

    def _step_core(self, action: Any):
        core = self._core
        core._require_reset()
        if core._done[0]:
            raise ResetNeeded("the episode has ended; call reset() before step()")
        if self._discrete_n is not None and type(action) is int and 0 <= action < self._discrete_n:
            actions = np.array((action,))  # the common case, checked without numpy
        else:
            action = np.asarray(action)
            if action.shape != self.action_space.shape:
                raise ValueError(
                    f"action must have shape {self.action_space.shape} ({self.action_space}), "
                    f"got {action.shape}; pass one action"
                )
            actions = core._check_actions(action.reshape(self._action_shape))
        obs, reward, terminated, truncated, info = core._advance(actions)
        return obs[0], float(reward[0]), bool(terminated[0]), bool(truncated[0]), _row(info)

    def oracle_action(self) -> Any:
        """The action a perfect-memory agent takes now."""
        action = self.core.oracle_actions()[0]
        return int(action) if isinstance(self.action_space, spaces.Discrete) else action

    def render(self) -> np.ndarray | None:
        if self.render_mode is None:
            gym.logger.warn("render() called with render_mode=None; pass render_mode='rgb_array'")
            return None
        return self.core._render_env(0)

    @property
    def chance_return(self) -> float:
        return self.core.chance_return

    @property
    def max_return(self) -> float:
        return self.core.max_return


def _row(info: dict[str, Any]) -> dict[str, Any]:
    return {k: v[0] if isinstance(v, np.ndarray) else v for k, v in info.items()}


def scalar_view(vector_cls: type[VecTask], name: str) -> type[TaskEnv]:
    """Make the single-env class of a task, with the vector class's docstring."""
    return type(
        name,
        (TaskEnv,),
        {
            "vector_cls": vector_cls,
            "__doc__": vector_cls.__doc__,
            "__module__": vector_cls.__module__,
        },
    )
