"""RepeatPrevious: act the symbol seen ``delay`` steps earlier."""

from __future__ import annotations

import dataclasses

import numpy as np
from gymnasium import spaces

from memworld.envs.core import VecTask
from memworld.envs.params import TaskParams, require
from memworld.envs.render import recall_frame
from memworld.envs.scalar import scalar_view


@dataclasses.dataclass(frozen=True, kw_only=True)
class RepeatPreviousParams(TaskParams):
    """Args:
    num_symbols: size of the symbol alphabet (2-16).
    delay: how many steps back the answer lies: how long the agent must remember (1-1000).
    episode_length: observations (and actions) per episode; must exceed ``delay``.
    """

    num_symbols: int = 4
    delay: int = 4
    episode_length: int = 52

    RANGES = {"num_symbols": (2, 16), "delay": (1, 1000), "episode_length": (2, 10_000)}

    def check(self) -> None:
        require(
            self.delay < self.episode_length,
            f"delay ({self.delay}) must be < episode_length ({self.episode_length}); "
            "raise episode_length or lower delay",
        )


class RepeatPreviousVec(VecTask):
    """RepeatPrevious (batched).

    **Description.** Each step shows one of ``num_symbols`` symbols, drawn
    uniformly. From step ``delay`` on, the agent must act the symbol it saw
    ``delay`` steps earlier (POPGym's RepeatPrevious).

    **Observation.** ``Box(0, 1, (num_symbols,), float32)``: the current symbol, one-hot.

    **Action.** ``Discrete(num_symbols)``.

    **Reward.** ``+1/(episode_length - delay)`` for a right answer and
    ``-1/(episode_length - delay)`` for a wrong one on each of the
    ``episode_length - delay`` answered steps; 0 before. Return in [-1, 1];
    chance ``2/num_symbols - 1``.

    **End.** Terminates after ``episode_length`` actions.

    **World state.** The last ``delay + 1`` symbols, oldest first, scaled to
    [0, 1], then the episode progress ``t / episode_length``.

    **Arguments.** See :class:`RepeatPreviousParams`.

    **Version history.** v0: first release.
    """

    Params = RepeatPreviousParams
    open_loop_fields = ("symbols",)

    def _spaces(self):
        k = self.params.num_symbols
        return spaces.Box(0.0, 1.0, (k,), np.float32), spaces.Discrete(k)

    def _allocate(self) -> None:
        p = self.params
        # the whole episode, drawn at reset: symbols[i, delay + s] is shown at step s;
        # the first delay columns stay 0 (what the world state shows before step delay)
        self.symbols = np.zeros((self.num_envs, p.delay + p.episode_length + 1), dtype=np.uint8)
        self.t = np.zeros(self.num_envs, dtype=np.int64)
        self._rows = np.arange(self.num_envs)
        self._eye = np.eye(p.num_symbols, dtype=np.float32)
        self._window = np.arange(p.delay + 1)

    @property
    def episode_steps(self) -> int:
        return self.params.episode_length

    def _reset_envs(self, idx) -> None:
        p = self.params
        self.t[idx] = 0
        self.symbols[idx, p.delay :] = self.rng.integers(idx, p.num_symbols, p.episode_length + 1)

    def _step_envs(self, idx, actions):
        p = self.params
        target = self._now(self.symbols, idx)  # shown at step t - delay
        t = self.t[idx]
        scale = 1.0 / (p.episode_length - p.delay)
        reward = np.where(t >= p.delay, np.where(actions == target, scale, -scale), 0.0)
        self.t[idx] = t + 1
        return reward, t + 1 >= p.episode_length

    def _observe(self) -> np.ndarray:
        return self._eye.take(
            self._now(self.symbols, offset=self.params.delay), axis=0
        )  # 9x eye[...]

    def _world_state(self) -> np.ndarray:
        p = self.params
        if self._in_step:  # the usual case: one slice (see VecTask._now)
            t0 = self.t[0]
            window = self.symbols[:, t0 : t0 + p.delay + 1]
        else:
            window = self.symbols[self._rows[:, None], self.t[:, None] + self._window]
        state = np.empty((self.num_envs, p.delay + 2), dtype=np.float32)
        np.multiply(window, 1.0 / max(p.num_symbols - 1, 1), out=state[:, :-1], casting="unsafe")
        np.multiply(self.t, 1.0 / p.episode_length, out=state[:, -1], casting="unsafe")
        return state

    def oracle_actions(self) -> np.ndarray:
        target = self._now(self.symbols).astype(np.int64)
        return np.where(self.t >= self.params.delay, target, 0)

    @property
    def chance_return(self) -> float:
        return 2.0 / self.params.num_symbols - 1.0

    def _render_env(self, i: int) -> np.ndarray:
        p = self.params
        t = int(self.t[i])
        times = np.arange(t - p.delay, t + 1)
        shown = np.where(times >= 0, self.symbols[i, times + p.delay].astype(np.int64), -1)
        due = t >= p.delay
        return recall_frame(
            f"REPEAT PREVIOUS  T {t}",
            shown,
            marked=0 if due else None,
            answer=int(self.oracle_actions()[i]) if due else None,
            action=int(self.last_actions[i]) if t > 0 else None,
            reward=float(self.last_rewards[i]),
            footer=f"ACT SYMBOL FROM {p.delay} STEPS AGO",
        )


RepeatPrevious = scalar_view(RepeatPreviousVec, "RepeatPrevious")

PRESETS = {
    "Easy": dict(num_symbols=4, delay=4, episode_length=52),
    "Medium": dict(num_symbols=4, delay=32, episode_length=104),
    "Hard": dict(num_symbols=4, delay=64, episode_length=156),
}
