"""Videos of a trained agent, with its memory panel beside the env frame."""

from __future__ import annotations

import warnings
from pathlib import Path

import gymnasium as gym
import numpy as np

from memworld.train import algo_class, checkpoint, load_config
from memworld.video.panel import draw_panel, panel_vectors
from memworld.video.writer import write_video


def record(
    run: str | Path,
    episodes: int = 1,
    fmt: str = "mp4",
    max_frames: int = 400,
    seed: int = 12345,
    panel: bool = True,
) -> list[Path]:
    """Write ``episodes`` videos of the run's best agent to ``RUN/videos/``.

    A video stops at ``max_frames`` frames even if its episode goes on (with a warning).
    """
    from memworld.memory.base import check_range

    check_range("episodes", episodes, 1, integer=True, fix="e.g. 1")
    check_range("max_frames", max_frames, 1, integer=True, fix="e.g. 400")
    if fmt not in ("mp4", "gif"):
        raise ValueError(f"format must be 'mp4' or 'gif', got {fmt!r}")
    config = load_config(run)
    model = algo_class(config.algo).load(checkpoint(run, "best"), device=config.device)
    if config.env.startswith("memworld/"):
        from memworld import envs  # noqa: F401
    env = gym.make(config.env, render_mode="rgb_array", **config.env_kwargs)
    paths = []
    for episode in range(episodes):
        frames, ended = rollout_frames(model, env, seed + episode, max_frames, panel)
        if not ended:
            warnings.warn(
                f"episode {episode} was still running at max_frames={max_frames}: its video "
                "is cut there; raise the limit with `memworld record --max-frames N` "
                "(record(max_frames=N))",
                stacklevel=2,
            )
        path = Path(run) / "videos" / f"episode{episode}.{fmt}"
        paths.append(write_video(path, frames, fps=env.metadata.get("render_fps", 4)))
    env.close()
    return paths


def rollout_frames(
    model, env: gym.Env, seed: int, max_frames: int, panel: bool
) -> tuple[list[np.ndarray], bool]:
    """One episode of ``model`` on ``env`` as frames (env frame | memory panel).

    Returns the frames and whether the episode ended within ``max_frames``.
    """
    obs, _ = env.reset(seed=seed)
    state, start, history, frames = None, np.ones(1, dtype=bool), [], []
    while len(frames) < max_frames:
        action, state = model.predict(obs, state=state, episode_start=start, deterministic=True)
        start = np.zeros(1, dtype=bool)
        history.append(panel_vectors(state))
        frames.append(_compose(env.render(), history, panel))
        obs, _, terminated, truncated, _ = env.step(action)
        if terminated or truncated:
            frames.append(_compose(env.render(), history, panel))
            return frames, True
    return frames, False


def _compose(frame: np.ndarray, history: list, panel: bool) -> np.ndarray:
    if not panel:
        return frame
    return np.concatenate([frame, draw_panel(history, frame.shape[0])], axis=1)
