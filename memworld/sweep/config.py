"""Sweep configs: envs x algorithms x memory modules x hyper-parameters x seeds, as named trials.

A sweep is a YAML file (``sweeps/memory_table.yaml`` is the shipped one)::

    name: memory_table
    envs: [memworld/RepeatPreviousEasy-v0, memworld/TMazeEasy-v0]
    algos: [ppo, recurrentppo, memoryppo]
    memory: all                  # memoryppo's modules; ``all`` = every registered module
    seeds: [0, 1, 2]
    train: {steps: 100000, n_envs: 8, hyperparams: {n_steps: 128}}   # TrainConfig fields
    algo_hyperparams: {ppo: {batch_size: 256}}    # merged over train.hyperparams per algo
    grid: {hyperparams.learning_rate: [0.0003, 0.001]}   # dotted TrainConfig keys
    search:                      # optional: search first, then run the best on every seed
      method: random             # or optuna
      num_samples: 8
      seed: 0
      space: {hyperparams.ent_coef: {uniform: [0.0, 0.05]},
              hyperparams.n_epochs: {choice: [4, 10]}}
    eval: {every: 10000, episodes: 16}
    tune: {max_concurrent: null, cpus_per_trial: 1, max_failures: 2}
    smoke: {seeds: [0, 1], train: {steps: 1024}}   # overrides applied by ``--smoke``

Every trial is one run folder named after what it is, ``<Env>/<algo>-<memory>/<variant>s<seed>``,
so a resumed sweep knows which trials are done and a trial can be re-run by hand with
``memworld train --config <sweep>/<trial>/config.json``.  With ``search``, the searched
trials live under ``search/`` (trained at the first seed) and the best hyper-parameters of
each env x algorithm x memory cell are then trained on every seed.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import itertools
import json
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from memworld.memory.base import check_range
from memworld.sweep.space import check_space, sample_space, space_ends
from memworld.train import MEMORY_ALGOS

KEYS = (
    "name",
    "envs",
    "algos",
    "memory",
    "seeds",
    "train",
    "algo_hyperparams",
    "grid",
    "search",
    "eval",
    "tune",
    "smoke",
)
SEARCH_METHODS = ("random", "optuna")
SEARCH_PREFIX = "search/"  # folder of the search trials inside a sweep folder


@dataclasses.dataclass(frozen=True)
class Trial:
    """One training run of a sweep.

    Args:
        cell: ``<Env>/<algo>-<memory>``: what the run compares (a table cell, over seeds).
        seed: the run's seed.
        variant: label of the hyper-parameters that differ between the cell's runs
            (``""`` when there is one setting).
        train: TrainConfig fields.
        eval_every: evaluate every this many env steps (and at the end).
        eval_episodes: episodes per evaluation.
        prefix: ``"search/"`` for search trials, else ``""``.
        overrides: the dotted keys the variant set (so a search can be re-seeded).
    """

    cell: str
    seed: int
    variant: str
    train: dict
    eval_every: int
    eval_episodes: int
    prefix: str = ""
    overrides: dict = dataclasses.field(default_factory=dict)

    @property
    def name(self) -> str:
        variant = f"{self.variant}-" if self.variant else ""
        return f"{self.prefix}{self.cell}/{variant}s{self.seed}"

    def override(self, overrides: dict, variant: str | None = None) -> Trial:
        """This trial with ``overrides`` (dotted TrainConfig keys) applied."""
        train = copy.deepcopy(self.train)
        for key, value in overrides.items():
            set_dotted(train, key, value)
        merged = {**self.overrides, **overrides}
        return dataclasses.replace(
            self,
            train=train,
            overrides=merged,
            variant=variant_label(merged) if variant is None else variant,
        )

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class SweepConfig:
    """A sweep file after ``smoke`` overrides and ``memory: all`` are resolved (see module doc)."""

    name: str
    envs: tuple[str, ...]
    algos: tuple[str, ...]
    memory: tuple[str, ...]
    seeds: tuple[int, ...]
    train: dict
    algo_hyperparams: dict
    grid: dict
    search: dict | None
    eval_every: int
    eval_episodes: int
    max_concurrent: int | None
    cpus_per_trial: float
    max_failures: int

    @classmethod
    def from_file(cls, path: str | Path, smoke: bool = False) -> SweepConfig:
        path = Path(path)
        if not path.exists():
            raise ValueError(f"sweep config {str(path)!r} does not exist")
        return cls.from_dict(yaml.safe_load(path.read_text()) or {}, smoke=smoke, source=str(path))

    @classmethod
    def from_dict(cls, data: dict, smoke: bool = False, source: str = "sweep") -> SweepConfig:
        unknown = sorted(set(data) - set(KEYS))
        if unknown:
            raise ValueError(f"unknown keys {unknown} in {source}; valid keys: {list(KEYS)}")
        data = copy.deepcopy(data)
        smoke_overrides = data.pop("smoke", None) or {}
        if smoke:
            if not smoke_overrides:
                raise ValueError(f"--smoke needs a `smoke:` block of overrides in {source}")
            data = merge(data, smoke_overrides)
            data["name"] = f"{data.get('name', 'sweep')}-smoke"
        for key in ("envs", "algos", "seeds"):
            if not data.get(key):
                raise ValueError(f"{source} needs a non-empty list `{key}:`")
        memory = data.get("memory", "all")
        if set(MEMORY_ALGOS) & set(_as_list(data["algos"])):
            from memworld import memory as memory_modules

            memory = memory_modules.names() if memory == "all" else list(_as_list(memory))
            bad = sorted(set(memory) - set(memory_modules.names()))
            if bad:
                raise ValueError(
                    f"unknown memory modules {bad} in {source}; valid: "
                    f"{memory_modules.names()} or `all`"
                )
        evaluation, tune_opts = data.get("eval") or {}, data.get("tune") or {}
        config = cls(
            name=str(data.get("name", "sweep")),
            envs=tuple(_as_list(data["envs"])),
            algos=tuple(_as_list(data["algos"])),
            memory=tuple(memory) if set(MEMORY_ALGOS) & set(_as_list(data["algos"])) else (),
            seeds=tuple(_as_list(data["seeds"])),
            train=dict(data.get("train") or {}),
            algo_hyperparams=dict(data.get("algo_hyperparams") or {}),
            grid={k: list(_as_list(v)) for k, v in (data.get("grid") or {}).items()},
            search=data.get("search") or None,
            eval_every=evaluation.get("every", 10_000),
            eval_episodes=evaluation.get("episodes", 16),
            max_concurrent=tune_opts.get("max_concurrent"),
            cpus_per_trial=tune_opts.get("cpus_per_trial", 1),
            max_failures=tune_opts.get("max_failures", 2),
        )
        config.check(source)
        return config

    def check(self, source: str = "sweep") -> None:
        """Fail before any training: every trial must build a valid TrainConfig."""
        from memworld.args import check_seed
        from memworld.train import TrainConfig

        for seed in self.seeds:
            check_seed(f"seeds in {source}", seed)
        concurrent = 1 if self.max_concurrent is None else self.max_concurrent
        for name, value, low in (
            ("eval.every", self.eval_every, 1),
            ("eval.episodes", self.eval_episodes, 1),
            ("tune.max_failures", self.max_failures, 0),
            ("tune.max_concurrent", concurrent, 1),
        ):
            fix = "a whole number" + (
                ", or null: all CPUs" if name == "tune.max_concurrent" else ""
            )
            check_range(f"{name} in {source}", value, low, integer=True, fix=fix)
        check_range(f"tune.cpus_per_trial in {source}", self.cpus_per_trial, 0, open_low=True)
        for key, top in (
            ("env", "envs"),
            ("algo", "algos"),
            ("memory", "memory"),
            ("seed", "seeds"),
        ):
            if key in self.train:
                raise ValueError(f"`train.{key}` in {source}: list it under `{top}:` instead")
        if self.search is not None:
            if self.grid:
                raise ValueError(
                    f"{source} has both `grid:` and `search:`; a search picks the "
                    "hyper-parameters itself, so move the grid values into its space"
                )
            method = self.search.get("method", "random")
            if method not in SEARCH_METHODS:
                raise ValueError(f"search.method must be one of {SEARCH_METHODS}, got {method!r}")
            if not self.search.get("space"):
                raise ValueError(f"search needs a `space:` of dotted keys in {source}")
            for key, spec in self.search["space"].items():
                check_space(key, spec)
        try:  # TrainConfig checks each trial's fields and hyperparameters' ranges
            if self.search is None:
                trials = self.grid_trials()
            else:  # a sample, then each key at each end of its range
                space = self.search["space"]
                sample = sample_space(space, np.random.default_rng(0))
                ends = [{**sample, k: v} for k, spec in space.items() for v in space_ends(spec)]
                trials = [t.override(o) for t in self.base_trials() for o in ends]
            for trial in trials:
                TrainConfig(**trial.train).check_batch_size()
        except (TypeError, ValueError) as err:  # TypeError: an unknown `train:` key
            hint = "; put hyperparams only some algos take under `algo_hyperparams: {<algo>: ...}`"
            hint = hint if "unknown hyperparams" in str(err) else ""
            raise ValueError(f"{err} (in {source}){hint}") from None

    def agents(self) -> list[tuple[str, str | None]]:
        """(algo, memory) pairs: every memory module for the algorithms that take one
        (memoryppo, memorydqn, memorysac), no memory otherwise."""
        pairs = []
        for algo in self.algos:
            pairs += [(algo, m) for m in self.memory] if algo in MEMORY_ALGOS else [(algo, None)]
        return pairs

    def base_trials(self, seeds: tuple[int, ...] | None = None, prefix: str = "") -> list[Trial]:
        """One trial per env x agent x seed, before grid or search overrides."""
        from memworld.train import TrainConfig

        trials = []
        for env, (algo, memory), seed in itertools.product(
            self.envs, self.agents(), seeds or self.seeds
        ):
            hyperparams = {
                **self.train.get("hyperparams", {}),
                **self.algo_hyperparams.get(algo, {}),
            }
            train = {
                **copy.deepcopy(self.train),
                "env": env,
                "algo": algo,
                "memory": memory,
                "seed": seed,
                "hyperparams": hyperparams,
            }
            label = TrainConfig(**train).memory_label
            trials.append(
                Trial(
                    cell=f"{env.split('/')[-1]}/{algo}-{label}",
                    seed=seed,
                    variant="",
                    train=train,
                    eval_every=self.eval_every,
                    eval_episodes=self.eval_episodes,
                    prefix=prefix,
                )
            )
        return trials

    def grid_trials(self, chosen: dict[str, dict] | None = None) -> list[Trial]:
        """The trials of the table: the grid, or each cell's ``chosen`` search overrides."""
        trials = []
        for base in self.base_trials():
            if chosen is not None:
                if base.cell in chosen:
                    trials.append(
                        base.override(chosen[base.cell], variant=hp_label(chosen[base.cell]))
                    )
                continue
            keys = list(self.grid)
            for values in itertools.product(*(self.grid[k] for k in keys)):
                trials.append(base.override(dict(zip(keys, values))) if keys else base)
        return trials

    def search_trials(self) -> list[Trial]:
        """Random search: ``num_samples`` seeded samples of ``space`` per cell, first seed."""
        rng = np.random.default_rng(int(self.search.get("seed", 0)))
        samples = [
            sample_space(self.search["space"], rng)
            for _ in range(int(self.search.get("num_samples", 8)))
        ]
        return [
            base.override(s, variant=hp_label(s))
            for base in self.base_trials(seeds=self.seeds[:1], prefix=SEARCH_PREFIX)
            for s in samples
        ]

    def to_dict(self) -> dict:
        """The resolved sweep as a YAML-able dict (written to ``<sweep>/sweep.yaml``)."""
        return {
            "name": self.name,
            "envs": list(self.envs),
            "algos": list(self.algos),
            "memory": list(self.memory),
            "seeds": list(self.seeds),
            "train": self.train,
            "algo_hyperparams": self.algo_hyperparams,
            "grid": self.grid,
            "search": self.search,
            "eval": {"every": self.eval_every, "episodes": self.eval_episodes},
            "tune": {
                "max_concurrent": self.max_concurrent,
                "cpus_per_trial": self.cpus_per_trial,
                "max_failures": self.max_failures,
            },
        }


def load_sweep_dir(sweep_dir: str | Path) -> SweepConfig:
    """The resolved config of an existing sweep folder (for ``--resume``)."""
    path = Path(sweep_dir) / "sweep.yaml"
    if not path.exists():
        raise ValueError(
            f"{str(sweep_dir)!r} is not a sweep folder (no sweep.yaml); pass the "
            "folder `memworld sweep` printed"
        )
    return SweepConfig.from_file(path)


def variant_label(overrides: dict) -> str:
    """``learning_rate=0.001,n_steps=64`` from dotted overrides."""
    return ",".join(f"{k.split('.')[-1]}={v}" for k, v in sorted(overrides.items()))


def hp_label(overrides: dict) -> str:
    """A short, stable name for sampled hyper-parameters: ``hp-<8 hex digits>``."""
    text = json.dumps(overrides, sort_keys=True, default=str)
    return "hp-" + hashlib.sha1(text.encode()).hexdigest()[:8]


def set_dotted(data: dict, key: str, value: Any) -> None:
    *parents, last = key.split(".")
    for part in parents:
        data = data.setdefault(part, {})
    data[last] = value


def merge(base: dict, overrides: dict) -> dict:
    """``base`` with ``overrides`` merged in, recursively for dicts."""
    out = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def _as_list(value: Any) -> list:
    return list(value) if isinstance(value, list | tuple) else [value]
