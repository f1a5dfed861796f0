"""SlotMemory's auxiliary terms: slot utilisation, memory pressure and read entropy."""

from __future__ import annotations

import math

import pytest
import torch

from memworld.memory.slot.bank import SlotBank, slot_utilisation
from tests.test_slot_memory import small


def test_slot_utilisation_matches_hand_computation():
    w = torch.tensor([0.5, 0.25, 0.25, 0.0])
    expected = -(0.5 * math.log(0.5 + 1e-8) + 2 * 0.25 * math.log(0.25 + 1e-8))
    assert slot_utilisation(w, eps=1e-8).item() == pytest.approx(expected, rel=1e-6)
    assert slot_utilisation(torch.full((8,), 1 / 8)).item() == pytest.approx(math.log(8), rel=1e-6)
    assert slot_utilisation(torch.tensor([1.0, 0.0, 0.0])).item() == pytest.approx(0.0, abs=1e-6)


def test_aux_loss_rewards_utilisation_and_penalises_pressure():
    module = small(util_weight=0.5, pressure_weight=2.0, read_entropy_weight=0.25)
    assert module.aux_loss().item() == 0.0  # before any forward call
    module(torch.randn(4, 2, 3), module.initial_state(2), torch.zeros(4, 2, dtype=torch.bool))
    terms = module.aux_terms()
    expected = (
        -0.5 * terms["slot_utilisation"]
        + 2.0 * terms["memory_pressure"]
        + 0.25 * terms["read_entropy"]
    )
    torch.testing.assert_close(module.aux_loss(), expected)
    # Mean addressing weights are a distribution over slots: 0 < L_util <= log N.
    assert 0 < terms["slot_utilisation"].item() <= math.log(8)
    assert terms["memory_pressure"].item() > 0


def test_aux_terms_match_an_independent_recomputation(monkeypatch):
    module = small(num_read_heads=2, read_top_k=3, write_top_k=2)
    steps_io = []
    original = SlotBank.read_write

    def spy(bank, *args, **kwargs):
        steps_io.append(original(bank, *args, **kwargs))
        return steps_io[-1]

    monkeypatch.setattr(SlotBank, "read_write", spy)
    gen = torch.Generator().manual_seed(3)
    starts = torch.zeros(3, 2, dtype=torch.bool)
    _, new_state = module(torch.randn(3, 2, 3, generator=gen), module.initial_state(2), starts)
    terms = {k: v.item() for k, v in module.aux_terms().items()}
    assert len(steps_io) == 3
    # Mean addressing weights: every (slot, weight) pair of every head and step added one
    # by one, over steps x heads = 3 x (2 read + 1 write) = 9 distributions per row.
    mean_weights = [[0.0] * 8 for _ in range(2)]
    for io in steps_io:
        for index, weights in [
            (io.read_index, io.read_weights),
            (io.write_index, io.write_weights),
        ]:
            for b in range(2):
                for slot, w in zip(index[b].flatten().tolist(), weights[b].flatten().tolist()):
                    mean_weights[b][slot] += w / 9
    for row in mean_weights:
        assert sum(row) == pytest.approx(1.0, abs=1e-6)
    utilisation = sum(-w * math.log(w) for row in mean_weights for w in row if w > 0) / 2
    assert terms["slot_utilisation"] == pytest.approx(utilisation, rel=1e-5)
    reads = torch.stack([io.read_weights.detach() for io in steps_io])  # (T, B, H, k)
    assert terms["read_entropy"] == pytest.approx(
        float(-(reads * reads.log()).sum(-1).mean()), rel=1e-5
    )
    assert terms["memory_pressure"] == pytest.approx(
        float(new_state["memory"].detach().square().mean())
    )
    # A one-step call: the state's last read weights are all of its read weights.
    _, one = module(torch.randn(1, 2, 3, generator=gen), module.initial_state(2), starts[:1])
    rw = one["read_weights"]  # (B, H, k)
    terms = {k: v.item() for k, v in module.aux_terms().items()}
    assert terms["read_entropy"] == pytest.approx(float(-(rw * rw.log()).sum(-1).mean()), rel=1e-5)
    assert terms["memory_pressure"] == pytest.approx(float(one["memory"].detach().square().mean()))
    # Uniform mean weights over 4 slots: L_util = log 4.
    assert slot_utilisation(torch.full((4,), 0.25)).item() == pytest.approx(math.log(4), rel=1e-6)
