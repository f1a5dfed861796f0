"""The per-step read/write addressing that slot, dual and bit memories expose in their
state (for monitors and the video panel), checked against the modules' own bookkeeping."""

from __future__ import annotations

import numpy as np
import torch

from memworld import memory
from memworld.video.panel import MAX_ROWS, panel_vectors


def one_step(module, state, batch: int, dim: int, seed: int = 0):
    x = torch.randn(1, batch, dim, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        _, new = module(x, state, torch.zeros(1, batch, dtype=torch.bool))
    return new


def test_slot_read_and_write_weights_account_for_the_usage_update():
    torch.manual_seed(0)
    module = memory.make("slot", input_dim=5, num_slots=8, slot_dim=6, hidden_dim=12)
    module.eval()
    state = module.initial_state(3)
    for seed in range(4):
        previous, state = state, one_step(module, state, 3, 5, seed)
    rho = module.usage_decay
    # usage = rho * usage + (1 - rho) * (gated write weights + read weights of every head)
    accesses = (state["usage"] - rho * previous["usage"]) / (1 - rho)
    want = state["write_slots"] + module.num_read_heads * state["read_slots"]
    torch.testing.assert_close(accesses, want, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(state["read_slots"].sum(-1), torch.ones(3))
    assert (state["write_slots"] > 0).sum(-1).le(module.write_top_k).all()


def test_dual_write_weights_are_the_gate_times_a_distribution():
    torch.manual_seed(0)
    module = memory.make("dual", input_dim=3, hidden_dim=16, num_heads=2, stm_slots=4, key_dim=8)
    state = one_step(module, module.initial_state(2), 2, 3)
    torch.testing.assert_close(state["stm_write_weights"].sum(-1), state["stm_gate"])
    torch.testing.assert_close(state["stm_read_weights"].sum(-1), torch.ones(2, module.num_layers))


def test_bit_write_address_follows_the_pointer_and_read_address_is_in_range():
    torch.manual_seed(0)
    module = memory.make("bit", input_dim=4, hidden_dim=8, addr_bits_per_half=4, range_len=2)
    state = module.initial_state(2)
    for step in range(3):
        state = one_step(module, state, 2, 4, step)
        assert state["write_address"].tolist() == [step, step]
    assert ((state["read_address"] >= 0) & (state["read_address"] < 256)).all()


def test_panel_shows_the_weights_and_bins_bit_addresses():
    slots = {
        "pi_read_slots": np.array([[0.0, 0.25, 0.75]], np.float32),
        "pi_write_slots": np.array([[0.5, 0.0, 0.0]], np.float32),
        "pi_h": np.zeros((1, 4), np.float32),
    }
    shown = panel_vectors(slots)
    np.testing.assert_array_equal(shown["READ W"], [0.0, 0.25, 0.75])
    np.testing.assert_array_equal(shown["WRITE W"], [0.5, 0.0, 0.0])
    words = np.zeros((1, 65_536), np.int32)
    bits = {"words": words, "write_address": np.array([65_535]), "read_address": np.array([1024])}
    shown = panel_vectors(bits)
    assert shown["WRITE W"].shape == (MAX_ROWS,) and shown["WRITE W"][-1] == 1.0
    assert shown["READ W"].argmax() == 1 and shown["READ W"].sum() == 1.0
