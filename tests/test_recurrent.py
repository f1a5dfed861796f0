"""LSTM/GRU: the step-by-step fused-cell path equals the split cuDNN/fused-sequence path."""

from __future__ import annotations

import pytest
import torch

import memory


@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("name", ["lstm", "gru"])
def test_step_loop_equals_split_path_values_states_and_gradients(name, num_layers):
    torch.manual_seed(0)
    module = memory.make(name, input_dim=6, hidden_dim=16, num_layers=num_layers)
    x = torch.randn(20, 5, 6, requires_grad=True)
    starts = torch.rand(20, 5, generator=torch.Generator().manual_seed(1)) < 0.2
    starts[3] = False
    starts[3, 2] = True  # one row alone starts at step 3
    state = {k: torch.randn_like(v) for k, v in module.initial_state(5).items()}
    results = []
    for above in ({"cpu": 1.0}, {"cpu": 0.0}):  # never / always the step loop
        module.step_loop_above = above
        y, new_state = module(x, state, starts)
        loss = y.pow(2).sum() + sum(v.pow(2).sum() for v in new_state.values())
        grads = torch.autograd.grad(loss, [x, *module.parameters()])
        results.append((y, new_state, grads))
    (y1, s1, g1), (y2, s2, g2) = results
    torch.testing.assert_close(y2, y1, atol=1e-6, rtol=1e-5)
    for key in s1:
        torch.testing.assert_close(s2[key], s1[key], atol=1e-6, rtol=1e-5)
    for a, b in zip(g1, g2):
        torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-4)


def test_step_loop_is_chosen_only_above_the_piece_fraction(monkeypatch):
    module = memory.make("gru", input_dim=3, hidden_dim=4)
    calls = []
    original = module._step_loop
    monkeypatch.setattr(module, "_step_loop", lambda *a: calls.append(1) or original(*a))
    module.step_loop_above = {"cpu": 0.5}
    x = torch.randn(8, 2, 3)
    few = torch.zeros(8, 2, dtype=torch.bool)
    few[[0, 4]] = True  # 2 pieces of 8 steps
    module(x, module.initial_state(2), few)
    assert calls == []
    many = torch.ones(8, 2, dtype=torch.bool)  # 8 pieces > 0.5 * 8
    module(x, module.initial_state(2), many)
    assert calls == [1]
