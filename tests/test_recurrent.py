"""LSTM/GRU: the fused sequence kernels, the step loop and the split sequence path agree."""

from __future__ import annotations

import warnings

import pytest
import torch

from memworld import memory
from memworld.memory import fused_rnn, native
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


def _sequence_results(kind: str, loops, monkeypatch) -> list[torch.Tensor]:
    """Outputs and every gradient of one float32 chunk with resets inside, through ``loops``."""
    monkeypatch.setattr(fused_rnn, "step_loops", lambda x: loops)
    gen = torch.Generator().manual_seed(0)
    steps, batch, inp, hidden = 12, 5, 4, 8
    torch.manual_seed(0)
    cell = (torch.nn.GRU if kind == "gru" else torch.nn.LSTM)(inp, hidden)
    x = torch.randn(steps, batch, inp, generator=gen, requires_grad=True)
    h0, c0 = (torch.randn(batch, hidden, generator=gen, requires_grad=True) for _ in range(2))
    keep = (torch.rand(steps, batch, 1, generator=gen) > 0.2).float()
    keep[0, 1] = keep[steps - 1, 3] = 0.0  # resets at the first and the last step
    weights = list(cell._flat_weights)
    if kind == "gru":
        out, last = GRUSequence.apply(x, h0, keep, *weights), None
        inputs = [x, h0, *weights]
    else:
        out, last = LSTMSequence.apply(x, h0, c0, keep, *weights)
        inputs = [x, h0, c0, *weights]
    loss = (out * torch.linspace(-1, 1, hidden)).pow(2).sum()
    if last is not None:
        loss = loss + last.sin().sum()
    return [out.detach(), *torch.autograd.grad(loss, inputs)]


@pytest.mark.parametrize("kind", ["gru", "lstm"])
def test_compiled_step_loops_equal_the_python_loops(kind, monkeypatch):
    """The C++ loops (memory/csrc/rnn_loops.cpp) compute what the Python loops do, step for
    step: outputs, and the gradients of the inputs, states and every weight."""
    if not native.wanted():
        pytest.skip(f"{native.ENV_VAR} turns the C++ loops off")
    compiled = native.loops()
    assert compiled is not None, "a C++ compiler and ninja are here, so the loops must build"
    python = _sequence_results(kind, fused_rnn.PythonLoops, monkeypatch)
    in_cpp = _sequence_results(kind, compiled, monkeypatch)
    for a, b in zip(python, in_cpp):
        torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-5)


def test_step_loops_fall_back_to_python_with_one_warning(monkeypatch):
    x32, x64 = torch.zeros(2, 1, 1), torch.zeros(2, 1, 1, dtype=torch.float64)
    assert fused_rnn.step_loops(x64) is fused_rnn.PythonLoops  # C++ takes float32 only
    monkeypatch.setattr(native, "_built", {})
    monkeypatch.setenv(native.ENV_VAR, "0")
    assert native.loops() is None and fused_rnn.step_loops(x32) is fused_rnn.PythonLoops

    def broken_build(name):
        raise RuntimeError("compiler exploded")

    monkeypatch.setattr(native, "_built", {})
    monkeypatch.delenv(native.ENV_VAR)
    monkeypatch.setattr(native, "_build", broken_build)
    monkeypatch.setattr(native, "_ninja_on_path", lambda: True)
    with pytest.warns(
        RuntimeWarning, match=r"\(rnn_loops\).*compiler exploded.*Python code runs instead"
    ):
        assert fused_rnn.step_loops(x32) is fused_rnn.PythonLoops
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no second warning: the answer is kept
        assert fused_rnn.step_loops(x32) is fused_rnn.PythonLoops


def test_lstm_crossover_follows_the_step_loops(monkeypatch):
    """An LSTM chunk of 128 steps in 16 pieces runs the fused kernel with the C++ loops
    (crossover about 10 pieces) and the split sequence path with the Python ones (about 24);
    an unsplit chunk always takes the sequence call."""
    lstm = memory.make("lstm", input_dim=3, hidden_dim=4)
    x = torch.randn(128, 2, 3)
    sixteen = torch.zeros(128, 2, dtype=torch.bool)
    sixteen[::8, 0] = True
    unsplit = torch.zeros(128, 2, dtype=torch.bool)
    calls = []
    original = lstm._fused
    monkeypatch.setattr(lstm, "_fused", lambda *a: calls.append(1) or original(*a))
    for loops, expected in [(native.loops(), [1]), (fused_rnn.PythonLoops, [])]:
        if loops is None:
            continue  # the C++ loops are off here: only the Python crossover applies
        monkeypatch.setattr(fused_rnn, "step_loops", lambda x, loops=loops: loops)
        calls.clear()
        lstm(x, lstm.initial_state(2), sixteen)
        lstm(x, lstm.initial_state(2), unsplit)
        assert calls == expected


def test_compiled_step_loops_refuse_a_buffer_they_cannot_read():
    compiled = native.loops() if native.wanted() else None
    if compiled is None:
        pytest.skip("the C++ loops are off here")
    steps, batch, hidden = 3, 2, 4
    pre = torch.zeros(steps, batch, 3 * hidden)
    args = [torch.zeros(steps, batch, hidden), torch.ones(steps, batch), [False] * steps]
    args += [torch.zeros(3 * hidden, hidden).t(), torch.zeros(batch, hidden)]
    buffers = [torch.zeros(steps, batch, hidden), torch.zeros(steps, batch, 2 * hidden)]
    strided_n = torch.zeros(steps, hidden, batch).transpose(1, 2)  # not contiguous
    with pytest.raises(RuntimeError, match="n must be a contiguous float32 CPU tensor"):
        compiled.gru_forward(pre, *args, *buffers, strided_n)
    compiled.gru_forward(pre, *args, *buffers, strided_n.contiguous())  # the same, contiguous
