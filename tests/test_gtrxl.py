"""GTrXL: how far each step reaches, episode starts hide the memory, pieces equal one call."""

from __future__ import annotations

import math

import pytest
import torch

from memworld.memory.gtrxl import GRUGate, GTrXL


def _outputs(module: GTrXL, x: torch.Tensor, starts: torch.Tensor, cut: int) -> torch.Tensor:
    """Two calls, cut at ``cut``, so the carried memory is covered."""
    with torch.no_grad():
        y1, state = module(x[:cut], module.initial_state(x.shape[1]), starts[:cut])
        y2, _ = module(x[cut:], state, starts[cut:])
    return torch.cat([y1, y2])


@pytest.mark.parametrize("num_layers", [1, 2])
def test_a_step_reaches_exactly_num_layers_times_mem_len_steps_back(num_layers):
    mem_len, steps = 3, 16
    torch.manual_seed(0)
    module = GTrXL(3, d_model=8, num_heads=2, num_layers=num_layers, mem_len=mem_len).eval()
    x = torch.randn(steps, 2, 3)
    starts = torch.zeros(steps, 2, dtype=torch.bool)
    starts[0] = True
    starts[10, 1] = True  # row 1 starts a new episode at step 10
    y = _outputs(module, x, starts, cut=5)
    for source in [1, 4]:
        changed = x.clone()
        changed[source, 0] += 1.0
        moved = (_outputs(module, changed, starts, cut=5)[:, 0] - y[:, 0]).abs().amax(-1) > 1e-6
        reach = torch.zeros(steps, dtype=torch.bool)
        reach[source : source + num_layers * mem_len + 1] = True
        assert torch.equal(moved, reach), f"input {source} moves {moved.nonzero().flatten()}"
    # Row 1: nothing before its episode start at step 10 reaches steps 10..15.
    changed = x.clone()
    changed[:10, 1] += 1.0
    assert torch.equal(_outputs(module, changed, starts, cut=5)[10:, 1], y[10:, 1])


def test_long_chunk_in_pieces_and_single_steps_equal_one_call():
    torch.manual_seed(0)
    whole = GTrXL(3, d_model=8, num_heads=2, mem_len=4).eval()
    pieces = GTrXL(3, d_model=8, num_heads=2, mem_len=4, max_block=3).eval()
    pieces.load_state_dict(whole.state_dict())
    x = torch.randn(13, 2, 3)
    starts = torch.zeros(13, 2, dtype=torch.bool)
    starts[0] = starts[5, 0] = starts[8, 1] = True
    with torch.no_grad():
        y, state = whole(x, whole.initial_state(2), starts)
        y_pieces, state_pieces = pieces(x, pieces.initial_state(2), starts)
        step_state, steps = whole.initial_state(2), []
        for t in range(13):  # the rollout path
            y_t, step_state = whole(x[t : t + 1], step_state, starts[t : t + 1])
            steps.append(y_t)
    torch.testing.assert_close(y_pieces, y, atol=1e-5, rtol=0)
    torch.testing.assert_close(torch.cat(steps), y, atol=1e-5, rtol=0)
    for key in state:
        torch.testing.assert_close(state_pieces[key], state[key], atol=1e-5, rtol=0)
        torch.testing.assert_close(step_state[key], state[key], atol=1e-5, rtol=0)
    # Row 0 restarted at step 5: 8 steps of its episode fill the 4 places; row 1's 5 steps too.
    assert state["valid"].tolist() == [[1.0] * 4, [1.0] * 4]


def test_memory_holds_the_last_mem_len_layer_inputs_with_zeros_before_the_start():
    torch.manual_seed(0)
    module = GTrXL(3, d_model=8, num_heads=2, num_layers=1, mem_len=4).eval()
    x = torch.randn(6, 1, 3)
    starts = torch.zeros(6, 1, dtype=torch.bool)
    starts[0] = starts[4] = True  # the last episode has 2 steps
    with torch.no_grad():
        _, state = module(x, module.initial_state(1), starts)
        inputs = module.input_proj(x[:, 0])  # layer 0 remembers its inputs
    assert state["valid"].tolist() == [[0.0, 0.0, 1.0, 1.0]]
    assert torch.equal(state["memory"][0, 0, :2], torch.zeros(2, 8))
    torch.testing.assert_close(state["memory"][0, 0, 2:], inputs[4:])


def test_gru_gate_with_zero_weights_passes_a_fixed_fraction_of_x():
    gate = GRUGate(4, bias=2.0)
    for linear in (gate.from_input, gate.from_hidden, gate.candidate):
        torch.nn.init.zeros_(linear.weight)
    x, y = torch.randn(5, 4), torch.randn(5, 4)
    # z = sigmoid(-2), candidate tanh(0) = 0: out = (1 - z) x.
    keep = 1 - 1 / (1 + math.exp(2.0))
    torch.testing.assert_close(gate(x, y), keep * x)


def test_bad_heads_are_refused():
    with pytest.raises(ValueError, match="num_heads"):
        GTrXL(3, d_model=10, num_heads=4)


@pytest.mark.parametrize("cpp", [True, False], ids=["cpp", "python"])
def test_rollout_reuses_keys_and_values_only_for_the_memory_it_returned(cpp, monkeypatch):
    """A rollout step reuses the keys and values of the memory the previous step returned:
    each step equals the reference from the same state, also after an in-place write into
    that memory, after an optimiser step (fused Adam moves no version counter), and when
    one state is stepped twice (a rollout step, then the last value estimate)."""
    from memworld.memory import native

    if not cpp:
        monkeypatch.setattr(native, "rollout_steps", lambda x: None)
    torch.manual_seed(0)
    module = GTrXL(3, d_model=8, num_heads=2, num_layers=2, mem_len=4)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=gen))
    used = []  # whether each step found keys and values to reuse
    remembered = module._remembered_keys_values

    def counting(memory: torch.Tensor, plan: tuple) -> list | None:
        kept = remembered(memory, plan)
        used.append(kept is not None)
        return kept

    monkeypatch.setattr(module, "_remembered_keys_values", counting)
    state = module.initial_state(3)
    starts = torch.zeros(1, 3, dtype=torch.bool)

    def step(state: dict, start_row: int | None = None, x: torch.Tensor | None = None) -> dict:
        x = torch.randn(1, 3, 3, generator=gen) if x is None else x
        s = starts.clone()
        if start_row is not None:
            s[0, start_row] = True
        with torch.no_grad():
            y, new_state = module(x, state, s)
            y_ref, ref_state = module.forward_reference(x, state, s)
        torch.testing.assert_close(y, y_ref, atol=1e-5, rtol=0)
        for key in ref_state:
            torch.testing.assert_close(new_state[key], ref_state[key], atol=1e-5, rtol=0)
        return new_state

    for t in range(7):  # past mem_len, with a row starting on the way
        state = step(state, start_row=1 if t == 3 else None)
    with torch.no_grad():
        state["memory"].mul_(0.5)  # written in place: its keys and values are stale
    state = step(state)
    optimiser = torch.optim.Adam(module.parameters(), lr=0.1, fused=True)
    y, _ = module.forward_reference(
        torch.randn(2, 3, 3), module.initial_state(3), starts.repeat(2, 1)
    )
    y.sum().backward()
    optimiser.step()
    state = step(step(state))  # the first with new weights, the second reuses again
    x = torch.randn(1, 3, 3, generator=gen)
    twice = [step(state, x=x), step(state, x=x)]  # the same state twice, reused then not
    torch.testing.assert_close(twice[0]["memory"], twice[1]["memory"], atol=1e-6, rtol=0)
    assert used == [False] + [True] * 6 + [False, False, True, True, False]
