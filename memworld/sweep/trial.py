"""One sweep trial: an ordinary run folder, evaluated every ``eval_every`` steps.

The trial writes ``evals.json`` (the evaluation curve, its MMER and the training
env-steps/s) after every evaluation and marks it ``"complete": true`` when training
ends; a resumed sweep skips the trials so marked.  ``eval.json`` is the last
evaluation in ``memworld eval``'s format.  An exception is appended, with its
attempt number, to ``error.txt`` and raised again, so Ray Tune can retry the trial
and the sweep can report it.
"""

from __future__ import annotations

import dataclasses
import shutil
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import numpy as np
from stable_baselines3.common.callbacks import BaseCallback

from memworld.runs import write_json
from memworld.sweep.config import Trial, hp_label
from memworld.sweep.folder import ERROR_FILE, EVALS_FILE, TRIAL_FILE, trial_status


class EvalCallback(BaseCallback):
    """Evaluates the policy every ``every`` env steps (and at the end) on fresh envs.

    Every evaluation plays the same ``episodes`` (envs seeded ``seed + 10_000``), so
    the curve moves only with the policy.  MMER is the best mean return so far.

    Args:
        train_config: the run's TrainConfig (the eval envs copy its env and kwargs).
        every: env steps between evaluations.
        episodes: episodes per evaluation.
        on_eval: called with each evaluation's record (writes files, reports to Tune).
    """

    def __init__(
        self, train_config, every: int, episodes: int, on_eval: Callable[[dict], None] | None = None
    ) -> None:
        super().__init__()
        self.train_config = train_config
        self.every = every
        self.episodes = episodes
        self.on_eval = on_eval
        self.evals: list[dict] = []
        self.eval_seconds = 0.0

    def _on_training_start(self) -> None:
        self._start = time.perf_counter()
        self._next_eval = self.every

    def _on_step(self) -> bool:
        return True

    def _on_rollout_end(self) -> None:
        if self.num_timesteps >= self._next_eval:
            self._evaluate()
            while self._next_eval <= self.num_timesteps:
                self._next_eval += self.every

    def _on_training_end(self) -> None:
        if not self.evals or self.evals[-1]["step"] < self.num_timesteps:
            self._evaluate()

    def _evaluate(self) -> None:
        from stable_baselines3.common.evaluation import evaluate_policy

        from memworld.train import make_env

        start = time.perf_counter()
        config = dataclasses.replace(
            self.train_config, n_envs=min(self.episodes, 8), seed=self.train_config.seed + 10_000
        )
        env = make_env(config)
        returns, lengths = evaluate_policy(
            self.model,
            env,
            n_eval_episodes=self.episodes,
            deterministic=True,
            return_episode_rewards=True,
        )
        env.close()
        self.eval_seconds += time.perf_counter() - start
        record = {
            "step": int(self.num_timesteps),
            "mean_return": float(np.mean(returns)),
            "std_return": float(np.std(returns)),
            "mean_length": float(np.mean(lengths)),
            "returns": [float(r) for r in returns],
        }
        self.evals.append(record)
        if self.on_eval is not None:
            self.on_eval(record)

    @property
    def mmer(self) -> float:
        return max(e["mean_return"] for e in self.evals)

    @property
    def env_steps_per_s(self) -> float:
        """Training throughput: env steps per second, evaluation time left out."""
        train_seconds = time.perf_counter() - self._start - self.eval_seconds
        return self.num_timesteps / max(train_seconds, 1e-9)


def run_trial(
    trial: Trial, sweep_dir: str | Path, report: Callable[[dict], None] | None = None
) -> dict:
    """Train ``trial`` into ``<sweep_dir>/<trial.name>``; returns its final evals.json."""
    folder = Path(sweep_dir) / trial.name
    done = trial_status(sweep_dir, trial)
    if done is not None:
        if report is not None:
            report(_metrics(done["evals"][-1], done["mmer"], done["env_steps_per_s"]))
        return done
    attempt = _clear_attempt(folder)
    write_json(folder / TRIAL_FILE, trial.to_dict())
    try:
        return _train(trial, folder, attempt, report)
    except Exception:
        with open(folder / ERROR_FILE, "a") as f:
            f.write(f"--- attempt {attempt}\n{traceback.format_exc()}")
        raise


def _train(trial: Trial, folder: Path, attempt: int, report) -> dict:
    """Train with periodic evaluation (evals.json rewritten after each); the final summary."""
    from memworld.train import TrainConfig, train

    config = TrainConfig(**trial.train)
    meta = {
        "name": trial.name,
        "cell": trial.cell,
        "env": config.env,
        "algo": config.algo,
        "memory": config.memory_label,
        "seed": trial.seed,
        "variant": trial.variant,
        "overrides": trial.overrides,
        "attempt": attempt,
    }
    start = time.perf_counter()

    def on_eval(record: dict) -> None:
        summary = _summary(meta, callback, complete=False, start=start)
        write_json(folder / EVALS_FILE, summary)
        if report is not None:
            report(_metrics(record, summary["mmer"], summary["env_steps_per_s"]))

    callback = EvalCallback(config, trial.eval_every, trial.eval_episodes, on_eval=on_eval)
    train(config, run=folder, progress=False, callbacks=[callback])
    summary = _summary(meta, callback, complete=True, start=start)
    last = callback.evals[-1]
    write_json(
        folder / "eval.json",  # `memworld eval`'s format, from the last evaluation
        {
            "env": config.env,
            "algo": config.algo,
            "memory": config.memory_label,
            "checkpoint": None,
            "episodes": trial.eval_episodes,
            "deterministic": True,
            "mean_return": last["mean_return"],
            "std_return": last["std_return"],
            "mean_length": last["mean_length"],
            "returns": last["returns"],
            "num_timesteps": last["step"],
            "mmer": summary["mmer"],
        },
    )
    write_json(folder / EVALS_FILE, summary)
    return summary


def tune_trainable(config: dict, trials: dict, sweep_dir: str) -> None:
    """Ray Tune function trainable: ``config["trial"]`` names a trial, the rest overrides it.

    Searchers (Optuna) put sampled values under their dotted keys next to ``trial``.
    """
    import torch
    from ray import tune

    torch.set_num_threads(
        max(1, int(tune.get_context().get_trial_resources().required_resources.get("CPU", 1)))
    )
    run_trial(resolve_trial(config, trials), sweep_dir, report=tune.report)


def resolve_trial(config: dict, trials: dict) -> Trial:
    """The trial a Tune ``config`` stands for: ``trials[config["trial"]]`` plus overrides."""
    trial = Trial(**trials[config["trial"]])
    overrides = {k: v for k, v in config.items() if k != "trial"}
    return trial.override(overrides, variant=hp_label(overrides)) if overrides else trial


def _summary(meta: dict, callback: EvalCallback, complete: bool, start: float) -> dict:
    return {
        **meta,
        "complete": complete,
        "mmer": callback.mmer,
        "env_steps_per_s": callback.env_steps_per_s,
        "eval_s": callback.eval_seconds,
        "wall_s": time.perf_counter() - start,
        "evals": callback.evals,
    }


def _metrics(record: dict, mmer: float, env_steps_per_s: float) -> dict:
    return {
        "mean_return": record["mean_return"],
        "mmer": mmer,
        "env_steps": record["step"],
        "env_steps_per_s": env_steps_per_s,
    }


def _clear_attempt(folder: Path) -> int:
    """Empty a half-written trial folder (keeping error.txt); returns this attempt's number."""
    errors = folder / ERROR_FILE
    previous = errors.read_text() if errors.exists() else ""
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    if previous:
        errors.write_text(previous)
    return previous.count("--- attempt ") + 1
