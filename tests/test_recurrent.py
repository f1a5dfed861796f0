"""LSTM/GRU: the fused sequence kernels, the step loop and the split sequence path agree."""

from __future__ import annotations

import pytest
import torch

from memworld import memory
from memworld.memory.fused_rnn import GRUSequence, LSTMSequence

NEVER = float("inf")  # no chunk has more pieces than this fraction

PATHS = {  # (fused_above, step_loop_above) that force each path on the CPU
    "split": (NEVER, {"cpu": 1.0}),
    "step_loop": (NEVER, {"cpu": 0.0}),
    "fused": (0, {}),
}


@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("name", ["lstm", "gru"])
def test_every_path_gives_the_same_values_states_and_gradients(name, num_layers):
    torch.manual_seed(0)
    module = memory.make(name, input_dim=6, hidden_dim=16, num_layers=num_layers)
    x = torch.randn(20, 5, 6, requires_grad=True)
    starts = torch.rand(20, 5, generator=torch.Generator().manual_seed(1)) < 0.2
    starts[3] = False
    starts[3, 2] = True  # one row alone starts at step 3
    state = {k: torch.randn_like(v) for k, v in module.initial_state(5).items()}
    results = []
    for fused_above, step_loop_above in PATHS.values():
        module.fused_above, module.step_loop_above = fused_above, step_loop_above
        y, new_state = module(x, state, starts)
        loss = y.pow(2).sum() + sum(v.pow(2).sum() for v in new_state.values())
        grads = torch.autograd.grad(loss, [x, *module.parameters()])
        results.append((y, new_state, grads))
    (y1, s1, g1), *others = results
    for y2, s2, g2 in others:
        torch.testing.assert_close(y2, y1, atol=1e-6, rtol=1e-5)
        for key in s1:
            torch.testing.assert_close(s2[key], s1[key], atol=1e-6, rtol=1e-5)
        for a, b in zip(g1, g2):
            torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("kind", ["gru", "lstm"])
def test_sequence_kernels_pass_gradcheck_with_resets_inside(kind):
    gen = torch.Generator().manual_seed(0)
    steps, batch, inp, hidden = 6, 3, 2, 3
    cell = (torch.nn.GRU if kind == "gru" else torch.nn.LSTM)(inp, hidden).double()
    weights = [getattr(cell, f"{w}_l0") for w in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
    x = torch.randn(steps, batch, inp, dtype=torch.double, generator=gen, requires_grad=True)
    h0, c0 = (
        torch.randn(batch, hidden, dtype=torch.double, generator=gen, requires_grad=True)
        for _ in range(2)
    )
    keep = torch.ones(steps, batch, 1, dtype=torch.double)
    keep[0, 2] = keep[2, 0] = keep[4, 1] = 0.0  # a reset at the first step too
    if kind == "gru":
        assert torch.autograd.gradcheck(
            lambda x, h0, *w: GRUSequence.apply(x, h0, keep, *w), (x, h0, *weights)
        )
    else:  # the last cell state is an output too, so its gradient path is checked
        assert torch.autograd.gradcheck(
            lambda x, h0, c0, *w: LSTMSequence.apply(x, h0, c0, keep, *w), (x, h0, c0, *weights)
        )


def test_path_choice_on_the_cpu(monkeypatch):
    calls = []
    x = torch.randn(8, 2, 3)
    unsplit = torch.zeros(8, 2, dtype=torch.bool)
    unsplit[0] = True  # one piece
    few = unsplit.clone()
    few[4] = True  # 2 pieces of 8 steps
    many = torch.ones(8, 2, dtype=torch.bool)  # 8 pieces
    modules = {name: memory.make(name, input_dim=3, hidden_dim=4) for name in ("gru", "lstm")}
    for name, module in modules.items():
        for path in ("_fused", "_step_loop"):
            original = getattr(module, path)
            monkeypatch.setattr(
                module, path, lambda *a, o=original, k=(name, path): calls.append(k) or o(*a)
            )
    for starts in (unsplit, many):
        modules["gru"](x, modules["gru"].initial_state(2), starts)  # the GRU always fuses
        modules["lstm"](x, modules["lstm"].initial_state(2), starts)  # oneDNN when unsplit
    assert calls == [("gru", "_fused"), ("gru", "_fused"), ("lstm", "_fused")]
    calls.clear()
    gru = modules["gru"]
    gru.fused_above, gru.step_loop_above = NEVER, {"cpu": 0.5}
    gru(x, gru.initial_state(2), few)  # 2 pieces <= 0.5 * 8: split
    assert calls == []
    gru(x, gru.initial_state(2), many)  # 8 pieces > 0.5 * 8: step loop
    assert calls == [("gru", "_step_loop")]
