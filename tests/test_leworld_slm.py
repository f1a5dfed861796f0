"""The SLMs run as one batched module (SLMBank): each must compute exactly what it would
alone, start from the draws of separate ``nn.Linear`` layers, and load checkpoints that
kept one module per SLM."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from memworld.world_models.leworld import LeWorldSystem, preset
from memworld.world_models.leworld.slm import GroupedLayerNorm, GroupedLinear, SLMBank, word_ages


def test_grouped_linear_is_separate_linears_in_init_and_output():
    torch.manual_seed(3)
    separate = [nn.Linear(5, 4) for _ in range(3)]
    torch.manual_seed(3)
    grouped = GroupedLinear(3, 5, 4)
    x = torch.randn(3, 7, 5)
    for g, linear in enumerate(separate):
        assert torch.equal(grouped.weight[g], linear.weight)
        assert torch.equal(grouped.bias[g], linear.bias)
        torch.testing.assert_close(grouped(x)[g], linear(x[g]))
        torch.testing.assert_close(grouped(x[0])[g], linear(x[0]))  # one input for all groups


def test_grouped_layer_norm_is_separate_layer_norms():
    norm = GroupedLayerNorm(2, 6)
    with torch.no_grad():
        norm.weight.normal_()
        norm.bias.normal_()
    x = torch.randn(2, 4, 6)
    for g in range(2):
        want = nn.functional.layer_norm(x[g], (6,), norm.weight[g], norm.bias[g])
        torch.testing.assert_close(norm(x)[g], want)


def bank_and_inputs(num_slms: int = 3, batch: int = 5):
    config = preset("small")
    slm = dataclasses.replace(config.slm, num_slms=num_slms)
    torch.manual_seed(0)
    bank = SLMBank(7, 7, config.memory, slm, config.blm.request_dim)
    gen = torch.Generator().manual_seed(1)
    past, obs = torch.randn(2, batch, 7, generator=gen)
    request = torch.randn(batch, config.blm.request_dim, generator=gen).tanh()
    pointer = torch.tensor([0, 3, 9, 255, 300])[:batch]
    return bank, (past, obs, request, pointer)


def test_each_slm_of_the_bank_computes_what_it_would_alone():
    bank, inputs = bank_and_inputs()
    high, low, rng = bank.address_logits(*inputs)
    assert high.shape == (5, 3, 256) and rng.shape == (5, 3, len(bank.config.range_choices))
    words = torch.randn(5, 3, bank.memory.range_len, 7)
    weights = bank.word_weights(rng, hard=False)
    ages = word_ages(high.argmax(-1) * 256 + low.argmax(-1), inputs[3], bank.memory)
    summary = bank.summarise(words, weights, ages)
    for i in range(3):
        alone, _ = bank_and_inputs(num_slms=1)
        alone.load_state_dict({k: v[i : i + 1] for k, v in bank.state_dict().items()})
        one = alone.address_logits(*inputs)
        for got, want in zip((high, low, rng), one):
            torch.testing.assert_close(got[:, i : i + 1], want)
        want = alone.summarise(words[:, i : i + 1], weights[:, i : i + 1], ages[:, i : i + 1])
        torch.testing.assert_close(summary[:, i : i + 1], want)
    assert (high[:, 0] - high[:, 1]).abs().max() > 1e-3  # the SLMs are not one SLM


def test_word_weights_hard_soft_and_given_choices():
    bank, inputs = bank_and_inputs(batch=2)
    rng = torch.tensor([[[5.0, 0, 0, 0], [0, 0, 0, 5.0]], [[0, 5.0, 0, 0], [0, 0, 5.0, 0]]])
    hard = bank.word_weights(rng, hard=True)  # range choices (1, 2, 4, 8)
    assert hard.sum(-1).tolist() == [[1, 8], [2, 4]]
    given = bank.word_weights(rng, hard=False, choice=torch.tensor([[3, 0], [1, 1]]))
    assert given.sum(-1).tolist() == [[8, 1], [2, 2]]
    soft = bank.word_weights(torch.zeros(1, 1, 4), hard=False)  # uniform over 1, 2, 4, 8
    torch.testing.assert_close(
        soft[0, 0], torch.tensor([1, 0.75, 0.5, 0.5, 0.25, 0.25, 0.25, 0.25])
    )


def test_a_checkpoint_with_one_module_per_slm_loads_into_the_bank():
    torch.manual_seed(0)
    system = LeWorldSystem(preset("small"), 7, 5)
    # The layout before the bank: slms.<i>.<name> with every SLM's own tensors.
    old = {}
    for key, value in system.state_dict().items():
        if key.startswith("slms."):
            old.update({f"slms.{i}.{key[5:]}": v.clone() for i, v in enumerate(value)})
        else:
            old[key] = value.clone()
    assert "slms.2.trunk.0.weight" in old and "slms.trunk.0.weight" not in old
    torch.manual_seed(1)
    fresh = LeWorldSystem(preset("small"), 7, 5)
    fresh.load_state_dict(old)  # strict: nothing missing, nothing unexpected
    for key, value in system.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], value), key


def test_a_checkpoint_with_the_wrong_number_of_slms_is_refused():
    torch.manual_seed(0)
    state = LeWorldSystem(preset("small"), 7, 5).state_dict()
    two = {k: (v[:2] if k.startswith("slms.") else v) for k, v in state.items()}
    with pytest.raises(RuntimeError, match="size mismatch"):
        LeWorldSystem(preset("small"), 7, 5).load_state_dict(two)


def test_a_soft_read_with_one_slm_given_an_address_reads_it_hard_and_the_rest_soft():
    torch.manual_seed(0)
    system = LeWorldSystem(preset("small"), 7, 5).eval()
    state = system.initial_state(4)
    gen = torch.Generator().manual_seed(2)
    for _ in range(6):
        state, _ = system.write(state, torch.randn(4, 7, generator=gen))
        state["pointer"] = state["pointer"] + 1
    obs, request = torch.randn(4, 7, generator=gen), state["request"]
    given = torch.full((4, 3), -1)
    given[:, 1] = torch.tensor([0, 2, 5, 1])  # SLM 1 reads where it is told, full range
    with torch.no_grad():
        soft = system.read(state, obs, request, "soft")
        forced = system.read(state, obs, request, "soft", addresses=given)
        hard = system.read(state, obs, request, "hard", addresses=given)
    for key in ("reads", "addr", "choice"):
        torch.testing.assert_close(forced[key][:, [0, 2]], soft[key][:, [0, 2]])
        torch.testing.assert_close(forced[key][:, 1], hard[key][:, 1])
    assert forced["addr"][:, 1].tolist() == [0, 2, 5, 1]
    assert forced["choice"][:, 1].tolist() == [3] * 4  # the longest of the range choices
