"""An open-loop task's episode laid out over time, so the scalar env can step it in Python.

An open-loop task (:attr:`memworld.envs.core.VecTask.open_loop_fields`) draws its whole
episode at reset and its step only advances ``t``: what a step returns is a
function of the drawn arrays, ``t`` and the action.  :class:`Timeline` evaluates
the task's own batched hooks once per episode on two grids of rows: row ``t`` of
one is env 0 at time ``t`` (observations, world states), row ``(t, a)`` of the
other is env 0 acting ``a`` at time ``t`` (rewards, termination).  A scalar step
is then a few list lookups instead of a few dozen numpy calls on one-row arrays,
and it returns the core's own numbers, computed by the same code
(``tests/test_timeline.py`` checks it against stepping the core, ``tests/test_envs.py``
the scalar env against the vector env).
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import numpy as np
from gymnasium import spaces

if TYPE_CHECKING:
    from memworld.envs.core import VecTask

MAX_GRID_ROWS = 1 << 17
"""Largest ``episode_steps * actions`` laid out; past it the scalar env steps the core."""
MAX_GRID_BYTES = 32 << 20
"""Largest size of the grids' own state arrays (allocated once, per scalar env)."""


class Timeline:
    """Env 0's current episode of an open-loop ``core``, one entry per time step.

    Args:
        core: the scalar env's one-row core (its task must be open-loop, see :meth:`fits`).

    After :meth:`load`: ``obs[t]`` and ``world_state[t]`` (``None`` when the core
    skips world states) are what the env shows at time ``t`` (``0..steps``),
    ``rewards[t][a]`` and ``terminated[t]`` what acting ``a`` at time ``t`` earns.
    """

    def __init__(self, core: VecTask) -> None:
        if not self.fits(core):
            raise ValueError(
                f"{type(core).__name__} cannot be laid out over time (see Timeline.fits)"
            )
        self.steps = steps = int(core.episode_steps)
        self.num_actions = n = int(core.single_action_space.n)
        params = dataclasses.asdict(core.params)

        def grid(rows: int, times: np.ndarray) -> VecTask:
            g = type(core)(num_envs=rows, world_state=core.include_world_state, **params)
            g.t[:] = times
            return g

        self._frames = grid(steps + 1, np.arange(steps + 1))
        self._choices = grid(steps * n, np.repeat(np.arange(steps), n))
        self._actions = np.tile(np.arange(n), steps)
        self._sources: dict[str, np.ndarray] = {}
        self.obs: list[np.ndarray] = []
        self.world_state: list[np.ndarray] | None = None
        self.rewards: list[list[float]] = []
        self.terminated: list[bool] = []

    def info(self, t: int) -> dict:
        """The ``info`` dict of time ``t``: its world state, when the core makes them."""
        return {} if self.world_state is None else {"world_state": self.world_state[t]}

    def __getstate__(self) -> dict:
        # A copy (deepcopy, pickle) copies the grids' views as arrays of their own:
        # forget the sources so the next load makes views of the copied core again.
        return {**self.__dict__, "_sources": {}}

    @staticmethod
    def fits(core: VecTask) -> bool:
        """Whether ``core``'s task is open-loop with a fixed episode length and a
        ``Discrete`` action space starting at 0, small enough to tabulate."""
        space, steps = core.single_action_space, core.episode_steps
        if not core.open_loop_fields or steps is None or not isinstance(space, spaces.Discrete):
            return False
        rows = steps * int(space.n) + steps + 1
        row_bytes = sum(getattr(core, name)[0, ...].nbytes for name in core.open_loop_fields)
        return (
            int(space.start) == 0 and rows <= MAX_GRID_ROWS and rows * row_bytes <= MAX_GRID_BYTES
        )

    def load(self, core: VecTask) -> None:
        """Lay out the episode that env 0 of ``core`` has just started."""
        for name in core.open_loop_fields:
            source = getattr(core, name)
            if source is not self._sources.get(name):  # a task writes its fields in place,
                self._sources[name] = source  # so these views follow every new episode
                for g in (self._frames, self._choices):
                    row = source[0, ...]  # a view (a 0-d one for a (num_envs,) field)
                    setattr(g, name, np.broadcast_to(row, (g.num_envs, *row.shape)))  # read-only
        frames, choices = self._frames, self._choices
        self.obs = list(frames._observe())
        self.world_state = list(frames._world_state()) if core.include_world_state else None
        times = choices.t.copy()
        rewards, terminated = choices._step_envs(choices._all_rows, self._actions)
        choices.t[:] = times
        shape = (self.steps, self.num_actions)
        # float32, as the core's last_rewards holds them, so rewards equal the core's
        self.rewards = np.asarray(rewards, np.float32).reshape(shape).tolist()
        self.terminated = np.asarray(terminated, bool).reshape(shape)[:, 0].tolist()
