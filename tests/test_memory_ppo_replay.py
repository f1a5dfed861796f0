"""MemoryPPO replays its rollouts exactly: the log-probs and values a training pass
recomputes from the stored sequence-start states equal the ones the rollout recorded,
for every memory module, with truncated BPTT, across action and observation spaces, and
after real updates between rollouts."""

from __future__ import annotations

import pytest
import torch as th
from gymnasium import spaces
from stable_baselines3.common.callbacks import BaseCallback

from memworld import memory
from memworld.agents import MemoryPPO
from tests.test_memory_ppo import cue_env, frozen_lr, small_kwargs


def _replay_model(env, n_steps=14, bptt_len=None, device="cpu", **policy_kwargs):
    policy = "MultiInputPolicy" if isinstance(env.observation_space, spaces.Dict) else "MlpPolicy"
    policy_kwargs.setdefault("net_arch", [16])
    return MemoryPPO(
        policy,
        env,
        n_steps=n_steps,
        bptt_len=bptt_len,
        learning_rate=frozen_lr,
        n_epochs=2,
        seed=0,
        device=device,
        policy_kwargs=policy_kwargs,
    )


def _assert_replay_exact(model):
    buf = model.rollout_buffer
    assert buf.episode_starts[1:].any(), "the test needs episode starts inside the rollout"
    assert not buf.episode_starts[0].all(), (
        "the test needs a state carried over from the last rollout"
    )
    model.policy.set_training_mode(True)  # as train() does
    with th.no_grad():
        for batch in buf.get(2):
            values, log_prob, _, _ = model.evaluate_sequences(batch)
            th.testing.assert_close(log_prob, batch.old_log_prob, atol=1e-5, rtol=1e-5)
            th.testing.assert_close(values, batch.old_values, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("bptt_len", [None, 7])
@pytest.mark.parametrize("name", memory.names())
def test_replay_reproduces_rollout_log_probs_and_values(name, bptt_len):
    model = _replay_model(
        cue_env(), bptt_len=bptt_len, memory=name, memory_kwargs=small_kwargs(name)
    )
    model.learn(2 * 3 * 14)  # two rollouts: the second starts from a carried-over state
    _assert_replay_exact(model)
    assert model.logger.name_to_value.get("train/clip_fraction", 0.0) == 0.0


class ReplayCheck(BaseCallback):
    """After every rollout but the first (whose weights the optimiser has not moved yet),
    before the update: the rollout's log-probs and values equal a replay of it."""

    def __init__(self) -> None:
        super().__init__()
        self.checked = 0

    def _on_step(self) -> bool:
        return True

    def _on_rollout_end(self) -> None:
        if self.model.num_timesteps > self.model.n_steps * self.model.n_envs:
            _assert_replay_exact(self.model)
            self.checked += 1


@pytest.mark.parametrize("name", memory.names())
def test_rollouts_use_the_updated_weights(name):
    """With real updates between rollouts (Adam's fused kernel, MemoryPPO's default, which
    moves no version counter), each rollout is computed with the weights of its time: a
    one-step path that cached weights derived from the parameters and missed the update
    would act with the first rollout's weights and fail the replay."""
    model = MemoryPPO(
        "MlpPolicy",
        cue_env(),
        n_steps=14,
        learning_rate=1e-2,
        n_epochs=2,
        seed=0,
        device="cpu",
        policy_kwargs=dict(net_arch=[16], memory=name, memory_kwargs=small_kwargs(name)),
    )
    check = ReplayCheck()
    model.learn(3 * 3 * 14, callback=check)
    assert check.checked == 2


@pytest.mark.parametrize(
    "env_kwargs, policy_kwargs",
    [
        (dict(action_kind="box"), dict(shared_memory=False)),
        (dict(action_kind="multidiscrete"), {}),
        (dict(dict_obs=True), dict(shared_memory=False, share_features_extractor=False)),
    ],
)
def test_replay_exact_for_action_and_observation_spaces(env_kwargs, policy_kwargs):
    model = _replay_model(cue_env(**env_kwargs), bptt_len=7, memory="gru", **policy_kwargs)
    model.learn(2 * 3 * 14)
    _assert_replay_exact(model)


def test_train_with_zero_learning_rate_keeps_ratio_one():
    model = _replay_model(cue_env(), memory="lstm")
    model.learn(3 * 14)
    assert model.logger.name_to_value["train/approx_kl"] < 1e-9
    assert model.logger.name_to_value["train/clip_fraction"] == 0.0
