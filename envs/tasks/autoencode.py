"""Autoencode: watch a sequence, then play it back in reverse after a cue."""

from __future__ import annotations

import dataclasses

import numpy as np
from gymnasium import spaces

from memworld.envs.core import VecTask
from memworld.envs.params import TaskParams
from memworld.envs.render import recall_frame
from memworld.envs.scalar import scalar_view


@dataclasses.dataclass(frozen=True, kw_only=True)
class AutoencodeParams(TaskParams):
    """Args:
    num_symbols: size of the symbol alphabet (2-16).
    length: symbols to watch and then play back: how much to remember (1-1,000).
    """

    num_symbols: int = 4
    length: int = 8

    RANGES = {"num_symbols": (2, 16), "length": (1, 1000)}


class AutoencodeVec(VecTask):
    """Autoencode (batched).

    **Description.** For ``length`` steps the agent watches uniformly drawn
    symbols; then a cue appears and for ``length`` steps it must play the
    sequence back in reverse order (POPGym's Autoencode).

    **Observation.** ``Box(0, 1, (num_symbols + 1,), float32)``: the symbol
    one-hot during the watch phase (zeros during playback) and the playback cue.

    **Action.** ``Discrete(num_symbols)``; ignored during the watch phase.

    **Reward.** During playback ``+1/length`` right and ``-1/length`` wrong; 0
    while watching. Return in [-1, 1]; chance ``2/num_symbols - 1``.

    **End.** Terminates after ``2 * length`` actions.

    **World state.** The sequence scaled to [0, 1] and the progress ``t / (2 length)``.

    **Arguments.** See :class:`AutoencodeParams`.

    **Version history.** v0: first release.
    """

    Params = AutoencodeParams
    open_loop_fields = ("sequence",)

    def _spaces(self):
        k = self.params.num_symbols
        return spaces.Box(0.0, 1.0, (k + 1,), np.float32), spaces.Discrete(k)

    def _allocate(self) -> None:
        p = self.params
        self.sequence = np.zeros((self.num_envs, p.length), dtype=np.int64)
        self.t = np.zeros(self.num_envs, dtype=np.int64)
        self._rows = np.arange(self.num_envs)

    @property
    def episode_steps(self) -> int:
        return 2 * self.params.length

    def _reset_envs(self, idx) -> None:
        p = self.params
        self.t[idx] = 0
        self.sequence[idx] = self.rng.integers(idx, p.num_symbols, p.length)

    def _answer(self, rows, t):
        """Symbol due at step t (valid during playback: t >= length)."""
        p = self.params
        back = np.clip(2 * p.length - 1 - t, 0, p.length - 1)
        return self.sequence[rows, back]

    def _step_envs(self, idx, actions):
        p = self.params
        t = self.t[idx]
        playing = t >= p.length
        right = actions == self._answer(idx, t)
        reward = np.where(playing, np.where(right, 1.0, -1.0) / p.length, 0.0)
        self.t[idx] = t + 1
        return reward, t + 1 >= 2 * p.length

    def _observe(self) -> np.ndarray:
        p = self.params
        obs = np.zeros((self.num_envs, p.num_symbols + 1), dtype=np.float32)
        watching = self.t < p.length
        symbols = self.sequence[self._rows, np.minimum(self.t, p.length - 1)]
        obs[self._rows[watching], symbols[watching]] = 1.0
        obs[:, -1] = ~watching
        return obs

    def _world_state(self) -> np.ndarray:
        p = self.params
        progress = (self.t / (2 * p.length))[:, None]
        return np.concatenate([self.sequence / (p.num_symbols - 1), progress], 1).astype(np.float32)

    def oracle_actions(self) -> np.ndarray:
        return np.where(self.t >= self.params.length, self._answer(self._rows, self.t), 0)

    @property
    def chance_return(self) -> float:
        return 2.0 / self.params.num_symbols - 1.0

    def _render_env(self, i: int) -> np.ndarray:
        p = self.params
        t = int(self.t[i])
        playing = p.length <= t < 2 * p.length
        shown = np.where(np.arange(p.length) <= t, self.sequence[i], -1)
        back = 2 * p.length - 1 - t
        return recall_frame(
            f"AUTOENCODE  T {t}  {'PLAYBACK' if playing else 'WATCH'}",
            shown,
            marked=back if playing else None,
            answer=int(self.sequence[i, back]) if playing else None,
            action=int(self.last_actions[i]) if t > 0 else None,
            reward=float(self.last_rewards[i]),
            footer="PLAY THE SEQUENCE BACK IN REVERSE",
        )


Autoencode = scalar_view(AutoencodeVec, "Autoencode")

PRESETS = {
    "Easy": dict(num_symbols=4, length=8),
    "Medium": dict(num_symbols=4, length=16),
    "Hard": dict(num_symbols=4, length=32),
}
