"""The memory panel drawn beside an env frame in recorded videos.

For each step, :func:`panel_vectors` picks what to show from the agent's
memory state: for slot and dual memories the step's read and write weights
over the slots (``read_slots``/``write_slots``, ``stm_read_weights``/
``stm_write_weights``), for bit memory the step's read and write addresses
over the 65,536 words (in ``MAX_ROWS`` bins), for LSTM/GRU the hidden state;
:func:`draw_panel` turns the last ``window`` steps into heatmaps (rows: slots or
units, columns: time).
"""

from __future__ import annotations

import numpy as np

from memworld.envs.render import GREY, WHITE, canvas, text

# (label, state keys tried in order); the first key present in the state is shown.
PANEL_KEYS = (
    ("READ W", ("read_slots", "stm_read_weights", "read_address")),
    ("WRITE W", ("write_slots", "stm_write_weights", "write_address")),
    ("HIDDEN", ("h", "pi_h", "ctrl_h", "hidden")),
)
ADDRESS_KEYS = ("read_address", "write_address")  # (B,) word addresses into ``words (B, N)``
MAX_ROWS = 64


def panel_vectors(state) -> dict[str, np.ndarray]:
    """Named 1-D vectors (env 0) to show for one step of a memory state.

    ``state`` is MemoryPPO's dict of (B, ...) arrays, RecurrentPPO's ``(h, c)``
    tuple or ``None`` (memoryless policies).
    """
    if state is None:
        return {}
    if isinstance(state, tuple):  # RecurrentPPO: (h, c) of shape (layers, B, H)
        return {"HIDDEN": np.asarray(state[0])[:, 0].reshape(-1)[:MAX_ROWS]}
    flat = {k.removeprefix("pi_"): np.asarray(v) for k, v in state.items()}
    out = {}
    for label, keys in PANEL_KEYS:
        for key in keys:
            if key in ADDRESS_KEYS and key in flat and "words" in flat:
                out[label] = _address_bins(int(flat[key][0]), flat["words"].shape[1])
                break
            if key in flat and flat[key].dtype.kind == "f":
                out[label] = _squash(flat[key][0].reshape(-1))
                break
    if not out:  # unknown module: its largest float tensor
        floats = {k: v for k, v in flat.items() if v.dtype.kind == "f"}
        if floats:
            key = max(floats, key=lambda k: floats[k][0].size)
            out[key.upper()[:8]] = _squash(floats[key][0].reshape(-1))
    return out


def _address_bins(address: int, num_words: int) -> np.ndarray:
    """One-hot of ``address`` over ``min(num_words, MAX_ROWS)`` equal bins of the address space."""
    bins = min(num_words, MAX_ROWS)
    v = np.zeros(bins, np.float32)
    v[address * bins // num_words] = 1.0
    return v


def _squash(v: np.ndarray) -> np.ndarray:
    """At most MAX_ROWS values: average neighbouring entries of long vectors."""
    if v.size <= MAX_ROWS:
        return v.astype(np.float32)
    pad = (-v.size) % MAX_ROWS
    v = np.concatenate([v, np.full(pad, v[-1])]) if pad else v
    return v.reshape(MAX_ROWS, -1).mean(axis=1).astype(np.float32)


def _colormap(x: np.ndarray) -> np.ndarray:
    """Values in [0, 1] to a dark-blue -> teal -> yellow ramp (uint8 RGB)."""
    stops = np.array([[20, 20, 60], [30, 120, 140], [90, 200, 100], [250, 230, 60]], float)
    pos = np.clip(x, 0, 1) * (len(stops) - 1)
    lo = np.floor(pos).astype(int).clip(0, len(stops) - 2)
    frac = (pos - lo)[..., None]
    return (stops[lo] * (1 - frac) + stops[lo + 1] * frac).astype(np.uint8)


def draw_panel(
    history: list[dict[str, np.ndarray]], height: int, width: int = 200, window: int = 48
) -> np.ndarray:
    """Heatmaps of the last ``window`` steps of each named vector in ``history``."""
    frame = canvas(height, width)
    labels = [label for label in history[-1]] if history and history[-1] else []
    if not labels:
        text(frame, height // 2 - 5, 6, "NO MEMORY", GREY, 2)
        return frame
    band = (height - 4) // len(labels)
    for b, label in enumerate(labels):
        top = 2 + b * band
        text(frame, top, 4, label, WHITE, 1)
        steps = [h[label] for h in history[-window:] if label in h]
        rows = max(len(s) for s in steps)
        grid = np.zeros((rows, window), np.float32)
        for j, s in enumerate(steps):
            grid[: len(s), window - len(steps) + j] = s
        lo, hi = np.percentile(grid, 1), np.percentile(grid, 99)
        norm = (grid - lo) / (hi - lo) if hi > lo else np.zeros_like(grid)
        img = _colormap(norm)
        h_avail, w_avail = band - 10, width - 8
        ys = np.linspace(0, rows - 1, max(h_avail, 1)).round().astype(int)
        xs = np.linspace(0, window - 1, w_avail).round().astype(int)
        frame[top + 8 : top + 8 + len(ys), 4 : 4 + len(xs)] = img[ys][:, xs]
    return frame
