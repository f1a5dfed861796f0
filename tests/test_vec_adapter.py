"""GymnasiumVecEnvAdapter and agents.make_vec_env against SB3's own DummyVecEnv."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces
from gymnasium.vector import AutoresetMode
from stable_baselines3 import PPO
from stable_baselines3.common.env_util import make_vec_env as sb3_make_vec_env
from stable_baselines3.common.vec_env import (
    DummyVecEnv,
    VecCheckNan,
    VecEnv,
    VecFrameStack,
    VecMonitor,
    VecNormalize,
)

from memworld import envs  # noqa: F401  (registers memworld ids)
from memworld.agents import GymnasiumVecEnvAdapter, make_vec_env


class CounterEnv(gym.Env):
    """Observation ``[t, episode]``; ends after ``length`` steps, by truncation or termination.

    Reward is ``10 * episode + t``, so every number in a rollout says where it came from.
    """

    metadata = {"render_modes": ["rgb_array"]}

    def __init__(self, length: int = 3, truncate: bool = True, render_mode: str | None = None):
        self.length, self.truncate, self.render_mode = length, truncate, render_mode
        self.observation_space = spaces.Box(0, 1000, (2,), np.float32)
        self.action_space = spaces.Discrete(2)
        self.t, self.episode = 0, -1

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t, self.episode = 0, self.episode + 1
        return self._obs(), {"episode_id": self.episode}

    def step(self, action):
        self.t += 1
        ended = self.t >= self.length
        reward = float(10 * self.episode + self.t)
        info = {"t": self.t}
        return self._obs(), reward, ended and not self.truncate, ended and self.truncate, info

    def _obs(self):
        return np.array([self.t, self.episode], np.float32)

    def render(self):
        return np.full((4, 4, 3), self.t, np.uint8)


def counter_fns():
    # Different lengths and end kinds per env, so episodes end at different steps.
    return [
        lambda: CounterEnv(3, truncate=True, render_mode="rgb_array"),
        lambda: CounterEnv(2, truncate=False, render_mode="rgb_array"),
        lambda: CounterEnv(5, truncate=True, render_mode="rgb_array"),
    ]


@pytest.mark.parametrize(
    "mode", [AutoresetMode.SAME_STEP, AutoresetMode.NEXT_STEP, AutoresetMode.DISABLED]
)
def test_adapter_matches_dummy_vec_env_step_for_step(mode):
    reference = DummyVecEnv(counter_fns())
    adapter = GymnasiumVecEnvAdapter(gym.vector.SyncVectorEnv(counter_fns(), autoreset_mode=mode))
    np.testing.assert_array_equal(adapter.reset(), reference.reset())
    ends = 0
    for _ in range(12):
        actions = np.zeros(3, dtype=np.int64)
        obs, rewards, dones, infos = adapter.step(actions)
        ref_obs, ref_rewards, ref_dones, ref_infos = reference.step(actions)
        np.testing.assert_array_equal(obs, ref_obs)
        np.testing.assert_array_equal(rewards, ref_rewards)
        np.testing.assert_array_equal(dones, ref_dones)
        assert obs.shape == (3, 2) and rewards.shape == (3,) and dones.shape == (3,)
        for i in range(3):
            assert infos[i]["t"] == ref_infos[i]["t"]  # the final step's info
            if ref_dones[i]:
                ends += 1
                np.testing.assert_array_equal(
                    infos[i]["terminal_observation"], ref_infos[i]["terminal_observation"]
                )
                assert infos[i]["TimeLimit.truncated"] == ref_infos[i]["TimeLimit.truncated"]
                assert adapter.reset_infos[i]["episode_id"] == obs[i, 1]
            else:
                assert "terminal_observation" not in infos[i]
    assert ends >= 8


def test_adapter_on_async_vector_env():
    reference = DummyVecEnv(counter_fns())
    async_env = gym.vector.AsyncVectorEnv(counter_fns(), autoreset_mode=AutoresetMode.SAME_STEP)
    adapter = GymnasiumVecEnvAdapter(async_env)
    try:
        np.testing.assert_array_equal(adapter.reset(), reference.reset())
        for _ in range(6):
            obs, _, dones, infos = adapter.step(np.zeros(3, dtype=np.int64))
            ref_obs, _, ref_dones, ref_infos = reference.step(np.zeros(3, dtype=np.int64))
            np.testing.assert_array_equal(obs, ref_obs)
            for i in np.flatnonzero(ref_dones):
                np.testing.assert_array_equal(
                    infos[i]["terminal_observation"], ref_infos[i]["terminal_observation"]
                )
        assert adapter.get_attr("length") == [3, 2, 5]
        adapter.set_attr("length", 7, indices=[1])
        assert adapter.get_attr("length", indices=[0, 1]) == [3, 7]
        assert adapter.env_method("render", indices=[2])[0].shape == (4, 4, 3)
    finally:
        adapter.close()


def test_adapter_terminal_observation_is_the_last_one_before_reset():
    adapter = GymnasiumVecEnvAdapter(
        gym.vector.SyncVectorEnv(counter_fns(), autoreset_mode=AutoresetMode.SAME_STEP)
    )
    adapter.reset()
    for _ in range(2):
        obs, _, dones, infos = adapter.step(np.zeros(3, dtype=np.int64))
    # Env 1 (length 2, terminates) ended on step 2: terminal obs [2, 0], new obs [0, 1].
    assert dones.tolist() == [False, True, False]
    np.testing.assert_array_equal(infos[1]["terminal_observation"], [2, 0])
    np.testing.assert_array_equal(obs[1], [0, 1])
    assert infos[1]["TimeLimit.truncated"] is False
    obs, _, dones, infos = adapter.step(np.zeros(3, dtype=np.int64))
    # Env 0 (length 3) is truncated on step 3.
    assert dones.tolist() == [True, False, False]
    np.testing.assert_array_equal(infos[0]["terminal_observation"], [3, 0])
    assert infos[0]["TimeLimit.truncated"] is True


def test_adapter_seeds_like_sb3_and_supports_env_access():
    def make():
        venv = gym.make_vec(
            "CartPole-v1",
            num_envs=4,
            vectorization_mode="sync",
            vector_kwargs={"autoreset_mode": AutoresetMode.SAME_STEP},
            render_mode="rgb_array",  # frames need pygame: only the attribute is checked
        )
        return GymnasiumVecEnvAdapter(venv)

    adapter = make()
    adapter.seed(7)
    reference = sb3_make_vec_env("CartPole-v1", n_envs=4, seed=7)  # env i seeded 7 + i
    first = adapter.reset()
    np.testing.assert_array_equal(first, reference.reset())
    assert adapter.get_attr("np_random_seed") == [7, 8, 9, 10]
    assert not np.array_equal(adapter.reset(), first)  # the seed is used once, as in SB3
    adapter.seed(7)
    np.testing.assert_array_equal(adapter.reset(), first)
    assert adapter.get_attr("render_mode") == ["rgb_array"] * 4
    assert adapter.env_method("get_wrapper_attr", "spec", indices=[1])[0].id == "CartPole-v1"
    assert adapter.env_is_wrapped(gym.wrappers.TimeLimit) == [True] * 4


def test_memworld_make_vec_env_equals_sb3_scalar_envs():
    env_id, n_envs, seed = "memworld/RepeatPreviousEasy-v0", 4, 3
    venv = make_vec_env(env_id, n_envs=n_envs, seed=seed)
    assert isinstance(venv, VecMonitor) and isinstance(venv.venv, GymnasiumVecEnvAdapter)
    reference = sb3_make_vec_env(env_id, n_envs=n_envs, seed=seed)  # one scalar env each
    obs, ref_obs = venv.reset(), reference.reset()
    assert obs.shape == (n_envs, *venv.observation_space.shape)
    np.testing.assert_array_equal(obs, ref_obs)
    rng = np.random.default_rng(0)
    episodes = 0
    for _ in range(120):
        actions = rng.integers(0, venv.action_space.n, size=n_envs)
        obs, rewards, dones, infos = venv.step(actions)
        ref_obs, ref_rewards, ref_dones, ref_infos = reference.step(actions)
        np.testing.assert_array_equal(obs, ref_obs)
        np.testing.assert_allclose(rewards, ref_rewards, rtol=1e-6)
        np.testing.assert_array_equal(dones, ref_dones)
        for i in np.flatnonzero(dones):
            episodes += 1
            np.testing.assert_array_equal(
                infos[i]["terminal_observation"], ref_infos[i]["terminal_observation"]
            )
            assert infos[i]["TimeLimit.truncated"] == ref_infos[i]["TimeLimit.truncated"]
            assert infos[i]["episode"]["r"] == pytest.approx(ref_infos[i]["episode"]["r"], abs=1e-5)
    assert episodes >= n_envs


def test_native_batched_env_access_and_render():
    venv = make_vec_env(
        "memworld/RepeatPreviousEasy-v0", n_envs=3, seed=0, env_kwargs={"render_mode": "rgb_array"}
    )
    venv.reset()
    frames = venv.get_images()
    assert len(frames) == 3 and all(f.dtype == np.uint8 and f.ndim == 3 for f in frames)
    assert venv.render().ndim == 3  # tiled by SB3
    assert venv.get_attr("render_mode") == ["rgb_array"] * 3
    oracle = venv.env_method("oracle_actions")  # runs once on the batch
    assert len(oracle) == 3 and oracle[0].shape == (3,)
    with pytest.raises(ValueError, match="indices=None"):
        venv.set_attr("render_mode", None, indices=[0])


def test_sb3_wrappers_and_ppo_run_on_the_adapter():
    venv = make_vec_env("memworld/RepeatPreviousEasy-v0", n_envs=4, seed=0)
    assert isinstance(venv, VecEnv)
    wrapped = VecFrameStack(VecNormalize(VecCheckNan(venv, raise_exception=True)), n_stack=2)
    wrapped.reset()
    obs, _, _, _ = wrapped.step(np.zeros(4, dtype=np.int64))
    assert obs.shape == (4, 2 * venv.observation_space.shape[0])
    model = PPO("MlpPolicy", venv, n_steps=16, batch_size=32, n_epochs=1, seed=0, device="cpu")
    model.learn(64)
    assert model.num_timesteps == 64


def test_make_vec_env_falls_back_to_sb3_for_other_ids():
    venv = make_vec_env("CartPole-v1", n_envs=2, seed=0)
    assert isinstance(venv, DummyVecEnv)
    with pytest.raises(TypeError, match="env_kwargs"):
        make_vec_env("memworld/RepeatPreviousEasy-v0", n_envs=2, vec_env_cls=DummyVecEnv)


def test_adapter_rejects_a_non_vector_env():
    with pytest.raises(TypeError, match="make_vec"):
        GymnasiumVecEnvAdapter(gym.make("CartPole-v1"))


def test_make_vec_env_takes_short_names_and_names_the_closest_ids():
    short, full = (
        make_vec_env("KeyDoorEasy", n_envs=2, seed=3),
        make_vec_env("memworld/KeyDoorEasy-v0", n_envs=2, seed=3),
    )
    np.testing.assert_array_equal(short.reset(), full.reset())
    with pytest.raises(ValueError, match="did you mean memworld/KeyDoorEasy-v0"):
        make_vec_env("KeyDorEasy")
