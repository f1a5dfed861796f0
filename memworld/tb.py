"""SB3 logging into memworld's TensorBoard tags, and the training callback."""

from __future__ import annotations

import time
from collections import deque
from pathlib import Path
from typing import Any

import numpy as np
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.logger import Logger, TensorBoardOutputFormat

# SB3 key prefix -> memworld tag prefix.
RENAMES = {"train/": "losses/"}


class MemworldTensorBoard(TensorBoardOutputFormat):
    """TensorBoard writer that files SB3's ``train/*`` under ``losses/*``."""

    def write(self, key_values: dict[str, Any], key_excluded: dict, step: int = 0) -> None:
        renamed, excluded = {}, {}
        for key, value in key_values.items():
            new = key
            for old, tag in RENAMES.items():
                if key.startswith(old):
                    new = tag + key[len(old) :]
            renamed[new] = value
            excluded[new] = key_excluded.get(key, ())
        super().write(renamed, excluded, step)


def memworld_logger(folder: str | Path) -> Logger:
    """An SB3 logger that writes memworld's TensorBoard tags into ``folder``."""
    return Logger(folder=str(folder), output_formats=[MemworldTensorBoard(str(folder))])


class TrainCallback(BaseCallback):
    """Logs ``charts/*``, shows a progress bar and saves latest/best checkpoints.

    Args:
        total_steps: steps asked of this ``learn`` call (the progress bar grows past it
            when SB3 finishes its last rollout beyond them).
        checkpoint_dir: where ``latest.zip`` and ``best.zip`` go.
        checkpoint_every: save ``latest.zip`` every this many env steps (and at the end).
        window: episodes averaged for the mean return (and the best checkpoint).
        progress: show a rich progress bar.
    """

    def __init__(
        self,
        total_steps: int,
        checkpoint_dir: str | Path,
        checkpoint_every: int = 10_000,
        window: int = 50,
        progress: bool = True,
    ) -> None:
        super().__init__()
        self.total_steps = total_steps
        self.checkpoint_dir = Path(checkpoint_dir)
        self.checkpoint_every = checkpoint_every
        self.returns: deque[float] = deque(maxlen=window)
        self.best_mean = -np.inf
        self.progress = progress
        self._bar = None
        self._last_save = 0

    def _on_training_start(self) -> None:
        self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
        self._start_steps, self._start_time = self.num_timesteps, time.perf_counter()
        self._last_save = self.num_timesteps
        if self.progress:
            from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

            self._bar = Progress(
                TextColumn("[bold]train"),
                BarColumn(),
                TextColumn("{task.completed:,}/{task.total:,}"),
                TextColumn("{task.fields[fps]:>7,.0f} fps"),
                TextColumn("return {task.fields[ret]}"),
                TimeRemainingColumn(),
            )
            self._bar.start()
            self._task = self._bar.add_task("train", total=self.total_steps, fps=0.0, ret="-")

    def _on_step(self) -> bool:
        for info in self.locals.get("infos", []):
            episode = info.get("episode")
            if episode is not None:
                self.returns.append(float(episode["r"]))
                self.logger.record_mean("charts/episodic_return", float(episode["r"]))
                self.logger.record_mean("charts/episode_length", float(episode["l"]))
        done = self.num_timesteps - self._start_steps
        if self._bar is not None:
            fps = done / max(time.perf_counter() - self._start_time, 1e-9)
            ret = f"{np.mean(self.returns):+.3f}" if self.returns else "-"
            # SB3 trains whole rollouts, so it can pass total_steps: count what it trained.
            total = max(done, self.total_steps)
            self._bar.update(self._task, completed=done, total=total, fps=fps, ret=ret)
        if self.num_timesteps - self._last_save >= self.checkpoint_every:
            self._save()
        return True

    def _on_rollout_end(self) -> None:
        elapsed = max(time.perf_counter() - self._start_time, 1e-9)
        self.logger.record("charts/sps", (self.num_timesteps - self._start_steps) / elapsed)

    def _on_training_end(self) -> None:
        self.logger.dump(self.num_timesteps)  # SB3 leaves the last train() metrics undumped
        self._save()
        if self._bar is not None:
            self._bar.stop()

    def _save(self) -> None:
        self._last_save = self.num_timesteps
        self.model.save(self.checkpoint_dir / "latest.zip")
        if len(self.returns) and np.mean(self.returns) > self.best_mean:
            self.best_mean = float(np.mean(self.returns))
            self.model.save(self.checkpoint_dir / "best.zip")

    @property
    def mean_return(self) -> float | None:
        return float(np.mean(self.returns)) if self.returns else None
