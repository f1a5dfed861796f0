"""The C++ rollout steps of lstm, gru, fwp, lru and gtrxl (memory/csrc/rollout_steps.cpp)
against their Python steps: the same arithmetic, so the same outputs, states and gradients
(gtrxl's C++ step, without grad only, also reuses the memory's keys and values from step to
step where its Python step computes them afresh)."""

from __future__ import annotations

import pytest
import torch

from memworld import memory
from memworld.memory import native

CASES = [
    ("lstm", {"hidden_dim": 8}),
    ("gru", {"hidden_dim": 8, "num_layers": 2}),
    ("lstm", {"hidden_dim": 8, "num_layers": 2}),
    ("fwp", {"d_model": 16, "num_heads": 2}),
    ("fwp", {"d_model": 12, "num_heads": 3, "conv_width": 2}),
    ("lru", {"d_model": 8, "state_dim": 4}),
    ("lru", {"d_model": 8, "state_dim": 4, "num_layers": 2}),
    ("gtrxl", {"d_model": 8, "num_heads": 2, "mem_len": 5}),
    ("gtrxl", {"d_model": 12, "num_heads": 3, "mem_len": 4, "num_layers": 2, "mlp_ratio": 3}),
]
FLAGS = ("recent_valid", "valid")  # 0/1 flags, as every state the modules return holds


def call(module, step, x, state, starts):
    """``step`` (the module's ``step`` or ``python_step``) on a one-step chunk ``x (1, B, .)``,
    as ``forward`` calls it: with the time axis where the module keeps it, without otherwise."""
    if module.step_keeps_time:
        return step(x, state, starts)
    return step(x[0], state, starts[0])


@pytest.fixture
def kernels():
    if not native.wanted():
        pytest.skip(f"{native.ENV_VAR} turns the C++ kernels off")
    built = native.extension("rollout_steps")
    assert built is not None, "a C++ compiler and ninja are here, so the kernels must build"
    return built


def perturbed(module: torch.nn.Module, gen: torch.Generator, scale: float = 0.3):
    """``module`` with every parameter moved off its initial value by ``scale`` noise (gtrxl's
    distance bias, for one, starts at zero)."""
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn(p.shape, generator=gen))
    return module


def either_step(kernels, monkeypatch, module, aux):
    """``step(cpp, x, state, starts)``: one call of ``module`` through its C++ step (``cpp``)
    or its Python one; returns the output, the state and ``aux()`` after the call."""

    def step(cpp: bool, x, state, starts):
        monkeypatch.setattr(native, "rollout_steps", (lambda x: kernels) if cpp else lambda x: None)
        y, new_state = module(x, state, starts)
        return y, new_state, aux()

    return step


def paired_steps(step, state: dict, gen: torch.Generator, steps: int, start_every: int):
    """A rollout of ``steps`` steps (6 rows, input 5; rows start an episode with probability
    0.3 at every ``start_every``-th step) through both paths of ``step`` (:func:`either_step`)
    from the same state each time, the Python step's: yields the C++ and Python results."""
    with torch.no_grad():
        for t in range(steps):
            x = torch.randn(1, 6, 5, generator=gen)
            rate = 0.3 if t % start_every == start_every - 1 else 0.0
            starts = torch.rand(1, 6, generator=gen) < rate
            cpp, python = step(True, x, state, starts), step(False, x, state, starts)
            yield cpp, python
            state = python[1]


@pytest.mark.parametrize("name,kwargs", CASES)
def test_native_step_equals_the_python_step(name, kwargs, kernels):
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(1)
    module = perturbed(memory.make(name, input_dim=5, **kwargs), gen)
    state = {  # a random carried state (with 0/1 flags, as the module's are)
        k: (torch.rand(v.shape, generator=gen) < 0.5).float()
        if k in FLAGS
        else torch.randn(v.shape, generator=gen)
        for k, v in module.initial_state(6).items()
    }
    python_state = native_state = state
    with torch.no_grad():
        for t in range(12):
            x = torch.randn(1, 6, 5, generator=gen)
            starts = torch.rand(1, 6, generator=gen) < (0.3 if t % 2 else 0.0)  # odd steps only
            y_py, python_state = call(module, module.python_step, x, python_state, starts)
            y_cpp, native_state = call(module, module.step, x, native_state, starts)
            torch.testing.assert_close(y_cpp, y_py, atol=1e-6, rtol=1e-6)
            for key in python_state:
                torch.testing.assert_close(
                    native_state[key], python_state[key], atol=1e-6, rtol=1e-6
                )


@pytest.mark.parametrize("name,kwargs", [case for case in CASES[::2] if case[0] != "gtrxl"])
def test_native_step_gradients_equal_the_python_steps(name, kwargs, kernels):
    """With grad on (a one-step chunk in training), autograd records the C++ step's calls."""
    torch.manual_seed(0)
    module = memory.make(name, input_dim=5, **kwargs)
    x = torch.randn(1, 3, 5, requires_grad=True)
    state = module.initial_state(3)
    starts = torch.tensor([[True, False, False]])
    grads = []
    for step in (module.python_step, module.step):
        y, new_state = call(module, step, x, state, starts)
        loss = y.pow(2).sum() + sum(v.pow(2).sum() for v in new_state.values())
        grads.append(torch.autograd.grad(loss, [x, *module.parameters()]))
    for a, b in zip(*grads):
        torch.testing.assert_close(b, a, atol=1e-6, rtol=1e-5)


def test_steps_run_in_python_where_the_kernels_are_off(monkeypatch):
    monkeypatch.setattr(native, "_built", {})
    monkeypatch.setenv(native.ENV_VAR, "0")
    assert native.rollout_steps(torch.zeros(1)) is None
    module = memory.make("fwp", input_dim=3, d_model=8)
    calls = []
    original = module.python_step
    monkeypatch.setattr(module, "python_step", lambda *a: calls.append(1) or original(*a))
    with torch.no_grad():
        module(torch.zeros(1, 2, 3), module.initial_state(2), torch.ones(1, 2, dtype=torch.bool))
    assert calls == [1]


def test_unknown_extension_is_refused_by_name():
    with pytest.raises(ValueError, match="name='fast'.*rnn_loops"):
        native.extension("fast")


@pytest.mark.parametrize("direct", [True, False], ids=["blas", "aten"])
def test_gtrxl_cpp_products_through_blas_or_aten_agree(direct, kernels):
    """gtrxl's C++ step calls torch's BLAS directly where torch exports it, else ATen's
    addmm: both equal the Python step."""
    if direct and not kernels.blas_direct():
        pytest.skip("torch's library exports no sgemm_ here")
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(3)
    module = perturbed(memory.make("gtrxl", input_dim=5, d_model=8, num_heads=2, mem_len=3), gen)
    before = kernels.set_blas_direct(direct)
    try:
        assert kernels.blas_direct() == direct
        native_state = python_state = module.initial_state(4)
        with torch.no_grad():
            for _ in range(5):
                x = torch.randn(1, 4, 5, generator=gen)
                starts = torch.rand(1, 4, generator=gen) < 0.3
                y_cpp, native_state = module.step(x, native_state, starts)
                y_py, python_state = module.python_step(x, python_state, starts)
                torch.testing.assert_close(y_cpp, y_py, atol=1e-6, rtol=1e-6)
    finally:
        kernels.set_blas_direct(before)


def test_gtrxl_takes_the_cpp_step_only_without_grad_in_float32(kernels, monkeypatch):
    module = memory.make("gtrxl", input_dim=3, d_model=8, num_heads=2)
    calls = []
    original = kernels.gtrxl_step_nograd
    monkeypatch.setattr(kernels, "gtrxl_step_nograd", lambda *a: calls.append(1) or original(*a))
    x, starts = torch.randn(1, 2, 3), torch.zeros(1, 2, dtype=torch.bool)
    with torch.no_grad():
        module(x, module.initial_state(2), starts)
        module.double()(x.double(), module.initial_state(2), starts)  # float64: Python
    y, _ = module.float()(x, module.initial_state(2), starts)  # with grad: Python
    assert calls == [1] and y.requires_grad


def test_fwp_takes_the_plain_loop_kernel_only_without_grad(kernels, monkeypatch):
    """A rollout (no grad) runs fwp_step_nograd, whose loops autograd cannot see; a step
    with grad runs fwp_step, the ATen calls autograd records."""
    module = memory.make("fwp", input_dim=3, d_model=8)
    calls = []
    for name in ("fwp_step", "fwp_step_nograd"):
        original = getattr(kernels, name)
        monkeypatch.setattr(kernels, name, lambda *a, n=name, o=original: calls.append(n) or o(*a))
    x, starts = torch.randn(1, 2, 3), torch.zeros(1, 2, dtype=torch.bool)
    with torch.no_grad():
        module(x, module.initial_state(2), starts)
    y, _ = module(x, module.initial_state(2), starts)
    assert calls == ["fwp_step_nograd", "fwp_step"] and y.requires_grad


def test_rollout_steps_are_for_the_cpu_only(kernels):
    assert native.rollout_steps(torch.zeros(1)) is kernels
    assert native.rollout_steps(torch.zeros(1, device="meta")) is None  # another device


@pytest.mark.parametrize("name", ["fwp", "lru", "gru", "gtrxl"])
def test_float_episode_starts_step_as_bool_ones(name, kernels):
    """SB3 hands episode starts over as floats: a step with 0./1. starts equals one with
    False/True starts (the plain-loop fwp step reads them through a bool copy it holds)."""
    torch.manual_seed(0)
    module = memory.make(name, input_dim=4)
    gen = torch.Generator().manual_seed(2)
    state = {k: torch.randn(v.shape, generator=gen) for k, v in module.initial_state(5).items()}
    for key in set(FLAGS) & set(state):
        state[key] = torch.ones_like(state[key])
    x = torch.randn(1, 5, 4, generator=gen)
    starts = torch.tensor([[True, False, True, False, False]])
    with torch.no_grad():
        y_bool, s_bool = call(module, module.step, x, state, starts)
        y_float, s_float = call(module, module.step, x, state, starts.float())
    torch.testing.assert_close(y_float, y_bool, atol=0, rtol=0)
    for key in s_bool:
        torch.testing.assert_close(s_float[key], s_bool[key], atol=0, rtol=0)


def test_an_edited_header_changes_the_build_flags(tmp_path, monkeypatch):
    """torch rebuilds an extension when its sources or flags change: the headers' digest in
    the flags makes an edited header (memory/csrc/blas.h) rebuild the extensions too."""
    import torch.utils.cpp_extension

    flags = []
    monkeypatch.setattr(
        torch.utils.cpp_extension, "load", lambda **kwargs: flags.append(kwargs["extra_cflags"])
    )
    monkeypatch.setattr(native, "SOURCES", tmp_path)
    header = tmp_path / "blas.h"
    for text in ("int f();", "int f();", "int g();"):
        header.write_text(text)
        native._build("rollout_steps")
    assert flags[0] == flags[1] != flags[2]


SLOT_CASES = [
    {},  # the defaults (transformer controller, 64 slots, one write head)
    {"num_slots": 12, "slot_dim": 8, "hidden_dim": 16, "num_read_heads": 2, "read_top_k": 3,
     "num_write_heads": 2, "write_top_k": 3, "controller_window": 4, "controller_heads": 2},
    {"num_slots": 12, "slot_dim": 8, "hidden_dim": 16, "reset_on_episode_start": False},
]  # fmt: skip


@pytest.mark.parametrize("kwargs", SLOT_CASES, ids=["defaults", "two-write-heads", "persistent"])
def test_slot_cpp_step_equals_the_python_step(kwargs, kernels, monkeypatch):
    """SlotMemory's C++ rollout step against its Python one, step by step from the same
    state over twelve steps of a rollout with episode starts: outputs, every state tensor,
    the chosen slots and the weights the auxiliary terms read.  (From the same state at
    each step: over many steps the two paths' last-bit differences could change a top-k
    choice where two slots score alike, and the runs would part.)"""
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(4)
    module = perturbed(memory.make("slot", input_dim=5, **kwargs), gen, 0.1)
    step = either_step(kernels, monkeypatch, module, lambda: dict(module._last_aux))
    slots = module.num_slots
    for cpp, python in paired_steps(step, module.initial_state(6), gen, 12, 3):
        (y_cpp, s_cpp, aux_cpp), (y_py, s_py, aux_py) = cpp, python
        torch.testing.assert_close(y_cpp, y_py, atol=1e-5, rtol=1e-5)
        assert list(s_cpp) == list(s_py)
        for key in s_py:
            a, b = s_cpp[key], s_py[key]
            if key == "read_weights":  # ordered as the top-k: see below
                a, b = a.sort(-1).values, b.sort(-1).values
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5, msg=key)
        # The same slots with the same weights.  Slots written together become alike, and the
        # order of two whose scores differ in the last bit is the paths' rounding, so the
        # weights are compared slot by slot, not in top-k order.
        for a_i, a_w, b_i, b_w in zip(  # the writes, then the reads
            aux_cpp["index"], aux_cpp["weights"], aux_py["index"], aux_py["weights"]
        ):
            dense_cpp = torch.zeros(6, slots).scatter_add(1, a_i, a_w)
            dense_py = torch.zeros(6, slots).scatter_add(1, b_i, b_w)
            torch.testing.assert_close(dense_cpp, dense_py, atol=1e-5, rtol=1e-5)
            assert torch.equal(a_i.sort(-1).values, b_i.sort(-1).values)


BIT_CASES = [
    {},  # the defaults: pointer writes, relative reads, 4,096 words of 32 bits
    {"write_mode": "learned", "read_addressing": "absolute", "addr_bits_per_half": 2},
    {"addr_bits_per_half": 2, "word_bits": 20, "range_len": 3, "hidden_dim": 16},
]


@pytest.mark.parametrize("kwargs", BIT_CASES, ids=["defaults", "learned-absolute", "small-store"])
def test_bit_cpp_step_equals_the_python_step(kwargs, kernels, monkeypatch):
    """BitMemory's C++ rollout step (evaluation mode) against its Python one, from the same
    state at each of twenty steps with episode starts (a store of 16 words wraps around):
    outputs, every state tensor (the words, flags and addresses exactly) and the codec's
    reconstruction error."""
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(6)
    module = perturbed(memory.make("bit", input_dim=5, **kwargs).eval(), gen, 0.1)
    step = either_step(kernels, monkeypatch, module, module.aux_loss)
    for cpp, python in paired_steps(step, module.initial_state(6), gen, 20, 7):
        (y_cpp, s_cpp, aux_cpp), (y_py, s_py, aux_py) = cpp, python
        torch.testing.assert_close(y_cpp, y_py, atol=1e-5, rtol=1e-5)
        assert list(s_cpp) == list(s_py)
        for key in s_py:
            exact = not s_py[key].is_floating_point()
            tol = {"atol": 0, "rtol": 0} if exact else {"atol": 1e-5, "rtol": 1e-5}
            torch.testing.assert_close(s_cpp[key], s_py[key], **tol, msg=key)
        torch.testing.assert_close(aux_cpp, aux_py, atol=1e-6, rtol=1e-5)
    if module.write_head is None and module.store.num_words < 20:  # a pointer went round
        assert bool(s_py["written"].all(dim=1).any())
