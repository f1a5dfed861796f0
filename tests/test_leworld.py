"""LeWorld (shared/seeds/leworld-slm-blm.md): sizes, routing, paired-branch rewards, SLMEnv, phases."""

from __future__ import annotations

import types

import numpy as np
import pytest
import torch

from memworld.world_models.leworld import LeWorldSystem, TrainingConfig, preset
from memworld.world_models.leworld.data import Batch, RolloutSource, sighted
from memworld.world_models.leworld.memory_iface import pack_bits, unpack_bits
from memworld.world_models.leworld.rollout import (
    paired_branch_reward,
    run_sequence,
    slm_rewards,
)
from memworld.world_models.leworld.routing import load_balance_loss, straight_through_mask
from memworld.world_models.leworld.training import LeWorldTrainer, latest_checkpoint

ENV = "memworld/OccludedDynamicsEasy-v0"


def test_default_parameter_counts_match_the_document():
    table = dict(LeWorldSystem(preset("full")).parameter_table())
    expected = {
        "Artificial Memory (bit enc/dec)": 21_000,
        "SLM-0": 745_000,
        "SLM-1": 745_000,
        "SLM-2": 745_000,
        "BLM": 11_200_000,
        "Total": 13_500_000,
    }
    for name, target in expected.items():
        assert abs(table[name] - target) / target < 0.05, (name, table[name])
    assert dict(LeWorldSystem(preset("small")).parameter_table())["Total"] < 1_000_000


def test_straight_through_mask_is_hard_forward_and_has_gradients():
    logits = torch.tensor([[2.0, -1.0, 0.3], [-0.2, 0.1, -3.0]], requires_grad=True)
    mask, probs = straight_through_mask(logits)
    assert torch.equal(mask.detach(), torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]]))
    (mask * torch.tensor([1.0, 2.0, 3.0])).sum().backward()
    expected = probs.detach() * (1 - probs.detach()) * torch.tensor([1.0, 2.0, 3.0])
    assert torch.allclose(logits.grad, expected) and (logits.grad != 0).all()


def test_load_balance_loss_is_minimal_for_uniform_usage():
    eye = torch.eye(3).repeat(4, 1)  # each SLM used by a third of the rows
    uniform = load_balance_loss(eye, eye * 0.8 + 0.1)
    skewed_mask = torch.tensor([[1.0, 0, 0]] * 8 + [[0, 1.0, 0]] * 2 + [[0, 0, 1.0]] * 2)
    skewed = load_balance_loss(skewed_mask, skewed_mask * 0.8 + 0.1)
    everything_on_one = load_balance_loss(
        torch.tensor([[1.0, 0, 0]] * 6), torch.tensor([[0.9, 0.1, 0.1]] * 6)
    )
    assert uniform.item() == pytest.approx(1.0)
    assert skewed.item() > uniform.item() + 0.1
    assert everything_on_one.item() > skewed.item()


def test_paired_branch_reward_is_the_loss_difference_on_a_hand_made_case():
    # Prediction = 1 * mask_0 + 3 * mask_1, target 3: both on -> loss 1; SLM-0 off -> 0; SLM-1 off -> 4.
    stub = types.SimpleNamespace(
        num_slms=2,
        predict_with_mask=lambda obs, out, mask: (mask * torch.tensor([1.0, 3.0])).sum(
            -1, keepdim=True
        ),
    )
    out = types.SimpleNamespace(mask=torch.ones(1, 2))
    rewards = slm_rewards(stub, None, out, torch.tensor([[3.0]]))
    assert torch.equal(rewards, torch.tensor([[-1.0, 3.0]]))
    assert paired_branch_reward(torch.tensor(0.5), torch.tensor(0.25)).item() == 0.25


def small_system_and_random_batch(steps: int, rows: int = 8) -> tuple[LeWorldSystem, Batch]:
    """A seeded small-preset system in eval mode and uniform-noise sequences, all valid."""
    torch.manual_seed(0)
    system = LeWorldSystem(preset("small"), obs_dim=12, state_dim=22).eval()
    batch = Batch(
        torch.rand(steps, rows, 12),
        torch.rand(steps, rows, 22),
        torch.ones(steps, rows, dtype=torch.bool),
        torch.zeros(steps, rows, dtype=torch.long),
    )
    return system, batch


def test_info_request_at_t_changes_addresses_at_t_plus_1_not_at_t():
    system, batch = small_system_and_random_batch(steps=4)
    with torch.no_grad():
        before = run_sequence(system, batch, "hard").addresses
        # A different info request from step 0 onwards (the request head's bias), nothing else.
        system.blm.request.bias.add_(torch.linspace(-3, 3, system.config.blm.request_dim))
        after = run_sequence(system, batch, "hard").addresses
    assert torch.equal(before[0], after[0])  # step 0's addresses are chosen before any request
    assert not torch.equal(before[1], after[1])  # the request of step 0 moved step 1's search


def test_request_moved_counts_the_addresses_the_request_changed():
    system, batch = small_system_and_random_batch(steps=6)
    with torch.no_grad():
        system.blm.request.bias.add_(torch.linspace(-3, 3, system.config.blm.request_dim))
        moved = run_sequence(system, batch, "hard", with_request_reward=True).request_moved
        assert moved.shape == (6, 8) and bool((moved[0] == 0).all())  # no request at step 0
        assert float(moved[1:].mean()) > 0
        slm = system.config.slm
        start = 2 * slm.state_dim + slm.char_dim  # the request's columns in each SLM's input
        system.slms.trunk[0].weight[:, :, start : start + system.config.blm.request_dim] = 0.0
        deaf = run_sequence(system, batch, "hard", with_request_reward=True).request_moved
    assert bool((deaf == 0).all())  # SLMs that ignore the request never move


def test_a_pass_without_a_graph_judges_and_trains_the_request_as_the_full_pass_does():
    system, batch = small_system_and_random_batch(steps=5)
    grads, rewards = [], []
    for track in (True, False):
        system.zero_grad(set_to_none=True)
        result = run_sequence(
            system,
            batch,
            "hard",
            with_request_reward=True,
            request_noise=0.1,
            generator=torch.Generator().manual_seed(3),
            track_graph=track,
        )
        (result.request_reward * result.request_logprob).sum().backward()
        grads.append({n: p.grad for n, p in system.named_parameters() if p.grad is not None})
        assert (result.loss.grad_fn is not None) == track  # untracked: no graph to free
        rewards.append(result.request_reward)
    assert set(grads[0]) == set(grads[1]) == {"blm.request.weight", "blm.request.bias"}
    for name, grad in grads[0].items():
        torch.testing.assert_close(grads[1][name], grad, rtol=0, atol=0)
    torch.testing.assert_close(rewards[1], rewards[0], rtol=0, atol=0)
    with pytest.raises(ValueError, match="track_graph=False"):
        run_sequence(system, batch, "sample", track_graph=False)


def test_oracle_addresses_are_the_last_sighting_on_hand_made_observations():
    from memworld.world_models.leworld.data import oracle_addresses

    # OccludedDynamics, 2 objects: (x, y, visible) each, then the query one-hot.
    od = types.SimpleNamespace(params=types.SimpleNamespace(num_objects=2))
    visible = [(1, 0), (0, 1), (1, 0), (0, 0), (0, 0)]  # per step: object 0, object 1
    queries = [0, 1, 0, 1, 0]
    obs = np.zeros((5, 1, 8), np.float32)
    for t, ((v0, v1), q) in enumerate(zip(visible, queries)):
        obs[t, 0, [2, 5]] = v0, v1
        obs[t, 0, 6 + q] = 1.0
    assert oracle_addresses("OccludedDynamics", obs, od)[:, 0].tolist() == [0, 1, 2, 1, 2]
    # KeyDoor, 2 colours: 2 cells x (wall, key, door, ball, colour 0, colour 1); key seen at 1, 2.
    kd = types.SimpleNamespace(params=types.SimpleNamespace(num_colors=2))
    obs = np.zeros((5, 1, 12), np.float32)
    obs[1, 0, 1] = obs[2, 0, 7] = 1.0  # the key flag of cell 0 at step 1, of cell 1 at step 2
    assert oracle_addresses("KeyDoor", obs, kd)[:, 0].tolist() == [0, 1, 2, 2, 2]
    assert sighted("KeyDoor", obs, kd)[:, 0].tolist() == [False, True, True, True, True]
    assert oracle_addresses("TMaze", obs, kd)[:, 0].tolist() == [0, 0, 1, 2, 3]  # previous step


def test_keydoors_needed_observation_lies_in_the_episodes_first_range():
    """Why the info request has nothing to redirect on KeyDoor (README): the key is seen in
    the key room, within the first ``range_len`` words of every episode's memory, unless
    the agent starts anywhere (KeyDoorMediumRandomStart)."""
    range_len = preset("small").memory.range_len
    for env_id, low, high in (
        ("KeyDoorEasy", 0.95, 1.0),
        ("KeyDoorHard", 0.95, 1.0),
        ("KeyDoorMediumRandomStart", 0.0, 0.6),
        (ENV, 0.0, 0.5),
    ):
        source = RolloutSource(env_id, num_envs=16, seq_len=48, seed=123)
        batch = source.batch()
        steps = batch.valid & torch.from_numpy(
            sighted(source.task, batch.obs.numpy(), source.env.unwrapped)
        )
        first = (batch.oracle_address[steps] < range_len).float().mean().item()
        assert low <= first <= high, (env_id, first)


def test_memory_reads_the_word_written_two_steps_ago():
    system = LeWorldSystem(preset("small"), obs_dim=12, state_dim=22)
    bits = torch.tensor([[1.0, 0.0] * 16, [0.0, 1.0] * 16])
    assert torch.equal(unpack_bits(pack_bits(bits)), bits)
    state = system.memory.initial_state(2)
    for step in range(3):
        system.memory.write(state, bits if step == 0 else 1 - bits, torch.tensor([step, step]))
    got = system.memory.range_bits(state, torch.tensor([0, 1]))  # (B, range_len, 32)
    assert torch.equal(got[0, 0], bits[0]) and torch.equal(got[1, 0], 1 - bits[1])
    assert got[0, 3:].sum() == 0  # past the write pointer: unwritten, zero bits


def test_straight_through_read_predicts_like_argmax_and_trains_the_addresses_like_soft():
    torch.manual_seed(0)
    source = RolloutSource(ENV, 4, 8, seed=0)
    system = LeWorldSystem(preset("small"), source.obs_dim, source.state_dim)
    batch = source.batch()
    straight, hard = (run_sequence(system, batch, mode) for mode in ("straight", "hard"))
    assert torch.equal(straight.addresses, hard.addresses)
    torch.testing.assert_close(straight.loss, hard.loss)  # the forward pass reads the argmax
    assert not torch.allclose(straight.loss, run_sequence(system, batch, "soft").loss)
    heads = [system.slms.high_head.weight, system.slms.low_head.weight]
    grads = torch.autograd.grad(straight.mean_loss(), heads)
    assert all(g.abs().sum() > 0 for g in grads)  # the soft read's gradient reaches the addresses
    grads = torch.autograd.grad(hard.mean_loss(), heads, allow_unused=True)
    assert all(g is None or not g.any() for g in grads)  # an argmax read alone has none
    with pytest.raises(ValueError, match=r"mode must be one of \('soft', 'hard', 'straight'"):
        run_sequence(system, batch, "argmax")


def test_word_ages_count_steps_behind_the_pointer_and_flag_unwritten_words():
    from memworld.world_models.leworld.config import MemoryConfig
    from memworld.world_models.leworld.slm import word_ages

    memory = MemoryConfig(num_high=4, num_low=4, range_len=4)  # 16 words
    ages = word_ages(torch.tensor([3, 14]), torch.tensor([5, 1]), memory)
    # Row 0: words 3..6 with the pointer at 5 are 2, 1, 0 steps old and one not yet written.
    # Row 1: words 14, 15, 0, 1 with the pointer at 1: the ring's tail was never written
    # (ages 3 and 2 exceed the pointer), words 0 and 1 are 1 and 0 steps old.
    expected_age = torch.tensor([[2, 1, 0, 0], [0, 0, 1, 0]]).float()
    expected_past = torch.tensor([[1, 1, 1, 0], [0, 0, 1, 1]]).float()
    assert torch.equal(ages[..., 1], expected_past)
    assert torch.allclose(ages[..., 0], torch.log1p(expected_age) / torch.log(torch.tensor(16.0)))


def test_codec_pretraining_lowers_the_reconstruction_error():
    torch.manual_seed(0)
    source = RolloutSource(ENV, 4, 8, seed=0)
    system = LeWorldSystem(preset("small"), source.obs_dim, source.state_dim)
    batch = source.batch()
    obs = batch.obs[batch.valid]
    before = system.memory.reconstruction_loss(obs).item()
    config = TrainingConfig(env_id=ENV, num_envs=4, seq_len=8, codec_steps=300)
    last = LeWorldTrainer(system, config, source).pretrain_codec()
    after = system.memory.reconstruction_loss(obs).item()
    assert after < 0.1 * before and last < 0.1 * before


def test_slm_env_passes_check_env():
    from gymnasium.utils.env_checker import check_env
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    from memworld.agents.leworld import SLMEnv

    env = SLMEnv(env_id=ENV, seq_len=6)
    check_env(env, skip_render_check=True)
    sb3_check_env(env)
    env.reset(seed=3)
    _, reward, _, _, info = env.step(env.action_space.sample())
    assert reward == pytest.approx(info["loss_without"] - info["loss_with"])


def test_train_slm_policy_trains_ppo_against_the_frozen_system(tmp_path, monkeypatch):
    import tempfile

    from memworld.agents.leworld import SLMEnv, train_slm_policy

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where SB3 would make a folder
    monkeypatch.delenv("SB3_LOGDIR", raising=False)
    system = SLMEnv(env_id=ENV, seq_len=4).system
    before = {k: v.clone() for k, v in system.state_dict().items()}
    model = train_slm_policy(system, ENV, 1, total_timesteps=16, seq_len=4, n_steps=8, batch_size=8)
    assert model.num_timesteps == 16 and model.env.action_space.nvec.tolist() == [256, 256, 4]
    assert model.env.get_attr("slm_index") == [1]
    for key, value in system.state_dict().items():
        assert torch.equal(value, before[key]), f"{key}: the BLM, SLMs and memory stay frozen"
    assert list(tmp_path.glob("SB3-*")) == []


def tiny_trainer(tmp_path, steps=(1, 1, 1), **training) -> LeWorldTrainer:
    torch.manual_seed(0)
    config = TrainingConfig(
        **training,
        env_id=ENV,
        num_envs=4,
        seq_len=8,
        codec_steps=20,
        phase1_steps=steps[0],
        phase2_steps=steps[1],
        phase3_steps=steps[2],
        log_every=1,
    )
    source = RolloutSource(ENV, 4, 8, seed=0)
    system = LeWorldSystem(preset("small"), source.obs_dim, source.state_dim)
    return LeWorldTrainer(system, config, source, tmp_path)


def test_phase_checkpoints_resume(tmp_path):
    first = tiny_trainer(tmp_path)
    history = first.train()
    assert [m["phase"] for m in history] == ["pretrain", "joint", "refine"]
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["final.pt", "phase1-pretrain.pt", "phase2-joint.pt", "phase3-refine.pt"]
    assert latest_checkpoint(tmp_path).name == "final.pt"
    resumed = tiny_trainer(tmp_path / "again")
    resumed.load(tmp_path / "checkpoints" / "phase1-pretrain.pt")
    assert (resumed.phase, resumed.step) == (1, 0)
    saved = torch.load(tmp_path / "checkpoints" / "phase1-pretrain.pt", weights_only=False)[
        "system"
    ]
    assert all(torch.equal(v, resumed.system.state_dict()[k]) for k, v in saved.items())
    assert [m["phase"] for m in resumed.train()] == ["pretrain", "joint", "refine"]
    assert (tmp_path / "again" / "checkpoints" / "final.pt").exists()


def test_a_run_resumed_from_a_phase_checkpoint_equals_the_uninterrupted_run(tmp_path):
    whole = tiny_trainer(tmp_path / "whole", steps=(1, 1, 2))
    whole.train()
    resumed = tiny_trainer(tmp_path / "resumed", steps=(1, 1, 2))  # a fresh process's trainer
    resumed.load(tmp_path / "whole" / "checkpoints" / "phase2-joint.pt")
    resumed.train()  # phase 3 only: same batches, same sampling noise, same optimiser start
    want, got = whole.system.state_dict(), resumed.system.state_dict()
    assert all(torch.equal(want[k], got[k]) for k in want)
    assert whole.source.state_dict()["rng"] == resumed.source.state_dict()["rng"]


def test_training_stopped_after_a_phase_continues_to_the_uninterrupted_run(tmp_path):
    whole = tiny_trainer(tmp_path / "whole")
    whole.train()
    split = tiny_trainer(tmp_path / "split")
    split.train(stop_after="joint")
    assert (split.phase, split.step) == (2, 0)
    saved = sorted(p.name for p in (tmp_path / "split" / "checkpoints").iterdir())
    assert saved == ["phase1-pretrain.pt", "phase2-joint.pt"]
    split.train()
    want, got = whole.system.state_dict(), split.system.state_dict()
    assert all(torch.equal(want[k], got[k]) for k in want)
    with pytest.raises(ValueError, match=r"stop_after must be None or one of \('pretrain'"):
        split.train(stop_after="phase2")


@pytest.mark.slow
def test_small_preset_training_lowers_next_state_mse():
    torch.manual_seed(0)
    config = TrainingConfig(
        env_id=ENV,
        num_envs=8,
        seq_len=24,
        phase1_steps=30,
        phase2_steps=30,
        phase3_steps=4,
        log_every=10,
    )
    source = RolloutSource(ENV, 8, 24, seed=0)
    system = LeWorldSystem(preset("small"), source.obs_dim, source.state_dim)
    held_out = RolloutSource(ENV, 32, 24, seed=123).batch()
    with torch.no_grad():
        before = run_sequence(system.eval(), held_out, "hard").mean_loss().item()
    LeWorldTrainer(system, config, source).train()
    with torch.no_grad():
        after = run_sequence(system.eval(), held_out, "hard").mean_loss().item()
    assert after < 0.5 * before, (before, after)


def test_training_config_rejects_bad_values_with_the_fix():
    with pytest.raises(ValueError, match=r"codec_steps must be an integer in \[0, inf\).*0 skips"):
        TrainingConfig(codec_steps=-1)
    with pytest.raises(ValueError, match=r"load_balance_coef must be a number in \[0, inf\)"):
        TrainingConfig(load_balance_coef=-0.01)
    with pytest.raises(ValueError, match=r"codec_batch must be an integer in \[1, inf\)"):
        TrainingConfig(codec_batch=0)
    with pytest.raises(ValueError, match=r"oracle_prob must be a number in \[0, 1\]"):
        TrainingConfig(oracle_prob=1.5)


@pytest.mark.parametrize("env_id", [ENV, "memworld/KeyDoorEasy-v0"])
def test_rollout_source_is_reproducible_from_its_seed(env_id):
    first, second = (RolloutSource(env_id, 4, 12, seed=5, oracle_prob=0.5) for _ in range(2))
    for _ in range(2):
        a, b = first.batch(), second.batch()
        for name in ("obs", "target", "valid", "oracle_address"):
            assert torch.equal(getattr(a, name), getattr(b, name)), name
