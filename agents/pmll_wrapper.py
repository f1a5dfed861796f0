"""``PersistentMemoryWrapper``: a PMLL store in front of any SB3 algorithm.

The wrapper keys each observation (the flattened observation itself, or a
fixed random projection of it), appends the store's bias vector for that key
to the observation, and after each step writes a line ``(key of the observation
acted on, value, {"episode", "step"})``.  PPO, A2C, DQN and SAC see a plain
``Box`` observation and need no change; the store persists across episodes
(and across runs when it lives on disk).

Values (``value=``):

- ``"action_reward"`` (default): Discrete actions ``one_hot(a) * r``, Box
  actions ``a * r``: the bias is then the recency- and similarity-weighted
  reward each action earned in similar observations (episodic control);
- ``"next_obs"``: the observation that followed;
- a callable ``f(obs, action, reward, next_obs) -> vector`` (pass ``value_dim``).

A store has one writer.  In one process (``DummyVecEnv``) the envs share one
writing store.  With ``SubprocVecEnv`` the main process holds the writing
handle and wraps the vector env in :class:`PersistentMemoryVecWriter`; each
worker's wrapper gets the store's *path*, opens it read-only, reads the lines
written so far (``refresh()`` before each read) and sends the line it would
write in ``info["pmll_line"]``; the vector wrapper appends the lines of every
worker in one ``put_many`` per step and puts the anchors in
``info["pmll_anchor"]``::

    store = PersistentStore("runs/pmll", dim, value_dim=n_actions)   # the writer
    make = lambda: PersistentMemoryWrapper(gym.make(env_id), store="runs/pmll")
    venv = PersistentMemoryVecWriter(SubprocVecEnv([make] * 4), store)
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from stable_baselines3.common.vec_env import VecEnv, VecEnvWrapper

from memworld.memory.persistent import PersistentStore, StoreConfig


class PersistentMemoryWrapper(gym.Wrapper):
    """Append a PMLL bias vector to every observation; write one line per step.

    Args:
        env: the env to wrap (any observation space ``gymnasium.spaces.flatten`` handles).
        store: a :class:`PersistentStore` to use (share one between the envs of a
            vector env in one process); a path opens that store read-only, and the
            lines go out in ``info["pmll_line"]`` for :class:`PersistentMemoryVecWriter`
            (the ``SubprocVecEnv`` pattern); None creates an in-memory store.
        k: lines per read (5).
        key_dim: None keys by the flattened observation; an int by a fixed Gaussian
            projection of it to this width.
        value: ``"action_reward"``, ``"next_obs"`` or a callable (see the module docstring).
        value_dim: width of a callable's values.
        write: write lines (True) or only read (False, e.g. for evaluation).
        clock: ``"wall"`` (timestamps in seconds) or ``"steps"`` (this wrapper's step
            count; set the store's ``StoreConfig.tau`` in steps then).
        config: config of the store created when ``store`` is None.
        seed: seed of the key projection.
    """

    def __init__(
        self,
        env: gym.Env,
        store: PersistentStore | str | Path | None = None,
        *,
        k: int = 5,
        key_dim: int | None = None,
        value: str | Callable = "action_reward",
        value_dim: int | None = None,
        write: bool = True,
        clock: str = "wall",
        config: StoreConfig | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(env)
        self.flat_space = spaces.flatten_space(env.observation_space)
        obs_dim = int(self.flat_space.shape[0])
        self.projection = None
        if key_dim is not None:
            rng = np.random.default_rng(seed)
            self.projection = (rng.normal(size=(key_dim, obs_dim)) / np.sqrt(obs_dim)).astype(
                np.float32
            )
        self.value_fn, value_dim = self._value_fn(value, value_dim, env.action_space, obs_dim)
        if clock not in ("wall", "steps"):
            raise ValueError(f"clock must be 'wall' or 'steps', got {clock!r}")
        dim = obs_dim if key_dim is None else key_dim
        if store is None:
            store = PersistentStore(None, dim, value_dim=value_dim, config=config)
        elif isinstance(store, str | Path):
            store = PersistentStore(store, read_only=True, config=config)
        elif not isinstance(store, PersistentStore):
            raise TypeError(
                f"store must be a PersistentStore, a path or None, got {type(store).__name__}"
            )
        if (store.dim, store.value_dim) != (dim, value_dim):
            raise ValueError(
                f"store has dim={store.dim}, value_dim={store.value_dim}; this wrapper needs "
                f"dim={dim} (key_dim or the flattened observation) and value_dim={value_dim}"
            )
        self.store, self.k, self.write, self.clock = store, k, write, clock
        low = np.concatenate([self.flat_space.low, np.full(value_dim, -np.inf)])
        high = np.concatenate([self.flat_space.high, np.full(value_dim, np.inf)])
        self.observation_space = spaces.Box(low.astype(np.float32), high.astype(np.float32))
        self.episode, self.t, self.total_steps = -1, 0, 0
        self._last_key: np.ndarray | None = None
        self._last_flat: np.ndarray | None = None

    @staticmethod
    def _value_fn(value, value_dim, action_space, obs_dim):
        if callable(value):
            if value_dim is None:
                raise ValueError("a callable value needs value_dim= (the width it returns)")
            return value, value_dim
        if value == "next_obs":
            return (lambda obs, action, reward, next_obs: next_obs), obs_dim
        if value != "action_reward":
            raise ValueError(
                f"value must be 'action_reward', 'next_obs' or a callable, got {value!r}"
            )
        if isinstance(action_space, spaces.Discrete):
            eye = np.eye(action_space.n, dtype=np.float32)
            start = int(action_space.start)
            return (lambda obs, a, r, nxt: eye[int(a) - start] * r), int(action_space.n)
        if isinstance(action_space, spaces.Box):
            size = int(np.prod(action_space.shape))
            return (lambda obs, a, r, nxt: np.asarray(a, np.float32).reshape(-1) * r), size
        raise ValueError(
            f"value='action_reward' needs a Discrete or Box action space, got {action_space}; "
            "pass value='next_obs' or a callable"
        )

    def _key(self, flat: np.ndarray) -> np.ndarray:
        return flat if self.projection is None else self.projection @ flat

    def _now(self) -> float | None:
        return float(self.total_steps) if self.clock == "steps" else None

    def _augment(self, obs) -> np.ndarray:
        flat = spaces.flatten(self.env.observation_space, obs).astype(np.float32)
        self._last_flat, self._last_key = flat, self._key(flat)
        if self.store.read_only:  # lines the writer appended since the last read
            self.store.refresh()
        bias = self.store.bias_vector(self._last_key, self.k, now=self._now())
        return np.concatenate([flat, bias]).astype(np.float32)

    def reset(self, *, seed=None, options=None):
        obs, info = self.env.reset(seed=seed, options=options)
        self.episode, self.t = self.episode + 1, 0
        return self._augment(obs), info

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        if self.write:
            next_flat = spaces.flatten(self.env.observation_space, obs).astype(np.float32)
            value = self.value_fn(self._last_flat, action, float(reward), next_flat)
            info = dict(info)
            ctx = {"episode": self.episode, "step": self.t}
            if self.store.read_only:  # the writing process appends it (PersistentMemoryVecWriter)
                info["pmll_line"] = (
                    self._last_key,
                    np.asarray(value, np.float32),
                    ctx,
                    self._now(),
                )
            else:
                info["pmll_anchor"] = self.store.put(
                    self._last_key, value, ctx, timestamp=self._now()
                )
        self.t += 1
        self.total_steps += 1
        return self._augment(obs), reward, terminated, truncated, info


class PersistentMemoryVecWriter(VecEnvWrapper):
    """Append the lines that read-only :class:`PersistentMemoryWrapper` workers send.

    The one writing handle of the store lives here, in the main process; after
    each step the ``info["pmll_line"]`` of every env is appended in env order
    with one ``put_many`` (ctx gains ``"env": i``), replaced by
    ``info["pmll_anchor"]``.  The workers see the lines on their next read.

    Args:
        venv: an SB3 vector env (e.g. ``SubprocVecEnv``) of wrappers opened on
            the store's path.
        store: the writing handle of that store.
    """

    def __init__(self, venv: VecEnv, store: PersistentStore) -> None:
        if not isinstance(store, PersistentStore) or store.read_only:
            raise ValueError(
                "store must be the writing PersistentStore handle (not read-only); the "
                "workers' wrappers take the store's path instead"
            )
        super().__init__(venv)
        self.store = store

    def reset(self):
        return self.venv.reset()

    def step_wait(self):
        obs, rewards, dones, infos = self.venv.step_wait()
        rows = [i for i, info in enumerate(infos) if "pmll_line" in info]
        if rows:
            lines = [infos[i].pop("pmll_line") for i in rows]
            stamps = [t for *_, t in lines]
            if all(t is None for t in stamps):
                stamps = None
            else:
                now = self.store.clock()
                stamps = [now if t is None else t for t in stamps]
            anchors = self.store.put_many(
                np.stack([key for key, *_ in lines]),
                np.stack([value for _, value, *_ in lines]),
                [{**ctx, "env": i} for i, (_, _, ctx, _) in zip(rows, lines)],
                timestamps=stamps,
            )
            for i, anchor in zip(rows, anchors):
                infos[i]["pmll_anchor"] = anchor
        return obs, rewards, dones, infos
