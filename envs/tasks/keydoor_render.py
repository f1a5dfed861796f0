"""KeyDoor's pictures: cell sprites for the pixel observation and the full-map frame."""

from __future__ import annotations

import numpy as np

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

FLOOR_RGB = (24, 24, 30)
WALL_RGB = (110, 110, 118)
AGENT_RGB = (255, 255, 255)


def cell_sprites(num_colors: int, size: int) -> np.ndarray:
    """(2 + 3 * num_colors, size, size, 3) uint8: one picture per cell code.

    Codes: 0 floor, 1 wall, ``2 + c`` key, ``2 + k + c`` door, ``2 + 2k + c``
    distractor ball of colour ``c`` (``k = num_colors``).
    """
    k = num_colors
    sprites = np.empty((2 + 3 * k, size, size, 3), dtype=np.uint8)
    sprites[:] = FLOOR_RGB
    sprites[1] = WALL_RGB
    i, j = np.mgrid[0:size, 0:size] + 0.5
    half = size / 2
    disc = (i - half) ** 2 + (j - half) ** 2 <= (0.36 * size) ** 2
    # A key: a square bow on top and a stem below, so it differs from a ball.
    bow = (i < 0.5 * size) & (np.abs(j - half) < 0.3 * size)
    stem = (i >= 0.3 * size) & (np.abs(j - half) < max(0.12 * size, 0.5))
    key = bow | stem
    frame = (i < 1) | (j < 1) | (i > size - 1) | (j > size - 1)  # a door's dark frame
    for c in range(k):
        color = PALETTE[c]
        sprites[2 + c][key] = color
        sprites[2 + k + c] = color
        sprites[2 + k + c][frame] = (color * 0.5).astype(np.uint8)
        sprites[2 + 2 * k + c][disc] = color
    return sprites


def agent_mask(size: int) -> np.ndarray:
    """(size, size) bool: the agent's marker drawn on the centre cell of a view."""
    i, j = np.mgrid[0:size, 0:size] + 0.5
    return np.abs(i - size / 2) + np.abs(j - size / 2) <= 0.3 * size


def view_pixels(view: np.ndarray, sprites: np.ndarray, marker: np.ndarray) -> np.ndarray:
    """(N, V, V) cell codes -> (N, V * P, V * P, 3) uint8 images with the agent at the centre."""
    n, v, _ = view.shape
    p = sprites.shape[1]
    tiles = sprites[view]  # (N, V, V, P, P, 3)
    image = tiles.transpose(0, 1, 3, 2, 4, 5).reshape(n, v * p, v * p, 3)
    c = (v // 2) * p
    centre = image[:, c : c + p, c : c + p]
    centre[:, marker] = AGENT_RGB
    return image


def map_frame(
    env, i: int, grid: np.ndarray, view: np.ndarray, sprites: np.ndarray, marker: np.ndarray
) -> np.ndarray:
    """The full map of env ``i`` with the agent, its view, the key's colour and the score."""
    offset = env.offset
    rows, cols = env.rows + 2, env.interior_width + 2  # with the outer wall
    cell = int(np.clip(600 // cols, 2, 12))
    small = cell_sprites(env.params.num_colors, cell)
    area = grid[offset - 1 : offset - 1 + rows, offset - 1 : offset - 1 + cols]
    world = small[area].transpose(0, 2, 1, 3, 4).reshape(rows * cell, cols * cell, 3)
    y, x = (int(env.agent_y[i]) - offset + 1) * cell, (int(env.agent_x[i]) - offset + 1) * cell
    world[y : y + cell, x : x + cell][agent_mask(cell)] = AGENT_RGB
    ego = view_pixels(view[None], sprites, marker)[0]
    height = 24 + world.shape[0] + 8 + max(ego.shape[0], 44) + 4
    frame = canvas(height, max(320, world.shape[1] + 16))
    text(frame, 4, 4, f"KEYDOOR  T {int(env.elapsed[i])}", WHITE, 2)
    frame[24 : 24 + world.shape[0], 8 : 8 + world.shape[1]] = world
    top = 24 + world.shape[0] + 8
    frame[top : top + ego.shape[0], 8 : 8 + ego.shape[1]] = ego
    outline(frame, top - 1, 7, ego.shape[0] + 2, ego.shape[1] + 2, GREY)
    x = 8 + ego.shape[1] + 12
    after = text(frame, top, x, "KEY ", GREY, 2)
    rect(frame, top, after, 10, 16, PALETTE[int(env.key_color[i])])  # the hidden answer
    text(frame, top, after + 24, "HELD" if env.has_key[i] else "", YELLOW, 2)
    reward = float(env.last_rewards[i])
    color = GREEN if reward > 0 else RED if reward < 0 else GREY
    text(frame, top + 18, x, f"R {reward:+.0f}", color, 2)
    return frame
