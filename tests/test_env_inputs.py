"""Bad input raises the documented error; time limits truncate; property tests."""

from __future__ import annotations

import dataclasses
import importlib

import gymnasium as gym
import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from memworld import envs
from tests.env_helpers import make_vec, random_policy

TASK_IDS = [f"memworld/{task}-v0" for task, _, _ in envs.TASKS]


def _vec_cls(env_id):
    info = envs.REGISTERED[env_id]
    return getattr(importlib.import_module(f"memworld.envs.tasks.{info.module}"), f"{info.task}Vec")


@pytest.mark.parametrize("env_id", TASK_IDS)
def test_invalid_kwargs_name_the_argument(env_id):
    cls = _vec_cls(env_id)
    with pytest.raises(ValueError, match="no_such_arg"):
        cls(num_envs=2, no_such_arg=1)
    for name, (low, high) in cls.Params.RANGES.items():
        below = low - 1 if isinstance(low, int) else low - 1e-3
        with pytest.raises(ValueError, match=name):
            cls(num_envs=2, **{name: below})
        above = high + 1 if isinstance(high, int) else high + 1e-3
        with pytest.raises(ValueError, match=name):
            cls(num_envs=2, **{name: above})
    for name in cls.Params.CHOICES:
        with pytest.raises(ValueError, match=name):
            cls(num_envs=2, **{name: "not-a-choice"})
    with pytest.raises(ValueError, match="num_envs"):
        cls(num_envs=0)
    with pytest.raises(ValueError, match="autoreset_mode"):
        cls(num_envs=2, autoreset_mode="sometimes")


def _outside(space):
    if isinstance(space, gym.spaces.Discrete):
        return np.int64(space.start + space.n)
    if isinstance(space, gym.spaces.MultiDiscrete):
        return (space.start + space.nvec).astype(np.int64)
    return (space.high + 1.0).astype(space.dtype)


@pytest.mark.parametrize("env_id", TASK_IDS)
def test_bad_actions_and_call_order(env_id):
    env = gym.make(env_id).unwrapped
    with pytest.raises(RuntimeError, match="reset"):
        env.step(env.action_space.sample())
    env.reset(seed=0)
    with pytest.raises(ValueError, match="outside the action space"):
        env.step(_outside(env.action_space))
    vec = make_vec(env_id, 4)
    with pytest.raises(RuntimeError, match="reset"):
        vec.step(vec.action_space.sample())
    vec.reset(seed=0)
    with pytest.raises(ValueError, match="shape"):
        vec.step(vec.action_space.sample()[:3])
    actions = vec.action_space.sample()
    actions[2] = _outside(vec.single_action_space)
    with pytest.raises(ValueError, match="env 2"):
        vec.step(actions)
    if isinstance(vec.single_action_space, gym.spaces.Discrete):
        with pytest.raises(ValueError, match="integers"):
            vec.step(np.zeros(4, dtype=np.float32))


@pytest.mark.parametrize("env_id", TASK_IDS)
def test_scalar_step_after_episode_end_raises(env_id):
    env = gym.make(env_id).unwrapped
    env.reset(seed=0)
    for _ in range(100_000):
        *_, terminated, truncated, _ = env.step(env.action_space.sample())
        if terminated or truncated:
            break
    with pytest.raises(RuntimeError, match="reset"):
        env.step(env.action_space.sample())


@pytest.mark.parametrize("env_id", TASK_IDS)
def test_time_limit_truncates_not_terminates(env_id):
    vec = make_vec(env_id, 4, max_episode_steps=2)
    vec.reset(seed=0)
    act = random_policy(0)
    _, _, terminated, truncated, _ = vec.step(act(vec))
    assert not truncated.any()
    _, _, terminated, truncated, _ = vec.step(act(vec))
    assert (truncated == ~terminated).all()
    assert truncated.any(), "default episodes should last longer than 2 steps"


def _params_strategy(cls):
    params = cls.Params
    defaults = {f.name: f.default for f in dataclasses.fields(params)}
    fields = {}
    for name, (low, high) in params.RANGES.items():
        if isinstance(low, int) and isinstance(high, int):
            cap = max(2 * int(defaults[name]), low + 4)
            fields[name] = st.integers(low, min(high, cap))
        else:
            fields[name] = st.floats(low, high, allow_nan=False)
    for name, allowed in params.CHOICES.items():
        fields[name] = st.sampled_from(allowed)
    return st.fixed_dictionaries(fields)


@pytest.mark.parametrize("env_id", TASK_IDS)
def test_property_spaces_returns_world_state(env_id):
    cls = _vec_cls(env_id)

    @settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
    @given(kwargs=_params_strategy(cls), seed=st.integers(0, 2**31))
    def check(kwargs, seed):
        try:
            vec = cls(num_envs=3, **kwargs)
        except ValueError:
            assume(False)
        obs, info = vec.reset(seed=seed)
        width = info["world_state"].shape
        totals = np.zeros(3)
        act = random_policy(seed)
        low, high = min(vec.chance_return, -1.0), max(vec.max_return, 1.0)
        for _ in range(300):
            assert vec.observation_space.contains(obs)
            obs, reward, terminated, truncated, info = vec.step(act(vec))
            totals += reward
            assert info["world_state"].shape == width
            assert np.isfinite(info["world_state"]).all()
            assert ((totals >= low - 1e-4) & (totals <= high + 1e-4)).all()
            totals[terminated | truncated] = 0.0

    check()


def test_scalar_step_refuses_an_action_of_the_wrong_shape():
    env = gym.make("memworld/KeyDoorEasy-v0")
    env.reset(seed=0)
    with pytest.raises(
        ValueError, match=r"action must have shape \(\) \(Discrete\(4\)\), got \(3,\)"
    ):
        env.step(np.array([1, 2, 3]))


def test_world_state_must_be_a_bool():
    with pytest.raises(ValueError, match="world_state must be True or False, got 'no'"):
        gym.make("memworld/KeyDoorEasy-v0", world_state="no")


def test_task_params_take_numpy_integers_as_python_ints():
    env = gym.make("memworld/RepeatFirstEasy-v0", num_symbols=np.int64(5))
    params = env.unwrapped.core.params
    assert params.num_symbols == 5 and type(params.num_symbols) is int
    with pytest.raises(
        ValueError, match=r"num_symbols must be an integer in \[2, 16\], got np.int64\(17\)"
    ):
        gym.make("memworld/RepeatFirstEasy-v0", num_symbols=np.int64(17))
