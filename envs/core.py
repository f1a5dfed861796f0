"""The batched core every task is written on (its scalar view is in :mod:`memworld.envs.scalar`).

A task subclasses :class:`VecTask` and fills in a handful of hooks that work on
*rows* (``idx`` is a sorted int array of env indices, so ``state[idx, col]``
indexes row by row):

- ``_spaces()`` -> (single observation space, single action space)
- ``_allocate()``: preallocate the per-env state arrays (leading ``num_envs``)
- ``_reset_envs(idx)``: start new episodes in rows ``idx``
- ``_step_envs(idx, actions)`` -> (rewards, terminated) for rows ``idx``
- ``_observe()`` -> observations of all rows, ``_world_state()`` -> (N, W) float32
- ``oracle_actions()`` -> the action a perfect-memory agent takes in every row
- ``_render_env(i)`` -> a uint8 (H, W, 3) frame of env ``i``

A task whose observations do not depend on the actions (the recall tasks) can
declare itself *open-loop*: ``_reset_envs`` draws the whole episode into the
arrays named by ``open_loop_fields``, ``_step_envs`` only advances ``self.t``,
and every episode lasts ``episode_steps``.  Its scalar view then lays an
episode out over time with the same hooks (:mod:`memworld.envs.timeline`) and steps it
in plain Python.

The core owns seeding, the time limit (truncation), action checks and the three
Gymnasium autoreset modes.  Only the rows that act are stepped and only the rows
that restart are reset, and every random number comes from that row's own
stream, so row ``i`` equals a scalar env seeded ``seed + i``.
"""

from __future__ import annotations

import os
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from memworld.envs.params import TaskParams
from memworld.envs.rng import BatchedRNG

_MODES = {
    "next_step": AutoresetMode.NEXT_STEP,
    "same_step": AutoresetMode.SAME_STEP,
    "disabled": AutoresetMode.DISABLED,
}


def parse_autoreset_mode(mode: AutoresetMode | str) -> AutoresetMode:
    if isinstance(mode, AutoresetMode):
        return mode
    key = str(mode).lower().replace("-", "_")
    key = {"nextstep": "next_step", "samestep": "same_step"}.get(key, key)
    if key not in _MODES:
        raise ValueError(
            f"autoreset_mode must be one of {list(_MODES)} or a gymnasium AutoresetMode, got {mode!r}"
        )
    return _MODES[key]


class ResetNeeded(gym.error.ResetNeeded, RuntimeError):
    """``step()`` before ``reset()`` (or after an episode ended without autoreset).

    Gymnasium's ``ResetNeeded``, and a ``RuntimeError`` as well for callers that catch that.
    """


def _space_bytes(space: spaces.Space) -> int:
    """Bytes of one sample of ``space`` (an estimate for spaces without a dtype)."""
    if space.shape is not None and space.dtype is not None:
        return max(1, int(np.prod(space.shape))) * np.dtype(space.dtype).itemsize
    return 8 * max(1, int(spaces.flatdim(space)))


def _memory_bytes() -> int:
    """Physical memory of this machine (2**40 where it cannot be read)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # pragma: no cover - not POSIX
        return 1 << 40


class VecTask(VectorEnv):
    """Base class of memworld's batched tasks (see the module docstring).

    Args:
        num_envs: number of envs in the batch (>= 1).
        render_mode: ``None`` or ``"rgb_array"``.
        autoreset_mode: ``"next_step"`` (Gymnasium's default), ``"same_step"``
            (SB3 style: the reset observation is returned on the final step and
            the final one is in ``infos["final_obs"]``) or ``"disabled"``.
        world_state: put the full hidden state in ``infos["world_state"]``
            (default). ``False`` skips computing it, for RL training at scale.
        **params: the task's parameters (its ``Params`` dataclass).
    """

    Params: ClassVar[type[TaskParams]] = TaskParams
    #: Open-loop tasks: the per-row arrays ``_reset_envs`` fills for the whole episode.
    open_loop_fields: ClassVar[tuple[str, ...]] = ()
    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["rgb_array"], "render_fps": 4}

    def __init__(
        self,
        num_envs: int = 1,
        render_mode: str | None = None,
        autoreset_mode: AutoresetMode | str = AutoresetMode.NEXT_STEP,
        world_state: bool = True,
        **params: Any,
    ) -> None:
        if isinstance(num_envs, bool) or not isinstance(num_envs, int | np.integer) or num_envs < 1:
            raise ValueError(f"num_envs must be a positive integer, got {num_envs!r}")
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
        self.params = self.Params.build(**params)
        self.num_envs = int(num_envs)
        self.render_mode = render_mode
        if not isinstance(world_state, bool | np.bool_):
            raise ValueError(
                f"world_state must be True or False, got {world_state!r}; "
                "True adds infos['world_state'], False leaves it out"
            )
        self.include_world_state = bool(world_state)
        self.autoreset_mode = parse_autoreset_mode(autoreset_mode)
        self.metadata = {**type(self).metadata, "autoreset_mode": self.autoreset_mode}
        self.single_observation_space, self.single_action_space = self._spaces()
        self._check_memory()
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self.rng = BatchedRNG(self.num_envs)
        self.elapsed = np.zeros(self.num_envs, dtype=np.int64)
        self.last_actions = np.zeros(
            (self.num_envs, *self.single_action_space.shape), self.single_action_space.dtype
        )
        self.last_rewards = np.zeros(self.num_envs, dtype=np.float32)
        self._done = np.zeros(self.num_envs, dtype=bool)
        self._all_rows = np.arange(self.num_envs)
        self._has_reset = False
        self._in_step = False  # every row at the same step (see _now)
        self._allocate()

    def _check_memory(self) -> None:
        """Refuse a ``num_envs`` whose arrays alone would not fit in this machine's memory."""
        obs, act = (
            _space_bytes(self.single_observation_space),
            _space_bytes(self.single_action_space),
        )
        per_env = 4 * obs + 3 * act + 256  # batched spaces' bounds, buffers, per-row state
        need, have = self.num_envs * per_env, _memory_bytes()
        if need > have:
            raise ValueError(
                f"num_envs={self.num_envs} needs at least {need / 2**30:.3g} GiB "
                f"({per_env} bytes per env) and this machine has {have / 2**30:.3g} GiB; "
                f"pass num_envs <= {have // per_env}"
            )

    # ----------------------------------------------------------------- hooks
    def _spaces(self) -> tuple[spaces.Space, spaces.Space]:
        raise NotImplementedError

    def _allocate(self) -> None:
        raise NotImplementedError

    def _reset_envs(self, idx: np.ndarray) -> None:
        raise NotImplementedError

    def _step_envs(self, idx: np.ndarray, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def _observe(self) -> np.ndarray:
        raise NotImplementedError

    def _world_state(self) -> np.ndarray:
        raise NotImplementedError

    def oracle_actions(self) -> np.ndarray:
        """The action of a perfect-memory agent in every env, shape (num_envs, ...)."""
        raise NotImplementedError

    def _render_env(self, i: int) -> np.ndarray:
        raise NotImplementedError

    def _now(self, field: np.ndarray, idx: np.ndarray | None = None, offset: int = 0) -> np.ndarray:
        """``field[i, t_i + offset]`` for rows ``idx`` (every row when ``None``) of an
        open-loop task: a column slice while every row is at the same step (rows that
        started together and have all stepped since, the usual case)."""
        t = self.t
        if idx is None or idx is self._all_rows:
            if self._in_step:
                return field[:, t[0] + offset]
            return field[self._all_rows, t + offset]
        return field[idx, t[idx] + offset]

    @property
    def chance_return(self) -> float:
        """Expected episode return of a memoryless (uniform random) policy."""
        raise NotImplementedError

    @property
    def max_return(self) -> float:
        """Episode return of the oracle."""
        return 1.0

    @property
    def episode_steps(self) -> int | None:
        """Actions in every episode when that is fixed (open-loop tasks), else ``None``."""
        return None

    # ------------------------------------------------------------------- API
    def reset(
        self, *, seed: int | list[int] | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Reset every env (or the rows of ``options["reset_mask"]``)."""
        mask = None if options is None else options.get("reset_mask")
        if mask is None:
            idx = self._all_rows
        else:
            mask = np.asarray(mask)
            if mask.shape != (self.num_envs,) or mask.dtype != bool:
                raise ValueError(
                    f"options['reset_mask'] must be a bool array of shape ({self.num_envs},), "
                    f"got {mask.dtype} {mask.shape}"
                )
            idx = np.flatnonzero(mask)
        self._start(seed, idx)
        return self._observe(), self._infos()

    def _start(self, seed: int | list[int] | None, idx: np.ndarray) -> None:
        """``reset`` without observing: seed (if asked, or on the first reset), restart ``idx``."""
        if seed is not None or not self._has_reset:
            self.rng.seed(seed)
        self._restart(idx)
        self._has_reset = True

    def step(self, actions: Any):
        """Step every env; see ``autoreset_mode`` for what happens after an episode ends."""
        self._require_reset()
        actions = self._check_actions(actions)
        mode = self.autoreset_mode
        if mode is AutoresetMode.DISABLED and self._done.any():
            bad = np.flatnonzero(self._done).tolist()
            raise ResetNeeded(
                f"envs {bad} have finished their episode; call reset() (or reset with "
                "options={'reset_mask': mask}) before stepping them again"
            )
        return self._advance(actions)

    def _advance(self, actions: np.ndarray):
        """``step`` after its checks: ``actions`` are valid and no disabled-mode row is done."""
        mode = self.autoreset_mode
        pending = self._done if mode is AutoresetMode.NEXT_STEP and self._done.any() else None
        if pending is None:  # fast path: every env acts
            r, terminated = self._step_envs(self._all_rows, actions)
            self.last_rewards[:] = r
            rewards = self.last_rewards.copy()
            terminated = np.asarray(terminated, dtype=bool)
            self.elapsed += 1
            self.last_actions[:] = actions
        else:  # rows that finished last step are reset instead of stepped
            idx = np.flatnonzero(~pending)
            rewards = np.zeros(self.num_envs, dtype=np.float32)
            terminated = np.zeros(self.num_envs, dtype=bool)
            r, term = self._step_envs(idx, actions[idx])
            rewards[idx] = r
            terminated[idx] = term
            self.elapsed[idx] += 1
            self.last_actions[idx] = actions[idx]
            self.last_rewards[idx] = r
        limit = self.params.max_episode_steps
        truncated = (self.elapsed >= limit) & ~terminated if limit else np.zeros_like(terminated)
        if pending is not None:
            restart = np.flatnonzero(pending)
            self._restart(restart)
            truncated[restart] = False
        self._done = terminated | truncated
        infos: dict[str, Any]
        if mode is AutoresetMode.SAME_STEP and self._done.any():
            final_obs, final_info = self._observe(), self._infos()
            ended = self._done.copy()
            self._restart(np.flatnonzero(ended))
            obs, infos = self._observe(), self._infos()
            infos["final_obs"], infos["_final_obs"] = final_obs, ended
            infos["final_info"], infos["_final_info"] = final_info, ended.copy()
        else:
            obs, infos = self._observe(), self._infos()
        return obs, rewards, terminated, truncated, infos

    def render(self) -> tuple[np.ndarray, ...] | None:
        """One uint8 (H, W, 3) frame per env when ``render_mode="rgb_array"``."""
        if self.render_mode is None:
            gym.logger.warn("render() called with render_mode=None; pass render_mode='rgb_array'")
            return None
        return tuple(self._render_env(i) for i in range(self.num_envs))

    # -------------------------------------------------------------- helpers
    def _require_reset(self) -> None:
        if not self._has_reset:
            raise ResetNeeded("step() called before reset(); call env.reset(seed=...) first")

    def _restart(self, idx: np.ndarray) -> None:
        if len(idx):  # all rows restarting together are in step until some restart alone
            self._in_step = len(idx) == self.num_envs
        self.elapsed[idx] = 0
        self.last_actions[idx] = 0
        self.last_rewards[idx] = 0.0
        self._done[idx] = False
        self._reset_envs(idx)

    def _infos(self) -> dict[str, Any]:
        return {"world_state": self._world_state()} if self.include_world_state else {}

    def _check_actions(self, actions: Any) -> np.ndarray:
        space = self.single_action_space
        actions = np.asarray(actions)
        want = (self.num_envs, *space.shape)
        if actions.shape != want:
            raise ValueError(
                f"actions must have shape {want} (num_envs, *single_action_space.shape), "
                f"got {actions.shape}; pass one action per env"
            )
        if isinstance(space, spaces.Discrete | spaces.MultiDiscrete):
            if actions.dtype.kind not in "iu":
                raise ValueError(
                    f"actions for {space} must be integers, got dtype {actions.dtype}; "
                    "cast with .astype(np.int64)"
                )
            low = space.start
            high = space.start + (space.n if isinstance(space, spaces.Discrete) else space.nvec)
            bad = (actions < low) | (actions >= high)
        elif isinstance(space, spaces.Box):
            actions = actions.astype(space.dtype, copy=False)
            bad = ~np.isfinite(actions) | (actions < space.low) | (actions > space.high)
        else:  # pragma: no cover - tasks only use the spaces above
            raise TypeError(f"unsupported action space {space}")
        if bad.any():
            row = int(np.flatnonzero(bad.reshape(self.num_envs, -1).any(axis=1))[0])
            raise ValueError(
                f"action {actions[row].tolist()} of env {row} is outside the action space "
                f"{space}; actions are never clipped, so choose one inside it"
            )
        return actions
