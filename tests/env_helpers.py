"""Shared drivers for the env tests: roll out policies on a batched core."""

from __future__ import annotations

import gymnasium as gym
import numpy as np

from memworld import envs  # noqa: F401  (registers the tasks)


def make_vec(env_id: str, num_envs: int, **kwargs) -> envs.VecTask:
    return gym.make_vec(
        env_id, num_envs=num_envs, vectorization_mode="vector_entry_point", **kwargs
    )


def episode_returns(vec: envs.VecTask, policy, seed: int, max_steps: int = 200_000) -> np.ndarray:
    """Return of the first episode of every env under ``policy(vec) -> actions``."""
    vec.reset(seed=seed)
    totals = np.zeros(vec.num_envs)
    finished = np.zeros(vec.num_envs, dtype=bool)
    for _ in range(max_steps):
        _, reward, terminated, truncated, _ = vec.step(policy(vec))
        totals += np.where(finished, 0.0, reward)
        finished |= terminated | truncated
        if finished.all():
            return totals
    raise AssertionError(f"episodes did not finish within {max_steps} steps")


def random_policy(seed: int):
    rng = np.random.default_rng(seed)

    def act(vec):
        space = vec.single_action_space
        if isinstance(space, gym.spaces.Discrete):
            return rng.integers(space.start, space.start + space.n, size=vec.num_envs)
        if isinstance(space, gym.spaces.MultiDiscrete):
            return rng.integers(
                space.start, space.start + space.nvec, size=(vec.num_envs, *space.shape)
            )
        return rng.uniform(space.low, space.high, size=(vec.num_envs, *space.shape)).astype(
            space.dtype
        )

    return act


def constant_policy(action):
    def act(vec):
        return np.repeat(np.asarray(action)[None], vec.num_envs, axis=0)

    return act


def oracle_policy(vec):
    return vec.oracle_actions()
