"""The memory protocol, checked for every registered module.

The tests are parametrised over ``memory.names()`` after ``import memory`` has
run every registration, so a module registered later is covered without
editing this file.  ``SMALL_KWARGS`` shrinks modules whose defaults are slow;
an unknown name is built as ``memory.make(name, input_dim=INPUT_DIM)``.
"""

from __future__ import annotations

import pytest
import torch

from memworld import memory
from memworld.memory import FrameStack, MemoryModule, WindowAttention

INPUT_DIM = 6
BATCH = 3
SMALL_KWARGS: dict[str, dict] = {
    "lstm": {"hidden_dim": 16},
    "gru": {"hidden_dim": 16},
    "framestack": {"k": 3},
    "window_attention": {"window": 4, "d_model": 16, "num_heads": 2},
    "slot": {"num_slots": 16, "slot_dim": 16, "hidden_dim": 32, "controller_window": 4},
}
NAMES = memory.names()


def build(name: str, seed: int = 0) -> MemoryModule:
    torch.manual_seed(seed)
    return memory.make(name, input_dim=INPUT_DIM, **SMALL_KWARGS.get(name, {}))


def inputs(steps: int, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Random (T, B, INPUT_DIM) inputs and episode starts: all rows start at step 0."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(steps, BATCH, INPUT_DIM, generator=gen)
    starts = torch.zeros(steps, BATCH, dtype=torch.bool)
    starts[0] = True
    return x, starts


def assert_states_close(a: dict, b: dict, rows: list[int], atol: float = 1e-5) -> None:
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(
            a[key][rows].float(), b[key][rows].float(), atol=atol, rtol=0, msg=f"state[{key!r}]"
        )


@pytest.mark.parametrize("name", NAMES)
def test_shapes_and_dtypes(name: str) -> None:
    module = build(name)
    x, starts = inputs(5)
    state = module.initial_state(BATCH, "cpu")
    y, new_state = module(x, state, starts)
    assert y.shape == (5, BATCH, module.output_dim)
    assert y.dtype == torch.float32
    assert new_state.keys() == state.keys()
    for key, value in new_state.items():
        assert value.shape == state[key].shape, f"state[{key!r}] changed shape"
        assert value.shape[0] == BATCH, f"state[{key!r}] is not batch-first"
    assert module.aux_loss(new_state).shape == ()
    assert all(isinstance(v, float) for v in module.diagnostics(new_state).values())


@pytest.mark.parametrize("name", NAMES)
def test_rejects_bad_shapes(name: str) -> None:
    module = build(name)
    x, starts = inputs(4)
    state = module.initial_state(BATCH, "cpu")
    with pytest.raises(ValueError, match="input_dim"):
        module(torch.randn(4, BATCH, INPUT_DIM + 1), state, starts)
    with pytest.raises(ValueError, match="episode_starts"):
        module(x, state, starts[:3])


@pytest.mark.parametrize("name", NAMES)
def test_reset_only_where_episode_starts(name: str) -> None:
    module = build(name).eval()
    if module.persistent:
        pytest.skip(f"{name} keeps its memory across episodes (persistent=True)")
    x, starts = inputs(10)
    with torch.no_grad():
        y_plain, state_plain = module(x, module.initial_state(BATCH, "cpu"), starts)
        # Rows 0 and 2 start a new episode at step 6, row 1 runs on.
        starts_mid = starts.clone()
        starts_mid[6, 0] = starts_mid[6, 2] = True
        y_mid, state_mid = module(x, module.initial_state(BATCH, "cpu"), starts_mid)
        y_fresh, state_fresh = module(x[6:], module.initial_state(BATCH, "cpu"), starts[:4])
    torch.testing.assert_close(y_mid[:6], y_plain[:6], atol=1e-5, rtol=0)
    torch.testing.assert_close(y_mid[:, 1], y_plain[:, 1], atol=1e-5, rtol=0)
    torch.testing.assert_close(y_mid[6:, [0, 2]], y_fresh[:, [0, 2]], atol=1e-5, rtol=0)
    assert_states_close(state_mid, state_fresh, [0, 2])
    assert_states_close(state_mid, state_plain, [1])
    # A start at the first step of a chunk resets the carried state the same way.
    with torch.no_grad():
        x2, starts2 = inputs(4, seed=2)
        starts2[0, 1] = False
        y_carry, state_carry = module(x2, state_plain, starts2)
        y_init, state_init = module(x2, module.initial_state(BATCH, "cpu"), inputs(4)[1])
        y_cont, state_cont = module(
            torch.cat([x, x2]), module.initial_state(BATCH, "cpu"), torch.cat([starts, starts2])
        )
    torch.testing.assert_close(y_carry[:, [0, 2]], y_init[:, [0, 2]], atol=1e-5, rtol=0)
    torch.testing.assert_close(y_carry[:, 1], y_cont[10:, 1], atol=1e-5, rtol=0)
    assert_states_close(state_carry, state_init, [0, 2])


@pytest.mark.parametrize("name", NAMES)
def test_reset_rows_restores_initial_state_exactly(name: str) -> None:
    module = build(name).eval()
    if module.persistent:
        pytest.skip(f"{name} keeps its memory across episodes (persistent=True)")
    x, starts = inputs(6)
    with torch.no_grad():
        _, state = module(x, module.initial_state(BATCH, "cpu"), starts)
    reset = module.reset_rows(state, torch.tensor([True, False, True]))
    initial = module.initial_state(BATCH, "cpu")
    for key in state:
        assert torch.equal(reset[key][[0, 2]], initial[key][[0, 2]].to(reset[key].dtype)), key
        assert torch.equal(reset[key][1], state[key][1]), key


@pytest.mark.parametrize("name", NAMES)
def test_batch_independence(name: str) -> None:
    if getattr(memory.base._REGISTRY[name], "shared_across_batch", False):
        pytest.skip(f"{name} shares one store across rows and calls (shared_across_batch=True)")
    module = build(name).eval()
    x, starts = inputs(8)
    starts[4, 1] = True
    changed = x.clone()
    changed[:, 1] += torch.randn(8, INPUT_DIM, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        y, _ = module(x, module.initial_state(BATCH, "cpu"), starts)
        y_changed, _ = module(changed, module.initial_state(BATCH, "cpu"), starts)
    torch.testing.assert_close(y_changed[:, [0, 2]], y[:, [0, 2]], atol=1e-6, rtol=0)
    assert not torch.allclose(y_changed[:, 1], y[:, 1]), "row 1 ignores its own input"


@pytest.mark.parametrize("name", NAMES)
def test_two_chunks_equal_one_call(name: str) -> None:
    if getattr(memory.base._REGISTRY[name], "shared_across_batch", False):
        pytest.skip(f"{name} shares one store across rows and calls (shared_across_batch=True)")
    module = build(name).eval()
    x, starts = inputs(12)
    starts[3, 0] = starts[5, 1] = starts[9, 2] = True  # inside chunk 1, at the cut, inside chunk 2
    with torch.no_grad():
        y, state = module(x, module.initial_state(BATCH, "cpu"), starts)
        y1, state1 = module(x[:5], module.initial_state(BATCH, "cpu"), starts[:5])
        y2, state2 = module(x[5:], state1, starts[5:])
    torch.testing.assert_close(torch.cat([y1, y2]), y, atol=1e-5, rtol=0)
    assert_states_close(state2, state, list(range(BATCH)))


@pytest.mark.parametrize("name", NAMES)
def test_gradients_reach_every_parameter(name: str) -> None:
    module = build(name).train()
    x, starts = inputs(10)
    x.requires_grad_(True)  # an encoder before the memory must be trainable too
    starts[6, 0] = True
    y, state = module(x, module.initial_state(BATCH, "cpu"), starts)
    # A random readout: y.sum() would give zero gradients through a final LayerNorm.
    readout = torch.randn(y.shape[-1], generator=torch.Generator().manual_seed(4))
    ((y * readout).sum() + module.aux_loss(state)).backward()
    assert x.grad is not None and torch.isfinite(x.grad).all(), f"{name}: no gradient to x"
    exempt = set(getattr(module, "no_grad_params", ()))
    params = [(n, p) for n, p in module.named_parameters() if p.requires_grad and n not in exempt]
    for param_name, param in params:
        assert param.grad is not None, f"{name}: no gradient reaches {param_name}"
        assert torch.isfinite(param.grad).all(), f"{name}: non-finite gradient in {param_name}"
    if params:
        assert any(p.grad.abs().sum() > 0 for _, p in params), f"{name}: all gradients are zero"


@pytest.mark.parametrize("name", NAMES)
def test_eval_mode_is_deterministic(name: str) -> None:
    if getattr(memory.base._REGISTRY[name], "shared_across_batch", False):
        pytest.skip(f"{name} shares one store across rows and calls (shared_across_batch=True)")
    module = build(name).eval()
    x, starts = inputs(8)
    with torch.no_grad():
        y_a, state_a = module(x, module.initial_state(BATCH, "cpu"), starts)
        y_b, state_b = module(x, module.initial_state(BATCH, "cpu"), starts)
    assert torch.equal(y_a, y_b)
    for key in state_a:
        assert torch.equal(state_a[key], state_b[key]), key


def test_framestack_concatenates_last_k_inputs_with_zeros_before_episode_start() -> None:
    module = FrameStack(input_dim=2, k=3)
    # Row 0 starts at steps 0 and 3, row 1 only at step 0; values 1..14 make every step distinct.
    x = torch.arange(1.0, 29.0).view(7, 2, 2)
    starts = torch.zeros(7, 2, dtype=torch.bool)
    starts[0] = True
    starts[3, 0] = True
    expected = torch.zeros(7, 2, 6)
    for row, episode_start in [(0, [0, 0, 0, 3, 3, 3, 3]), (1, [0] * 7)]:
        for t in range(7):
            for slot, past in enumerate(range(t - 2, t + 1)):  # oldest first
                if past >= episode_start[t]:
                    expected[t, row, 2 * slot : 2 * slot + 2] = x[past, row]
    # Split across two calls (cut at 2) to cover the carried frames too.
    y1, state = module(x[:2], module.initial_state(2), starts[:2])
    y2, state = module(x[2:], state, starts[2:])
    assert torch.equal(torch.cat([y1, y2]), expected)
    assert torch.equal(state["frames"].reshape(2, 6), expected[-1])
    assert module.output_dim == 6 and not list(module.parameters())


def test_framestack_projection_sets_output_dim() -> None:
    module = FrameStack(input_dim=2, k=3, output_dim=5)
    x = torch.randn(4, 2, 2)
    y, _ = module(x, module.initial_state(2), torch.zeros(4, 2, dtype=torch.bool))
    assert y.shape == (4, 2, 5)


def test_window_attention_sees_only_the_window_and_the_episode() -> None:
    window = 4
    torch.manual_seed(0)
    module = WindowAttention(input_dim=3, window=window, d_model=8, num_heads=2).eval()
    steps = 14
    x = torch.randn(steps, 2, 3)
    starts = torch.zeros(steps, 2, dtype=torch.bool)
    starts[0] = True
    starts[9, 1] = True  # row 1 starts a new episode at step 9

    def outputs(inputs: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():  # two chunks, cut at 6, so the carried keys/values are covered
            y1, state = module(inputs[:6], module.initial_state(2), starts[:6])
            y2, _ = module(inputs[6:], state, starts[6:])
        return torch.cat([y1, y2])

    y = outputs(x)
    for source in [2, 5]:
        changed = x.clone()
        changed[source, 0] += 1.0
        moved = (outputs(changed)[:, 0] - y[:, 0]).abs().amax(dim=-1) > 1e-6  # (T,)
        reach = torch.zeros(steps, dtype=torch.bool)
        reach[source : source + window] = True  # steps source .. source + W - 1 see it
        assert torch.equal(moved, reach), (
            f"input {source} moves outputs {moved.nonzero().flatten()}"
        )
    # Row 1: nothing before its episode start at step 9 reaches steps 9..13.
    changed = x.clone()
    changed[:9, 1] += 1.0
    assert torch.equal(outputs(changed)[9:, 1], y[9:, 1])


def test_window_attention_long_chunks_in_pieces_match_one_piece() -> None:
    torch.manual_seed(0)
    whole = WindowAttention(input_dim=3, window=4, d_model=8, num_heads=2, num_layers=2).eval()
    pieces = WindowAttention(
        input_dim=3, window=4, d_model=8, num_heads=2, num_layers=2, max_block=3
    )
    pieces.load_state_dict(whole.state_dict())
    x = torch.randn(11, 2, 3)
    starts = torch.zeros(11, 2, dtype=torch.bool)
    starts[0] = starts[4, 0] = starts[7, 1] = True
    with torch.no_grad():
        y, state = whole(x, whole.initial_state(2), starts)
        y_pieces, state_pieces = pieces.eval()(x, pieces.initial_state(2), starts)
    torch.testing.assert_close(y_pieces, y, atol=1e-5, rtol=0)
    assert_states_close(state_pieces, state, [0, 1])


def test_window_attention_rejects_bad_heads() -> None:
    with pytest.raises(ValueError, match="num_heads"):
        WindowAttention(input_dim=3, d_model=10, num_heads=4)
