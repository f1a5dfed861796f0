"""MemoryDQN: exact n-step targets and value rescaling, burn-in without loss, stored states
that replay the rollout's memory, save/load, any SB3 VecEnv."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from stable_baselines3.common.env_util import make_vec_env as sb3_make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy

from memworld.agents import MemoryDQN, make_vec_env
from memworld.agents.off_policy.targets import n_step_returns, rescale, unrescale

ENV = "memworld/RepeatPreviousEasy-v0"
SMALL = dict(memory="gru", memory_kwargs=dict(hidden_dim=16), net_arch=[16])


def column(*values, dtype=th.float32):
    return th.tensor(values, dtype=dtype).view(-1, 1)


def test_n_step_returns_on_hand_made_rows():
    rewards = column(1.0, 2.0, 3.0, 4.0, 5.0)
    values = column(10.0, 20.0, 30.0, 40.0, 50.0)
    no = column(0, 0, 0, 0, 0, dtype=th.bool)
    got = n_step_returns(rewards, no, no, values, gamma=0.5, n=2, length=3)
    # 1 + .5*2 + .25*30, 2 + .5*3 + .25*40, 3 + .5*4 + .25*50
    assert got.flatten().tolist() == [9.5, 13.5, 17.5]
    one = n_step_returns(rewards, no, no, values, gamma=0.5, n=1, length=4)
    assert one.flatten().tolist() == [1 + 10.0, 2 + 15.0, 3 + 20.0, 4 + 25.0]


@pytest.mark.parametrize("terminated", [True, False])
def test_n_step_returns_stop_at_the_terminal_row(terminated):
    # rows: step, step, terminal row (V=30), next episode's first step, step
    rewards = column(1.0, 2.0, 0.0, 4.0, 5.0, 6.0)
    values = column(10.0, 20.0, 30.0, 40.0, 50.0, 60.0)
    terminal = column(0, 0, 1, 0, 0, 0, dtype=th.bool)
    ended = column(0, 0, int(terminated), 0, 0, 0, dtype=th.bool)
    got = n_step_returns(rewards, terminal, ended, values, gamma=0.5, n=3, length=3).flatten()
    boot = 0.0 if terminated else 30.0  # a time-limit cut bootstraps from the terminal row
    assert got.tolist() == [1 + 0.5 * 2 + 0.25 * boot, 2 + 0.5 * boot, boot]


def test_value_rescaling_exact_values_and_inverse():
    x = th.tensor([3.0, -8.0, 0.0, 15.0], dtype=th.float64)
    expected = [2 - 1 + 0.003, -(3 - 1) - 0.008, 0.0, 4 - 1 + 0.015]
    assert rescale(x).tolist() == pytest.approx(expected, abs=1e-12)
    y = th.linspace(-1000, 1000, 2001, dtype=th.float64)
    th.testing.assert_close(unrescale(rescale(y)), y, rtol=1e-9, atol=1e-9)


def small_model(env=None, **kw) -> MemoryDQN:
    env = env or make_vec_env(ENV, n_envs=3, seed=0)
    args = dict(
        policy_kwargs=SMALL,
        seed=0,
        device="cpu",
        learning_starts=10_000,
        buffer_size=3_000,
        batch_size=8,
        seq_len=6,
        burn_in=4,
        state_stride=3,
        n_steps=2,
    )
    args.update(kw)
    return MemoryDQN("MlpPolicy", env, **args)


def test_burn_in_rows_carry_no_loss_and_loss_rows_do():
    model = small_model()
    model.learn(120)  # rollouts only: learning_starts is not reached
    data = model.replay_buffer.sample(16)
    loss = model.sequence_loss(data)[0]
    b = model.burn_in
    burned = data._replace(
        rewards=th.cat([data.rewards[:b] + 7.0, data.rewards[b:]]),
        actions=th.cat([(data.actions[:b] + 1) % 4, data.actions[b:]]),
    )
    assert th.equal(model.sequence_loss(burned)[0], loss)
    moved = data._replace(rewards=th.cat([data.rewards[:b], data.rewards[b:] + 1.0]))
    assert not th.equal(model.sequence_loss(moved)[0], loss)


def test_stored_states_replay_into_the_next_stored_state():
    model = small_model()
    model.learn(150)  # fixed weights: learning never starts
    buffer, stride = model.replay_buffer, model.replay_buffer.state_stride
    envs, starts = buffer.candidates()
    data = buffer.get(envs, starts)
    nxt = buffer.get(envs, starts + stride)
    # where the next slot's row starts an episode, its state is reset before use anyway
    keep = ~nxt.episode_starts[0]
    assert int(keep.sum()) >= 10
    encoder = model.policy.q_net.encoder
    with th.no_grad():
        _, state = encoder(data.observations[:stride], data.states, data.episode_starts[:stride])
    for key, value in state.items():
        th.testing.assert_close(value[keep], nxt.states[key][keep], rtol=0, atol=1e-6)


def test_learns_a_few_steps_then_save_load_gives_identical_actions(tmp_path):
    model = small_model(learning_starts=60, prioritized=True, value_rescaling=True)
    model.learn(150)
    assert model._n_updates > 0
    model.save(tmp_path / "dqn.zip")
    loaded = MemoryDQN.load(tmp_path / "dqn.zip", device="cpu")
    assert loaded.value_rescaling and loaded.seq_len == 6 and loaded.burn_in == 4
    rng = np.random.default_rng(0)
    state_a = state_b = None
    for t in range(6):
        obs = rng.uniform(0, 1, (3, 4)).astype(np.float32)
        starts = np.array([t == 0, False, t == 3])
        act_a, state_a = model.predict(obs, state_a, starts, deterministic=True)
        act_b, state_b = loaded.predict(obs, state_b, starts, deterministic=True)
        assert np.array_equal(act_a, act_b)
        for key in state_a:
            assert np.array_equal(state_a[key], state_b[key])
    env = make_vec_env(ENV, n_envs=2, seed=1)
    mean, _ = evaluate_policy(loaded, env, n_eval_episodes=4, deterministic=True)
    assert np.isfinite(mean)


def test_adam_is_fused_by_default_and_steps_as_plain_adam():
    fused, plain = small_model(), small_model(policy_kwargs=dict(SMALL, optimizer_kwargs={}))
    assert fused.policy.optimizer.defaults["fused"] is True
    assert not plain.policy.optimizer.defaults["fused"]  # given arguments are kept
    for model in (fused, plain):
        for param in model.policy.q_net.parameters():
            param.grad = th.linspace(-1.0, 1.0, param.numel()).view_as(param)
        for _ in range(3):
            model.policy.optimizer.step()
    for a, b in zip(fused.policy.q_net.parameters(), plain.policy.q_net.parameters()):
        th.testing.assert_close(a, b, rtol=0, atol=1e-6)


def test_trains_on_any_sb3_vec_env_with_time_limits():
    env = sb3_make_vec_env("CartPole-v1", n_envs=2, seed=0, env_kwargs=dict(max_episode_steps=20))
    model = small_model(env, learning_starts=40, burn_in=2)
    model.learn(120)
    buffer = model.replay_buffer
    assert model._n_updates > 0
    # CartPole's time limit cuts episodes (terminal rows that bootstrap) and falls end them
    assert bool((buffer.is_terminal & ~buffer.terminated).any())
    assert bool((buffer.is_terminal & buffer.terminated).any())


def test_refuses_box_actions_and_bad_arguments():
    with pytest.raises(ValueError, match="n_steps"):
        small_model(n_steps=0)
    env = make_vec_env("memworld/OccludedDynamicsEasy-v0", n_envs=1, seed=0)
    with pytest.raises(AssertionError):
        MemoryDQN("MlpPolicy", env)


def test_memworld_train_builds_memorydqn_with_its_memory_and_evaluates(tmp_path):
    from memworld.train import TrainConfig, evaluate, train

    config = TrainConfig(
        algo="memorydqn",
        memory="gru",
        memory_kwargs=dict(hidden_dim=8),
        steps=160,
        n_envs=2,
        checkpoint_every=80,
        hyperparams=dict(learning_starts=80, seq_len=4, batch_size=4),
    )
    assert config.memory_label == "gru"
    run = train(config, root=tmp_path, progress=False)
    assert run.parts[-2] == "memorydqn-gru"
    result = evaluate(run, episodes=2)
    assert result["algo"] == "memorydqn" and np.isfinite(result["mean_return"])
    with pytest.raises(ValueError, match="memory must be one of"):
        TrainConfig(algo="memorysac", memory="nope")


@pytest.mark.slow
def test_memory_dqn_gru_solves_repeat_previous_easy():
    env = make_vec_env(ENV, n_envs=8, seed=0)
    model = MemoryDQN(
        "MlpPolicy",
        env,
        gamma=0.9,
        learning_starts=1000,
        seq_len=16,
        burn_in=8,
        target_update_interval=1000,
        policy_kwargs=dict(memory="gru"),
        seed=0,
        device="cpu",
    )
    model.learn(16_000)
    task = gym.make(ENV).unwrapped
    chance, best = float(task.chance_return), float(task.max_return)
    mean, _ = evaluate_policy(
        model, make_vec_env(ENV, n_envs=8, seed=100), n_eval_episodes=32, deterministic=True
    )
    assert (mean - chance) / (best - chance) >= 0.9, mean
