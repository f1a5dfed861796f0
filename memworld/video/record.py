"""Videos of a trained agent, with its memory panel beside the env frame.

:func:`record_video` records any model (a MemoryPPO trained with ``.learn()`` in
Python, a loaded checkpoint, SB3's PPO or RecurrentPPO) on an env id;
:func:`record` does the same for a ``memworld train`` run folder, and
:class:`MemoryPanelCallback` puts the panel into TensorBoard during training.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from stable_baselines3.common.callbacks import BaseCallback

from memworld.video.panel import draw_panel, panel_vectors
from memworld.video.writer import write_video


def record_video(
    model: Any,
    env_id: str,
    path: str | Path,
    episodes: int = 1,
    seed: int = 12345,
    max_frames: int = 400,
    panel: bool = True,
    env_kwargs: dict | None = None,
    fps: int | None = None,
) -> Path:
    """Write a video of ``model`` acting on ``env_id`` with its memory panel; returns ``path``.

    The same video as ``memworld record`` writes for a run folder: each frame is the
    env's ``rgb_array`` frame with the memory panel beside it (heatmaps over time of
    the read/write weights of slot and dual memories, the addresses of bit memory, the
    hidden state of LSTM/GRU).

    Args:
        model: anything with SB3's ``predict(obs, state, episode_start, deterministic)``,
            e.g. ``MemoryPPO(...).learn(...)`` or ``MemoryPPO.load(path)``.
        env_id: a Gymnasium id or a memworld short name (``RepeatPreviousEasy``).
        path: the video file, ``.mp4`` or ``.gif``.
        episodes: episodes one after the other in the video (seeds ``seed``, ``seed + 1``...).
        seed: seed of the first episode.
        max_frames: frames per episode at most; an episode cut there warns.
        panel: draw the memory panel (False: the env frame alone).
        env_kwargs: task parameters, as in ``gym.make(env_id, **env_kwargs)``.
        fps: frames per second (default: the env's ``render_fps``, else 4).
    """
    from memworld import envs
    from memworld.memory.base import check_range

    check_range("episodes", episodes, 1, integer=True, fix="e.g. 1")
    check_range("max_frames", max_frames, 1, integer=True, fix="e.g. 400")
    if Path(path).suffix not in (".mp4", ".gif"):
        raise ValueError(f"path must end in .mp4 or .gif, got {str(path)!r}")
    env = gym.make(envs.resolve_id(env_id), render_mode="rgb_array", **(env_kwargs or {}))
    frames: list[np.ndarray] = []
    for episode in range(episodes):
        shot, ended = rollout_frames(model, env, seed + episode, max_frames, panel)
        frames += shot
        if not ended:
            warnings.warn(
                f"episode {episode} was still running at max_frames={max_frames}: its video "
                "is cut there; raise the limit with `memworld record --max-frames N` "
                "(max_frames=N in Python)",
                stacklevel=2,
            )
    rate = fps or env.metadata.get("render_fps", 4)
    env.close()
    return write_video(path, frames, fps=rate)


def record(
    run: str | Path,
    episodes: int = 1,
    fmt: str = "mp4",
    max_frames: int = 400,
    seed: int = 12345,
    panel: bool = True,
    checkpoint: str | Path = "best",
) -> list[Path]:
    """Write ``episodes`` videos of a run's agent to ``RUN/videos/episode<i>.<fmt>``.

    ``checkpoint`` is ``best`` (latest when there is no best), ``latest`` or a file.
    A video stops at ``max_frames`` frames even if its episode goes on (with a warning).
    """
    from memworld.memory.base import check_range
    from memworld.runs import checkpoint as find_checkpoint
    from memworld.train import algo_class, load_config

    check_range("episodes", episodes, 1, integer=True, fix="e.g. 1")
    if fmt not in ("mp4", "gif"):
        raise ValueError(f"format must be 'mp4' or 'gif', got {fmt!r}")
    config = load_config(run)
    ckpt = find_checkpoint(run, checkpoint)
    model = algo_class(config.algo).load(ckpt, device=config.device)
    paths = []
    for episode in range(episodes):
        path = Path(run) / "videos" / f"episode{episode}.{fmt}"
        paths.append(
            record_video(
                model,
                config.env,
                path,
                seed=seed + episode,
                max_frames=max_frames,
                panel=panel,
                env_kwargs=config.env_kwargs,
            )
        )
    return paths


def rollout_frames(
    model: Any, env: gym.Env, seed: int, max_frames: int, panel: bool
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


def panel_image(
    model: Any,
    env_id: str,
    seed: int = 12345,
    max_frames: int = 200,
    env_kwargs: dict | None = None,
) -> np.ndarray:
    """The last frame of one deterministic episode: env frame | memory panel (uint8 HWC)."""
    from memworld import envs

    env = gym.make(envs.resolve_id(env_id), render_mode="rgb_array", **(env_kwargs or {}))
    frames, _ = rollout_frames(model, env, seed, max_frames, panel=True)
    env.close()
    return frames[-1]


class MemoryPanelCallback(BaseCallback):
    """Logs the memory panel (:func:`panel_image`) to TensorBoard as ``memory/panel``.

    Logged every ``every`` env steps and when training ends, one deterministic
    episode each time, so TensorBoard's image tab shows the memory at each checkpoint.

    Args:
        env_id: the task to roll out (a scalar env with ``render_mode="rgb_array"``).
        every: env steps between two images.
        env_kwargs: task parameters.
        max_frames: frames of the episode at most.
    """

    def __init__(
        self, env_id: str, every: int, env_kwargs: dict | None = None, max_frames: int = 200
    ) -> None:
        super().__init__()
        self.env_id, self.every, self.env_kwargs, self.max_frames = (
            env_id,
            every,
            env_kwargs,
            max_frames,
        )
        self._last = 0
        self.images = 0

    def _on_training_start(self) -> None:
        self._last = self.num_timesteps

    def _on_step(self) -> bool:
        if self.num_timesteps - self._last >= self.every:
            self._log()
        return True

    def _on_training_end(self) -> None:
        self._log()
        self.logger.dump(self.num_timesteps)

    def _log(self) -> None:
        from stable_baselines3.common.logger import Image

        self._last = self.num_timesteps
        frame = panel_image(
            self.model, self.env_id, max_frames=self.max_frames, env_kwargs=self.env_kwargs
        )
        self.logger.record(
            "memory/panel", Image(frame, "HWC"), exclude=("stdout", "log", "json", "csv")
        )
        self.images += 1


def panel_callbacks(env_id: str, every: int, env_kwargs: dict | None = None) -> list:
    """The memory panel in TensorBoard (``memory/panel``) every ``every`` steps, for
    memworld's tasks (they all render ``rgb_array``); none for other envs."""
    if not env_id.startswith("memworld/"):
        return []
    return [MemoryPanelCallback(env_id, every, env_kwargs)]


def _compose(frame: np.ndarray, history: list, panel: bool) -> np.ndarray:
    if not panel:
        return frame
    return np.concatenate([frame, draw_panel(history, frame.shape[0])], axis=1)
