"""Rollouts of world-state tasks as tensors, and the oracle addresses of each step.

A batch is ``num_envs`` fresh episodes run for ``seq_len`` steps with the env's
oracle actions (a random action with probability ``1 - oracle_prob``). Step
``t`` gives the observation ``o_t`` the system sees and writes, and the target
``s_{t+1}`` (the world state after the step); ``valid[t]`` is False once a
row's first episode has ended (later steps are padding).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import torch
from torch import Tensor

from memworld.memory.base import check_range


@dataclass
class Batch:
    obs: Tensor  # (T, B, obs_dim)  what the system sees at step t
    target: Tensor  # (T, B, state_dim)  world state after step t
    valid: Tensor  # (T, B) bool
    oracle_address: Tensor  # (T, B) long: where the past observation the step needs was written

    def to(self, device) -> Batch:
        return Batch(
            *(x.to(device) for x in (self.obs, self.target, self.valid, self.oracle_address))
        )

    @staticmethod
    def cat(batches: list[Batch]) -> Batch:
        """One batch of every row of ``batches`` (same number of steps), in order."""
        fields = ("obs", "target", "valid", "oracle_address")
        return Batch(*(torch.cat([getattr(b, k) for b in batches], dim=1) for k in fields))


class RolloutSource:
    """Makes :class:`Batch` es from one registered task id.

    Args:
        env_id: a memworld id (or its short name, ``KeyDoorEasy``) with ``info["world_state"]``.
        num_envs: rows per batch.
        seq_len: steps per batch.
        seed: seeds the env (each batch continues its generator) and the action noise.
        oracle_prob: chance of the oracle action at each step.
    """

    def __init__(
        self, env_id: str, num_envs: int, seq_len: int, seed: int = 0, oracle_prob: float = 0.8
    ) -> None:
        from memworld import envs  # registers the ids

        for name, value, low, high, fix in (
            ("num_envs", num_envs, 1, math.inf, "rows per batch, e.g. 16"),
            ("seq_len", seq_len, 1, math.inf, "steps per batch, e.g. 48"),
            ("seed", seed, 0, math.inf, "seeds are non-negative integers"),
            ("oracle_prob", oracle_prob, 0, 1, "a probability (1: oracle actions only)"),
        ):
            integer = name != "oracle_prob"
            check_range(f"RolloutSource {name}", value, low, high, integer=integer, fix=fix)
        self.env_id = env_id = envs.resolve_id(env_id)  # a short name (KeyDoorEasy) too
        self.env = gym.make_vec(env_id, num_envs=num_envs, vectorization_mode="vector_entry_point")
        self.num_envs, self.seq_len, self.oracle_prob = num_envs, seq_len, oracle_prob
        self.rng = np.random.default_rng(seed)
        # The random actions come from the action space's own generator: seed a copy of it
        # (from a stream independent of self.rng), or a held-out batch and a run would
        # differ from process to process.
        self.action_space = copy.deepcopy(self.env.single_action_space)
        self.action_space.seed(int(np.random.SeedSequence([seed, 1]).generate_state(1)[0]))
        obs, info = self.env.reset(seed=seed)
        if "world_state" not in info:
            raise ValueError(
                f"{env_id} gives no info['world_state']; a world model predicts world states, "
                "so pick a task that exposes one (OccludedDynamics, KeyDoor, ...)"
            )
        self.obs_dim = int(np.prod(obs.shape[1:]))
        self.state_dim = int(info["world_state"].shape[1])
        self.task = self.env.unwrapped.__class__.__name__.removesuffix("Vec")
        self._first = (obs, info)

    def state_dict(self) -> dict:
        """Where the batch stream stands: its generators (each batch starts from a seeded
        reset, so these fix every later batch) and whether the first reset is used up."""
        return {
            "rng": self.rng.bit_generator.state,
            "actions": self.action_space.np_random.bit_generator.state,
            "first_used": self._first is None,
        }

    def load_state_dict(self, state: dict) -> None:
        """Continue the batch stream of :meth:`state_dict` (a resumed run sees the batches
        the uninterrupted one would have)."""
        self.rng.bit_generator.state = state["rng"]
        self.action_space.np_random.bit_generator.state = state["actions"]
        if state["first_used"]:
            self._first = None

    def _actions(self) -> np.ndarray:
        oracle = np.asarray(self.env.oracle_actions())
        random = np.stack([self.action_space.sample() for _ in range(self.num_envs)])
        random = random.reshape(oracle.shape)
        pick = self.rng.random(self.num_envs) < self.oracle_prob
        return np.where(pick.reshape(-1, *[1] * (oracle.ndim - 1)), oracle, random).astype(
            oracle.dtype
        )

    def batch(self) -> Batch:
        obs, info = (
            self._first
            if self._first is not None
            else self.env.reset(seed=int(self.rng.integers(2**31)))
        )
        self._first = None
        n, t_len = self.num_envs, self.seq_len
        all_obs = np.zeros((t_len, n, self.obs_dim), np.float32)
        target = np.zeros((t_len, n, self.state_dim), np.float32)
        valid = np.zeros((t_len, n), bool)
        alive = np.ones(n, bool)
        for t in range(t_len):
            all_obs[t] = obs.reshape(n, -1)
            obs, _, terminated, truncated, info = self.env.step(self._actions())
            target[t] = info["world_state"]
            valid[t] = alive
            alive &= ~(terminated | truncated)
        oracle = oracle_addresses(self.task, all_obs, self.env.unwrapped)
        return Batch(
            torch.from_numpy(all_obs),
            torch.from_numpy(target),
            torch.from_numpy(valid),
            torch.from_numpy(oracle),
        )


def _key_in_view(obs: np.ndarray, num_colors: int) -> np.ndarray:
    """(T, B) bool from KeyDoor's vector observations ``(T, B, obs_dim)``."""
    t_len, n, _ = obs.shape
    return obs.reshape(t_len, n, -1, 4 + num_colors)[..., 1].max(-1) > 0.5


def sighted(task: str, obs: np.ndarray, core) -> np.ndarray:
    """(T, B) bool: whether the observation step t needs has been seen by step t.

    KeyDoor: the key has been in view at or before ``t`` (before that the oracle
    address is 0 and nothing in memory tells the key's colour); other tasks: always.
    """
    if task != "KeyDoor":
        return np.ones(obs.shape[:2], bool)
    return np.maximum.accumulate(_key_in_view(obs, core.params.num_colors), axis=0)


def oracle_addresses(task: str, obs: np.ndarray, core) -> np.ndarray:
    """Address (= step, as the memory is written in order) of the past observation step t needs.

    OccludedDynamics: the last step at or before ``t`` at which the object
    queried at ``t`` was visible (its last seen position and motion).
    KeyDoor: the last step at or before ``t`` at which the key was in view.
    Other tasks: the previous step. ``obs``: ``(T, B, obs_dim)`` -> ``(T, B)``.
    """
    t_len, n, _ = obs.shape
    steps = np.arange(t_len)[:, None].repeat(n, 1)
    if task == "OccludedDynamics":
        k = core.params.num_objects
        visible = obs[..., 2 : 3 * k : 3] > 0.5  # (T, B, k)
        query = obs[..., 3 * k :].argmax(-1)  # (T, B)
        out = np.zeros((t_len, n), np.int64)
        last = np.zeros((n, k), np.int64)
        for t in range(t_len):
            last = np.where(visible[t], t, last)
            out[t] = last[np.arange(n), query[t]]
        return out
    if task == "KeyDoor":
        key_in_view = _key_in_view(obs, core.params.num_colors)
        out = np.zeros((t_len, n), np.int64)
        last = np.zeros(n, np.int64)
        for t in range(t_len):
            last = np.where(key_in_view[t], t, last)
            out[t] = last
        return out
    return np.maximum(steps - 1, 0)
