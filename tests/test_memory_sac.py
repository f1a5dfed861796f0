"""MemorySAC: the critic's memory reads the previous action, terminal rows bootstrap only
when cut by a time limit, save/load gives identical actions, shared memory trains."""

from __future__ import annotations

import copy

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from stable_baselines3.common.env_util import make_vec_env as sb3_make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy

from memworld.agents import MemorySAC, make_vec_env
from memworld.agents.off_policy.common import copy_buffers, update_target
from memworld.memory import make as make_memory

ENV = "memworld/OccludedDynamicsEasy-v0"
SMALL = dict(memory="gru", memory_kwargs=dict(hidden_dim=16), net_arch=[16])


class PositionOnly(gym.ObservationWrapper):
    """Pendulum without its angular velocity: (cos, sin) of the angle only."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self.observation_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)

    def observation(self, observation: np.ndarray) -> np.ndarray:
        return observation[:2].astype(np.float32)


def small_model(env=None, **kw) -> MemorySAC:
    env = env or make_vec_env(ENV, n_envs=2, seed=0)
    args = dict(
        policy_kwargs=SMALL,
        seed=0,
        device="cpu",
        learning_starts=40,
        buffer_size=2_000,
        batch_size=4,
        seq_len=6,
        burn_in=2,
        state_stride=3,
    )
    args.update(kw)
    return MemorySAC("MlpPolicy", env, **args)


def test_the_critic_memory_reads_the_previous_action_reset_at_episode_starts():
    model = small_model()
    policy = model.policy
    obs = th.rand(2, 12)
    state = policy.initial_state(2)
    state["prev_action"] = th.ones(2, 2)
    with th.no_grad():
        a1, s1 = policy.step(obs, state, th.tensor([True, False]))
        q_state = {k: v.clone() for k, v in s1.items()}
        state["prev_action"] = -th.ones(2, 2)
        _, s2 = policy.step(obs, state, th.tensor([True, False]))
    assert th.equal(s1["prev_action"], a1) and bool((a1.abs() <= 1).all())
    # env 0 starts an episode: its previous action is zeroed, so it cannot matter
    assert th.equal(q_state["qf.h"][0], s2["qf.h"][0])
    assert not th.equal(q_state["qf.h"][1], s2["qf.h"][1])
    assert th.equal(q_state["pi.h"], s2["pi.h"])  # the actor's memory reads no action


@pytest.mark.parametrize("shared", [False, True])
def test_learns_a_few_steps_then_save_load_gives_identical_actions(tmp_path, shared):
    model = small_model(policy_kwargs=dict(SMALL, shared_memory=shared))
    model.learn(100)
    assert model._n_updates > 0
    assert ("pi.h" in model.policy.initial_state(1)) is not shared
    model.save(tmp_path / "sac.zip")
    loaded = MemorySAC.load(tmp_path / "sac.zip", device="cpu")
    assert loaded.policy.shared_memory is shared and loaded.burn_in == 2
    th.testing.assert_close(loaded.log_ent_coef, model.log_ent_coef)
    rng = np.random.default_rng(0)
    state_a = state_b = None
    for t in range(5):
        obs = rng.uniform(0, 1, (2, 12)).astype(np.float32)
        starts = np.array([t == 0, t == 2])
        act_a, state_a = model.predict(obs, state_a, starts, deterministic=True)
        act_b, state_b = loaded.predict(obs, state_b, starts, deterministic=True)
        assert np.array_equal(act_a, act_b)
        assert act_a.shape == (2, 2) and (act_a >= 0).all() and (act_a <= 1).all()  # env units
    mean, _ = evaluate_policy(loaded, make_vec_env(ENV, n_envs=2, seed=3), n_eval_episodes=2)
    assert np.isfinite(mean)


def test_time_limit_rows_bootstrap_and_burn_in_carries_no_loss():
    env = sb3_make_vec_env(
        "Pendulum-v1",
        n_envs=2,
        seed=0,
        wrapper_class=PositionOnly,
        env_kwargs=dict(max_episode_steps=15),
    )
    model = small_model(env, learning_starts=10_000)
    model.learn(80)
    buffer = model.replay_buffer
    assert bool(buffer.is_terminal.any()) and not bool(buffer.terminated.any())
    data = buffer.sample(8)
    before = copy.deepcopy(model.policy.state_dict())
    log_ent = model.log_ent_coef.detach().clone()

    def critic_loss(batch) -> float:  # from the same weights and the same policy samples
        model.policy.load_state_dict(before)
        with th.no_grad():
            model.log_ent_coef.copy_(log_ent)
        th.manual_seed(0)
        return float(model.sac_step(batch)["critic_loss"])

    loss = critic_loss(data)
    b = model.burn_in
    burned = data._replace(
        rewards=th.cat([data.rewards[:b] + 5.0, data.rewards[b:]]),
        actions=th.cat([-data.actions[:b], data.actions[b:]]),
    )
    assert critic_loss(burned) == loss
    moved = data._replace(rewards=th.cat([data.rewards[:b], data.rewards[b:] + 5.0]))
    assert critic_loss(moved) != loss


def test_refuses_discrete_actions():
    env = make_vec_env("memworld/RepeatPreviousEasy-v0", n_envs=1, seed=0)
    with pytest.raises(AssertionError):
        MemorySAC("MlpPolicy", env)


@pytest.mark.slow
def test_memory_sac_gru_solves_position_only_pendulum():
    def env(seed: int):
        return sb3_make_vec_env("Pendulum-v1", n_envs=1, seed=seed, wrapper_class=PositionOnly)

    model = MemorySAC(
        "MlpPolicy",
        env(0),
        learning_rate=1e-3,
        learning_starts=1000,
        batch_size=32,
        seq_len=16,
        burn_in=8,
        policy_kwargs=dict(memory="gru"),
        seed=0,
        device="cpu",
    )
    model.learn(15_000)
    mean, _ = evaluate_policy(model, env(100), n_eval_episodes=10, deterministic=True)
    # a random policy scores about -1200, full-state SAC about -150 to -200
    assert mean >= -300, mean


def test_another_memory_module_trains_and_target_buffers_of_any_dtype_follow():
    model = small_model(policy_kwargs=dict(memory="framestack"), learning_starts=30)
    model.learn(60)
    assert model._n_updates > 0
    online, target = th.nn.Module(), th.nn.Module()
    for net, fill in ((online, True), (target, False)):
        net.register_buffer("flag", th.full((3,), fill))  # a bool buffer cannot be averaged
        net.register_buffer("count", th.full((2,), int(fill)))
    copy_buffers(online, target)
    assert bool(target.flag.all()) and target.count.tolist() == [1, 1]


def test_update_target_drops_what_the_target_memory_derived_from_its_old_weights():
    # lru's one-step path folds its weights once and caches them while no parameter's
    # version moves; polyak_update writes through .data, which the version cannot see.
    online, target = make_memory("lru", 3), make_memory("lru", 3)
    x, starts = th.randn(1, 4, 3), th.zeros(1, 4, dtype=th.bool)
    with th.no_grad():
        before, _ = target(x, target.initial_state(4), starts)  # fills the target's cache
        update_target(online, target, tau=1.0)
        after, _ = target(x, target.initial_state(4), starts)
        want, _ = online(x, online.initial_state(4), starts)
    assert not th.allclose(before, want)
    th.testing.assert_close(after, want, rtol=0, atol=0)
