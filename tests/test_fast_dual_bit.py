"""The fast paths of DualMemory and BitMemory against their reference paths: outputs,
carried states and gradients of parameters and inputs, with episode starts inside the
chunk, a chunked run equal to a whole one, and (DualMemory) persistence across episodes."""

from __future__ import annotations

import pytest
import torch

from memworld import memory
from memworld.memory.base import MemoryModule

DUAL_SMALL = dict(
    hidden_dim=16,
    num_heads=2,
    stm_slots=4,
    key_dim=8,
    ltm_capacity=6,  # small enough that writes evict
    ltm_top_k=3,
    ltm_write_threshold=0.3,
    consolidation_interval=5,
    consolidation_threshold=0.9,  # merges happen
    ffn_mult=2,
    attention_window=4,
)
BIT_SMALL = dict(hidden_dim=16, addr_bits_per_half=2, range_len=3, top_k=2, codec_hidden=12)


def inputs(steps: int, batch: int, dim: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(steps, batch, dim, generator=gen)
    starts = torch.rand(steps, batch, generator=gen) < 0.2
    starts[0, 0] = True
    return x, starts


def run(module: MemoryModule, x, state, starts, fast: bool):
    """Output, final state and gradients (parameters and ``x``) of one path."""
    module.fast_path = fast
    module.zero_grad(set_to_none=True)
    x = x.clone().requires_grad_(True)
    y, new_state = module(x, state, starts)
    carried = sum(v.float().sum() for v in new_state.values() if v.requires_grad)
    loss = (y * torch.linspace(-1, 1, y.shape[-1])).sum() + 0.1 * carried
    (loss + module.aux_loss(new_state)).backward()
    grads = {n: p.grad.clone() for n, p in module.named_parameters() if p.grad is not None}
    return y.detach(), {k: v.detach() for k, v in new_state.items()}, grads, x.grad


def assert_paths_agree(module: MemoryModule, x, state, starts) -> None:
    ref = run(module, x, state, starts, fast=False)
    fast = run(module, x, state, starts, fast=True)
    torch.testing.assert_close(fast[0], ref[0], rtol=1e-5, atol=1e-5)
    assert fast[1].keys() == ref[1].keys()
    for key in ref[1]:
        torch.testing.assert_close(fast[1][key], ref[1][key], rtol=1e-5, atol=1e-5, msg=key)
    assert fast[2].keys() == ref[2].keys()
    for name in ref[2]:
        torch.testing.assert_close(fast[2][name], ref[2][name], rtol=1e-5, atol=1e-5, msg=name)
    torch.testing.assert_close(fast[3], ref[3], rtol=1e-5, atol=1e-5)


def warm_state(module: MemoryModule, batch: int, seed: int) -> dict:
    """A state after a few reference steps: full caches and stores, not the initial zeros."""
    x, starts = inputs(7, batch, module.input_dim, seed)
    module.fast_path = False
    with torch.no_grad():
        return module(x, module.initial_state(batch), starts)[1]


@pytest.mark.parametrize("layers, persistent", [(1, False), (2, True)])
def test_dual_fast_path_equals_reference(layers: int, persistent: bool) -> None:
    torch.manual_seed(0)
    module = memory.make(
        "dual", input_dim=5, num_layers=layers, reset_on_episode_start=not persistent, **DUAL_SMALL
    )
    x, starts = inputs(10, 3, 5, seed=1)
    assert_paths_agree(module, x, warm_state(module, 3, seed=2), starts)


def test_dual_fast_path_sparse_writes_over_a_long_chunk() -> None:
    """Steps where no row writes (the write interval), steps where some rows write, a
    consolidation and evictions, over 40 steps: the fast path stores only the rows that
    write, and its scan products stay those of the keys stored."""
    torch.manual_seed(0)
    kwargs = {**DUAL_SMALL, "ltm_write_interval": 3, "ltm_write_threshold": 0.5}
    module = memory.make("dual", input_dim=5, **kwargs)
    x, starts = inputs(40, 4, 5, seed=6)
    starts[1:] &= torch.rand(39, 4, generator=torch.Generator().manual_seed(8)) < 0.3
    state = warm_state(module, 4, seed=7)
    assert_paths_agree(module, x, state, starts)
    with torch.no_grad():
        module.fast_path = True
        final = module(x, state, starts)[1]
    assert not torch.equal(final["ltm_written_at"], state["ltm_written_at"])  # it wrote


def test_dual_fast_path_one_step_and_no_attention() -> None:
    torch.manual_seed(0)
    module = memory.make("dual", input_dim=5, **{**DUAL_SMALL, "attention_window": 0})
    x, starts = inputs(6, 3, 5, seed=3)
    assert_paths_agree(module, x, warm_state(module, 3, seed=4), starts)
    module = memory.make("dual", input_dim=5, **DUAL_SMALL)
    state = warm_state(module, 3, seed=5)
    starts[1, 1] = True
    # The shortest chunk the fast path runs (one step runs the reference), a start inside.
    assert_paths_agree(module, x[:2], state, starts[:2])


@pytest.mark.parametrize("name, kwargs", [("dual", DUAL_SMALL), ("bit", BIT_SMALL)])
def test_chunked_fast_run_equals_whole(name: str, kwargs: dict) -> None:
    torch.manual_seed(0)
    module = memory.make(name, input_dim=5, **kwargs)
    x, starts = inputs(12, 3, 5, seed=6)
    with torch.no_grad():
        whole, whole_state = module(x, module.initial_state(3), starts)
        state, parts = module.initial_state(3), []
        for lo, hi in ((0, 5), (5, 6), (6, 12)):
            y, state = module(x[lo:hi], state, starts[lo:hi])
            parts.append(y)
    torch.testing.assert_close(torch.cat(parts), whole, rtol=1e-5, atol=1e-5)
    for key in whole_state:
        torch.testing.assert_close(state[key], whole_state[key], rtol=1e-5, atol=1e-5, msg=key)


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("kwargs", [{}, {"write_mode": "learned", "read_addressing": "absolute"}])
def test_bit_fast_path_equals_reference(training: bool, kwargs: dict) -> None:
    torch.manual_seed(0)
    module = memory.make("bit", input_dim=5, **BIT_SMALL, **kwargs).train(training)
    x, starts = inputs(10, 3, 5, seed=7)
    # 16 words and 10-step episodes: the pointer rings and writes overwrite.
    assert_paths_agree(module, x, warm_state(module, 3, seed=8), starts)
    assert_paths_agree(module, x[:2], warm_state(module, 3, seed=9), starts[:2])


def assert_rollout_equals_reference(module: MemoryModule, steps: int, seed: int) -> dict:
    """``steps`` one-step calls without grad against the reference, from a warm state:
    outputs and every state field at every step; the input state is left as it was.
    Returns the reference's last state."""
    x, starts = inputs(steps, 3, module.input_dim, seed)
    starts[steps // 2] = True  # every row at once, beside the random starts
    fast_state = ref_state = warm_state(module, 3, seed=seed + 1)
    with torch.no_grad():
        for t in range(steps):
            before = {k: v.clone() for k, v in fast_state.items()}
            module.fast_path = True
            y, fast_next = module(x[t : t + 1], fast_state, starts[t : t + 1])
            for key, value in before.items():
                torch.testing.assert_close(fast_state[key], value, rtol=0, atol=0, msg=key)
            module.fast_path = False
            y_ref, ref_state = module(x[t : t + 1], ref_state, starts[t : t + 1])
            torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-5)
            assert fast_next.keys() == ref_state.keys()
            for key in ref_state:
                torch.testing.assert_close(
                    fast_next[key], ref_state[key], rtol=1e-5, atol=1e-5, msg=f"{t} {key}"
                )
            fast_state = fast_next
    return ref_state


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("kwargs", [{}, {"write_mode": "learned", "read_addressing": "absolute"}])
def test_bit_rollout_step_equals_reference(training: bool, kwargs: dict) -> None:
    """memory/bit/rollout.py: twelve one-step calls without grad, with episode starts, in
    training mode (soft reads over the candidates) and evaluation mode (one hard read)."""
    torch.manual_seed(0)
    module = memory.make("bit", input_dim=5, **BIT_SMALL, **kwargs).train(training)
    last = assert_rollout_equals_reference(module, steps=12, seed=12)
    assert bool(last["written"].any())  # the store was written and read back


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"num_layers": 2, "reset_on_episode_start": False},
        {"attention_window": 0, "ltm_write_interval": 2},
    ],
)
def test_dual_rollout_step_equals_reference(kwargs: dict) -> None:
    """memory/dual/rollout.py: sixteen one-step calls without grad with episode starts,
    writes of some rows, evictions (6 slots) and consolidations (every 5 steps of a row),
    with one and two layers, persistence across episodes, and without attention."""
    torch.manual_seed(0)
    module = memory.make("dual", input_dim=5, **{**DUAL_SMALL, **kwargs})
    last = assert_rollout_equals_reference(module, steps=16, seed=14)
    assert bool(last["ltm_filled"].any())  # the stores were written and read back
    if module.persistent:  # 23 steps without a reset: a full store, and merges
        assert bool(last["ltm_filled"].all(-1).any()) and float(last["ltm_merges"].sum()) > 0
