"""MemoryPPO's value normalisation: a shared memory's update does not grow with the reward scale.

Also: the statistics on hand-made returns, PopArt keeping the critic's outputs,
old saved policies without statistics, and ``torch_threads``.
"""

from __future__ import annotations

import gymnasium as gym
import pytest
import torch as th
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.vec_env import DummyVecEnv

from memworld.agents import MemoryPPO
from memworld.agents.value_norm import ValueNormalizer
from tests.test_memory_ppo import CueEnv, cue_env


def _memory_step_norm(reward_scale: float, **policy_kwargs) -> float:
    """How far one update (one epoch, one minibatch) moves the shared memory's parameters.

    Plain SGD without gradient clipping, so the step is the gradient itself: Adam's first
    step is about ``lr`` per parameter whatever the gradient's size, and clipping caps it.
    The rollouts at both scales are the same draw for draw (same seed; a reward does not
    change what the policy does), so only the rewards differ.
    """
    env = DummyVecEnv(
        [
            lambda: gym.wrappers.TransformReward(CueEnv(), lambda r: r * reward_scale)
            for _ in range(3)
        ]
    )
    model = MemoryPPO(
        "MlpPolicy",
        env,
        n_steps=16,
        batch_size=48,
        n_epochs=1,
        learning_rate=1e-2,
        max_grad_norm=float("inf"),
        seed=0,
        device="cpu",
        policy_kwargs=dict(
            memory="gru",
            memory_kwargs=dict(hidden_dim=16),
            net_arch=[16],
            optimizer_class=th.optim.SGD,
            **policy_kwargs,
        ),
    )
    before = th.nn.utils.parameters_to_vector(model.policy.memory.parameters()).clone()
    model.learn(48)
    after = th.nn.utils.parameters_to_vector(model.policy.memory.parameters())
    return float((after - before).detach().norm())


@pytest.mark.parametrize(
    "policy_kwargs",
    [
        {},  # the default, value_norm="popart"; raw targets (the old default) move it ~400x
        dict(value_norm="running"),
        dict(value_norm=None, value_grad_to_memory=0.0),
    ],
)
def test_rewards_times_1000_move_the_shared_memory_as_far_as_the_original_rewards(policy_kwargs):
    ratio = _memory_step_norm(1000.0, **policy_kwargs) / _memory_step_norm(1.0, **policy_kwargs)
    assert 0.7 < ratio < 1.5, ratio


def test_without_value_norm_the_value_gradient_swamps_the_shared_memory():
    # The failure the default prevents: raw returns 1000x larger move the memory ~1000x further.
    ratio = _memory_step_norm(1000.0, value_norm=None) / _memory_step_norm(1.0, value_norm=None)
    assert ratio > 50, ratio


def test_value_normalizer_statistics_on_hand_made_returns():
    head = th.nn.Linear(2, 1)
    norm = ValueNormalizer("running", decay=0.5)
    norm.update(th.tensor([1.0, 3.0]), head)  # the first rollout alone: mean 2, var 1
    assert (float(norm.mean), float(norm.var)) == pytest.approx((2.0, 1.0))
    # Weight 0.5 * 1 + 1 = 1.5: the new rollout's share is 2/3.
    # mean = 2/3 * 5 + 1/3 * 2 = 4; var = 1/3 * (1 + (2 - 4)^2) + 2/3 * (0 + (5 - 4)^2) = 7/3
    norm.update(th.tensor([5.0, 5.0]), head)
    assert (float(norm.mean), float(norm.var)) == pytest.approx((4.0, 7.0 / 3.0))
    assert float(norm.std) == pytest.approx((7.0 / 3.0) ** 0.5)
    x = th.tensor([0.0, 4.0, 10.0])
    th.testing.assert_close(norm.denormalize(norm.normalize(x)), x)
    with pytest.raises(ValueError, match="value_norm='batch' is not one of"):
        ValueNormalizer("batch")


@pytest.mark.parametrize("mode, kept", [("popart", True), ("running", False)])
def test_popart_keeps_the_critics_outputs_when_the_statistics_move(mode, kept):
    model = MemoryPPO(
        "MlpPolicy", cue_env(), n_steps=8, device="cpu", policy_kwargs=dict(value_norm=mode)
    )
    policy = model.policy
    obs = th.rand(3, 3)
    state, starts = policy.initial_state(3), th.ones(3, dtype=th.bool)
    with th.no_grad():
        policy.update_value_norm(th.tensor([1.0, 2.0, 3.0]))  # the first: set, no rescale
        before = policy.predict_values(obs, state, starts)
        policy.update_value_norm(th.tensor([100.0, 300.0, 500.0]))
        after = policy.predict_values(obs, state, starts)
    assert th.allclose(before, after, atol=1e-3) == kept, (before, after)
    # Debiased weights 0.9 and 1: mean (0.9 * 2 + 300) / 1.9.
    assert float(policy.value_normalizer.mean) == pytest.approx(301.8 / 1.9)


def test_a_policy_saved_without_value_statistics_loads_with_identity_ones():
    old = MemoryPPO("MlpPolicy", cue_env(), device="cpu", policy_kwargs=dict(value_norm=None))
    new = MemoryPPO("MlpPolicy", cue_env(), device="cpu", policy_kwargs=dict(value_norm="popart"))
    new.policy.load_state_dict(old.policy.state_dict())  # strict: no missing-key error
    assert float(new.policy.value_normalizer.mean) == 0.0
    assert float(new.policy.value_normalizer.std) == 1.0


def test_value_grad_to_memory_is_checked():
    with pytest.raises(ValueError, match="value_grad_to_memory"):
        MemoryPPO("MlpPolicy", cue_env(), policy_kwargs=dict(value_grad_to_memory=1.5))


class _Threads(BaseCallback):
    def _on_step(self) -> bool:
        self.seen = th.get_num_threads()
        return True


def test_torch_threads_hold_during_learn_and_are_restored_and_saved(tmp_path):
    threads = th.get_num_threads()
    model = MemoryPPO("MlpPolicy", cue_env(), n_steps=8, device="cpu", torch_threads=3)
    callback = _Threads()
    model.learn(24, callback=callback)
    assert callback.seen == 3 and th.get_num_threads() == threads
    model.save(tmp_path / "m.zip")
    assert MemoryPPO.load(tmp_path / "m.zip", device="cpu").torch_threads == 3
    with pytest.raises(ValueError, match="torch_threads"):
        MemoryPPO("MlpPolicy", cue_env(), torch_threads=0)
