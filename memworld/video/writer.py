"""Writing frames to mp4 / gif under a run folder."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import imageio.v2 as imageio
import numpy as np


def write_video(path: str | Path, frames: Sequence[np.ndarray], fps: int = 4) -> Path:
    """Write uint8 (H, W, 3) frames as mp4 (ffmpeg) or gif, chosen by the suffix."""
    path = Path(path)
    if path.suffix not in (".mp4", ".gif"):
        raise ValueError(f"video path must end in .mp4 or .gif, got {path.name!r}")
    if not frames:
        raise ValueError("no frames to write")
    path.parent.mkdir(parents=True, exist_ok=True)
    frames = [_even(f) for f in frames]
    if path.suffix == ".mp4":
        imageio.mimwrite(path, frames, fps=fps, macro_block_size=1)
    else:
        imageio.mimwrite(path, frames, duration=1000 / fps, loop=0)
    return path


def _even(frame: np.ndarray) -> np.ndarray:
    # H.264 wants even sides.
    h, w = frame.shape[:2]
    return np.ascontiguousarray(frame[: h - h % 2, : w - w % 2])
