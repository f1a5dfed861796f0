"""OccludedDynamics: track bouncing objects through occlusions; report where the queried one is."""

from __future__ import annotations

import dataclasses

import numpy as np
from gymnasium import spaces

from memworld.envs.core import VecTask
from memworld.envs.params import TaskParams
from memworld.envs.render import (
    GREEN,
    GREY,
    PALETTE,
    RED,
    WHITE,
    YELLOW,
    canvas,
    outline,
    rect,
    text,
)
from memworld.envs.scalar import scalar_view

REVEAL_STEPS = 2  # observations 0 and 1 show every object, so velocities can be read off


def bounce_step(pos: np.ndarray, vel: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One step of the dynamics: ``pos + vel`` reflected off the walls of [0, 1].

    A coordinate that leaves the box through a wall comes back mirrored
    (``-x`` below 0, ``2 - x`` above 1) and its velocity flips sign. Exact for
    ``|vel| <= 1``. Works on any shape; returns new arrays.
    """
    moved = pos + vel
    below, above = moved < 0.0, moved > 1.0
    new_pos = np.where(below, -moved, np.where(above, 2.0 - moved, moved))
    new_vel = np.where(below | above, -vel, vel)
    return new_pos, new_vel


def occlusion_probabilities(prob: float, duration: int, steps: int) -> np.ndarray:
    """P(an object is occluded at observation t), t = 0 .. steps - 1 (exact recursion).

    The occlusion process of one object: visible for the first ``REVEAL_STEPS``
    observations; afterwards a visible object becomes occluded with probability
    ``prob`` a step and then stays occluded for exactly ``duration``
    observations.
    """
    dist = np.zeros(duration + 1)  # [visible, occluded with 1 .. duration observations left]
    dist[0] = 1.0
    out = np.zeros(steps)
    for t in range(steps):
        if t >= REVEAL_STEPS:
            new = np.zeros_like(dist)
            new[0] = dist[0] * (1.0 - prob) + dist[1]
            new[1:duration] = dist[2:]
            new[duration] += dist[0] * prob
            dist = new
        out[t] = 1.0 - dist[0]
    return out


@dataclasses.dataclass(frozen=True, kw_only=True)
class OccludedDynamicsParams(TaskParams):
    """Args:
    num_objects: objects in the box (1-16).
    occlusion_duration: observations an occlusion lasts: how long the agent
        must carry an object's position and velocity forward (1-1000).
    occlusion_prob: chance a step that a visible object becomes occluded (0-1).
    max_speed: each velocity component has magnitude uniform in
        ``[max_speed / 2, max_speed]`` and a random sign (0.001-0.5).
    episode_length: observations (and predictions) per episode (3-10000).
    """

    num_objects: int = 3
    occlusion_duration: int = 4
    occlusion_prob: float = 0.1
    max_speed: float = 0.05
    episode_length: int = 64

    RANGES = {
        "num_objects": (1, 16),
        "occlusion_duration": (1, 1000),
        "occlusion_prob": (0.0, 1.0),
        "max_speed": (0.001, 0.5),
        "episode_length": (3, 10_000),
    }


class OccludedDynamicsVec(VecTask):
    """OccludedDynamics (batched).

    **Description.** ``num_objects`` points move in the unit box with constant
    hidden velocities and bounce off its walls (:func:`bounce_step`, exact and
    deterministic). Initial positions are uniform and velocity signs random, so
    every object's position is uniform in the box at every step. The first two
    observations show every object; afterwards a visible object becomes
    occluded with probability ``occlusion_prob`` a step and stays hidden for
    ``occlusion_duration`` observations. Each observation names one object,
    the query: a uniformly chosen occluded object when there is one, else any
    object uniformly. The agent reports where the queried object is *now* (at
    the observation it acts on), which for an occluded object means
    extrapolating its last seen motion, bounces included.

    **Observation.** ``Box(0, 1, (4 * num_objects,), float32)``: ``[x, y,
    visible]`` per object (``x = y = 0`` when occluded), then the query one-hot.

    **Action.** ``Box(0, 1, (2,), float32)``: the predicted ``(x, y)`` of the
    queried object.

    **Reward.** ``-e / episode_length`` each step, with ``e = ((x̂ - x)**2 +
    (ŷ - y)**2) / 2`` in [0, 1]. Return in [-1, 0]; the oracle earns 0. Chance
    (the best memoryless predictor: the seen position when the query is
    visible, the box centre when it is not) is ``-(1/12) * mean_t P(query
    occluded at t)``, computed exactly from :func:`occlusion_probabilities`
    with ``P(query occluded) = 1 - (1 - P(occluded))**num_objects``. A uniform
    random prediction earns ``-1/6``.

    **End.** Terminates after ``episode_length`` predictions.

    **World state.** Positions ``(num_objects, 2)`` then velocities
    ``(num_objects, 2)`` (raw, so ``bounce_step`` maps one world state to the
    next), the occluded flags, the occlusion steps left ``/
    occlusion_duration``, the query one-hot and ``t / episode_length``:
    ``7 * num_objects + 1`` floats.

    **Arguments.** See :class:`OccludedDynamicsParams`.

    **Version history.** v0: first release.
    """

    Params = OccludedDynamicsParams

    def _spaces(self):
        n = self.params.num_objects
        obs = spaces.Box(0.0, 1.0, (4 * n,), np.float32)
        return obs, spaces.Box(0.0, 1.0, (2,), np.float32)

    def _allocate(self) -> None:
        p = self.params
        shape = (self.num_envs, p.num_objects)
        self.pos = np.zeros((*shape, 2), dtype=np.float64)
        self.vel = np.zeros((*shape, 2), dtype=np.float64)
        self.hidden_left = np.zeros(shape, dtype=np.int64)  # 0: visible; else observations left
        self.query = np.zeros(self.num_envs, dtype=np.int64)
        self.t = np.zeros(self.num_envs, dtype=np.int64)
        self._rows = np.arange(self.num_envs)
        self._eye = np.eye(p.num_objects, dtype=np.float32)
        occluded = occlusion_probabilities(p.occlusion_prob, p.occlusion_duration, p.episode_length)
        query_occluded = 1.0 - (1.0 - occluded) ** p.num_objects
        self._chance = float(-query_occluded.mean() / 12.0)

    def _draw_query(self, idx) -> None:
        """A uniform occluded object where any is occluded, else a uniform object."""
        hidden = self.hidden_left[idx] > 0
        candidates = np.where(hidden.any(axis=1, keepdims=True), hidden, True)
        count = candidates.sum(axis=1)
        pick = np.minimum((self.rng.random(idx) * count).astype(np.int64), count - 1)
        self.query[idx] = np.argmax(np.cumsum(candidates, axis=1) > pick[:, None], axis=1)

    def _reset_envs(self, idx) -> None:
        p = self.params
        n = p.num_objects
        self.t[idx] = 0
        self.pos[idx] = self.rng.random(idx, (n, 2))
        speed = p.max_speed * (0.5 + 0.5 * self.rng.random(idx, (n, 2)))
        self.vel[idx] = np.where(self.rng.random(idx, (n, 2)) < 0.5, -speed, speed)
        self.hidden_left[idx] = 0
        self._draw_query(idx)

    def _step_envs(self, idx, actions):
        p = self.params
        target = self.pos[idx, self.query[idx]]  # (rows, 2)
        error = ((actions - target) ** 2).mean(axis=1)
        reward = -error / p.episode_length
        t = self.t[idx] + 1
        self.t[idx] = t
        self.pos[idx], self.vel[idx] = bounce_step(self.pos[idx], self.vel[idx])
        # Occlusion transitions; drawn every step so each row's stream advances alike.
        starts = self.rng.random(idx, p.num_objects) < p.occlusion_prob
        left = self.hidden_left[idx]
        left = np.where(left > 0, left - 1, np.where(starts, p.occlusion_duration, 0))
        self.hidden_left[idx] = np.where((t >= REVEAL_STEPS)[:, None], left, 0)
        self._draw_query(idx)
        return reward, t >= p.episode_length

    def _observe(self) -> np.ndarray:
        n = self.params.num_objects
        visible = self.hidden_left == 0
        obs = np.empty((self.num_envs, 4 * n), dtype=np.float32)
        per_object = obs[:, : 3 * n].reshape(self.num_envs, n, 3)
        per_object[..., :2] = np.where(visible[..., None], self.pos, 0.0)
        per_object[..., 2] = visible
        obs[:, 3 * n :] = self._eye[self.query]
        return obs

    def _world_state(self) -> np.ndarray:
        p = self.params
        n, rows = p.num_objects, self.num_envs
        return np.concatenate(
            [
                self.pos.reshape(rows, 2 * n),
                self.vel.reshape(rows, 2 * n),
                self.hidden_left > 0,
                self.hidden_left * (1.0 / p.occlusion_duration),
                self._eye[self.query],
                (self.t * (1.0 / p.episode_length))[:, None],
            ],
            axis=1,
            dtype=np.float32,
        )

    def oracle_actions(self) -> np.ndarray:
        return self.pos[self._rows, self.query].astype(np.float32)

    @property
    def chance_return(self) -> float:
        return self._chance

    @property
    def random_return(self) -> float:
        return -1.0 / 6.0

    @property
    def max_return(self) -> float:
        return 0.0

    def _render_env(self, i: int) -> np.ndarray:
        frame = canvas(200, 320)
        text(frame, 4, 4, f"OCCLUDED DYNAMICS  T {int(self.t[i])}", WHITE, 2)
        box, left, top, dot = 168, 8, 24, 8
        outline(frame, top - 1, left - 1, box + 2, box + 2, GREY)

        def to_px(xy):
            return top + int(xy[1] * (box - dot)), left + int(xy[0] * (box - dot))

        q = int(self.query[i])
        for j in range(self.params.num_objects):
            y, x = to_px(self.pos[i, j])
            color = PALETTE[j % len(PALETTE)]
            if self.hidden_left[i, j] > 0:  # hidden from the agent: drawn hollow
                outline(frame, y, x, dot, dot, color)
            else:
                rect(frame, y, x, dot, dot, color)
            if j == q:
                outline(frame, y - 3, x - 3, dot + 6, dot + 6, YELLOW)
        if self.t[i] > 0:  # the last prediction, a white cross
            y, x = to_px(self.last_actions[i])
            rect(frame, y + dot // 2 - 1, x - 2, 2, dot + 4, WHITE)
            rect(frame, y - 2, x + dot // 2 - 1, dot + 4, 2, WHITE)
        side = left + box + 12
        x = text(frame, 30, side, "QUERY ", GREY, 2)
        rect(frame, 30, x, 10, 10, PALETTE[q % len(PALETTE)])
        hidden = int((self.hidden_left[i] > 0).sum())
        text(frame, 50, side, f"HIDDEN {hidden}", GREY, 2)
        reward = float(self.last_rewards[i]) * self.params.episode_length
        color = GREEN if reward > -1e-3 else RED
        text(frame, 70, side, f"ERR {-reward:.3f}", color, 2)
        return frame


OccludedDynamics = scalar_view(OccludedDynamicsVec, "OccludedDynamics")

PRESETS = {
    "Easy": dict(num_objects=3, occlusion_duration=4, occlusion_prob=0.1, episode_length=64),
    "Medium": dict(num_objects=4, occlusion_duration=16, occlusion_prob=0.05, episode_length=128),
    "Hard": dict(num_objects=6, occlusion_duration=48, occlusion_prob=0.03, episode_length=256),
}
