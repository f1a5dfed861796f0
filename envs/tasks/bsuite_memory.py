"""bsuite's memory tasks: MemoryLength (memory_len) and MemorySize (memory_size)."""

from __future__ import annotations

import dataclasses

import numpy as np
from gymnasium import spaces

from memworld.envs.core import VecTask
from memworld.envs.params import TaskParams
from memworld.envs.render import GREEN, GREY, RED, WHITE, YELLOW, canvas, rect, text
from memworld.envs.scalar import scalar_view


@dataclasses.dataclass(frozen=True, kw_only=True)
class MemoryLengthParams(TaskParams):
    """Args:
    memory_length: noise steps between the context and the query (1-10,000).
    """

    memory_length: int = 10

    RANGES = {"memory_length": (1, 10_000)}


@dataclasses.dataclass(frozen=True, kw_only=True)
class MemorySizeParams(TaskParams):
    """Args:
    num_bits: context bits shown at the start; one of them is queried (1-256).
    delay: blank steps between the context and the query (0-10,000).
    """

    num_bits: int = 8
    delay: int = 1

    RANGES = {"num_bits": (1, 256), "delay": (0, 10_000)}


class _ContextQuery(VecTask):
    """Shared core: context at t=0, ``gap`` steps of filler, a query at t=gap+1, ±1 at the end.

    Open-loop: a reset draws the context bits, the query and (MemoryLength) the
    noise of every step of the episode.
    """

    open_loop_fields = ("bits", "query", "noise")
    noisy = False  # draws a noise sign per step (MemoryLength)

    @property
    def gap(self) -> int:
        raise NotImplementedError

    @property
    def num_bits(self) -> int:
        raise NotImplementedError

    @property
    def episode_steps(self) -> int:
        return self.gap + 2

    def _allocate(self) -> None:
        self.bits = np.zeros((self.num_envs, self.num_bits), dtype=np.int64)
        self.query = np.zeros(self.num_envs, dtype=np.int64)
        # noise[i, t]: the sign shown at step t (0 at t = 0, where the context is)
        width = self.episode_steps + 1 if self.noisy else 0
        self.noise = np.zeros((self.num_envs, width), dtype=np.float32)
        self.t = np.zeros(self.num_envs, dtype=np.int64)
        self._rows = np.arange(self.num_envs)

    def _reset_envs(self, idx) -> None:
        self.t[idx] = 0
        self.bits[idx] = self.rng.integers(idx, 2, self.num_bits)
        self.query[idx] = self.rng.integers(idx, self.num_bits)
        if self.noisy:
            self.noise[idx, 1:] = 2.0 * self.rng.integers(idx, 2, self.episode_steps) - 1.0

    def _step_envs(self, idx, actions):
        t = self.t[idx]
        at_query = t == self.gap + 1
        right = actions == self.bits[idx, self.query[idx]]
        reward = np.where(at_query, np.where(right, 1.0, -1.0), 0.0)
        self.t[idx] = t + 1
        return reward, at_query

    def oracle_actions(self) -> np.ndarray:
        return self.bits[self._rows, self.query]

    @property
    def chance_return(self) -> float:
        return 0.0

    def _time_remaining(self) -> np.ndarray:
        return (1.0 - self.t / (self.gap + 1)).astype(np.float32)

    def _render_env(self, i: int) -> np.ndarray:
        frame = canvas(128, 320)
        t = int(self.t[i])
        text(frame, 4, 4, f"{type(self).__name__[:-3].upper()}  T {t}/{self.gap + 1}", WHITE, 2)
        shown = self.bits[i][:32]
        for j, bit in enumerate(shown):
            color = YELLOW if j == self.query[i] else (WHITE if bit else GREY)
            rect(frame, 30, 6 + j * 9, 14, 7, color if t == 0 or j == self.query[i] else GREY)
        x = text(frame, 56, 4, f"QUERY BIT {int(self.query[i])}  ANSWER ", GREY, 2)
        text(frame, 56, x, str(int(self.oracle_actions()[i])), YELLOW, 2)
        r = float(self.last_rewards[i])
        text(frame, 80, 4, f"R {r:+.0f}", GREEN if r > 0 else RED if r < 0 else GREY, 2)
        return frame


class MemoryLengthVec(_ContextQuery):
    """MemoryLength (batched), bsuite's memory_len.

    **Description.** Step 0 shows a context sign; then ``memory_length`` steps
    of random noise; then a query. The agent must act the context (0 for -1,
    1 for +1) at the query.

    **Observation.** ``Box(-1, 1, (3,), float32)``: [context at t=0 / noise / 0
    at the query, query flag, time remaining].

    **Action.** ``Discrete(2)``; only the query step's action counts.

    **Reward.** +1 right, -1 wrong at the query; 0 elsewhere. Chance 0.

    **End.** Terminates after the query (``memory_length + 2`` actions).

    **World state.** [context, noise, query flag, time remaining].

    **Arguments.** See :class:`MemoryLengthParams`.

    **Version history.** v0: first release.
    """

    Params = MemoryLengthParams
    noisy = True

    @property
    def gap(self) -> int:
        return self.params.memory_length

    @property
    def num_bits(self) -> int:
        return 1

    def _spaces(self):
        return spaces.Box(-1.0, 1.0, (3,), np.float32), spaces.Discrete(2)

    def _observe(self) -> np.ndarray:
        obs = np.zeros((self.num_envs, 3), dtype=np.float32)
        at_query = self.t == self.gap + 1
        context = 2.0 * self.bits[:, 0] - 1.0
        obs[:, 0] = np.where(self.t == 0, context, np.where(at_query, 0.0, self._now(self.noise)))
        obs[:, 1] = at_query
        obs[:, 2] = self._time_remaining()
        return obs

    def _world_state(self) -> np.ndarray:
        at_query = (self.t == self.gap + 1).astype(np.float32)
        context = 2.0 * self.bits[:, 0] - 1.0
        noise = self._now(self.noise)
        return np.stack([context, noise, at_query, self._time_remaining()], 1).astype(np.float32)


class MemorySizeVec(_ContextQuery):
    """MemorySize (batched), bsuite's memory_size.

    **Description.** Step 0 shows ``num_bits`` context bits; after ``delay``
    blank steps one of them is queried; the agent must act its value.

    **Observation.** ``Box(-1, 1, (2 * num_bits + 2,), float32)``: [context bits
    as ±1 at t=0 (else 0), query one-hot at the query step, query flag, time remaining].

    **Action.** ``Discrete(2)``; only the query step's action counts.

    **Reward.** +1 right, -1 wrong at the query. Chance 0.

    **End.** Terminates after the query (``delay + 2`` actions).

    **World state.** [bits as ±1, query index / num_bits, time remaining].

    **Arguments.** See :class:`MemorySizeParams`.

    **Version history.** v0: first release.
    """

    Params = MemorySizeParams

    @property
    def gap(self) -> int:
        return self.params.delay

    @property
    def num_bits(self) -> int:
        return self.params.num_bits

    def _spaces(self):
        n = self.params.num_bits
        return spaces.Box(-1.0, 1.0, (2 * n + 2,), np.float32), spaces.Discrete(2)

    def _observe(self) -> np.ndarray:
        n = self.num_bits
        obs = np.zeros((self.num_envs, 2 * n + 2), dtype=np.float32)
        first = self.t == 0
        obs[first, :n] = 2.0 * self.bits[first] - 1.0
        at_query = self.t == self.gap + 1
        obs[self._rows[at_query], n + self.query[at_query]] = 1.0
        obs[:, -2] = at_query
        obs[:, -1] = self._time_remaining()
        return obs

    def _world_state(self) -> np.ndarray:
        extra = np.stack([self.query / self.num_bits, self._time_remaining()], 1)
        return np.concatenate([2.0 * self.bits - 1.0, extra], 1).astype(np.float32)


MemoryLength = scalar_view(MemoryLengthVec, "MemoryLength")
MemorySize = scalar_view(MemorySizeVec, "MemorySize")

PRESETS = {
    "MemoryLength": {
        "Easy": dict(memory_length=10),
        "Medium": dict(memory_length=100),
        "Hard": dict(memory_length=1000),
    },
    "MemorySize": {
        "Easy": dict(num_bits=4, delay=1),
        "Medium": dict(num_bits=16, delay=4),
        "Hard": dict(num_bits=64, delay=16),
    },
}
