"""Contract tests run on every registered memworld id (tasks x presets)."""

from __future__ import annotations

import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

from memworld import envs
from tests.env_helpers import (
    constant_policy,
    episode_returns,
    make_vec,
    oracle_policy,
    random_policy,
)

ENV_IDS = envs.env_ids()
BASE_IDS = [i for i in ENV_IDS if envs.REGISTERED[i].preset is None]


def test_every_task_is_registered_with_presets():
    for task, _, _ in envs.TASKS:
        for preset in ("", "Easy", "Medium", "Hard"):
            spec = gym.spec(f"memworld/{task}{preset}-v0")
            assert spec.entry_point and spec.vector_entry_point


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_gymnasium_and_sb3_check_env(env_id):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        env = gym.make(env_id, render_mode="rgb_array")
        gym_check_env(env.unwrapped, skip_render_check=False)
        sb3_check_env(gym.make(env_id).unwrapped, warn=False)


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_make_vec_spaces_and_world_state(env_id):
    vec = make_vec(env_id, 8)
    obs, info = vec.reset(seed=1)
    assert vec.observation_space.contains(obs)
    width = info["world_state"].shape
    assert info["world_state"].dtype == np.float32 and width[0] == 8
    for _ in range(5):
        obs, reward, terminated, truncated, info = vec.step(vec.action_space.sample())
        assert vec.observation_space.contains(obs)
        assert reward.shape == (8,) and reward.dtype == np.float32
        assert terminated.dtype == bool and truncated.dtype == bool
        assert info["world_state"].shape == width


def _scalar_envs(env_id, n, seed):
    singles = [gym.make(env_id).unwrapped for _ in range(n)]
    return singles, [s.reset(seed=seed + i) for i, s in enumerate(singles)]


@pytest.mark.parametrize("mode", ["next_step", "same_step"])
@pytest.mark.parametrize("env_id", ENV_IDS)
def test_vector_equals_scalar_across_autoresets(env_id, mode):
    n, seed, steps = 3, 7, 400
    vec = make_vec(env_id, n, autoreset_mode=mode)
    obs, info = vec.reset(seed=seed)
    singles, first = _scalar_envs(env_id, n, seed)
    for i, (o, inf) in enumerate(first):
        np.testing.assert_array_equal(obs[i], o)
        np.testing.assert_array_equal(info["world_state"][i], inf["world_state"])
    act = random_policy(3)
    done = np.zeros(n, dtype=bool)
    resets = 0
    for _ in range(steps):
        actions = act(vec)
        obs, reward, terminated, truncated, info = vec.step(actions)
        for i, single in enumerate(singles):
            if mode == "next_step" and done[i]:
                o, inf = single.reset()
                resets += 1
                np.testing.assert_array_equal(obs[i], o)
                assert reward[i] == 0 and not terminated[i] and not truncated[i]
                continue
            o, r, te, tr, inf = single.step(actions[i])
            assert (reward[i], terminated[i], truncated[i]) == (np.float32(r), te, tr)
            if mode == "same_step" and (te or tr):
                np.testing.assert_array_equal(info["final_obs"][i], o)
                assert info["_final_obs"][i]
                o, inf = single.reset()
                resets += 1
            np.testing.assert_array_equal(obs[i], o)
            np.testing.assert_array_equal(info["world_state"][i], inf["world_state"])
        done = terminated | truncated
    if envs.REGISTERED[env_id].preset == "Easy":
        assert resets > 0, "choose more steps so the test crosses an auto-reset"


@pytest.mark.parametrize("env_id", BASE_IDS)
def test_same_seed_same_trajectory_different_seed_differs(env_id):
    def trajectory(seed):
        vec = make_vec(env_id, 4)
        obs, info = vec.reset(seed=seed)
        act = random_policy(0)
        out = [obs.copy(), info["world_state"].copy()]
        for _ in range(30):
            obs, reward, *_, info = vec.step(act(vec))
            out += [obs.copy(), reward.copy(), info["world_state"].copy()]
        return out

    a, b, c = trajectory(0), trajectory(0), trajectory(1)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_oracle_earns_max_return(env_id):
    vec = make_vec(env_id, 16)
    returns = episode_returns(vec, oracle_policy, seed=3)
    np.testing.assert_allclose(returns, vec.max_return, atol=1e-4)


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_memoryless_policies_stay_at_chance(env_id):
    """Random play averages the chance return; no constant action beats it.

    Bound: 5 standard errors of the mean over 512 episodes, plus 0.02 for
    the float32 rewards.
    """
    vec = make_vec(env_id, 512)
    chance = vec.chance_return

    def bound(returns):
        return 5 * returns.std() / np.sqrt(len(returns)) + 0.02

    random_returns = episode_returns(vec, random_policy(11), seed=5)
    expected_random = getattr(vec, "random_return", chance)
    if expected_random is not None:
        assert abs(random_returns.mean() - expected_random) <= bound(random_returns)
    assert random_returns.mean() <= chance + bound(random_returns)
    space = vec.single_action_space
    if isinstance(space, gym.spaces.Discrete) and space.n <= 16:
        for a in range(space.start, space.start + space.n):
            returns = episode_returns(vec, constant_policy(a), seed=6)
            assert returns.mean() <= chance + bound(returns), f"constant action {a}"


@pytest.mark.parametrize("env_id", BASE_IDS)
def test_render_frames_fixed_shape_uint8(env_id):
    env = gym.make(env_id, render_mode="rgb_array").unwrapped
    env.reset(seed=0)
    shape = env.render().shape
    for _ in range(20):
        _, _, te, tr, _ = env.step(env.action_space.sample())
        frame = env.render()
        assert frame.dtype == np.uint8 and frame.shape == shape and frame.shape[2] == 3
        if te or tr:
            env.reset()
    vec = make_vec(env_id, 2, render_mode="rgb_array")
    vec.reset(seed=0)
    frames = vec.render()
    assert len(frames) == 2 and all(f.shape == shape for f in frames)


@pytest.mark.parametrize("env_id", BASE_IDS)
def test_world_state_off_changes_nothing_else(env_id):
    on, off = make_vec(env_id, 4), make_vec(env_id, 4, world_state=False)
    (obs_a, info_a), (obs_b, info_b) = on.reset(seed=2), off.reset(seed=2)
    np.testing.assert_array_equal(obs_a, obs_b)
    assert "world_state" in info_a and "world_state" not in info_b
    act = random_policy(1)
    for _ in range(60):
        actions = act(on)
        a, b = on.step(actions), off.step(actions)
        for x, y in zip(a[:4], b[:4]):
            np.testing.assert_array_equal(x, y)
        assert "world_state" not in b[4]
