"""KeyDoor: see a coloured key, carry it down a corridor, open the door of its colour."""

from __future__ import annotations

import dataclasses

import numpy as np
from gymnasium import spaces

from memworld.envs.core import VecTask
from memworld.envs.params import TaskParams, require
from memworld.envs.scalar import scalar_view
from memworld.envs.tasks.keydoor_render import agent_mask, cell_sprites, map_frame, view_pixels

UP, DOWN, LEFT, RIGHT = 0, 1, 2, 3
_MOVES = np.array([[-1, 0], [1, 0], [0, -1], [0, 1]], dtype=np.int64)  # (dy, dx) per action
FLOOR, WALL = 0, 1
ROOM_WIDTH = 3  # columns of the key room
FEATURES = 4  # per-cell type flags in the vector view: wall, key, door, ball


@dataclasses.dataclass(frozen=True, kw_only=True)
class KeyDoorParams(TaskParams):
    """Args:
    corridor_length: cells of the one-wide corridor between the key room and
        the door room: how long the agent must carry the key's colour (1-1000).
    num_colors: key and door colours; there is one door of each (2-8).
    num_distractors: coloured balls lying in the corridor (walkable, drawn from
        the same colours as the key) (0-1000, at most ``corridor_length``).
    view_size: side of the square egocentric view, centred on the agent (3, 5 or 7).
    obs_mode: ``"vector"`` (a flat float32 encoding of the view) or ``"pixels"``
        (a uint8 image of the view).
    cell_pixels: pixels per cell side in ``obs_mode="pixels"`` (2-16).
    agent_start: ``"key_room"`` (the agent starts in the key room, with the key)
        or ``"anywhere"`` (on a uniformly random floor cell of the key
        room, corridor or door room: the key is first seen after a walk of
        varying length, so where it lies in an episode's history varies).
    max_episode_steps: the time limit (truncation); ``None`` means
        ``2 * (corridor_length + 3 * rows + 10)``, twice the longest oracle path
        bound, where ``rows = max(3, num_colors)``.
    """

    corridor_length: int = 6
    num_colors: int = 2
    num_distractors: int = 2
    view_size: int = 5
    obs_mode: str = "vector"
    cell_pixels: int = 8
    agent_start: str = "key_room"

    RANGES = {
        "corridor_length": (1, 1000),
        "num_colors": (2, 8),
        "num_distractors": (0, 1000),
        "cell_pixels": (2, 16),
    }
    CHOICES = {
        "view_size": (3, 5, 7),
        "obs_mode": ("vector", "pixels"),
        "agent_start": ("key_room", "anywhere"),
    }

    def __post_init__(self) -> None:
        if self.max_episode_steps is None and isinstance(self.corridor_length, int):
            rows = max(3, self.num_colors) if isinstance(self.num_colors, int) else 3
            limit = 2 * (self.corridor_length + 3 * rows + 10)
            object.__setattr__(self, "max_episode_steps", limit)
        super().__post_init__()

    def check(self) -> None:
        require(
            self.num_distractors <= self.corridor_length,
            f"num_distractors ({self.num_distractors}) must be <= corridor_length "
            f"({self.corridor_length}): one ball a corridor cell at most; lower num_distractors",
        )


class KeyDoorVec(VecTask):
    """KeyDoor (batched).

    **Description.** A top-down gridworld of three parts along one row of
    rooms: a key room (3 columns x ``rows`` rows, ``rows = max(3,
    num_colors)``) where the agent starts on a random cell (anywhere on the
    floor with ``agent_start="anywhere"``) and a key of a random colour lies
    on another; a one-wide
    corridor of ``corridor_length`` cells on the middle row, with
    ``num_distractors`` coloured balls on random cells; and a door room (2
    columns) whose east wall holds one door of each colour on rows
    ``0 .. num_colors - 1`` in a random order. Walking onto the key picks it up
    (it disappears); walking into a door while holding the key opens it and
    ends the episode. A door does not open without the key. The agent sees only
    a ``view_size`` square around itself, and nothing in the observation says
    which key it holds: it must remember the colour it saw.

    **Observation.** ``obs_mode="vector"``: ``Box(0, 1, (view_size**2 *
    (4 + num_colors),), float32)``, for each view cell (row-major) the flags
    ``[wall, key, door, ball]`` then the object's colour one-hot (all zero for
    floor). ``obs_mode="pixels"``: ``Box(0, 255, (view_size * cell_pixels,
    view_size * cell_pixels, 3), uint8)``, the same view drawn channel-last
    with the agent marked at the centre.

    **Action.** ``Discrete(4)``: 0 up, 1 down, 2 left, 3 right. Walls (and
    doors, without the key) leave the agent where it is.

    **Reward.** ``+1`` for opening the door of the key's colour, ``-1`` for
    opening another; 0 otherwise. Return in {-1, 0, +1}. Chance 0: a
    memoryless agent that opens a door picks the right one with probability
    ``1/num_colors`` (expected ``2/num_colors - 1 <= 0``) and one that never
    opens one earns 0. A random walk's expected return is
    ``P(opens a door) * (2/num_colors - 1)``: exactly 0 for two colours, not
    known in closed form otherwise (``random_return`` is then ``None``).

    **End.** Terminates when a door opens; truncates at ``max_episode_steps``.

    **World state.** ``[agent row, agent column, holding key, key colour,
    key row, key column]``, the door colours of rows ``0 .. num_colors - 1``,
    the balls' corridor cells and colours (sorted by cell), and
    ``elapsed / max_episode_steps``; rows and columns are scaled to [0, 1] over
    the room interior and colours by ``1/(num_colors - 1)``: ``7 + num_colors
    + 2 * num_distractors`` floats.

    **Arguments.** See :class:`KeyDoorParams`.

    **Version history.** v0: first release; ``agent_start`` added later (its
    default draws the same episodes as before).
    """

    Params = KeyDoorParams

    def _spaces(self):
        p = self.params
        v = p.view_size
        if p.obs_mode == "pixels":
            side = v * p.cell_pixels
            obs = spaces.Box(0, 255, (side, side, 3), np.uint8)
        else:
            obs = spaces.Box(0.0, 1.0, (v * v * (FEATURES + p.num_colors),), np.float32)
        return obs, spaces.Discrete(4)

    def _allocate(self) -> None:
        p = self.params
        n, k, length = self.num_envs, p.num_colors, p.corridor_length
        self.rows = max(3, k)
        self.corridor_row = self.rows // 2
        self.corridor_start = ROOM_WIDTH  # interior column of the first corridor cell
        self.door_room = ROOM_WIDTH + length  # interior column where the door room starts
        self.door_column = self.door_room + 2
        self.interior_width = self.door_column + 1
        # Interior cell (r, c) lives at grid[offset + r, offset + c]; the margin
        # holds the outer wall and keeps every view slice inside the array.
        self.offset = p.view_size // 2 + 1
        shape = (self.rows + 2 * self.offset, self.interior_width + 2 * self.offset)
        self.template = np.full(shape, WALL, dtype=np.uint8)
        o = self.offset
        self.template[o : o + self.rows, o : o + ROOM_WIDTH] = FLOOR
        self.template[o + self.corridor_row, o : o + self.door_column] = FLOOR
        self.template[o : o + self.rows, o + self.door_room : o + self.door_column] = FLOOR
        # Floor cells as interior (row, column), the key room's first in the order of
        # its cell index r * ROOM_WIDTH + c: the agent's start cells under "anywhere".
        room = [(r, c) for r in range(self.rows) for c in range(ROOM_WIDTH)]
        corridor = [(self.corridor_row, c) for c in range(self.corridor_start, self.door_room)]
        doors = [(r, c) for r in range(self.rows) for c in range(self.door_room, self.door_column)]
        self._floor = np.array(room + corridor + doors, dtype=np.int64)
        self.grid = np.empty((n, *shape), dtype=np.uint8)
        self.agent_y = np.zeros(n, dtype=np.int64)  # grid coordinates
        self.agent_x = np.zeros(n, dtype=np.int64)
        self.has_key = np.zeros(n, dtype=bool)
        self.key_color = np.zeros(n, dtype=np.int64)
        self.key_y = np.zeros(n, dtype=np.int64)  # where the key lay (grid coordinates)
        self.key_x = np.zeros(n, dtype=np.int64)
        self.door_colors = np.zeros((n, k), dtype=np.int64)  # colour of the door on row j
        self.ball_cells = np.zeros((n, p.num_distractors), dtype=np.int64)  # corridor index
        self.ball_colors = np.zeros((n, p.num_distractors), dtype=np.int64)
        # A view is one flat gather: cell (y + dy, x + dx) of env i sits at
        # i * H * W + (y + dy) * W + (x + dx) in the flattened grid.
        r, width = p.view_size // 2, shape[1]
        self._row_base = np.arange(n) * (shape[0] * width)
        self._view_offsets = (np.arange(-r, r + 1)[:, None] * width + np.arange(-r, r + 1)).ravel()
        codes = 2 + 3 * k
        self._features = np.zeros((codes, FEATURES + k), dtype=np.float32)
        self._features[WALL, 0] = 1.0
        for kind in range(3):  # key, door, ball
            block = slice(2 + kind * k, 2 + (kind + 1) * k)
            self._features[block, 1 + kind] = 1.0
            self._features[block, FEATURES:] = np.eye(k, dtype=np.float32)
        self._sprites = cell_sprites(k, p.cell_pixels if p.obs_mode == "pixels" else 8)
        self._marker = agent_mask(self._sprites.shape[1])

    # ------------------------------------------------------------ dynamics
    def _reset_envs(self, idx) -> None:
        p = self.params
        k, o = p.num_colors, self.offset
        self.grid[idx] = self.template
        cells = self.rng.permutations(idx, ROOM_WIDTH * self.rows)  # agent, key: distinct cells
        self.agent_y[idx] = o + cells[:, 0] // ROOM_WIDTH
        self.agent_x[idx] = o + cells[:, 0] % ROOM_WIDTH
        self.key_y[idx] = o + cells[:, 1] // ROOM_WIDTH
        self.key_x[idx] = o + cells[:, 1] % ROOM_WIDTH
        self.key_color[idx] = self.rng.integers(idx, k)
        if p.agent_start == "anywhere":  # any floor cell but the key's
            start = self.rng.integers(idx, len(self._floor) - 1)
            start = start + (start >= cells[:, 1])
            self.agent_y[idx] = o + self._floor[start, 0]
            self.agent_x[idx] = o + self._floor[start, 1]
        self.has_key[idx] = False
        self.grid[idx, self.key_y[idx], self.key_x[idx]] = 2 + self.key_color[idx]
        self.door_colors[idx] = self.rng.permutations(idx, k)
        self.grid[idx[:, None], o + np.arange(k), o + self.door_column] = (
            2 + k + self.door_colors[idx]
        )
        balls = np.sort(self.rng.permutations(idx, p.corridor_length)[:, : p.num_distractors])
        self.ball_cells[idx] = balls
        self.ball_colors[idx] = self.rng.integers(idx, k, p.num_distractors)
        self.grid[idx[:, None], o + self.corridor_row, o + self.corridor_start + balls] = (
            2 + 2 * k + self.ball_colors[idx]
        )

    def _step_envs(self, idx, actions):
        k = self.params.num_colors
        ty = self.agent_y[idx] + _MOVES[actions, 0]
        tx = self.agent_x[idx] + _MOVES[actions, 1]
        code = self.grid[idx, ty, tx].astype(np.int64)
        is_key = (code >= 2) & (code < 2 + k)
        is_door = (code >= 2 + k) & (code < 2 + 2 * k)
        holding = self.has_key[idx]
        opens = is_door & holding
        moves = (code != WALL) & ~is_door
        self.agent_y[idx] = np.where(moves, ty, self.agent_y[idx])
        self.agent_x[idx] = np.where(moves, tx, self.agent_x[idx])
        self.has_key[idx] = holding | is_key
        picked = idx[is_key]
        self.grid[picked, ty[is_key], tx[is_key]] = FLOOR
        correct = code - (2 + k) == self.key_color[idx]
        reward = np.where(opens, np.where(correct, 1.0, -1.0), 0.0)
        return reward, opens

    # ------------------------------------------------------- observations
    def _views(self) -> np.ndarray:
        """(N, V, V) cell codes around every agent."""
        v = self.params.view_size
        centre = self._row_base + self.agent_y * self.grid.shape[2] + self.agent_x
        cells = self.grid.reshape(-1).take(centre[:, None] + self._view_offsets)
        return cells.reshape(self.num_envs, v, v)

    def _observe(self) -> np.ndarray:
        view = self._views()
        if self.params.obs_mode == "pixels":
            return view_pixels(view, self._sprites, self._marker)
        codes = view.reshape(self.num_envs, -1).astype(np.intp)
        return self._features.take(codes, axis=0).reshape(self.num_envs, -1)

    def _world_state(self) -> np.ndarray:
        p = self.params
        k, m, o = p.num_colors, p.num_distractors, self.offset
        to_row = 1.0 / (self.rows - 1)
        to_col = 1.0 / (self.interior_width - 1)
        to_color = 1.0 / (k - 1)
        state = np.empty((self.num_envs, 7 + k + 2 * m), dtype=np.float32)
        state[:, 0] = (self.agent_y - o) * to_row
        state[:, 1] = (self.agent_x - o) * to_col
        state[:, 2] = self.has_key
        state[:, 3] = self.key_color * to_color
        state[:, 4] = (self.key_y - o) * to_row
        state[:, 5] = (self.key_x - o) * to_col
        state[:, 6 : 6 + k] = self.door_colors * to_color
        state[:, 6 + k : 6 + k + m] = self.ball_cells * (1.0 / max(p.corridor_length - 1, 1))
        state[:, 6 + k + m : 6 + k + 2 * m] = self.ball_colors * to_color
        state[:, -1] = self.elapsed * (1.0 / p.max_episode_steps)
        return state

    # ------------------------------------------------------------- oracle
    def _zone(self, x: np.ndarray) -> np.ndarray:
        """0 key room, 1 corridor, 2 door room (door column included), from grid columns."""
        c = x - self.offset
        return (c >= self.corridor_start).astype(np.int64) + (c >= self.door_room)

    def targets(self) -> tuple[np.ndarray, np.ndarray]:
        """Grid cell each env's oracle heads for: the key, or once held, the matching door."""
        door_row = np.argmax(self.door_colors == self.key_color[:, None], axis=1)
        ty = np.where(self.has_key, self.offset + door_row, self.key_y)
        tx = np.where(self.has_key, self.offset + self.door_column, self.key_x)
        return ty, tx

    def oracle_actions(self) -> np.ndarray:
        """Scripted from the full state: reach the corridor row to change part, else
        line up the target's row first (rooms are open), then walk across."""
        ty, tx = self.targets()
        y, x = self.agent_y, self.agent_x
        same_part = self._zone(x) == self._zone(tx)
        row = np.where(same_part, ty, self.offset + self.corridor_row)
        vertical = np.where(y > row, UP, DOWN)
        horizontal = np.where(x > tx, LEFT, RIGHT)
        return np.where(y != row, vertical, horizontal)

    @property
    def chance_return(self) -> float:
        return 0.0

    @property
    def random_return(self) -> float | None:
        return 0.0 if self.params.num_colors == 2 else None

    def _render_env(self, i: int) -> np.ndarray:
        return map_frame(self, i, self.grid[i], self._views()[i], self._sprites, self._marker)


KeyDoor = scalar_view(KeyDoorVec, "KeyDoor")

PRESETS = {
    "Easy": dict(corridor_length=4, num_colors=2, num_distractors=1),
    "Medium": dict(corridor_length=16, num_colors=3, num_distractors=4),
    "Hard": dict(corridor_length=48, num_colors=4, num_distractors=16),
    "MediumRandomStart": dict(
        corridor_length=16, num_colors=3, num_distractors=4, agent_start="anywhere"
    ),
}
