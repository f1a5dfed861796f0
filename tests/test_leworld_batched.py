"""LeWorld computations done in one batched call equal their stepped or looped versions:
the no-memory baseline, the SLMs' paired branches."""

from __future__ import annotations

import pytest
import torch

from memworld.world_models.leworld import LeWorldSystem, preset
from memworld.world_models.leworld.baselines import no_memory_loss
from memworld.world_models.leworld.data import Batch
from memworld.world_models.leworld.rollout import (
    paired_branch_reward,
    run_sequence,
    slm_rewards,
    step_loss,
)


def system_and_batch() -> tuple[LeWorldSystem, Batch]:
    torch.manual_seed(0)
    system = LeWorldSystem(preset("small"), obs_dim=12, state_dim=22)
    valid = torch.ones(5, 3, dtype=torch.bool)
    valid[3:, 1] = False  # one episode ends early: its padding is scored as in the sequence
    batch = Batch(torch.rand(5, 3, 12), torch.rand(5, 3, 22), valid, torch.zeros(5, 3).long())
    return system, batch


@pytest.mark.parametrize("mode", ["soft", "hard"])
def test_no_memory_loss_equals_the_sequence_with_every_read_masked_out(mode):
    system, batch = system_and_batch()
    off = torch.zeros(3, system.num_slms)
    stepped = run_sequence(system, batch, mode, mask_override=off)
    batched = no_memory_loss(system, batch)
    assert batched.shape == (5, 3)
    torch.testing.assert_close(batched, stepped.loss, rtol=1e-5, atol=1e-7)
    # Reads do matter once they are routed on: the equality is not a property of any mask.
    on = run_sequence(system, batch, mode, mask_override=torch.ones_like(off)).loss
    assert (on - stepped.loss).abs().max() > 1e-4


def test_no_memory_loss_gives_the_sequences_gradients():
    system, batch = system_and_batch()
    off = torch.zeros(3, system.num_slms)
    run_sequence(system, batch, "soft", mask_override=off).mean_loss().backward()
    stepped = {n: p.grad.clone() for n, p in system.named_parameters() if p.grad is not None}
    system.zero_grad(set_to_none=True)
    no_memory_loss(system, batch)[batch.valid].mean().backward()
    batched = {n: p.grad for n, p in system.named_parameters() if p.grad is not None}
    for name, grad in stepped.items():  # SLMs, router and codec: zero in the sequence
        if name not in batched:
            assert grad.abs().max() == 0, name
    assert set(batched) <= set(stepped)
    assert any(n.startswith("blm.trunk") for n in batched)
    for name, grad in batched.items():
        torch.testing.assert_close(grad, stepped[name], rtol=1e-4, atol=1e-7, msg=name)


def test_slm_rewards_equal_one_branch_pair_per_slm():
    system, batch = system_and_batch()
    system.eval()
    state = system.initial_state(3)
    with torch.no_grad():
        for t in range(3):  # a few words in memory, a request, a mask that is not all ones
            state, _ = system.write(state, batch.obs[t])
            out = system.think(state, batch.obs[t], "hard")
            state = {**state, "request": out.request, "pointer": state["pointer"] + 1}
        out.mask[0] = torch.tensor([1.0, 0.0, 1.0])
        out.mask[1] = torch.tensor([0.0, 0.0, 0.0])
        got = slm_rewards(system, batch.obs[2], out, batch.target[2])
        for i in range(system.num_slms):
            with_read, without_read = out.mask.clone(), out.mask.clone()
            with_read[:, i], without_read[:, i] = 1.0, 0.0
            loss_with = step_loss(
                system.predict_with_mask(batch.obs[2], out, with_read), batch.target[2]
            )
            loss_without = step_loss(
                system.predict_with_mask(batch.obs[2], out, without_read), batch.target[2]
            )
            want = paired_branch_reward(loss_without, loss_with)
            torch.testing.assert_close(got[:, i], want, rtol=1e-4, atol=1e-6)
    assert got.abs().max() > 1e-4  # the reads matter: the equality is not 0 == 0
