"""CountRecall: act how often the queried value has appeared so far."""

from __future__ import annotations

import dataclasses
import functools
import math

import numpy as np
from gymnasium import spaces

from memworld.envs.core import VecTask
from memworld.envs.params import TaskParams
from memworld.envs.render import recall_frame
from memworld.envs.scalar import scalar_view


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

    **Memory.** A reset draws the whole episode: values, queries and the running
    counts, ``num_envs x (episode_length + 1) x (num_values + 2)`` small integers
    (``uint8``/``uint16``), so a step reads instead of counting.

    **Arguments.** See :class:`CountRecallParams`.

    **Version history.** v0: first release.
    """

    Params = CountRecallParams
    open_loop_fields = ("values", "queries", "counts")

    def _spaces(self):
        p = self.params
        obs = spaces.Box(0.0, 1.0, (2 * p.num_values,), np.float32)
        return obs, spaces.Discrete(p.episode_length + 1)

    def _allocate(self) -> None:
        p = self.params
        k, steps = p.num_values, p.episode_length + 1
        # the whole episode, drawn at reset: what step s shows and every count up to it
        self.values = np.zeros((self.num_envs, steps), dtype=np.uint8)
        self.queries = np.zeros((self.num_envs, steps), dtype=np.uint8)
        self.counts = np.zeros((self.num_envs, steps, k), dtype=np.uint16)  # counts[i, s, v]
        self.t = np.zeros(self.num_envs, dtype=np.int64)
        self._rows = np.arange(self.num_envs)
        self._value_ids = np.arange(k)

    @property
    def episode_steps(self) -> int:
        return self.params.episode_length

    @property
    def value(self) -> np.ndarray:
        """The value every env shows now, shape (num_envs,)."""
        return self._now(self.values).astype(np.int64)

    @property
    def query(self) -> np.ndarray:
        """The query every env shows now, shape (num_envs,)."""
        return self._now(self.queries).astype(np.int64)

    def _reset_envs(self, idx) -> None:
        p = self.params
        self.t[idx] = 0
        drawn = self.rng.integers(idx, p.num_values, 2 * (p.episode_length + 1))
        drawn = drawn.reshape(len(idx), p.episode_length + 1, 2)  # (value, query) per step
        self.values[idx], self.queries[idx] = drawn[..., 0], drawn[..., 1]
        seen = (drawn[..., 0, None] == self._value_ids).view(np.uint8)  # (rows, steps, k)
        if idx is self._all_rows:  # all rows: accumulate in place (twice as fast)
            np.cumsum(seen, axis=1, dtype=np.uint16, out=self.counts)
        else:
            self.counts[idx] = np.cumsum(seen, axis=1, dtype=np.uint16)

    def _answer(self, idx=None) -> np.ndarray:
        """How often each row's query has been shown so far, rows ``idx`` (all if None)."""
        counts, query = self._now(self.counts, idx), self._now(self.queries, idx)
        return counts[np.arange(len(query)), query].astype(np.int64)

    def _step_envs(self, idx, actions):
        p = self.params
        right = actions == self._answer(idx)
        t = self.t[idx]
        reward = np.where(right, 1.0, -1.0) / p.episode_length
        self.t[idx] = t + 1
        return reward, t + 1 >= p.episode_length

    def _observe(self) -> np.ndarray:
        k = self.params.num_values
        obs = np.zeros((self.num_envs, 2 * k), dtype=np.float32)
        obs[self._rows, self.value] = 1.0
        obs[self._rows, k + self.query] = 1.0
        return obs

    def _world_state(self) -> np.ndarray:
        p = self.params
        k, length = p.num_values, p.episode_length
        state = np.empty((self.num_envs, k + 3), dtype=np.float32)
        for out, value, scale in (
            (state[:, :k], self._now(self.counts), length),
            (state[:, k], self._now(self.values), k),
            (state[:, k + 1], self._now(self.queries), k),
            (state[:, k + 2], self.t, length),
        ):
            np.divide(value, scale, out=out, casting="unsafe")  # in float64, as before
        return state

    def oracle_actions(self) -> np.ndarray:
        return self._answer()

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
            answer=int(self.oracle_actions()[i]),
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
