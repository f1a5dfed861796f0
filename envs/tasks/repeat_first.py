"""RepeatFirst: act the first symbol of the episode at every step."""

from __future__ import annotations

import dataclasses

import numpy as np
from gymnasium import spaces

from memworld.envs.core import VecTask
from memworld.envs.params import TaskParams
from memworld.envs.render import recall_frame
from memworld.envs.scalar import scalar_view


@dataclasses.dataclass(frozen=True, kw_only=True)
class RepeatFirstParams(TaskParams):
    """Args:
    num_symbols: size of the symbol alphabet (2-16).
    episode_length: steps per episode: how long the first symbol must be held (1-10,000).
    """

    num_symbols: int = 4
    episode_length: int = 52

    RANGES = {"num_symbols": (2, 16), "episode_length": (1, 10_000)}


class RepeatFirstVec(VecTask):
    """RepeatFirst (batched).

    **Description.** Each step shows a uniformly drawn symbol; at every step the
    agent must act the *first* symbol of the episode (POPGym's RepeatFirst).

    **Observation.** ``Box(0, 1, (num_symbols,), float32)``: the current symbol, one-hot.

    **Action.** ``Discrete(num_symbols)``.

    **Reward.** ``+1/episode_length`` right, ``-1/episode_length`` wrong, every
    step. Return in [-1, 1]. Uniform random play earns ``2/k - 1`` (``k =
    num_symbols``). At step 0 the first symbol is in view, so the best
    memoryless policy (act the current symbol) earns ``(1 + (L - 1)(2/k - 1)) / L``
    (``L = episode_length``): that is the chance return.

    **End.** Terminates after ``episode_length`` actions.

    **World state.** First symbol and current symbol scaled to [0, 1], progress.

    **Arguments.** See :class:`RepeatFirstParams`.

    **Version history.** v0: first release.
    """

    Params = RepeatFirstParams
    open_loop_fields = ("symbols",)

    def _spaces(self):
        k = self.params.num_symbols
        return spaces.Box(0.0, 1.0, (k,), np.float32), spaces.Discrete(k)

    def _allocate(self) -> None:
        p = self.params
        # the whole episode, drawn at reset: symbols[i, s] is shown at step s
        self.symbols = np.zeros((self.num_envs, p.episode_length + 1), dtype=np.uint8)
        self.t = np.zeros(self.num_envs, dtype=np.int64)
        self._eye = np.eye(p.num_symbols, dtype=np.float32)

    @property
    def episode_steps(self) -> int:
        return self.params.episode_length

    @property
    def first(self) -> np.ndarray:
        """The first symbol of every env's episode (the answer), shape (num_envs,)."""
        return self.symbols[:, 0].astype(np.int64)

    @property
    def current(self) -> np.ndarray:
        """The symbol every env shows now, shape (num_envs,)."""
        return self._now(self.symbols).astype(np.int64)

    def _reset_envs(self, idx) -> None:
        p = self.params
        self.t[idx] = 0
        self.symbols[idx] = self.rng.integers(idx, p.num_symbols, p.episode_length + 1)

    def _step_envs(self, idx, actions):
        p = self.params
        scale = 1.0 / p.episode_length
        reward = np.where(actions == self.symbols[idx, 0], scale, -scale)
        self.t[idx] += 1
        return reward, self.t[idx] >= p.episode_length

    def _observe(self) -> np.ndarray:
        return self._eye.take(self._now(self.symbols), axis=0)

    def _world_state(self) -> np.ndarray:
        p = self.params
        scale = 1.0 / (p.num_symbols - 1)
        return np.stack(
            [self.first * scale, self.current * scale, self.t / p.episode_length], axis=1
        ).astype(np.float32)

    def oracle_actions(self) -> np.ndarray:
        return self.first

    @property
    def chance_return(self) -> float:
        p = self.params
        per_step = 2.0 / p.num_symbols - 1.0  # after step 0 the shown symbol is independent
        return (1.0 + (p.episode_length - 1) * per_step) / p.episode_length

    @property
    def random_return(self) -> float:
        return 2.0 / self.params.num_symbols - 1.0

    def _render_env(self, i: int) -> np.ndarray:
        t = int(self.t[i])
        return recall_frame(
            f"REPEAT FIRST  T {t}",
            np.array([self.first[i], -1, self.current[i]]),
            marked=0,
            answer=int(self.first[i]),
            action=int(self.last_actions[i]) if t > 0 else None,
            reward=float(self.last_rewards[i]),
            footer="ACT THE FIRST SYMBOL",
        )


RepeatFirst = scalar_view(RepeatFirstVec, "RepeatFirst")

PRESETS = {
    "Easy": dict(num_symbols=4, episode_length=52),
    "Medium": dict(num_symbols=4, episode_length=104),
    "Hard": dict(num_symbols=4, episode_length=156),
}
