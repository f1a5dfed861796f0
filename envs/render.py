"""Plain-numpy drawing: rectangles, grids and a 3x5 bitmap font, no window, no pygame."""

from __future__ import annotations

import numpy as np

# 3x5 glyphs, one string of 15 bits per character (row-major, '1' = ink).
_GLYPHS = {
    "0": "111101101101111",
    "1": "010110010010111",
    "2": "111001111100111",
    "3": "111001111001111",
    "4": "101101111001001",
    "5": "111100111001111",
    "6": "111100111101111",
    "7": "111001010010010",
    "8": "111101111101111",
    "9": "111101111001111",
    "A": "010101111101101",
    "B": "110101110101110",
    "C": "011100100100011",
    "D": "110101101101110",
    "E": "111100110100111",
    "F": "111100110100100",
    "G": "011100101101011",
    "H": "101101111101101",
    "I": "111010010010111",
    "J": "001001001101010",
    "K": "101101110101101",
    "L": "100100100100111",
    "M": "101111111101101",
    "N": "110101101101101",
    "O": "010101101101010",
    "P": "110101110100100",
    "Q": "010101101110011",
    "R": "110101110101101",
    "S": "011100010001110",
    "T": "111010010010010",
    "U": "101101101101111",
    "V": "101101101101010",
    "W": "101101111111101",
    "X": "101101010101101",
    "Y": "101101010010010",
    "Z": "111001010100111",
    " ": "000000000000000",
    "-": "000000111000000",
    "+": "000010111010000",
    "=": "000111000111000",
    "?": "111001011000010",
    ":": "000010000010000",
    ".": "000000000000010",
    "/": "001001010100100",
    ">": "100010001010100",
    "<": "001010100010001",
    "!": "010010010000010",
    "#": "101111101111101",
}
_FONT = {c: np.array([int(b) for b in g], dtype=bool).reshape(5, 3) for c, g in _GLYPHS.items()}

WHITE = (255, 255, 255)
BLACK = (0, 0, 0)
GREY = (128, 128, 128)
DARK = (40, 40, 48)
GREEN = (60, 200, 90)
RED = (220, 60, 60)
YELLOW = (240, 210, 60)
# Distinct colours for symbols / objects (index modulo the palette).
PALETTE = np.array(
    [
        (230, 25, 75),
        (60, 180, 75),
        (255, 225, 25),
        (0, 130, 200),
        (245, 130, 48),
        (145, 30, 180),
        (70, 240, 240),
        (240, 50, 230),
        (210, 245, 60),
        (250, 190, 212),
        (0, 128, 128),
        (220, 190, 255),
        (170, 110, 40),
        (255, 250, 200),
        (128, 0, 0),
        (170, 255, 195),
    ],
    dtype=np.uint8,
)


def canvas(height: int, width: int, color: tuple[int, int, int] = DARK) -> np.ndarray:
    """A new (height, width, 3) uint8 frame filled with ``color``."""
    frame = np.empty((height, width, 3), dtype=np.uint8)
    frame[:] = color
    return frame


def rect(frame: np.ndarray, top: int, left: int, h: int, w: int, color) -> None:
    """Fill a rectangle, clipped to the frame."""
    frame[max(top, 0) : max(top + h, 0), max(left, 0) : max(left + w, 0)] = color


def outline(frame: np.ndarray, top: int, left: int, h: int, w: int, color, t: int = 1) -> None:
    """Draw a rectangle's border of thickness ``t``."""
    rect(frame, top, left, t, w, color)
    rect(frame, top + h - t, left, t, w, color)
    rect(frame, top, left, h, t, color)
    rect(frame, top, left + w - t, h, t, color)


def text(frame: np.ndarray, top: int, left: int, s: str, color=WHITE, scale: int = 2) -> int:
    """Draw ``s`` (upper-cased) with the 3x5 font; returns the x after the last glyph."""
    x = left
    for ch in s.upper():
        glyph = _FONT.get(ch, _FONT["?"])
        big = np.kron(glyph, np.ones((scale, scale), dtype=bool))
        region = frame[top : top + big.shape[0], x : x + big.shape[1]]
        region[big[: region.shape[0], : region.shape[1]]] = color
        x += 4 * scale
    return x


def symbol_color(symbol: int) -> np.ndarray:
    return PALETTE[int(symbol) % len(PALETTE)]


def symbol_box(frame: np.ndarray, top: int, left: int, size: int, symbol: int, border=None) -> None:
    """A coloured square with the symbol's number written on it."""
    rect(frame, top, left, size, size, symbol_color(symbol))
    text(frame, top + size // 2 - 5, left + 3, str(int(symbol)), BLACK, scale=2)
    if border is not None:
        outline(frame, top - 2, left - 2, size + 4, size + 4, border, t=2)


def upscale(grid_rgb: np.ndarray, cell: int) -> np.ndarray:
    """Nearest-neighbour upscaling of a (h, w, 3) image by ``cell``."""
    return np.repeat(np.repeat(grid_rgb, cell, axis=0), cell, axis=1)


def recall_frame(
    title: str,
    shown: np.ndarray,
    marked: int | None,
    answer: int | None,
    action: int | None,
    reward: float,
    footer: str = "",
    width: int = 320,
) -> np.ndarray:
    """The standard frame of a symbol-recall task.

    Args:
        title: task name and step, drawn on top.
        shown: the recent symbols, oldest first (-1 draws an empty cell); the
            last one is the current observation.
        marked: index into ``shown`` of the symbol the answer refers to, boxed in yellow.
        answer: the hidden correct action (``None`` when no answer is due).
        action: the agent's last action (``None`` before the first step).
        reward: the last reward, coloured green / red by sign.
        footer: an extra line (e.g. a query).
    """
    frame = canvas(128, width)
    text(frame, 4, 4, title, WHITE, 2)
    size, gap = 20, 4
    keep = min(len(shown), (width - 8) // (size + gap))
    dropped = len(shown) - keep
    shown = shown[dropped:]
    for j, sym in enumerate(shown):
        left = 6 + j * (size + gap)
        if sym < 0:
            outline(frame, 30, left, size, size, GREY)
        else:
            border = YELLOW if marked is not None and j == marked - dropped else None
            symbol_box(frame, 30, left, size, int(sym), border)
    rect(frame, 54, 6 + (len(shown) - 1) * (size + gap), 3, size, WHITE)  # "now" marker
    x = text(frame, 66, 4, "ANSWER ", GREY, 2)
    text(frame, 66, x, "-" if answer is None else str(int(answer)), YELLOW, 2)
    x = text(frame, 84, 4, "ACTION ", GREY, 2)
    x = text(frame, 84, x, "-" if action is None else str(int(action)), WHITE, 2)
    color = GREEN if reward > 0 else RED if reward < 0 else GREY
    text(frame, 84, x + 8, f"R {reward:+.2f}", color, 2)
    if footer:
        text(frame, 104, 4, footer, WHITE, 2)
    return frame
