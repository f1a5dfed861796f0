"""The one-step paths of lru, fwp and gtrxl equal their references (``forward_reference``).

Each module runs a chunk with episode starts inside it twice: step by step through
``forward`` (the lean one-step path) and as one reference call; outputs, carried
states and gradients (of the inputs and every parameter, in float64) must agree
within 1e-5.
Without grad the step reads weights folded once per parameter change
(memory/derived.py): the tests change the parameters between rollouts (steps of Adam's
fused, foreach and single-tensor kernels, ``load_state_dict``, ``.double()``) and check
that the step follows.
"""

from __future__ import annotations

import pytest
import torch

from memworld import memory
from memworld.memory.base import reference_mode
from memworld.memory.derived import clear_derived, derived

STEPS, BATCH, INPUT = 12, 4, 5

CASES = [
    ("lru", {"d_model": 8, "state_dim": 6, "num_layers": 1}),
    ("lru", {"d_model": 8, "state_dim": 6, "num_layers": 2}),
    ("fwp", {"d_model": 8, "num_heads": 2, "max_block": 4}),
    ("gtrxl", {"d_model": 8, "num_heads": 2, "num_layers": 1, "mem_len": 5}),
    ("gtrxl", {"d_model": 8, "num_heads": 2, "num_layers": 2, "mem_len": 3}),
]


def chunk(seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and episode starts: starts inside the chunk, at its first step, and a row
    that carries its state through."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(STEPS, BATCH, INPUT, generator=gen)
    starts = torch.rand(STEPS, BATCH, generator=gen) < 0.2
    starts[0, 0] = starts[5, 1] = starts[9, 2] = True
    starts[:, 3] = False
    return x, starts


def carried_state(module: memory.MemoryModule) -> dict[str, torch.Tensor]:
    """A state from an earlier chunk (some rows mid-episode), so nothing starts at zero."""
    gen = torch.Generator().manual_seed(7)
    x = torch.randn(8, BATCH, INPUT, generator=gen).to(module._param_dtype())
    starts = torch.zeros(8, BATCH, dtype=torch.bool)
    starts[0] = True
    starts[5, 0] = True
    with torch.no_grad():
        _, state = module.forward_reference(x, module.initial_state(BATCH), starts)
    return state


def step_by_step(module, x, state, starts):
    outputs = []
    for t in range(x.shape[0]):
        y, state = module(x[t : t + 1], state, starts[t : t + 1])
        outputs.append(y)
    return torch.cat(outputs), state


def assert_same(a: tuple, b: tuple) -> None:
    (y1, s1), (y2, s2) = a, b
    torch.testing.assert_close(y1, y2, atol=1e-5, rtol=0)
    assert list(s1) == list(s2)
    for key in s1:
        torch.testing.assert_close(s1[key], s2[key], atol=1e-5, rtol=0, msg=f"state[{key!r}]")


@pytest.mark.parametrize("name, kwargs", CASES)
def test_step_path_equals_reference_with_gradients(name, kwargs):
    # In float64: a parameter's gradient sums hundreds of float32 terms as large as 200
    # that cancel, so the two summation orders differ by ~1e-5 in float32 by rounding alone.
    torch.manual_seed(0)
    module = memory.make(name, input_dim=INPUT, **kwargs).double()
    x, starts = chunk()
    x = x.double().requires_grad_(True)
    state = carried_state(module)
    calls = []
    step = module.step
    module.step = lambda *a: calls.append(1) or step(*a)
    results = []
    for run in (
        lambda: step_by_step(module, x, state, starts),
        lambda: module.forward_reference(x, state, starts),
    ):
        y, end = run()
        loss = y.pow(2).sum() + sum((v * (i + 1)).sum() for i, v in enumerate(end.values()))
        grads = torch.autograd.grad(loss, [x, *module.parameters()])
        results.append(((y, end), grads))
    assert len(calls) == STEPS  # the one-step path ran, once a step
    assert_same(results[0][0], results[1][0])
    for a, b in zip(results[0][1], results[1][1]):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


# Adam's three implementations: the fused kernel (MemoryPPO's default) updates the
# parameters in place without moving their version counters.
OPTIMISERS = [{"fused": True}, {"foreach": True}, {"foreach": False}]


@pytest.mark.parametrize("optimiser_kwargs", OPTIMISERS, ids=["fused", "foreach", "single"])
@pytest.mark.parametrize("name, kwargs", CASES)
def test_rollout_follows_parameter_changes(name, kwargs, optimiser_kwargs):
    torch.manual_seed(0)
    module = memory.make(name, input_dim=INPUT, **kwargs)
    x, starts = chunk(3)
    state = carried_state(module)

    def check() -> None:
        with torch.no_grad():
            fast = step_by_step(module, x, state, starts)
            reference = module.forward_reference(x, state, starts)
            with reference_mode(module):  # the switch: forward is the reference
                switched = step_by_step(module, x, state, starts)
        assert_same(fast, reference)
        assert_same(switched, reference)

    check()  # fills the cache of folded weights
    optimiser = torch.optim.Adam(module.parameters(), lr=0.05, **optimiser_kwargs)
    for _ in range(2):  # the cache is rebuilt after every step, refilled by check()
        y, _ = module.forward_reference(x, state, starts)
        y.pow(2).sum().backward()
        optimiser.step()
        optimiser.zero_grad()
        check()
    other = memory.make(name, input_dim=INPUT, **kwargs)
    module.load_state_dict(other.state_dict())
    check()
    module.double()
    x = x.double()
    state = {k: v.double() for k, v in state.items()}
    check()


def test_derived_is_cached_until_a_parameter_changes():
    layer = torch.nn.Linear(3, 2)
    builds = []

    def build():
        builds.append(1)
        return (layer.weight * 2 + layer.bias.sum(),)

    def want():
        return layer.weight * 2 + layer.bias.sum()

    with torch.no_grad():
        first = derived(layer, "twice", build)[0]
        assert derived(layer, "twice", build)[0] is first
        assert len(builds) == 1
        layer.weight.add_(1.0)  # an in-place change bumps the version
        second = derived(layer, "twice", build)[0]
        torch.testing.assert_close(second, want())
        layer.bias.add_(1.0)  # any parameter of the module counts
        torch.testing.assert_close(derived(layer, "twice", build)[0], want())
        third = derived(layer, "twice", build)[0]
        layer.weight.data.mul_(3.0)  # .data skips the version counter ...
        assert derived(layer, "twice", build)[0] is third
        clear_derived(layer)  # ... so the caller clears the cache
        torch.testing.assert_close(derived(layer, "twice", build)[0], want())
        layer.double()  # new storage: rebuilt in the new dtype
        assert derived(layer, "twice", build)[0].dtype == torch.float64
    assert len(builds) == 5
    weight = derived(layer, "twice", build)[0]  # with grad: fresh, differentiable
    assert weight.requires_grad and len(builds) == 6
    # Fused Adam writes the parameters without moving their versions: any optimiser
    # step in the process drops the cache.
    optimiser = torch.optim.Adam(layer.parameters(), lr=0.5, fused=True)
    with torch.no_grad():
        before = derived(layer, "twice", build)[0]
    version = layer.weight._version
    weight.sum().backward()
    optimiser.step()
    assert layer.weight._version == version  # the versions did not move ...
    with torch.no_grad():
        after = derived(layer, "twice", build)[0]  # ... yet the cache was rebuilt
        torch.testing.assert_close(after, want())
        assert not torch.equal(after, before)
    assert len(builds) == 7
