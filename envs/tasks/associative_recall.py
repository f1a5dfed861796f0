"""AssociativeRecall: watch key/value pairs, then act the value of a queried key."""

from __future__ import annotations

import dataclasses

import numpy as np
from gymnasium import spaces

from memworld.envs.core import VecTask
from memworld.envs.params import TaskParams, require
from memworld.envs.render import GREEN, GREY, RED, WHITE, YELLOW, canvas, outline, symbol_box, text
from memworld.envs.scalar import scalar_view

# Phases of a step, in episode order; DONE is the observation after the answer.
PAIR, DISTRACTOR, QUERY, DONE = 0, 1, 2, 3


@dataclasses.dataclass(frozen=True, kw_only=True)
class AssociativeRecallParams(TaskParams):
    """Args:
    num_pairs: key/value pairs shown before the query, one a step: how many
        associations the agent must hold (1-64).
    num_keys: size of the key alphabet; the keys of an episode are distinct, so
        ``num_keys >= num_pairs`` (2-64).
    num_values: size of the value alphabet (the answers) (2-16).
    num_distractors: noise steps between the last pair and the query, each
        showing a random key and value flagged as noise: how long the agent must
        hold the pairs after the last one (0-2000).
    """

    num_pairs: int = 4
    num_keys: int = 8
    num_values: int = 4
    num_distractors: int = 0

    RANGES = {
        "num_pairs": (1, 64),
        "num_keys": (2, 64),
        "num_values": (2, 16),
        "num_distractors": (0, 2000),
    }

    def check(self) -> None:
        require(
            self.num_keys >= self.num_pairs,
            f"num_keys ({self.num_keys}) must be >= num_pairs ({self.num_pairs}) so that "
            "every pair has its own key; raise num_keys or lower num_pairs",
        )


class AssociativeRecallVec(VecTask):
    """AssociativeRecall (batched).

    **Description.** Steps ``0 .. num_pairs - 1`` each show one key/value pair;
    the keys are distinct, drawn from ``num_keys`` symbols, and the values are
    drawn uniformly from ``num_values`` symbols. Then ``num_distractors`` noise
    steps each show a uniformly random key and value flagged as noise (they may
    repeat a stored key: the agent must ignore them). The last step shows one of
    the episode's keys, chosen uniformly, flagged as the query; the agent must
    act the value that was paired with it.

    **Observation.** ``Box(0, 1, (num_keys + num_values + 3,), float32)``: the
    shown key one-hot, the shown value one-hot (zeros at the query), then the
    flags ``[pair, distractor, query]``.

    **Action.** ``Discrete(num_values)``; only the action at the query step counts.

    **Reward.** ``+1`` for the right value at the query step and ``-1`` for a
    wrong one; 0 at every other step. Return in {-1, +1}; chance
    ``2/num_values - 1`` (without memory the queried value is uniform).

    **End.** Terminates after the query step: ``num_pairs + num_distractors + 1``
    actions.

    **World state.** The episode's keys scaled by ``1/(num_keys-1)``, its values
    scaled by ``1/(num_values-1)``, the queried pair index scaled by
    ``1/max(num_pairs-1, 1)``, the progress ``t/(episode length - 1)``, then the
    shown key and value as ``(symbol + 1)/alphabet`` (0 when nothing is shown):
    ``2 * num_pairs + 4`` floats.

    **Arguments.** See :class:`AssociativeRecallParams`.

    **Version history.** v0: first release.
    """

    Params = AssociativeRecallParams
    open_loop_fields = ("keys", "values", "query", "noise")

    def _spaces(self):
        p = self.params
        width = p.num_keys + p.num_values + 3
        return spaces.Box(0.0, 1.0, (width,), np.float32), spaces.Discrete(p.num_values)

    def _allocate(self) -> None:
        p = self.params
        n = self.num_envs
        self.length = p.num_pairs + p.num_distractors + 1
        self.keys = np.zeros((n, p.num_pairs), dtype=np.int64)
        self.values = np.zeros((n, p.num_pairs), dtype=np.int64)
        self.query = np.zeros(n, dtype=np.int64)  # index of the queried pair
        # noise[i, j] = (key, value) shown at distractor step j (step num_pairs + j)
        self.noise = np.zeros((n, p.num_distractors, 2), dtype=np.int64)
        self._noise_highs = np.tile([p.num_keys, p.num_values], p.num_distractors)
        self.t = np.zeros(n, dtype=np.int64)
        self._rows = np.arange(n)
        # One-hot tables whose last row is all zeros: symbol -1 encodes "nothing shown".
        self._key_table = np.eye(p.num_keys + 1, p.num_keys, dtype=np.float32)
        self._key_table[-1] = 0.0
        self._value_table = np.eye(p.num_values + 1, p.num_values, dtype=np.float32)
        self._value_table[-1] = 0.0
        self._flag_table = np.eye(4, 3, dtype=np.float32)  # rows PAIR, DISTRACTOR, QUERY, DONE

    @property
    def episode_steps(self) -> int:
        return self.length

    def _reset_envs(self, idx) -> None:
        p = self.params
        self.t[idx] = 0
        self.keys[idx] = self.rng.permutations(idx, p.num_keys)[:, : p.num_pairs]
        self.values[idx] = self.rng.integers(idx, p.num_values, p.num_pairs)
        self.query[idx] = self.rng.integers(idx, p.num_pairs)
        if p.num_distractors:
            noise = self.rng.integers_by_column(idx, self._noise_highs)
            self.noise[idx] = noise.reshape(len(idx), p.num_distractors, 2)

    def _step_envs(self, idx, actions):
        t = self.t[idx]
        at_query = t == self.length - 1
        correct = actions == self.values[idx, self.query[idx]]
        reward = np.where(at_query, np.where(correct, 1.0, -1.0), 0.0)
        self.t[idx] = t + 1
        return reward, at_query

    def _phase(self) -> np.ndarray:
        p = self.params
        phase = np.full(self.num_envs, DISTRACTOR, dtype=np.int64)
        phase[self.t < p.num_pairs] = PAIR
        phase[self.t == self.length - 1] = QUERY
        phase[self.t >= self.length] = DONE
        return phase

    def _shown(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(key, value, phase) shown in every row now; -1 where nothing is shown."""
        p = self.params
        phase = self._phase()
        pair = np.minimum(self.t, p.num_pairs - 1)
        pair = np.where(phase == QUERY, self.query, pair)
        key, value = self.keys[self._rows, pair], self.values[self._rows, pair]
        if p.num_distractors:
            step = np.clip(self.t - p.num_pairs, 0, p.num_distractors - 1)
            noise = self.noise[self._rows, step]  # (N, 2)
            key = np.where(phase == DISTRACTOR, noise[:, 0], key)
            value = np.where(phase == DISTRACTOR, noise[:, 1], value)
        key = np.where(phase == DONE, -1, key)
        value = np.where((phase == QUERY) | (phase == DONE), -1, value)
        return key, value, phase

    def _observe(self) -> np.ndarray:
        key, value, phase = self._shown()
        return np.concatenate(
            [self._key_table[key], self._value_table[value], self._flag_table[phase]], axis=1
        )

    def _world_state(self) -> np.ndarray:
        p = self.params
        key, value, _ = self._shown()
        m = p.num_pairs
        state = np.empty((self.num_envs, 2 * m + 4), dtype=np.float32)
        state[:, :m] = self.keys * (1.0 / (p.num_keys - 1))
        state[:, m : 2 * m] = self.values * (1.0 / (p.num_values - 1))
        state[:, 2 * m] = self.query * (1.0 / max(m - 1, 1))
        state[:, 2 * m + 1] = np.minimum(self.t, self.length - 1) * (1.0 / max(self.length - 1, 1))
        state[:, 2 * m + 2] = (key + 1) * (1.0 / p.num_keys)
        state[:, 2 * m + 3] = (value + 1) * (1.0 / p.num_values)
        return state

    def answers(self) -> np.ndarray:
        """The value paired with the queried key, per env."""
        return self.values[self._rows, self.query]

    def oracle_actions(self) -> np.ndarray:
        return np.where(self.t == self.length - 1, self.answers(), 0)

    @property
    def chance_return(self) -> float:
        return 2.0 / self.params.num_values - 1.0

    def _render_env(self, i: int) -> np.ndarray:
        p = self.params
        key, value, phase = (a[i] for a in self._shown())
        t = int(self.t[i])
        size, gap = 20, 4
        frame = canvas(124, max(320, 24 + (size + gap) * p.num_pairs))
        text(frame, 4, 4, f"ASSOCIATIVE RECALL  T {t}", WHITE, 2)
        text(frame, 31, 4, "K", GREY, 2)
        text(frame, 57, 4, "V", GREY, 2)
        for j in range(p.num_pairs):
            left = 20 + j * (size + gap)
            if j > t:  # not shown yet
                outline(frame, 26, left, size, size, GREY)
                outline(frame, 52, left, size, size, GREY)
                continue
            border = YELLOW if j == self.query[i] else None  # the hidden answer's pair
            symbol_box(frame, 26, left, size, int(self.keys[i, j]), border)
            symbol_box(frame, 52, left, size, int(self.values[i, j]), border)
        if phase == DISTRACTOR:
            now = f"NOISE K {key} V {value}"
        elif phase == QUERY:
            now = f"QUERY K {key}"
        elif phase == PAIR:
            now = f"PAIR K {key} V {value}"
        else:
            now = "DONE"
        text(frame, 80, 4, now, WHITE, 2)
        x = text(frame, 100, 4, "ANSWER ", GREY, 2)
        x = text(frame, 100, x, str(int(self.answers()[i])), YELLOW, 2)
        x = text(frame, 100, x + 8, "ACTION ", GREY, 2)
        x = text(frame, 100, x, str(int(self.last_actions[i])) if t > 0 else "-", WHITE, 2)
        reward = float(self.last_rewards[i])
        color = GREEN if reward > 0 else RED if reward < 0 else GREY
        text(frame, 100, x + 8, f"R {reward:+.0f}", color, 2)
        return frame


AssociativeRecall = scalar_view(AssociativeRecallVec, "AssociativeRecall")

PRESETS = {
    "Easy": dict(num_pairs=4, num_keys=8, num_values=4, num_distractors=0),
    "Medium": dict(num_pairs=8, num_keys=16, num_values=4, num_distractors=16),
    "Hard": dict(num_pairs=16, num_keys=32, num_values=4, num_distractors=64),
}
