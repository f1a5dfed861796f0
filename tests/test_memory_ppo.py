"""MemoryPPO: GAE and time-limit bootstrap, optimiser defaults, save/load, evaluation.

Exact state replay is tested in test_memory_ppo_replay.py, learning (slow) in
test_memory_ppo_learning.py.
"""

from __future__ import annotations

import inspect

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from gymnasium import spaces
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.logger import configure
from stable_baselines3.common.vec_env import DummyVecEnv

from memworld import memory
from memworld.agents import MemoryPPO
from memworld.memory.base import MemoryModule

# Small sizes offered to every registered module (only those its constructor takes).
SMALL_KWARGS = {
    "hidden_dim": 16,
    "num_slots": 16,
    "slot_dim": 8,
    "key_dim": 8,
    "window": 4,
    "num_frames": 4,
    "num_heads": 2,
    "d_model": 16,
    "model_dim": 16,
}


def small_kwargs(name: str) -> dict:
    cls = type(memory.make(name, input_dim=4))
    params = inspect.signature(cls.__init__).parameters
    return {k: v for k, v in SMALL_KWARGS.items() if k in params}


class CueEnv(gym.Env):
    """Remember the first bit: step 0 shows a cue bit, the last step asks for it.

    Observation ``[cue is 0, cue is 1, query]`` (the cue only on step 0, the
    query flag only on the last step), or the same as a Dict.  Episodes last
    ``min_length..max_length`` steps and terminate; the last step pays +1 for
    the cue's value and -1 otherwise.  Actions: Discrete(2); MultiDiscrete([2, 3])
    (first component answers); Box(-1, 1, (2,)) (answer = first component > 0).
    """

    def __init__(self, min_length=2, max_length=6, action_kind="discrete", dict_obs=False):
        self.min_length, self.max_length, self.dict_obs = min_length, max_length, dict_obs
        self.action_kind = action_kind
        self.action_space = {
            "discrete": spaces.Discrete(2),
            "multidiscrete": spaces.MultiDiscrete([2, 3]),
            "box": spaces.Box(-1, 1, (2,), np.float32),
        }[action_kind]
        box = spaces.Box(0, 1, (3,), np.float32)
        self.observation_space = (
            spaces.Dict(
                {
                    "cue": spaces.Box(0, 1, (2,), np.float32),
                    "query": spaces.Box(0, 1, (1,), np.float32),
                }
            )
            if dict_obs
            else box
        )

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.cue = int(self.np_random.integers(2))
        self.length = int(self.np_random.integers(self.min_length, self.max_length + 1))
        self.t = 0
        return self._obs(), {}

    def step(self, action):
        self.t += 1
        done = self.t >= self.length
        reward = 0.0
        if done:
            answer = {
                "discrete": lambda a: int(a),
                "multidiscrete": lambda a: int(a[0]),
                "box": lambda a: int(a[0] > 0),
            }[self.action_kind](action)
            reward = 1.0 if answer == self.cue else -1.0
        return self._obs(), reward, done, False, {}

    def _obs(self):
        vec = np.zeros(3, np.float32)
        if self.t == 0:
            vec[self.cue] = 1.0
        if self.t == self.length - 1:
            vec[2] = 1.0
        return {"cue": vec[:2], "query": vec[2:]} if self.dict_obs else vec


class EndsEnv(gym.Env):
    """Constant observation, reward 1 per step; ends after ``length`` steps by truncation or termination."""

    def __init__(self, length: int, truncate: bool):
        self.length, self.truncate = length, truncate
        self.observation_space = spaces.Box(-1, 1, (1,), np.float32)
        self.action_space = spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.zeros(1, np.float32), {}

    def step(self, action):
        self.t += 1
        end = self.t >= self.length
        return np.zeros(1, np.float32), 1.0, end and not self.truncate, end and self.truncate, {}


class StepCounter(MemoryModule):
    """Test memory: outputs the number of steps since the episode started (a custom module)."""

    def __init__(self, input_dim: int) -> None:
        super().__init__(input_dim, output_dim=1)

    def initial_state(self, batch_size, device="cpu"):
        return {"count": th.zeros(batch_size, 1, device=device)}

    def forward(self, x, state, episode_starts):
        outputs = []
        for t in range(x.shape[0]):
            state = self.reset_rows(state, episode_starts[t])
            state = {"count": state["count"] + 1}
            outputs.append(state["count"])
        return th.stack(outputs), state

    def aux_loss(self, state=None):
        return th.tensor(0.25)

    def diagnostics(self, state):
        return {"count_mean": float(state["count"].mean())}


def ends_env():
    # env 0 is truncated after 3 steps, env 1 terminates after 2.
    return DummyVecEnv([lambda: EndsEnv(3, truncate=True), lambda: EndsEnv(2, truncate=False)])


def test_gae_with_constant_critic_bootstraps_truncation_not_termination():
    model = MemoryPPO(
        "MlpPolicy",
        ends_env(),
        n_steps=5,
        gamma=0.5,
        gae_lambda=0.5,
        learning_rate=frozen_lr,
        n_epochs=1,
        seed=0,
        device="cpu",
    )
    with th.no_grad():  # V = 1 everywhere
        model.policy.value_net.weight.zero_()
        model.policy.value_net.bias.fill_(1.0)
    model.learn(10)
    buf = model.rollout_buffer
    # Per step: delta = r + 0.5 * V(next) * (not done) - V = 0.5 on ordinary steps, 0 on a
    # termination, and 0.5 on the truncation, whose reward is 1 + 0.5 * V(terminal) = 1.5.
    # A_t = delta_t + 0.25 * A_{t+1} within an episode.
    np.testing.assert_allclose(buf.rewards[:, 0], [1, 1, 1.5, 1, 1])
    np.testing.assert_allclose(buf.rewards[:, 1], [1, 1, 1, 1, 1])
    np.testing.assert_allclose(buf.advantages[:, 0], [0.65625, 0.625, 0.5, 0.625, 0.5], atol=1e-6)
    np.testing.assert_allclose(buf.advantages[:, 1], [0.5, 0.0, 0.5, 0.0, 0.5], atol=1e-6)
    np.testing.assert_allclose(buf.returns, buf.advantages + 1.0, atol=1e-6)


def test_time_limit_bootstrap_uses_the_memory_state_after_the_last_step():
    model = MemoryPPO(
        "MlpPolicy",
        ends_env(),
        n_steps=5,
        gamma=0.5,
        learning_rate=frozen_lr,
        n_epochs=1,
        seed=0,
        device="cpu",
        policy_kwargs=dict(memory=StepCounter, net_arch=[]),
    )
    with th.no_grad():  # V = steps since the episode started
        model.policy.value_net.weight.fill_(1.0)
        model.policy.value_net.bias.zero_()
    model.learn(10)
    buf = model.rollout_buffer
    np.testing.assert_allclose(buf.values[:, 0], [1, 2, 3, 1, 2])
    # Truncated after 3 steps: the terminal observation is the 4th step of that memory.
    np.testing.assert_allclose(buf.rewards[:, 0], [1, 1, 1 + 0.5 * 4, 1, 1])


def frozen_lr(progress_remaining: float) -> float:
    """A zero learning-rate schedule: updates leave the parameters as they are.

    (A constant 0 is refused as a user error; a schedule may reach 0.)
    """
    return 0.0


def cue_env(n_envs=3, **kwargs):
    return DummyVecEnv([lambda: CueEnv(**kwargs) for _ in range(n_envs)])


@pytest.mark.parametrize(
    "optimizer_class, optimizer_kwargs, want",
    [
        (th.optim.Adam, None, {"eps": 1e-5, "fused": True}),  # SB3's PPO eps, fused kernel
        (th.optim.AdamW, None, {"fused": True}),
        (th.optim.Adam, {"eps": 1e-7}, {"eps": 1e-7, "fused": None}),  # given: kept as is
        (th.optim.SGD, None, {"fused": None}),
    ],
)
def test_default_optimizer_is_adam_fused_with_ppo_eps(optimizer_class, optimizer_kwargs, want):
    policy_kwargs = dict(optimizer_class=optimizer_class, optimizer_kwargs=optimizer_kwargs)
    model = MemoryPPO("MlpPolicy", cue_env(), n_steps=8, device="cpu", policy_kwargs=policy_kwargs)
    assert type(model.policy.optimizer) is optimizer_class
    defaults = model.policy.optimizer.defaults
    assert {key: defaults.get(key) for key in want} == want


def test_aux_loss_and_diagnostics_are_logged(tmp_path):
    model = MemoryPPO(
        "MlpPolicy",
        cue_env(),
        n_steps=8,
        n_epochs=1,
        seed=0,
        device="cpu",
        policy_kwargs=dict(memory=StepCounter),
    )
    model.set_logger(configure(str(tmp_path), ["csv"]))
    model.learn(48)
    header = (tmp_path / "progress.csv").read_text().splitlines()[0].split(",")
    assert "memory/count_mean" in header and "train/aux_loss" in header
    assert model.logger.name_to_value["train/aux_loss"] == pytest.approx(0.25)


def test_save_load_gives_identical_deterministic_actions(tmp_path):
    env = cue_env()
    model = MemoryPPO(
        "MlpPolicy", env, n_steps=8, seed=0, device="cpu", policy_kwargs=dict(memory="lstm")
    )
    model.learn(48)
    model.save(tmp_path / "model.zip")
    loaded = MemoryPPO.load(tmp_path / "model.zip", env=env, device="cpu")
    assert loaded.policy.memory_name == "lstm" and loaded.n_steps == 8
    obs = env.reset()
    state_a = state_b = None
    starts = np.ones(env.num_envs, dtype=bool)
    for _ in range(10):
        actions_a, state_a = model.predict(obs, state_a, starts, deterministic=True)
        actions_b, state_b = loaded.predict(obs, state_b, starts, deterministic=True)
        np.testing.assert_array_equal(actions_a, actions_b)
        for key in state_a:
            np.testing.assert_array_equal(state_a[key], state_b[key])
        obs, _, starts, _ = env.step(actions_a)
    loaded.learn(24)  # and it keeps training


def test_evaluate_policy_runs_on_memory_ppo():
    model = MemoryPPO("MlpPolicy", cue_env(), n_steps=8, seed=0, device="cpu")
    mean, std = evaluate_policy(model, cue_env(2), n_eval_episodes=6, warn=False)
    assert -1.0 <= mean <= 1.0 and std >= 0.0
    # A single (non-vectorised) observation works as in RecurrentPPO.
    action, state = model.predict(CueEnv().reset(seed=0)[0], deterministic=True)
    assert np.shape(action) == () and all(v.shape[0] == 1 for v in state.values())


def test_predict_clips_box_actions_and_counts_dict_observation_rows():
    """predict, as SB3's: Gaussian samples outside the Box are clipped to it (the policy
    does not squash); a Dict observation batch gives one action and state row per env."""
    env = cue_env(4, action_kind="box", dict_obs=True)
    model = MemoryPPO(
        "MultiInputPolicy",
        env,
        n_steps=8,
        seed=0,
        device="cpu",
        policy_kwargs=dict(log_std_init=3.0),
    )
    obs = env.reset()
    actions, state = model.predict(obs, None, np.ones(4, dtype=bool), deterministic=False)
    assert actions.shape == (4, 2) and all(v.shape[0] == 4 for v in state.values())
    assert np.all(np.abs(actions) <= 1.0)
    # std e^3 = 20: eight draws of a coordinate all inside [-1, 1] have odds below 1e-8.
    assert np.any(np.abs(actions) == 1.0)


def test_default_learning_rate_is_the_memory_modules_recommended_lr():
    class SlowTrace(memory.GRU):
        recommended_lr = 2.5e-4

    env = cue_env()
    lrs = {
        spec: MemoryPPO("MlpPolicy", env, policy_kwargs=dict(memory=spec)).learning_rate
        for spec in ("gru", "slot", SlowTrace)
    }
    assert lrs == {"gru": 3e-3, "slot": 1e-3, SlowTrace: 2.5e-4}
    assert MemoryPPO("MlpPolicy", env).learning_rate == 3e-3  # the policy's default lstm
    given = MemoryPPO("MlpPolicy", env, learning_rate=7e-4, policy_kwargs=dict(memory="slot"))
    assert given.learning_rate == 7e-4
    assert given.policy.optimizer.param_groups[0]["lr"] == 7e-4


def test_bad_batch_size_and_bptt_len_say_how_to_fix():
    with pytest.raises(ValueError, match="multiple of the sequence length"):
        MemoryPPO("MlpPolicy", cue_env(), n_steps=16, batch_size=24, device="cpu")
    with pytest.raises(ValueError, match="divisor of n_steps"):
        MemoryPPO("MlpPolicy", cue_env(), n_steps=16, bptt_len=5, device="cpu")
    with pytest.raises(ValueError, match="share_features_extractor"):
        MemoryPPO("MlpPolicy", cue_env(), policy_kwargs=dict(share_features_extractor=False))


def test_ppo_losses_on_a_hand_made_minibatch():
    from types import SimpleNamespace

    from memworld.agents.ppo_loss import ppo_losses

    batch = SimpleNamespace(
        advantages=th.tensor([1.0, -1.0]),
        old_log_prob=th.zeros(2),
        old_values=th.tensor([0.0, 0.0]),
        returns=th.tensor([1.0, 2.0]),
    )
    log_prob = th.log(th.tensor([1.5, 1.5]))  # ratio 1.5 on both samples
    values = th.tensor([0.5, 1.0])
    terms = ppo_losses(values, log_prob, th.tensor([0.3, 0.5]), batch, 0.2, None, False)
    # sample 0: min(1 * 1.5, 1 * 1.2) = 1.2; sample 1: min(-1 * 1.5, -1 * 1.2) = -1.5
    th.testing.assert_close(terms.policy, th.tensor(-(1.2 - 1.5) / 2))
    th.testing.assert_close(terms.value, th.tensor((0.5**2 + 1.0**2) / 2))
    th.testing.assert_close(terms.entropy, th.tensor(-0.4))
    assert terms.clip_fraction == 1.0
    assert abs(terms.approx_kl - (0.5 - np.log(1.5))) < 1e-6
    clipped = ppo_losses(values, log_prob, None, batch, 0.2, clip_range_vf=0.25)
    th.testing.assert_close(clipped.value, th.tensor((0.75**2 + 1.75**2) / 2))
    th.testing.assert_close(clipped.entropy, np.log(1.5) * th.ones(()))  # mean log-prob


def test_update_stats_log_minibatch_means_and_the_last_epochs_kl():
    from stable_baselines3.common.logger import Logger

    from memworld.agents.ppo_loss import PPOLosses, UpdateStats

    stats = UpdateStats()
    for k, (kl, clip) in enumerate([(0.5, 0.1), (0.3, 0.2), (0.1, 0.3)]):
        if k == 2:
            stats.approx_kl = []  # a new epoch, as MemoryPPO.train does
        terms = PPOLosses(th.tensor(1.0 + k), th.tensor(2.0 * k), th.tensor(-k), kl, clip)
        stats.add(terms, th.tensor(0.5 * k))
    logger = Logger(folder=None, output_formats=[])
    stats.record(logger)
    got = logger.name_to_value
    assert got["train/policy_gradient_loss"] == pytest.approx(2.0)
    assert got["train/value_loss"] == pytest.approx(2.0)
    assert got["train/entropy_loss"] == pytest.approx(-1.0)
    assert got["train/aux_loss"] == pytest.approx(0.5)
    assert got["train/clip_fraction"] == pytest.approx(0.2)
    assert got["train/approx_kl"] == pytest.approx(0.1)
