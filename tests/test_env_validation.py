"""Env input checks: ResetNeeded, seeds checked alike in the scalar and vector env, errors that
name the argument the user passed, and num_envs checked before anything is allocated."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

from memworld.envs.tasks.keydoor import KeyDoorVec
from memworld.envs.tasks.repeat_first import RepeatFirstVec


def test_step_before_reset_is_gymnasiums_reset_needed() -> None:
    scalar = gym.make("memworld/KeyDoorEasy-v0").unwrapped
    with pytest.raises(gym.error.ResetNeeded, match="before reset"):
        scalar.step(0)
    vec = RepeatFirstVec(num_envs=2)
    with pytest.raises(gym.error.ResetNeeded, match="before reset"):
        vec.step(np.zeros(2, np.int64))
    scalar.reset(seed=0)
    scalar.step(0)  # fine after reset


@pytest.mark.parametrize("seed", [2**64, 2**70, True, np.bool_(False), 1.0, "7", -1])
def test_the_scalar_env_refuses_seeds_that_are_not_uint64(seed) -> None:
    env = gym.make("memworld/RepeatFirst-v0").unwrapped
    with pytest.raises(ValueError, match="seed must be an int"):
        env.reset(seed=seed)


def test_seeds_at_the_top_of_the_range_are_accepted_and_never_wrap() -> None:
    env = gym.make("memworld/RepeatFirst-v0").unwrapped
    env.reset(seed=2**64 - 1)  # the largest uint64
    vec = RepeatFirstVec(num_envs=3)
    with pytest.raises(ValueError, match=r"seed must be an integer in \[0, 2\*\*64 - 3\]"):
        vec.reset(seed=2**64 - 2)  # row 2 would get 2**64, i.e. seed 0 again
    vec.reset(seed=2**64 - 3)
    keys = vec.rng.keys.copy()
    vec.reset(seed=0)
    assert not set(keys.tolist()) & set(vec.rng.keys.tolist()), "no row shares seed 0's stream"
    vec.reset(seed=[0, 2**64 - 1, 5])


@pytest.mark.parametrize("seed", [True, [1, 2, True], [1, 2, 2**64], [1, 2], 1.5])
def test_the_vector_env_refuses_what_the_scalar_env_refuses(seed) -> None:
    with pytest.raises(ValueError, match="seed must be an int"):
        RepeatFirstVec(num_envs=3).reset(seed=seed)


def test_errors_name_the_argument_passed() -> None:
    with pytest.raises(ValueError, match="corridor_length must be an integer in") as caught:
        KeyDoorVec(num_envs=2, corridor_length=10**7 + 1)
    assert "max_episode_steps" not in str(caught.value)
    with pytest.raises(ValueError, match="max_episode_steps"):
        KeyDoorVec(num_envs=2, max_episode_steps=10**7 + 1)


def test_num_envs_is_checked_against_memory_before_allocating() -> None:
    with pytest.raises(ValueError, match=r"num_envs=1000000000000 needs at least .* GiB"):
        RepeatFirstVec(num_envs=10**12)
    with pytest.raises(ValueError, match="num_envs"):
        gym.make_vec(
            "memworld/KeyDoorEasy-v0", num_envs=10**12, vectorization_mode="vector_entry_point"
        )
