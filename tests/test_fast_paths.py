"""Fast paths equal their references: the one-step paths of gru, lstm, window_attention
and slot, slot's chunk path with grad, and the compile wrapper's switches and eager fallback.

Each module runs a chunk with episode starts inside it twice: step by step through
``forward`` (the fast path) and as one call of ``forward_reference`` (today's code);
outputs, carried states and, where the fast path runs with grad, the gradients of
the inputs, the initial state and every parameter must agree within 1e-5.
"""

from __future__ import annotations

import warnings

import pytest
import torch

from memworld import memory
from memworld.memory import compile as mcompile
from memworld.memory.base import reference_mode

STEPS, BATCH, INPUT = 10, 4, 5


def chunk(seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and episode starts with starts inside the chunk (and a lone row's start)."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(STEPS, BATCH, INPUT, generator=gen)
    starts = torch.rand(STEPS, BATCH, generator=gen) < 0.25
    starts[0] = True
    starts[4] = False
    starts[4, 1] = True
    return x, starts


def random_state(module: memory.MemoryModule, seed: int = 2) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {
        k: torch.randn(v.shape, generator=gen).requires_grad_(True)
        for k, v in module.initial_state(BATCH).items()
    }


def step_by_step(module, x, state, starts):
    outputs = []
    for t in range(x.shape[0]):
        y, state = module(x[t : t + 1], state, starts[t : t + 1])
        outputs.append(y)
    return torch.cat(outputs), state


def assert_states(a: dict, b: dict, atol: float = 1e-5) -> None:
    assert list(a) == list(b)
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=atol, rtol=0, msg=f"state[{key!r}]")


@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("name", ["gru", "lstm"])
def test_recurrent_step_path_equals_reference_with_gradients(name, num_layers):
    torch.manual_seed(0)
    module = memory.make(name, input_dim=INPUT, hidden_dim=8, num_layers=num_layers)
    x, starts = chunk()
    x.requires_grad_(True)
    state = random_state(module)
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
        grads = torch.autograd.grad(loss, [x, *state.values(), *module.parameters()])
        results.append((y, end, grads))
    assert len(calls) == STEPS  # the fast path ran, once a step
    (y1, s1, g1), (y2, s2, g2) = results
    torch.testing.assert_close(y1, y2, atol=1e-5, rtol=0)
    assert_states(s1, s2)
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", ["gru", "lstm"])
def test_recurrent_rollout_without_grad_equals_reference(name):
    torch.manual_seed(0)
    module = memory.make(name, input_dim=INPUT, hidden_dim=8)
    x, starts = chunk(3)
    state = module.initial_state(BATCH)
    with torch.no_grad():
        y1, s1 = step_by_step(module, x, state, starts)
        y2, s2 = module.forward_reference(x, state, starts)
        with reference_mode(module):  # the switch: forward is the reference
            y3, s3 = step_by_step(module, x, state, starts)
    torch.testing.assert_close(y1, y2, atol=1e-5, rtol=0)
    torch.testing.assert_close(y3, y2, atol=1e-5, rtol=0)
    assert_states(s1, s2)
    assert_states(s3, s2)
    assert module.fast_path  # restored after the block


@pytest.mark.parametrize("num_layers", [1, 2])
def test_window_attention_step_path_equals_reference_with_gradients(num_layers):
    torch.manual_seed(0)
    module = memory.make(
        "window_attention",
        input_dim=INPUT,
        window=4,
        d_model=16,
        num_heads=2,
        num_layers=num_layers,
        output_dim=7,
    )
    x, starts = chunk(8)
    x.requires_grad_(True)
    state = random_state(module)
    gen = torch.Generator().manual_seed(9)
    # a carried window partly of the running episode: valid is a suffix of 1s
    filled = torch.randint(0, 5, (BATCH, 1), generator=gen)
    state["valid"] = (torch.arange(4) >= 4 - filled).float()
    results = []
    for run in (
        lambda: step_by_step(module, x, state, starts),
        lambda: module.forward_reference(x, state, starts),
    ):
        y, end = run()
        loss = y.sin().mean() + end["keys"].sin().mean() + end["values"].cos().mean()
        grads = torch.autograd.grad(loss, [x, state["keys"], state["values"], *module.parameters()])
        results.append((y, end, grads))
    (y1, s1, g1), (y2, s2, g2) = results
    torch.testing.assert_close(y1, y2, atol=1e-5, rtol=0)
    assert_states(s1, s2)
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


def slot(controller: str, persistent: bool) -> memory.MemoryModule:
    torch.manual_seed(0)
    return memory.make(
        "slot",
        input_dim=INPUT,
        num_slots=8,
        slot_dim=4,
        hidden_dim=16,
        controller=controller,
        controller_window=3,
        num_write_heads=2,
        reset_on_episode_start=not persistent,
    ).eval()


@pytest.mark.parametrize("cpp", [True, False], ids=["cpp", "python"])
@pytest.mark.parametrize(
    ("controller", "persistent"),
    [("transformer", False), ("transformer", True), ("gru", False), ("mlp", True)],
)
def test_slot_rollout_step_equals_reference(controller, persistent, cpp, monkeypatch):
    """The one-step path (C++ for the transformer controller where memworld's kernels are
    built, else Python) equals the reference over two chunks with starts."""
    from memworld.memory import native
    from memworld.memory.slot import rollout

    if not cpp:
        monkeypatch.setattr(native, "rollout_steps", lambda x: None)
    module = slot(controller, persistent)
    x, starts = chunk(4)
    calls = []
    original = module._rollout
    module._rollout = lambda *a: calls.append("python") or original(*a)
    native_step = rollout.native_step
    monkeypatch.setattr(rollout, "native_step", lambda *a: calls.append("cpp") or native_step(*a))
    with torch.no_grad():
        state = module.initial_state(BATCH)
        for _ in range(2):  # a second chunk starts from the first one's state
            y1, s1 = step_by_step(module, x, state, starts)
            y2, s2 = module.forward_reference(x, state, starts)
            torch.testing.assert_close(y1, y2, atol=1e-5, rtol=0)
            assert_states(s1, s2)
            state = s2
    in_cpp = cpp and controller == "transformer" and native.rollout_steps(x) is not None
    assert calls == ["cpp" if in_cpp else "python"] * (2 * STEPS)
    if persistent:  # the bank survived the starts: some memory is left in every row
        assert (state["memory"].abs().sum(dim=(1, 2)) > 0).all()


def test_slot_rollout_keeps_the_aux_terms_of_the_call():
    module = slot("gru", False)
    x, starts = chunk(5)
    state = module.initial_state(BATCH)
    with torch.no_grad():
        state = module(x[:3], state, starts[:3])[1]
        module(x[3:4], state, starts[3:4])
        fast = module.aux_terms()
        module.forward_reference(x[3:4], state, starts[3:4])
        reference = module.aux_terms()
    for key in reference:
        torch.testing.assert_close(fast[key], reference[key], atol=1e-6, rtol=0, msg=key)


def run_with_grads(module, forward, x, state, starts):
    """Two chunks in a row through ``forward``; outputs, end state, aux loss and the
    gradients of a loss on all of them (inputs, initial state, parameters)."""
    y1, mid = forward(x[:6], state, starts[:6])
    aux = module.aux_loss()
    y2, end = forward(x[6:], mid, starts[6:])
    y = torch.cat([y1, y2])
    aux = aux + module.aux_loss()
    loss = y.sin().mean() + aux + sum(v.sin().mean() for v in end.values() if v.requires_grad)
    grads = torch.autograd.grad(loss, [x, *state.values(), *module.parameters()], allow_unused=True)
    return y, end, aux, grads


@pytest.mark.parametrize(
    ("controller", "persistent"),
    [("transformer", False), ("transformer", True), ("gru", False), ("mlp", True)],
)
def test_slot_chunk_path_equals_reference_with_gradients(controller, persistent):
    module = slot(controller, persistent).train()
    x, starts = chunk(8)
    x.requires_grad_(True)
    state = {
        k: v.requires_grad_(True) if k == "memory" or k.startswith("ctrl_") else v
        for k, v in random_state(module, seed=9).items()
    }
    state["age"], state["usage"] = state["age"].abs() * 5, state["usage"].abs() * 0.1
    fast = run_with_grads(module, module.forward, x, state, starts)
    reference = run_with_grads(module, module.forward_reference, x, state, starts)
    torch.testing.assert_close(fast[0], reference[0], atol=1e-5, rtol=0)
    assert_states(fast[1], reference[1])
    torch.testing.assert_close(fast[2], reference[2], atol=1e-5, rtol=0)
    names = ["x", *state, *(n for n, _ in module.named_parameters())]
    for name, a, b in zip(names, fast[3], reference[3]):
        assert (a is None) == (b is None), name
        if a is not None:
            torch.testing.assert_close(
                a, b, atol=1e-5, rtol=0, msg=lambda m, name=name: f"{name}: {m}"
            )
    assert fast[3][0].abs().sum() > 0  # the inputs' gradient is not trivially zero
    # chunked == whole: the two chunks give what one call over all steps gives
    whole, end = module.forward(x, state, starts)
    torch.testing.assert_close(whole, fast[0], atol=1e-5, rtol=0)
    assert_states(end, fast[1])


def test_slot_with_grad_runs_the_chunk_path(monkeypatch):
    module = slot("gru", False).train()
    x, starts = chunk(6)
    calls = []
    original = module._rollout
    module._rollout = lambda *a: calls.append(1) or original(*a)
    reference = module.forward_reference
    monkeypatch.setattr(module, "forward_reference", lambda *a: calls.append(2) or reference(*a))
    y, _ = module(x[:1], module.initial_state(BATCH), starts[:1])
    y.sum().backward()
    assert calls == [] and module.fuse.weight.grad is not None
    with reference_mode(module):
        module(x[:1], module.initial_state(BATCH), starts[:1])
    assert calls == [2]


def test_compile_switches(monkeypatch):
    monkeypatch.delenv(mcompile.ENV_VAR, raising=False)
    assert not mcompile.compile_wanted(None)  # off by default
    assert mcompile.compile_wanted(True)
    monkeypatch.setenv(mcompile.ENV_VAR, "1")
    assert mcompile.compile_wanted(None) and not mcompile.compile_wanted(False)
    monkeypatch.setenv(mcompile.ENV_VAR, "0")
    assert not mcompile.compile_wanted(True)  # the environment turns it off everywhere


@pytest.mark.parametrize("failure", ["no_compiler", "compile_error"])
def test_compile_falls_back_to_eager_with_one_warning(monkeypatch, failure):
    monkeypatch.setattr(mcompile, "_WARNED", set())
    monkeypatch.delenv(mcompile.ENV_VAR, raising=False)
    if failure == "no_compiler":
        monkeypatch.setattr(mcompile, "have_cxx_compiler", lambda: False)
    else:

        def broken(*args, **kwargs):
            def run(*a):
                raise RuntimeError("C++ compile error: cannot find cl.exe")

            return run

        monkeypatch.setattr(mcompile, "have_cxx_compiler", lambda: True)
        monkeypatch.setattr(torch, "compile", broken)
    torch.manual_seed(0)
    compiled = memory.make("slot", input_dim=INPUT, num_slots=8, hidden_dim=16, compile=True)
    x, starts = (a[:4] for a in chunk(7))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with torch.no_grad():
            y1, s1 = step_by_step(compiled.eval(), x, compiled.initial_state(BATCH), starts)
            step_by_step(compiled, x, compiled.initial_state(BATCH), starts)
    ours = [w for w in caught if "torch.compile is unavailable" in str(w.message)]
    assert len(ours) == 1 and "MEMWORLD_COMPILE=0" in str(ours[0].message)
    with torch.no_grad():
        y2, s2 = compiled.forward_reference(x, compiled.initial_state(BATCH), starts)
    torch.testing.assert_close(y1, y2, atol=1e-5, rtol=0)
    assert_states(s1, s2)
