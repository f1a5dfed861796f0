"""DistributionShift: a continual-learning wrapper that changes a task's answer mapping."""

from __future__ import annotations

import math
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.vector import VectorEnv

from memworld.envs.registry import resolve_id
from memworld.envs.render import WHITE, YELLOW, canvas, text


class DistributionShift(VectorEnv):
    """Cycle a task through ``num_tasks`` hidden answer mappings.

    In task ``j`` the action the agent must take is ``perms[j][a*]``, where
    ``a*`` is the wrapped task's answer and ``perms[j]`` a fixed permutation of
    the action labels (task 0 is the identity). Each env row counts its own
    finished episodes and moves to the next task every ``shift_every`` of them,
    so an agent must keep learning (and may forget). ``info["task_id"]`` (N,)
    says which mapping each row's rewards were earned in. Observations are
    those of the wrapped task; only the answer mapping changes, which works for
    any task with a ``Discrete`` action space.

    A seeded (or the first) ``reset`` restarts the curriculum: every row back
    in ``task_id`` with no finished episodes. An unseeded ``reset()`` (e.g.
    after an episode with ``autoreset_mode="disabled"``) keeps each row's
    progress.

    Args:
        num_envs: envs in the batch (default 1; taken from ``task`` when it is an env).
        task: memworld id of a task with a ``Discrete`` action space, or an
            already built memworld vector task (then ``task_kwargs`` must be empty).
        shift_every: episodes per task in each row; ``None`` never shifts
            (a fixed task, e.g. to evaluate on an earlier one).
        num_tasks: number of mappings cycled through (>= 1).
        task_id: the task each row starts in.
        mapping_seed: seed of the permutations, so that they are the same in
            every process (train and eval envs agree). ``None`` draws them from a
            ``numpy`` Generator seeded with each seeded ``reset``'s seed.
        autoreset_mode, render_mode, world_state: as for every memworld task
            (only with a task id; an env keeps its own).
        **task_kwargs: parameters of the wrapped task.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 4}

    def __init__(
        self,
        num_envs: int | None = None,
        task: str | VectorEnv = "memworld/RepeatFirstEasy-v0",
        shift_every: int | None = 10,
        num_tasks: int = 3,
        task_id: int = 0,
        mapping_seed: int | None = 0,
        autoreset_mode: Any = None,
        render_mode: str | None = None,
        world_state: bool | None = None,
        **task_kwargs: Any,
    ) -> None:
        from memworld import envs  # noqa: F401  (registers the ids)

        if shift_every is not None and (not isinstance(shift_every, int) or shift_every < 1):
            raise ValueError(f"shift_every must be a positive integer or None, got {shift_every!r}")
        if isinstance(num_tasks, bool) or not isinstance(num_tasks, int) or num_tasks < 1:
            raise ValueError(f"num_tasks must be a positive integer, got {num_tasks!r}")
        if not isinstance(task_id, int) or not 0 <= task_id < num_tasks:
            raise ValueError(f"task_id must be in [0, {num_tasks - 1}], got {task_id!r}")
        if mapping_seed is not None and (not isinstance(mapping_seed, int) or mapping_seed < 0):
            raise ValueError(
                f"mapping_seed must be a non-negative int or None, got {mapping_seed!r}"
            )
        self.inner = self._build_inner(
            num_envs, task, autoreset_mode, render_mode, world_state, task_kwargs
        )
        if not isinstance(self.inner.single_action_space, spaces.Discrete):
            raise ValueError(
                f"DistributionShift permutes Discrete actions; {task} has "
                f"{self.inner.single_action_space}; choose a recall task"
            )
        self.num_envs = self.inner.num_envs
        self.shift_every, self.num_tasks, self.start_task = shift_every, num_tasks, task_id
        self.mapping_seed = mapping_seed
        self.single_observation_space = self.inner.single_observation_space
        self.single_action_space = self.inner.single_action_space
        self.observation_space = self.inner.observation_space
        self.action_space = self.inner.action_space
        self.render_mode = self.inner.render_mode
        self.autoreset_mode = self.inner.autoreset_mode
        self.metadata = {**self.metadata, "autoreset_mode": self.autoreset_mode}
        self.perms = self._draw_perms(np.random.default_rng(mapping_seed))  # (num_tasks, n)
        self.inverse = np.argsort(self.perms, axis=1)
        self.episodes = np.zeros(self.num_envs, dtype=np.int64)
        self.task_id = np.full(self.num_envs, task_id, dtype=np.int64)
        self._has_reset = False

    @staticmethod
    def _build_inner(num_envs, task, autoreset_mode, render_mode, world_state, task_kwargs):
        if isinstance(task, VectorEnv):
            given = dict(
                autoreset_mode=autoreset_mode, render_mode=render_mode, world_state=world_state
            )
            given = {k: v for k, v in given.items() if v is not None}
            if task_kwargs or given:
                raise ValueError(
                    f"task is an already built env, so {sorted({**task_kwargs, **given})} "
                    "cannot be applied; pass them when building it, or pass an env id"
                )
            if num_envs is not None and num_envs != task.num_envs:
                raise ValueError(
                    f"num_envs ({num_envs}) differs from the wrapped env's ({task.num_envs}); "
                    "leave num_envs out"
                )
            return task
        if not isinstance(task, str):
            raise ValueError(f"task must be a memworld env id or a vector env, got {task!r}")
        return gym.make_vec(
            resolve_id(task),
            num_envs=1 if num_envs is None else num_envs,
            vectorization_mode="vector_entry_point",
            autoreset_mode="next_step" if autoreset_mode is None else autoreset_mode,
            render_mode=render_mode,
            world_state=True if world_state is None else world_state,
            **task_kwargs,
        )

    def _draw_perms(self, rng: np.random.Generator) -> np.ndarray:
        n = int(self.inner.single_action_space.n)
        if self.num_tasks > math.factorial(n):
            raise ValueError(
                f"num_tasks={self.num_tasks} exceeds the {math.factorial(n)} distinct mappings of "
                f"{n} actions; pass num_tasks <= {math.factorial(n)}"
            )
        return np.stack([np.arange(n)] + [rng.permutation(n) for _ in range(self.num_tasks - 1)])

    def reset(self, *, seed: int | list[int] | None = None, options: dict | None = None):
        obs, info = self.inner.reset(seed=seed, options=options)
        if seed is not None or not self._has_reset:  # a new run: the curriculum restarts
            self.episodes[:] = 0
            self.task_id[:] = self.start_task
            if self.mapping_seed is None:
                self.perms = self._draw_perms(np.random.default_rng(seed))
                self.inverse = np.argsort(self.perms, axis=1)
        self._has_reset = True
        info["task_id"] = self.task_id.copy()
        return obs, info

    def step(self, actions):
        actions = np.asarray(actions)
        if actions.shape != (self.num_envs,) or actions.dtype.kind not in "iu":
            raise ValueError(
                f"actions must be an integer array of shape ({self.num_envs},), got "
                f"{actions.dtype} {actions.shape}; pass one int action per env"
            )
        n = self.single_action_space.n
        if actions.min() < 0 or actions.max() >= n:
            raise ValueError(
                f"actions must be in [0, {n - 1}], got {actions.tolist()}; they are never clipped"
            )
        inner_actions = self.inverse[self.task_id, actions]
        obs, reward, terminated, truncated, info = self.inner.step(inner_actions)
        info["task_id"] = self.task_id.copy()  # the task these rewards were earned in
        if "final_info" in info:
            info["final_info"]["task_id"] = self.task_id.copy()
        done = terminated | truncated
        if self.shift_every is not None and done.any():
            self.episodes[done] += 1
            shifts = self.episodes // self.shift_every
            self.task_id[:] = (self.start_task + shifts) % self.num_tasks
        return obs, reward, terminated, truncated, info

    def oracle_actions(self) -> np.ndarray:
        """The wrapped task's oracle answer, relabelled by each row's mapping."""
        return self.perms[self.task_id, self.inner.oracle_actions()]

    @property
    def chance_return(self) -> float:
        return self.inner.chance_return

    @property
    def max_return(self) -> float:
        return self.inner.max_return

    def render(self) -> tuple[np.ndarray, ...] | None:
        """The wrapped task's frames with a strip naming the task and the mapped answer."""
        frames = self.inner.render()
        if frames is None:
            return None
        answers = self.oracle_actions()
        return tuple(
            _with_strip(f, int(self.task_id[i]), int(answers[i])) for i, f in enumerate(frames)
        )

    def close(self, **kwargs: Any) -> None:
        self.inner.close()


def _with_strip(frame: np.ndarray, task_id: int, answer: int) -> np.ndarray:
    strip = canvas(16, frame.shape[1])
    x = text(strip, 3, 4, f"TASK {task_id}  MAPPED ANSWER ", WHITE, 2)
    text(strip, 3, x, str(answer), YELLOW, 2)
    return np.concatenate([frame, strip], axis=0)


class DistributionShiftEnv(gym.Env):
    """The single-env view of :class:`DistributionShift` (same arguments, one env).

    ``reset()`` after an episode keeps the curriculum going; ``reset(seed=...)``
    restarts it.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 4}

    def __init__(self, render_mode: str | None = None, **kwargs: Any) -> None:
        if "num_envs" in kwargs or "autoreset_mode" in kwargs:
            raise ValueError(
                "the single env has num_envs=1 and no autoreset; use DistributionShift"
            )
        self.core = DistributionShift(
            num_envs=1, autoreset_mode="disabled", render_mode=render_mode, **kwargs
        )
        self.render_mode = render_mode
        self.observation_space = self.core.single_observation_space
        self.action_space = self.core.single_action_space
        self._done = False

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        obs, info = self.core.reset(seed=seed)
        self._done = False
        return obs[0], _row(info)

    def step(self, action: Any):
        if self._done:
            raise RuntimeError("the episode has ended; call reset() before step()")
        obs, reward, terminated, truncated, info = self.core.step(
            np.asarray(action, dtype=np.int64).reshape(1)
        )
        self._done = bool(terminated[0] or truncated[0])
        return obs[0], float(reward[0]), bool(terminated[0]), bool(truncated[0]), _row(info)

    def oracle_action(self) -> int:
        return int(self.core.oracle_actions()[0])

    @property
    def task_id(self) -> int:
        return int(self.core.task_id[0])

    def render(self) -> np.ndarray | None:
        frames = self.core.render()
        return None if frames is None else frames[0]


def _row(info: dict[str, Any]) -> dict[str, Any]:
    return {k: v[0] if isinstance(v, np.ndarray) else v for k, v in info.items()}


def register() -> None:
    """Register ``memworld/DistributionShift-v0`` (single and vector entry points)."""
    if "memworld/DistributionShift-v0" not in gym.registry:
        gym.register(
            id="memworld/DistributionShift-v0",
            entry_point="memworld.envs.shift:DistributionShiftEnv",
            vector_entry_point="memworld.envs.shift:DistributionShift",
        )
