"""DualMemory: exact mechanism tests on hand-made cases, and the protocol checks.

The long-term store (LongTermMemory) has its own tests in test_dual_ltm.py.
"""

from __future__ import annotations

import math

import pytest
import torch

from memworld import memory
from memworld.memory.dual.layer import ShortTermMemory, StepAttention
from memworld.memory.dual.ltm import ltm_diagnostics
from memworld.memory.dual.module import DualMemory
from memworld.memory.dual.store import LTMBatch


def small(**kwargs) -> DualMemory:
    torch.manual_seed(0)
    defaults = dict(
        ltm_capacity=16,
        hidden_dim=16,
        num_heads=2,
        stm_slots=4,
        key_dim=8,
        ltm_top_k=3,
        attention_window=3,  # short, so the tests' sequences roll the cache over
    )
    return DualMemory(3, **{**defaults, **kwargs})


def inputs(steps: int, batch: int = 3, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(steps, batch, 3, generator=gen)
    starts = torch.zeros(steps, batch, dtype=torch.bool)
    starts[0] = True
    return x, starts


# ----------------------------------------------------------- short-term memory
def test_stm_gated_soft_update_matches_hand_computation():
    stm = ShortTermMemory(dim=2, num_slots=2, num_heads=1)
    with torch.no_grad():
        stm.slot_embedding.copy_(torch.eye(2))
    memory_before = torch.tensor([[[1.0, 1.0], [0.0, -1.0]]])  # (B=1, S=2, H=2)
    address_query, value = torch.tensor([[2.0, 0.0]]), torch.tensor([[1.0, 3.0]])
    memory_after, address = stm.write(memory_before, address_query, value, torch.tensor([0.5]))
    # scores: (2, 0) . (M_i + P_i) = (2, 0) . (2, 1) = 4 and (2, 0) . (0, 0) = 0, over sqrt(2)
    a0 = 1 / (1 + math.exp(-4 / math.sqrt(2)))
    torch.testing.assert_close(address, torch.tensor([[a0, 1 - a0]]))
    g0, g1 = 0.5 * a0, 0.5 * (1 - a0)
    expected = torch.tensor(
        [[[1 + g0 * (1 - 1), 1 + g0 * (3 - 1)], [0 + g1 * (1 - 0), -1 + g1 * (3 + 1)]]]
    )
    torch.testing.assert_close(memory_after, expected)
    # The gate comes from the last output of the input projection.
    with torch.no_grad():
        stm.from_input.weight.zero_()
        stm.from_input.bias.zero_()
        stm.from_input.bias[-1] = math.log(3.0)  # sigmoid -> 0.75
    assert stm.split_input(torch.randn(1, 2))[3].item() == pytest.approx(0.75)


# ------------------------------------------------------------------- attention
def attend_by_distance(window: int, distance: int) -> StepAttention:
    """Attention whose values are its inputs and whose scores are the bias for ``distance``."""
    attention = StepAttention(dim=2, num_heads=1, window=window)
    with torch.no_grad():
        attention.qkv.weight.zero_()
        attention.qkv.bias.zero_()
        attention.qkv.weight[4:].copy_(torch.eye(2))  # v = z, q = k = 0
        attention.out.weight.copy_(torch.eye(2))
        attention.out.bias.zero_()
        attention.position_bias.zero_()
        attention.position_bias[0, window - 1 - distance] = 50.0
    return attention


def test_step_attention_reads_the_step_its_position_bias_points_at():
    attention = attend_by_distance(window=4, distance=2)
    z = torch.tensor([[1.0, 0.0], [0.0, 1.0], [2.0, 2.0], [3.0, -1.0], [5.0, 5.0]])  # 5 steps
    keys = values = torch.zeros(1, 3, 2)
    valid = torch.zeros(1, 3)
    outputs = []
    for z_t in z:
        out, keys, values = attention(z_t.view(1, 2), keys, values, valid)
        valid = torch.cat([valid[:, 1:], torch.ones(1, 1)], dim=1)
        outputs.append(out[0])
    # Steps 0 and 1 have no step 2 back: they average what is valid (themselves and step 0).
    torch.testing.assert_close(outputs[0], z[0])
    torch.testing.assert_close(outputs[1], (z[0] + z[1]) / 2)
    for t in (2, 3, 4):
        torch.testing.assert_close(outputs[t], z[t - 2])
    torch.testing.assert_close(values[0], z[2:])  # the cache holds the last window - 1 steps


def test_attention_never_reads_across_an_episode_start():
    module = small(ltm_write_threshold=1.0, attention_window=4).eval()  # no long-term writes
    x, starts = inputs(8)
    starts[5, 0] = True
    changed = x.clone()
    changed[:5, 0] += 3.0  # only the first episode of row 0 differs
    with torch.no_grad():
        y, _ = module(x, module.initial_state(3), starts)
        y_changed, _ = module(changed, module.initial_state(3), starts)
    torch.testing.assert_close(y_changed[5:, 0], y[5:, 0], atol=1e-6, rtol=0)
    assert not torch.allclose(y_changed[:5, 0], y[:5, 0])


# ------------------------------------------------------------------ the module
def test_registered_and_default_constructible():
    module = memory.make("dual", input_dim=6)
    assert isinstance(module, DualMemory) and module.output_dim == 128
    assert module.experience.capacity == module.ltm_capacity
    with pytest.raises(ValueError, match="ltm_top_k=5 must be <= ltm_capacity=4"):
        DualMemory(3, ltm_capacity=4, ltm_top_k=5)
    with pytest.raises(ValueError, match="num_heads"):
        DualMemory(3, hidden_dim=10, num_heads=4)
    with pytest.raises(ValueError, match="attention_window must be 0 .* or >= 2, got 1"):
        DualMemory(3, attention_window=1)
    assert "attn_keys" not in DualMemory(3, attention_window=0).initial_state(2)


def test_write_threshold_and_interval_decide_long_term_writes():
    x, starts = inputs(6)
    with torch.no_grad():
        _, never = small(ltm_write_threshold=1.0).eval()(x, small().initial_state(3), starts)
        _, every = small(ltm_write_threshold=0.0).eval()(x, small().initial_state(3), starts)
        _, second = small(ltm_write_threshold=0.0, ltm_write_interval=2)(
            x, small().initial_state(3), starts
        )
    assert never["ltm_filled"].sum() == 0
    assert every["ltm_filled"].sum(-1).flatten().tolist() == [6, 6, 6]
    assert second["ltm_filled"].sum(-1).flatten().tolist() == [3, 3, 3]
    assert every["ltm_written_at"][0, 0, :6].tolist() == [1, 2, 3, 4, 5, 6]
    assert not every["ltm_keys"].requires_grad and not every["ltm_values"].requires_grad


def test_resets_only_rows_with_episode_starts():
    module = small(ltm_write_threshold=0.0).eval()
    x, starts = inputs(8)
    starts[4, 1] = True
    with torch.no_grad():
        y, state = module(x, module.initial_state(3), starts)
        y_fresh, state_fresh = module(x[4:], module.initial_state(3), inputs(4)[1])
        y_plain, _ = module(x, module.initial_state(3), inputs(8)[1])
    assert state["ltm_filled"].sum(-1).flatten().tolist() == [8, 4, 8]
    torch.testing.assert_close(y[4:, 1], y_fresh[:, 1], atol=1e-5, rtol=0)
    torch.testing.assert_close(y[:, [0, 2]], y_plain[:, [0, 2]], atol=1e-6, rtol=0)
    for key in state:
        torch.testing.assert_close(state[key][1], state_fresh[key][1], atol=1e-5, rtol=0, msg=key)
    reset = module.reset_rows(state, torch.tensor([False, True, False]))
    initial = module.initial_state(3)
    for key in state:
        assert torch.equal(reset[key][1], initial[key][1]), key
        assert torch.equal(reset[key][[0, 2]], state[key][[0, 2]]), key


def test_persistent_mode_keeps_long_term_memory_and_resets_short_term():
    module = small(ltm_write_threshold=0.0, reset_on_episode_start=False).eval()
    assert module.persistent
    x, starts = inputs(6)
    starts[3, 0] = True
    with torch.no_grad():
        _, state = module(x, module.initial_state(3), starts)
    assert state["ltm_filled"].sum(-1).flatten().tolist() == [6, 6, 6]
    reset = module.reset_rows(state, torch.tensor([True, False, False]))
    assert torch.equal(reset["ltm_keys"], state["ltm_keys"])
    assert reset["stm"][0].abs().sum() == 0 and state["stm"][0].abs().sum() > 0


def test_consolidation_runs_every_interval_steps():
    # Threshold 2.1 exceeds any distance between unit keys: each consolidation leaves one entry.
    module = small(ltm_write_threshold=0.0, consolidation_interval=5, consolidation_threshold=2.1)
    x, starts = inputs(12)
    with torch.no_grad():
        _, state = module.eval()(x, module.initial_state(3), starts)
    # steps 1-5: 5 entries -> 1 (4 merges); 6-10: 6 -> 1 (5 merges); 11-12: 3 entries.
    assert state["ltm_merges"].flatten().tolist() == [9.0, 9.0, 9.0]
    assert state["ltm_filled"].sum(-1).flatten().tolist() == [3, 3, 3]
    diag = module.diagnostics(state)
    assert diag["ltm_merges"] == 9.0 and diag["ltm_count"] == 3.0
    assert diag["ltm_fill"] == pytest.approx(3 / 16)


def test_consolidate_state_on_demand():
    module = small(ltm_write_threshold=0.0)
    x, starts = inputs(4)
    with torch.no_grad():
        _, state = module.eval()(x, module.initial_state(3), starts)
    merged = module.consolidate_state(state, threshold=2.1)
    assert merged["ltm_filled"].sum(-1).flatten().tolist() == [1, 1, 1]
    assert merged["ltm_merges"].flatten().tolist() == [3.0, 3.0, 3.0]
    assert state["ltm_filled"].sum() == 12  # the input state is not modified


@pytest.mark.parametrize("num_layers, attention_window", [(1, 3), (2, 3), (1, 0)])
def test_two_chunks_equal_one_call(num_layers: int, attention_window: int):
    module = small(
        ltm_write_threshold=0.0,
        consolidation_interval=4,
        num_layers=num_layers,
        attention_window=attention_window,
    )
    module.consolidation_threshold = 1.0  # merges happen inside the chunks
    x, starts = inputs(12)
    starts[3, 0] = starts[5, 1] = starts[9, 2] = True
    with torch.no_grad():
        y, state = module.eval()(x, module.initial_state(3), starts)
        y1, state1 = module(x[:5], module.initial_state(3), starts[:5])
        y2, state2 = module(x[5:], state1, starts[5:])
    assert state["ltm_merges"].sum() > 0
    torch.testing.assert_close(torch.cat([y1, y2]), y, atol=1e-5, rtol=0)
    for key in state:
        torch.testing.assert_close(state2[key], state[key], atol=1e-5, rtol=0, msg=key)


def test_batch_independence():
    module = small(ltm_write_threshold=0.0).eval()
    x, starts = inputs(8)
    changed = x.clone()
    changed[:, 1] += 1.0
    with torch.no_grad():
        y, _ = module(x, module.initial_state(3), starts)
        y_changed, _ = module(changed, module.initial_state(3), starts)
    torch.testing.assert_close(y_changed[:, [0, 2]], y[:, [0, 2]], atol=1e-6, rtol=0)
    assert not torch.allclose(y_changed[:, 1], y[:, 1])


def test_gradients_reach_every_parameter_but_not_the_store():
    module = small(ltm_write_threshold=0.0, num_layers=2).train()
    x, starts = inputs(6)
    y, state = module(x, module.initial_state(3), starts)
    readout = torch.randn(y.shape[-1], generator=torch.Generator().manual_seed(4))
    (y * readout).sum().backward()
    for name, param in module.named_parameters():
        assert param.grad is not None, f"no gradient reaches {name}"
        assert torch.isfinite(param.grad).all() and param.grad.abs().sum() > 0, name
    assert not any(state[k].requires_grad for k in state if k.startswith("ltm_"))
    assert state["stm"].requires_grad


def test_module_experience_store_api():
    module = memory.make("dual", input_dim=6, ltm_capacity=64)
    gen = torch.Generator().manual_seed(0)
    keys = torch.randn(64, module.key_dim, generator=gen)
    values = torch.randn(64, module.value_dim, generator=gen)
    module.store_experience(keys, values)
    found = module.query(keys[:4] + 0.01, top_k=8)
    assert found.indices.shape == (4, 8) and found.indices[:, 0].tolist() == [0, 1, 2, 3]
    sampled_keys, sampled_values = module.sample_experiences(5, torch.Generator().manual_seed(0))
    assert sampled_keys.shape == (5, module.key_dim)
    assert sampled_values.shape == (5, module.value_dim)
    assert module.consolidate() == 0
    assert module.diagnostics(module.initial_state(2))["experience_fill"] == 1.0
    assert "experience.keys" in module.state_dict()


def test_diagnostics_report_the_documented_quantities():
    module = small(ltm_write_threshold=0.0)
    x, starts = inputs(5)
    with torch.no_grad():
        _, state = module.eval()(x, module.initial_state(3), starts)
    diag = module.diagnostics(state)
    for key in [
        "stm_gate_mean",
        "ltm_fill",
        "ltm_importance_mean",
        "ltm_importance_max",
        "ltm_importance_entropy",
        "ltm_merges",
        "ltm_hit_similarity",
    ]:
        assert isinstance(diag[key], float), key
    assert diag["stm_gate_mean"] == pytest.approx(float(state["stm_gate"].mean()))
    assert diag["ltm_fill"] == pytest.approx(5 / 16)
    assert 0.0 < diag["ltm_importance_entropy"] <= math.log(5) + 1e-6
    assert -1.0 <= diag["ltm_hit_similarity"] <= 1.0 and diag["ltm_hit_similarity"] != 0.0
    # Read weights are a softmax over the 4 slots (no zeros): entropy by the plain formula.
    read_weights = state["stm_read_weights"]
    expected_entropy = float(-(read_weights * read_weights.log()).sum(-1).mean())
    assert diag["stm_read_entropy"] == pytest.approx(expected_entropy, rel=1e-6)


def test_ltm_diagnostics_of_a_hand_filled_store():
    store = LTMBatch.empty(1, 4, 3, 2)
    store.filled[0, :3] = True
    store.importance[0] = torch.tensor([1.0, 1.0, 2.0, 5.0])  # the 5 is in the empty slot
    diag = ltm_diagnostics(store, prefix="ltm_")
    # Filled importances 1, 1, 2: shares 1/4, 1/4, 1/2.
    assert diag["ltm_fill"] == 0.75
    assert diag["ltm_count"] == 3.0
    assert diag["ltm_importance_mean"] == pytest.approx(4 / 3)
    assert diag["ltm_importance_max"] == 2.0
    # -(2 * 0.25 * ln 0.25 + 0.5 * ln 0.5) = 0.693147 + 0.346574 = 1.039721
    assert diag["ltm_importance_entropy"] == pytest.approx(1.039721, abs=1e-6)


def test_module_diagnostics_on_a_hand_built_state():
    module = small(ltm_capacity=4)  # one layer, 4 short-term slots
    state = module.initial_state(2)
    # Row 0: the store above (importances 1, 1, 2 filled, 5 in the empty slot).
    # Row 1: one filled slot of importance 3.
    state["ltm_filled"][:, 0] = torch.tensor(
        [[True, True, True, False], [True, False, False, False]]
    )
    state["ltm_importance"][:, 0] = torch.tensor([[1.0, 1.0, 2.0, 5.0], [3.0, 0.0, 0.0, 0.0]])
    state["ltm_hit_similarity"][:, 0] = torch.tensor([0.5, 0.0])  # row 1 retrieved nothing
    state["stm_read_weights"][:, 0] = torch.tensor([[0.25] * 4, [1.0, 0.0, 0.0, 0.0]])
    state["stm_gate"][:, 0] = torch.tensor([0.2, 0.6])
    state["ltm_merges"][:, 0] = torch.tensor([2.0, 0.0])
    diag = module.diagnostics(state)
    expected = {
        "stm_gate_mean": 0.4,
        "stm_read_entropy": math.log(4) / 2,  # row 0: log 4 (uniform), row 1: 0 (one-hot)
        "ltm_fill": (3 + 1) / 2 / 4,
        "ltm_count": 2.0,
        "ltm_importance_mean": (1 + 1 + 2 + 3) / 4,  # over the 4 filled slots of both rows
        "ltm_importance_max": 3.0,  # the 5 sits in an empty slot
        "ltm_importance_entropy": 1.039721 / 2,  # row 0 as above, row 1: one slot, 0
        "ltm_merges": 1.0,
        "ltm_hit_similarity": 0.5,  # the mean over rows that retrieved something
    }
    for key, value in expected.items():
        assert diag[key] == pytest.approx(value, abs=1e-6), key
    state["ltm_hit_similarity"].zero_()
    assert module.diagnostics(state)["ltm_hit_similarity"] == 0.0  # no row retrieved anything
