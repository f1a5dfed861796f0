"""CountRecall: act how often the queried value has appeared so far."""

from __future__ import annotations

import dataclasses
import functools
import math

import numpy as np
from gymnasium import spaces

from envs.core import VecTask, scalar_view
from envs.params import TaskParams
from envs.render import recall_frame


@dataclasses.dataclass(frozen=True, kw_only=True)
class CountRecallParams(TaskParams):
    """Args:
    num_values: distinct values shown (2-16).
    episode_length: steps per episode: how long counts must be kept (1-1,000).
    """

    num_values: int = 4
    episode_length: int = 16

    RANGES = {"num_values": (2, 16), "episode_length": (1, 1000)}


@functools.lru_cache(maxsize=64)
def _memoryless_best(num_values: int, episode_length: int) -> float:
    """Best expected accuracy of a policy that sees only the current (value, query).

    At step t the count is ``1[v_t == q_t] + Binomial(t, 1/k)``; such a policy
    picks one answer for "match" and one for "no match", whatever t is.
    """
    k, steps = num_values, episode_length
    p = 1.0 / k
    pmf = np.zeros((steps, steps + 1))
    for t in range(steps):
        for c in range(t + 1):
            pmf[t, c] = math.comb(t, c) * p**c * (1 - p) ** (t - c)
    no_match = pmf.mean(axis=0)  # P(count = a) averaged over t
    match = np.concatenate([[0.0], no_match[:-1]])  # shifted by the current match
    return p * match.max() + (1 - p) * no_match.max()


class CountRecallVec(VecTask):
    """CountRecall (batched).

    **Description.** Each step shows a value and a query (both uniform over
    ``num_values``); the agent must act how many times the query value has been
    shown so far, the current step included (POPGym's CountRecall, with an
    exact answer).

    **Observation.** ``Box(0, 1, (2 * num_values,), float32)``: value one-hot, query one-hot.

    **Action.** ``Discrete(episode_length + 1)``: the count (it never exceeds
    the episode length, so no answer is clipped).

    **Reward.** ``+1/episode_length`` right, ``-1/episode_length`` wrong, every
    step. Return in [-1, 1]. Chance (best memoryless policy) ``2 a* - 1`` where
    ``a*`` is computed exactly from binomial counts (:func:`_memoryless_best`);
    uniform random play earns ``2 / (episode_length + 1) - 1``.

    **End.** Terminates after ``episode_length`` actions.

    **World state.** Counts of every value / episode_length, current value and
    query / num_values, progress.

    **Arguments.** See :class:`CountRecallParams`.

    **Version history.** v0: first release.
    """

    Params = CountRecallParams

    def _spaces(self):
        p = self.params
        obs = spaces.Box(0.0, 1.0, (2 * p.num_values,), np.float32)
        return obs, spaces.Discrete(p.episode_length + 1)

    def _allocate(self) -> None:
        k = self.params.num_values
        self.counts = np.zeros((self.num_envs, k), dtype=np.int64)
        self.value = np.zeros(self.num_envs, dtype=np.int64)
        self.query = np.zeros(self.num_envs, dtype=np.int64)
        self.t = np.zeros(self.num_envs, dtype=np.int64)
        self._rows = np.arange(self.num_envs)

    def _draw(self, idx) -> None:
        drawn = self.rng.integers(idx, self.params.num_values, 2)
        self.value[idx], self.query[idx] = drawn[:, 0], drawn[:, 1]
        self.counts[idx, self.value[idx]] += 1

    def _reset_envs(self, idx) -> None:
        self.t[idx] = 0
        self.counts[idx] = 0
        self._draw(idx)

    def _step_envs(self, idx, actions):
        p = self.params
        right = actions == self.counts[idx, self.query[idx]]
        reward = np.where(right, 1.0, -1.0) / p.episode_length
        self.t[idx] += 1
        self._draw(idx)
        return reward, self.t[idx] >= p.episode_length

    def _observe(self) -> np.ndarray:
        k = self.params.num_values
        obs = np.zeros((self.num_envs, 2 * k), dtype=np.float32)
        obs[self._rows, self.value] = 1.0
        obs[self._rows, k + self.query] = 1.0
        return obs

    def _world_state(self) -> np.ndarray:
        p = self.params
        extra = np.stack(
            [self.value / p.num_values, self.query / p.num_values, self.t / p.episode_length], 1
        )
        return np.concatenate([self.counts / p.episode_length, extra], 1).astype(np.float32)

    def oracle_actions(self) -> np.ndarray:
        return self.counts[self._rows, self.query]

    @property
    def chance_return(self) -> float:
        return 2.0 * _memoryless_best(self.params.num_values, self.params.episode_length) - 1.0

    @property
    def random_return(self) -> float:
        return 2.0 / (self.params.episode_length + 1) - 1.0

    def _render_env(self, i: int) -> np.ndarray:
        t = int(self.t[i])
        return recall_frame(
            f"COUNT RECALL  T {t}",
            np.array([self.value[i], -1, self.query[i]]),
            marked=2,
            answer=int(self.counts[i, self.query[i]]),
            action=int(self.last_actions[i]) if t > 0 else None,
            reward=float(self.last_rewards[i]),
            footer=f"VALUE {int(self.value[i])}  QUERY {int(self.query[i])}: HOW MANY SO FAR",
        )


CountRecall = scalar_view(CountRecallVec, "CountRecall")

PRESETS = {
    "Easy": dict(num_values=4, episode_length=16),
    "Medium": dict(num_values=4, episode_length=32),
    "Hard": dict(num_values=4, episode_length=64),
}
