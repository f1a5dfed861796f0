"""Training runs: config, algorithms, run folders, resume and evaluation."""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import json
from pathlib import Path
from typing import Any

import yaml

from memworld.args import check_device, check_keys, check_seed, resolve_device
from memworld.memory.base import check_range
from memworld.runs import (  # noqa: F401  (checkpoint: imported from here too)
    checkpoint,
    package_versions,
    read_run_config,
    run_dir,
    torch_threads,
    write_json,
)
from memworld.tb import TrainCallback, memworld_logger

ALGOS = ("memoryppo", "ppo", "recurrentppo", "a2c", "dqn", "memorydqn", "memorysac")
MEMORY_ALGOS = ("memoryppo", "memorydqn", "memorysac")  # algorithms that take --memory
SET_BY_CONFIG = {"seed", "device", "verbose"}  # TrainConfig fields, not hyperparams


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything needed to reproduce a training run (written to config.json).

    Args:
        env: a Gymnasium id (``memworld/...`` ids run batched).
        algo: one of ``memoryppo``, ``ppo``, ``recurrentppo``, ``a2c``, ``dqn``,
            ``memorydqn`` (Discrete actions), ``memorysac`` (Box actions).
        memory: memory module name for ``memoryppo``, ``memorydqn`` and ``memorysac``
            (see ``memworld list memory``); the
            other algorithms have none and record ``None``.
        steps: env steps to train.
        n_envs: envs in the batch.
        seed: seed of the envs and the algorithm.
        device: torch device (``cpu``, ``cuda``, ``auto``).
        hyperparams: keyword arguments of the algorithm (e.g. ``n_steps``).
        memory_kwargs: keyword arguments of the memory module.
        env_kwargs: task parameters.
        checkpoint_every: save ``latest.zip`` every this many steps.
        torch_threads: torch's CPU threads while training (``memworld train --threads``).
            1 by default, as MemoryPPO's own ``torch_threads``: memworld's networks are
            small, and on a busy machine torch's default thread count ran MemoryPPO slower.
    """

    env: str = "memworld/RepeatPreviousEasy-v0"
    algo: str = "memoryppo"
    memory: str | None = "gru"
    steps: int = 50_000
    n_envs: int = 8
    seed: int = 0
    device: str = "cpu"
    hyperparams: dict = dataclasses.field(default_factory=dict)
    memory_kwargs: dict = dataclasses.field(default_factory=dict)
    env_kwargs: dict = dataclasses.field(default_factory=dict)
    checkpoint_every: int = 10_000
    torch_threads: int = 1

    def __post_init__(self) -> None:
        if self.algo not in ALGOS:
            raise ValueError(f"algo must be one of {list(ALGOS)}, got {self.algo!r}")
        if self.algo in MEMORY_ALGOS:
            from memworld import memory

            if self.memory not in memory.names():
                close = difflib.get_close_matches(str(self.memory), memory.names(), n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise ValueError(
                    f"memory must be one of {memory.names()} for {self.algo}, got "
                    f"{self.memory!r}{hint}; `memworld list memory` describes each"
                )
        else:  # the module is memoryppo's; record none (the default "gru" would mislead)
            if self.memory_kwargs:
                raise ValueError(
                    f"memory_kwargs configure memoryppo's memory module; {self.algo} has "
                    f"its own policy ({self.memory_label}): drop memory_kwargs or use algo memoryppo"
                )
            object.__setattr__(self, "memory", None)
        for name in ("steps", "n_envs", "checkpoint_every", "torch_threads"):
            check_range(
                name, getattr(self, name), 1, integer=True, fix="a whole number, e.g. 10000"
            )
        check_seed("seed", self.seed)
        check_device("device", self.device)
        from memworld import envs

        # A short name (a config file's `env: KeyDoorEasy`) becomes its id; an unknown one
        # fails here, naming the closest ids.
        object.__setattr__(self, "env", envs.resolve_id(self.env))
        self._check_kwargs()

    def _check_kwargs(self) -> None:
        """Refuse unknown or out-of-range hyperparams and memory_kwargs before any training."""
        from memworld.agents.ppo_checks import check_hyperparams

        for name in ("hyperparams", "memory_kwargs", "env_kwargs"):
            if not isinstance(getattr(self, name), dict):
                raise ValueError(
                    f"{name} must be a mapping (key: value), got {getattr(self, name)!r}"
                )
        params = inspect.signature(algo_class(self.algo).__init__).parameters
        accepted = {p for p in params if p not in {"self", "policy", "env", *SET_BY_CONFIG}}
        check_keys(
            f"hyperparams of {self.algo}", self.hyperparams, accepted - {"_init_setup_model"}
        )
        checked = self.hyperparams
        if self.algo == "memorysac" and isinstance(checked.get("ent_coef"), str):
            checked = {k: v for k, v in checked.items() if k != "ent_coef"}  # "auto": learned
        check_hyperparams(checked, prefix="hyperparams.")
        if self.algo in MEMORY_ALGOS:
            from memworld import memory

            fields = inspect.signature(memory.get(self.memory).__init__).parameters
            check_keys(
                f"memory_kwargs of {self.memory}",
                self.memory_kwargs,
                set(fields) - {"self", "input_dim"},
            )

    def check_batch_size(self) -> None:
        """MemoryPPO's batch_size must fit the rollout, n_steps * n_envs.

        Not part of ``__post_init__``: evaluation copies the config with fewer envs.
        """
        if self.algo == "memoryppo":
            from memworld.agents.ppo_checks import sequences_per_batch

            params = inspect.signature(algo_class(self.algo).__init__).parameters
            hp = {k: p.default for k, p in params.items()} | self.hyperparams
            sequences_per_batch(hp["batch_size"], hp["n_steps"], self.n_envs, hp["bptt_len"])

    @property
    def memory_label(self) -> str:
        if self.algo in MEMORY_ALGOS:
            return self.memory or "none"
        return {"recurrentppo": "lstm"}.get(self.algo, "mlp")

    @classmethod
    def from_file(cls, path: str | Path, **overrides: Any) -> TrainConfig:
        """Read a YAML or JSON config; ``overrides`` (not None) win over the file."""
        path = Path(path)
        if not path.exists():
            raise ValueError(f"config file {str(path)!r} does not exist")
        text = path.read_text()
        try:
            data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text) or {}
        except yaml.YAMLError as err:
            raise ValueError(f"config file {path} is not valid YAML: {err}") from None
        if isinstance(data, dict):
            data = data.get("train", data)  # a run's config.json nests the training config
        if not isinstance(data, dict):
            raise ValueError(
                f"config file {path} must be a mapping of TrainConfig fields (`key: value` "
                f"lines, e.g. `steps: 10000`), got a {type(data).__name__}"
            )
        check_keys(f"config keys in {path}", data, {f.name for f in dataclasses.fields(cls)})
        data.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**data)


def make_env(config: TrainConfig):
    from memworld.agents import make_vec_env

    return make_vec_env(
        config.env, n_envs=config.n_envs, seed=config.seed, env_kwargs=config.env_kwargs
    )


def build_model(config: TrainConfig, env):
    """The algorithm of ``config`` on ``env``; what SB3 asserts of the pair (an action
    space the algorithm cannot act in) is refused as a ValueError naming both."""
    try:
        return _build_model(config, env)
    except AssertionError as err:
        raise ValueError(
            f"algo {config.algo} cannot train on {config.env}: {err} (memoryppo, ppo, "
            "recurrentppo and a2c act in every memworld task; dqn and memorydqn need a Discrete "
            "action space, memorysac a Box one)"
        ) from None


def _build_model(config: TrainConfig, env):
    common = dict(seed=config.seed, device=config.device, verbose=0, **config.hyperparams)
    if config.algo == "memoryppo":
        from memworld.agents import MemoryPPO

        policy_kwargs = dict(memory=config.memory, memory_kwargs=dict(config.memory_kwargs))
        policy_kwargs.update(common.pop("policy_kwargs", {}))
        if "torch_threads" in inspect.signature(MemoryPPO.__init__).parameters:
            common.setdefault("torch_threads", config.torch_threads)
        return MemoryPPO("MlpPolicy", env, policy_kwargs=policy_kwargs, **common)
    if config.algo in ("memorydqn", "memorysac"):
        policy_kwargs = dict(memory=config.memory, memory_kwargs=dict(config.memory_kwargs))
        policy_kwargs.update(common.pop("policy_kwargs", {}))
        return algo_class(config.algo)("MlpPolicy", env, policy_kwargs=policy_kwargs, **common)
    if config.algo == "recurrentppo":
        return recurrent_ppo()("MlpLstmPolicy", env, **common)
    import stable_baselines3 as sb3

    cls = {"ppo": sb3.PPO, "a2c": sb3.A2C, "dqn": sb3.DQN}[config.algo]
    return cls("MlpPolicy", env, **common)


def recurrent_ppo():
    """sb3-contrib's RecurrentPPO, or an error that says how to install it."""
    try:
        from sb3_contrib import RecurrentPPO
    except ModuleNotFoundError:
        raise ValueError(
            "algo recurrentppo is sb3-contrib's RecurrentPPO, which is not installed: "
            'pip install "memworld[recurrent]" (or pip install sb3-contrib), '
            "or pick another algo (memoryppo trains an LSTM too: --memory lstm)"
        ) from None
    return RecurrentPPO


def algo_class(algo: str):
    if algo == "memoryppo":
        from memworld.agents import MemoryPPO

        return MemoryPPO
    if algo in ("memorydqn", "memorysac"):
        from memworld.agents import MemoryDQN, MemorySAC

        return MemoryDQN if algo == "memorydqn" else MemorySAC
    if algo == "recurrentppo":
        return recurrent_ppo()
    import stable_baselines3 as sb3

    return {"ppo": sb3.PPO, "a2c": sb3.A2C, "dqn": sb3.DQN}[algo]


def train(
    config: TrainConfig,
    root: str | Path = "runs",
    run: str | Path | None = None,
    progress: bool = True,
    callbacks: list | None = None,
) -> Path:
    """Train ``config`` into a new run folder (or ``run``); returns the folder.

    ``callbacks`` are extra SB3 callbacks run after the logging one (e.g. the
    periodic evaluation of a sweep trial).
    """
    resolve_device(config.device, "device")  # every check before the run folder is made
    env = make_env(config)
    model = build_model(config, env)  # bad hyperparameters or spaces make no folder either
    path = (
        Path(run)
        if run is not None
        else run_dir(config.env, config.algo, config.memory_label, config.seed, root)
    )
    path.mkdir(parents=True, exist_ok=True)
    write_json(
        path / "config.json", {"train": dataclasses.asdict(config), "versions": package_versions()}
    )
    model.set_logger(memworld_logger(path))
    callback = TrainCallback(
        config.steps, path / "checkpoints", config.checkpoint_every, progress=progress
    )
    with torch_threads(config.torch_threads):
        model.learn(
            total_timesteps=config.steps,
            callback=[callback, *_panel_callbacks(config), *(callbacks or [])],
        )
    env.close()
    return path


def _panel_callbacks(config: TrainConfig) -> list:
    from memworld.video.record import panel_callbacks

    return panel_callbacks(config.env, config.checkpoint_every, config.env_kwargs)


def load_config(run: str | Path) -> TrainConfig:
    return TrainConfig(**read_run_config(run, "train", "memworld train")["train"])


def resume(run: str | Path, steps: int | None = None, progress: bool = True) -> Path:
    """Continue a run from its latest checkpoint for ``steps`` more env steps."""
    config = load_config(run)
    steps = config.steps if steps is None else steps
    check_range("steps", steps, 1, integer=True, fix="the env steps to add, e.g. 10000")
    env = make_env(config)
    model = algo_class(config.algo).load(checkpoint(run, "latest"), env=env, device=config.device)
    model.set_logger(memworld_logger(run))
    callback = TrainCallback(
        steps, Path(run) / "checkpoints", config.checkpoint_every, progress=progress
    )
    with torch_threads(config.torch_threads):
        model.learn(total_timesteps=steps, callback=callback, reset_num_timesteps=False)
    env.close()
    return Path(run)


_checkpoint = checkpoint  # evaluate() has an argument of that name


def evaluate(
    run: str | Path,
    episodes: int = 20,
    deterministic: bool = True,
    checkpoint: str | Path = "best",
) -> dict:
    """Evaluate a run's ``checkpoint`` (``best``, ``latest`` or a file); writes and returns
    eval.json's content, which names the checkpoint used."""
    from stable_baselines3.common.evaluation import evaluate_policy

    check_range("episodes", episodes, 1, integer=True, fix="e.g. 20")
    config = load_config(run)
    ckpt = _checkpoint(run, checkpoint)
    eval_config = dataclasses.replace(config, n_envs=min(episodes, 8), seed=config.seed + 10_000)
    env = make_env(eval_config)
    model = algo_class(config.algo).load(ckpt, env=env, device=config.device)
    returns, lengths = evaluate_policy(
        model,
        env,
        n_eval_episodes=episodes,
        deterministic=deterministic,
        return_episode_rewards=True,
    )
    env.close()
    import numpy as np

    result = {
        "env": config.env,
        "algo": config.algo,
        "memory": config.memory_label,
        "checkpoint": str(ckpt),
        "episodes": episodes,
        "deterministic": deterministic,
        "mean_return": float(np.mean(returns)),
        "std_return": float(np.std(returns)),
        "mean_length": float(np.mean(lengths)),
        "returns": [float(r) for r in returns],
        "num_timesteps": int(model.num_timesteps),
    }
    write_json(Path(run) / "eval.json", result)
    return result
