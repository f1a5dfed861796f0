"""TMaze: a cue at the start of a corridor says which arm of the far junction pays."""

from __future__ import annotations

import dataclasses

import numpy as np
from gymnasium import spaces

from memworld.envs.core import VecTask
from memworld.envs.params import TaskParams
from memworld.envs.render import (
    BLACK,
    GREEN,
    GREY,
    RED,
    WHITE,
    YELLOW,
    canvas,
    outline,
    rect,
    text,
)
from memworld.envs.scalar import scalar_view

# Active-mode actions; passive mode uses only the two arms, as actions 0 (up) and 1 (down).
FORWARD, BACK, UP, DOWN = 0, 1, 2, 3
# Observation columns.
CUE_UP, CUE_DOWN, CORRIDOR, JUNCTION = 0, 1, 2, 3


@dataclasses.dataclass(frozen=True, kw_only=True)
class TMazeParams(TaskParams):
    """Args:
    length: corridor cells from the cue (cell 0) to the junction (cell
        ``length - 1``): how long the agent must remember the cue (2-10000).
    mode: ``"passive"``: the agent is carried forward one cell a step and only
        its action at the junction counts; ``"active"``: it must walk there
        itself, under a time limit.
    max_episode_steps: the time limit (truncation). ``None`` means no limit in
        passive mode and ``2 * length`` in active mode.
    """

    length: int = 10
    mode: str = "passive"

    RANGES = {"length": (2, 10_000)}
    CHOICES = {"mode": ("passive", "active")}

    def __post_init__(self) -> None:
        if self.mode == "active" and self.max_episode_steps is None:
            object.__setattr__(self, "max_episode_steps", 2 * self.length)
        super().__post_init__()


class TMazeVec(VecTask):
    """TMaze (batched).

    **Description.** A corridor of ``length`` cells; cell 0 shows a cue (up or
    down, uniform), cell ``length - 1`` is a junction with an arm up and an arm
    down. Entering the arm the cue named pays; the other costs. In
    ``mode="passive"`` the agent moves one cell forward each step whatever it
    does and chooses an arm at the junction (Bakker 2002; Ni et al. 2023). In
    ``mode="active"`` it walks: forward, back, or into an arm (up / down, which
    only leads somewhere at the junction), and the cue shows whenever it stands
    on cell 0.

    **Observation.** ``Box(0, 1, (4,), float32)``: ``[cue up, cue down,
    corridor, junction]``, one of which is 1. Every corridor cell looks the
    same, so the position is not observed.

    **Action.** Passive: ``Discrete(2)``, 0 = up arm, 1 = down arm (ignored
    before the junction). Active: ``Discrete(4)``, 0 = forward, 1 = back,
    2 = up, 3 = down (walls leave the agent where it is).

    **Reward.** ``+1`` for entering the cued arm, ``-1`` for the other, 0 at
    every other step (no step penalty). Return in {-1, 0, +1}; chance 0: a
    memoryless agent picks the right arm half the time, and a random walk's arm
    is independent of the cue, so its expected return is 0 as well.

    **End.** Terminates when an arm is entered (passive: after ``length``
    actions). Active mode truncates at ``max_episode_steps`` (default
    ``2 * length``) with return 0.

    **World state.** ``[cue (0 up, 1 down), position / (length - 1),
    elapsed / horizon]``, where the horizon is ``length`` (passive) or the
    time limit (active).

    **Arguments.** See :class:`TMazeParams`.

    **Version history.** v0: first release.
    """

    Params = TMazeParams

    def _spaces(self):
        n_actions = 2 if self.params.mode == "passive" else 4
        return spaces.Box(0.0, 1.0, (4,), np.float32), spaces.Discrete(n_actions)

    def _allocate(self) -> None:
        p = self.params
        self.active = p.mode == "active"
        self.horizon = p.max_episode_steps if self.active else p.length
        self.cue = np.zeros(self.num_envs, dtype=np.int64)  # 0: up arm pays, 1: down arm
        self.pos = np.zeros(self.num_envs, dtype=np.int64)
        self._eye = np.eye(4, dtype=np.float32)

    def _reset_envs(self, idx) -> None:
        self.pos[idx] = 0
        self.cue[idx] = self.rng.integers(idx, 2)

    def _step_envs(self, idx, actions):
        junction = self.pos[idx] == self.params.length - 1
        if self.active:
            arm = np.where(actions == UP, 0, np.where(actions == DOWN, 1, -1))
            chose = junction & (arm >= 0)
            move = np.where(actions == FORWARD, 1, np.where(actions == BACK, -1, 0))
            self.pos[idx] = np.clip(self.pos[idx] + move, 0, self.params.length - 1)
        else:
            arm = actions
            chose = junction
            self.pos[idx] = np.minimum(self.pos[idx] + 1, self.params.length - 1)
        reward = np.where(chose, np.where(arm == self.cue[idx], 1.0, -1.0), 0.0)
        return reward, chose

    def _cell(self) -> np.ndarray:
        cell = np.full(self.num_envs, CORRIDOR, dtype=np.int64)
        cell[self.pos == self.params.length - 1] = JUNCTION
        start = self.pos == 0
        cell[start] = self.cue[start]  # CUE_UP or CUE_DOWN
        return cell

    def _observe(self) -> np.ndarray:
        return self._eye.take(self._cell(), axis=0)

    def _world_state(self) -> np.ndarray:
        state = np.empty((self.num_envs, 3), dtype=np.float32)
        state[:, 0] = self.cue
        state[:, 1] = self.pos * (1.0 / (self.params.length - 1))
        state[:, 2] = self.elapsed * (1.0 / self.horizon)
        return state

    def oracle_actions(self) -> np.ndarray:
        if not self.active:
            return self.cue.copy()
        junction = self.pos == self.params.length - 1
        return np.where(junction, UP + self.cue, FORWARD)

    @property
    def chance_return(self) -> float:
        return 0.0

    def _render_env(self, i: int) -> np.ndarray:
        p = self.params
        width = 320
        frame = canvas(120, width)
        text(frame, 4, 4, f"TMAZE {p.mode.upper()}  T {int(self.elapsed[i])}", WHITE, 2)
        # The corridor maps onto a fixed 280 px strip whatever its length.
        left, top, strip, h = 8, 54, 280, 14
        rect(frame, top, left, h, strip, GREY)
        rect(frame, top, left, h, 8, YELLOW)  # the cue cell
        arm_left = left + strip
        rect(frame, top - 2 * h, arm_left + 4, 5 * h, 6, GREY)  # the junction's cross bar
        for arm, arm_top in enumerate((top - 2 * h, top + 2 * h)):
            color = GREEN if arm == self.cue[i] else RED  # the hidden answer
            rect(frame, arm_top, arm_left, h, 14, color)
        cue_top = top - 2 * h if self.cue[i] == 0 else top + 2 * h
        outline(frame, cue_top - 2, arm_left - 2, h + 4, 18, YELLOW)
        x = left + int(round(self.pos[i] * (strip - 6) / (p.length - 1)))
        rect(frame, top + 2, x, h - 4, 6, BLACK)
        rect(frame, top + 3, x + 1, h - 6, 4, WHITE)  # the agent
        text(frame, 96, 4, f"CELL {int(self.pos[i])}/{p.length - 1}", GREY, 2)
        cue = "UP" if self.cue[i] == 0 else "DOWN"
        x = text(frame, 96, 150, f"CUE {cue}", YELLOW, 2)
        reward = float(self.last_rewards[i])
        color = GREEN if reward > 0 else RED if reward < 0 else GREY
        text(frame, 96, x + 8, f"R {reward:+.0f}", color, 2)
        return frame


TMaze = scalar_view(TMazeVec, "TMaze")

PRESETS = {
    "Easy": dict(length=10, mode="passive"),
    "Medium": dict(length=100, mode="passive"),
    "Hard": dict(length=100, mode="active"),
}
