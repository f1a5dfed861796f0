"""PMLL in RL and models: the PersistentMemory module, the env wrapper with SB3, the
logits-bias and low-rank delta-W integrations, and the ``pmll`` command line."""

from __future__ import annotations

import json
import os

import gymnasium as gym
import numpy as np
import pytest
import torch
from stable_baselines3 import A2C, DQN, PPO, SAC
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import DummyVecEnv

from memworld import (
    envs,  # noqa: F401  (registers memworld/*)
    memory,
)
from memworld.agents import PersistentMemoryWrapper
from memworld.memory.persistent import PersistentStore, StoreConfig
from memworld.memory.persistent.cli import main as pmll_cli
from memworld.memory.persistent.integrations import LowRankOverlay, add_logits_bias, store_bias
from memworld.memory.persistent.module import PersistentMemory

BANDIT = "memworld/RepeatFirst-v0"  # with episode_length=1: act the symbol shown


# -------------------------------------------------------------------- module
def test_registered_with_defaults_in_memory() -> None:
    module = memory.make("persistent", input_dim=6)
    assert isinstance(module, PersistentMemory)
    assert module.persistent and type(module).shared_across_batch
    assert module.output_dim == 12 and module.store.root is None
    assert list(module.parameters()) == []


def prototype_inputs(steps: int, batch: int, seed: int = 0) -> torch.Tensor:
    """(T, B, 6) inputs near three prototypes, so later steps find earlier lines."""
    gen = torch.Generator().manual_seed(seed)
    protos = torch.randn(3, 6, generator=gen)
    pick = torch.randint(0, 3, (steps, batch), generator=gen)
    return protos[pick] + 0.05 * torch.randn(steps, batch, 6, generator=gen)


def test_train_mode_replay_reads_exactly_what_the_rollout_read() -> None:
    store = PersistentStore(None, 8, value_dim=6, clock=lambda: 0.0)  # recency stays 1
    module = memory.make("persistent", input_dim=6, key_dim=8, store=store).eval()
    x1, x2 = prototype_inputs(6, 3, seed=1), prototype_inputs(5, 3, seed=2)
    starts1 = torch.zeros(6, 3, dtype=torch.bool)
    starts1[0] = True
    starts1[3, 1] = True
    starts2 = torch.zeros(5, 3, dtype=torch.bool)
    starts2[2, 0] = True
    state0 = module.initial_state(3)
    y1, state1 = module(x1, state0, starts1)  # the rollout: reads, then writes
    y2, _ = module(x2, state1, starts2)
    assert len(module.store) == 33  # one line per row and step
    assert y2[..., 6:].abs().sum() > 0, "later steps should read earlier lines"
    module.train()  # the gradient pass: only reads, as of the rollout's step
    r1, _ = module(x1, state0, starts1)
    rows = [0, 2]
    r2, _ = module(x2[:, rows], {k: v[rows] for k, v in state1.items()}, starts2[:, rows])
    assert len(module.store) == 33
    torch.testing.assert_close(r1, y1, atol=0, rtol=0)
    torch.testing.assert_close(r2, y2[:, rows], atol=1e-6, rtol=0)  # BLAS rounding by shape


def test_next_value_returns_what_followed_and_ignores_resets() -> None:
    module = PersistentMemory(3, key_dim=3, include_input=False).eval()
    a, b = torch.tensor([1.0, 0, 0]), torch.tensor([0, 1.0, 0])
    y, state = module(
        torch.stack([a, b])[:, None], module.initial_state(1), torch.tensor([[True], [False]])
    )
    assert torch.equal(y[0, 0], torch.zeros(3))  # nothing stored yet
    assert torch.equal(torch.as_tensor(module.store.line(0).key), torch.zeros(3))  # no predecessor
    # A new episode: the store is kept; seeing a again reads what followed it: b.
    y, _ = module(a[None, None], state, torch.tensor([[True]]))
    torch.testing.assert_close(y[0, 0], b)
    assert torch.equal(torch.as_tensor(module.store.line(2).key), torch.zeros(3))
    with pytest.raises(ValueError, match="value must be"):
        PersistentMemory(3, value="reward")


# ------------------------------------------------------------------- wrapper
def bandit(store: PersistentStore | None, write: bool = True, k: int = 5) -> gym.Env:
    env = gym.make(BANDIT, episode_length=1)
    return PersistentMemoryWrapper(env, store=store, write=write, k=k)


def test_wrapper_appends_the_bias_and_writes_every_step() -> None:
    env = bandit(None, k=16)
    assert env.observation_space.shape == (8,)  # 4 one-hot symbols + 4 action values
    obs, _ = env.reset(seed=0)
    assert np.array_equal(obs[4:], np.zeros(4))
    env.action_space.seed(0)
    for _ in range(300):  # random play fills the store
        obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
        assert info["pmll_anchor"] == env.store.head
        obs, _ = env.reset()
    assert len(env.store) == 300
    assert env.store.line(7).context == {"episode": 7, "step": 0}
    right = 0
    for _ in range(100):  # the bias alone (reward-weighted actions) now names the answer
        symbol = int(np.argmax(obs[:4]))
        right += int(np.argmax(obs[4:])) == symbol
        obs, *_ = env.step(symbol)
        obs, _ = env.reset()
    assert right >= 95  # a symbol none of whose 16 nearest lines paid is left to chance


def test_wrapper_step_clock_and_projection() -> None:
    store = PersistentStore(None, 2, value_dim=4, config=StoreConfig(tau=10.0))
    env = PersistentMemoryWrapper(
        gym.make(BANDIT, episode_length=1), store=store, key_dim=2, value="next_obs", clock="steps"
    )
    env.reset(seed=0)
    for _ in range(3):
        env.step(0)
        env.reset()
    assert [line.timestamp for line in reversed(store.peek(3))] == [0.0, 1.0, 2.0]
    with pytest.raises(ValueError, match="dim=4"):
        PersistentMemoryWrapper(gym.make(BANDIT), store=PersistentStore(None, 3))


def test_ppo_with_the_wrapper_learns_a_memworld_task() -> None:
    torch.manual_seed(0)
    store = PersistentStore(None, 4)
    venv = DummyVecEnv([lambda: Monitor(bandit(store))] * 4)
    model = PPO(
        "MlpPolicy",
        venv,
        n_steps=64,
        batch_size=64,
        n_epochs=4,
        learning_rate=3e-3,
        seed=0,
        policy_kwargs=dict(net_arch=[32]),
        device="cpu",
    )
    model.learn(3000)
    assert len(store) == model.num_timesteps and store.verify().ok
    eval_env = DummyVecEnv([lambda: Monitor(bandit(store, write=False))])
    mean, _ = evaluate_policy(model, eval_env, n_eval_episodes=50, deterministic=True)
    assert mean > 0.9  # random play earns -0.5
    assert len(store) == model.num_timesteps  # evaluation only read


def test_a2c_dqn_and_sac_take_the_wrapped_env_unchanged() -> None:
    store = PersistentStore(None, 4)
    A2C("MlpPolicy", DummyVecEnv([lambda: bandit(store)]), n_steps=8, device="cpu").learn(64)
    DQN("MlpPolicy", bandit(store), learning_starts=16, buffer_size=500, device="cpu").learn(64)
    occluded = gym.make("memworld/OccludedDynamicsEasy-v0")
    sac_env = PersistentMemoryWrapper(occluded)  # Box actions: values are action * reward
    SAC(
        "MlpPolicy",
        sac_env,
        learning_starts=16,
        buffer_size=500,
        batch_size=16,
        policy_kwargs=dict(net_arch=[16]),
        device="cpu",
    ).learn(48)
    assert len(store) == 128 and len(sac_env.store) == 48


# -------------------------------------------------------------- integrations
def test_logits_bias_adds_alpha_times_the_bias_vector() -> None:
    store = PersistentStore(None, 2, value_dim=3)
    store.put([1, 0], [1.0, -2.0, 0.5])
    logits = torch.zeros(2, 3)
    queries = torch.tensor([[1.0, 0.0], [-1.0, 0.0]])  # the second passes no line
    out = add_logits_bias(logits, store, queries, alpha=0.5)
    torch.testing.assert_close(out, torch.tensor([[0.5, -1.0, 0.25], [0.0, 0.0, 0.0]]))
    assert store_bias(store, queries[None]).shape == (1, 2, 3)
    with pytest.raises(ValueError, match="value_dim=3"):
        add_logits_bias(torch.zeros(2, 4), store, queries)


def test_low_rank_overlay_is_the_base_plus_a_rank_r_delta() -> None:
    torch.manual_seed(0)
    base = torch.nn.Linear(5, 4)
    overlay = LowRankOverlay(base, delta_dim=3, rank=2, beta=0.7)
    x, delta = torch.randn(6, 5), torch.randn(3)
    torch.testing.assert_close(overlay(x, delta), base(x))  # A starts at zero
    with torch.no_grad():
        overlay.up.normal_()
    expect = x @ overlay.effective_weight(delta).T + base.bias
    torch.testing.assert_close(overlay(x, delta), expect)
    assert torch.linalg.matrix_rank(overlay.delta_weight(delta)) <= 2
    torch.testing.assert_close(overlay(x, torch.zeros(3)), base(x))
    overlay(x, delta.expand(6, 3)).sum().backward()
    assert all(p.grad is not None for p in (overlay.up, overlay.down, overlay.gate))
    assert base.weight.grad is None


# ----------------------------------------------------------------------- CLI
def test_cli_stats_seal_verify_query(tmp_path, capsys) -> None:
    path = tmp_path / "s"
    with PersistentStore(path, 3) as store:
        store.put_many(np.eye(3), np.eye(3), [{"i": i} for i in range(3)])
    assert pmll_cli(["stats", str(path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["lines"] == 3
    assert pmll_cli(["seal", str(path)]) == 0 and (path / "seal.json").exists()
    capsys.readouterr()
    assert pmll_cli(["verify", str(path)]) == 0
    assert "matches the seal" in capsys.readouterr().out
    assert pmll_cli(["query", str(path), "--line", "1", "-k", "2", "--json"]) == 0
    assert [hit["n"] for hit in json.loads(capsys.readouterr().out)] == [1]
    log = path / "log.jsonl"
    log.write_text(log.read_text().replace('"i":1', '"i":9'))
    assert pmll_cli(["verify", str(path)]) == 1
    assert "line 1 was changed" in capsys.readouterr().out


def test_cli_reads_the_key_from_the_environment(tmp_path, capsys, monkeypatch) -> None:
    path = tmp_path / "s"
    PersistentStore(path, 2, encryption_key="pass phrase").close()
    assert pmll_cli(["stats", str(path)]) == 2
    assert "is encrypted" in capsys.readouterr().err
    monkeypatch.setitem(os.environ, "PMLL_KEY", "pass phrase")
    assert pmll_cli(["stats", str(path), "--key-env", "PMLL_KEY"]) == 0
