"""SlotMemory: exact mechanism tests on hand-made cases, and the protocol checks."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from memworld import memory
from memworld.memory.slot.bank import HeadOutputs, SlotBank
from memworld.memory.slot.module import SlotMemory


def logit(p: float) -> float:
    return math.log(p / (1 - p))


def small(**kwargs) -> SlotMemory:
    torch.manual_seed(0)
    defaults = dict(num_slots=8, slot_dim=4, hidden_dim=16, controller="gru")
    return SlotMemory(3, **{**defaults, **kwargs})


def hand_heads(read_key, write_add, gate=1.0, erase=1.0, strength=1.0, alloc=1.0) -> HeadOutputs:
    """Head outputs for one row, one read head and one write head."""
    d = read_key.shape[-1]
    one = torch.ones(1, 1)
    return HeadOutputs(
        read_keys=read_key.view(1, 1, d),
        read_strength=strength * one,
        write_keys=torch.zeros(1, 1, d),  # cosine 0 with every slot: content term off, LRU decides
        write_strength=one,
        write_gate=gate * one,
        alloc_strength=alloc * one,
        erase=torch.full((1, 1, d), erase),
        add=write_add.view(1, 1, d),
    )


def step(module: SlotMemory, bank: SlotBank, **head_values):
    """Advance the bank one step and run the step's writes and reads with hand-set heads."""
    bank.advance()
    heads = hand_heads(**head_values)
    return bank.read_write(heads, module.read_top_k, module.write_top_k, module.age_scale)


def bank_for(module: SlotMemory, age: list[float]) -> SlotBank:
    state = module.initial_state(1)
    return SlotBank(
        state["memory"],
        torch.tensor([age], dtype=torch.float32),
        state["usage"],
        torch.log(module.retention()),
        module.usage_decay,
        capacity=16,
    )


def test_read_returns_vector_written_two_steps_earlier():
    module = small(num_read_heads=1, read_top_k=1, write_top_k=1, num_slots=6)
    with torch.no_grad():
        module.decay_logit[4] = logit(0.9)
    v = torch.tensor([1.0, 2.0, 0.0, -1.0])
    u = torch.tensor([0.0, 0.0, 3.0, 0.0])
    bank = bank_for(module, age=[0, 1, 2, 3, 9, 5])  # slot 4 oldest, then 5
    with torch.no_grad():
        io0 = step(module, bank, read_key=u, write_add=v)  # v to the oldest slot, 4
        io1 = step(module, bank, read_key=u, write_add=u)  # u to the next oldest, 5
        io2 = step(module, bank, read_key=v, write_add=u, gate=0.0)  # no write; read by v
    assert io0.write_index.item() == 4 and io1.write_index.item() == 5
    assert io2.read_index.item() == 4
    torch.testing.assert_close(io2.read[0, 0], v * 0.9**2)  # two steps of slot 4's decay


def test_read_softmax_over_top_k_matches_hand_computation():
    module = small(num_read_heads=1, read_top_k=2, write_top_k=1, num_slots=6, decay_init=0.5)
    v = torch.tensor([1.0, 0.0, 0.0, 0.0])
    u = torch.tensor([1.0, 1.0, 0.0, 0.0])
    bank = bank_for(module, age=[9, 8, 0, 0, 0, 0])
    with torch.no_grad():
        step(module, bank, read_key=v, write_add=v)  # slot 0
        step(module, bank, read_key=v, write_add=u)  # slot 1
        io = step(module, bank, read_key=v, write_add=u, gate=0.0, strength=3.0)
    # cos(v, v) = 1, cos(v, u) = 1/sqrt(2); slot 0 decayed twice, slot 1 once.
    logits = torch.tensor([3.0, 3.0 / math.sqrt(2)])
    w = torch.softmax(logits, dim=0)
    assert sorted(io.read_index[0, 0].tolist()) == [0, 1]
    torch.testing.assert_close(io.read_weights[0, 0].sort(descending=True).values, w)
    torch.testing.assert_close(io.read[0, 0], w[0] * v * 0.25 + w[1] * u * 0.5)


@pytest.mark.parametrize("filled", [False, True])
def test_write_goes_to_the_oldest_slot(filled):
    """With equal content scores (empty memory, or every slot the same vector), LRU decides."""
    module = small(write_top_k=1, num_slots=6)
    state = module.initial_state(2)
    state["age"] = torch.tensor([[1.0, 2.0, 0.0, 7.0, 3.0, 5.0], [4.0, 9.0, 2.0, 8.0, 0.0, 0.0]])
    if filled:
        state["memory"] = torch.ones(2, 6, 4)
    with torch.no_grad():
        _, new = module(torch.randn(1, 2, 3), state, torch.zeros(1, 2, dtype=torch.bool))
    changed = (new["memory"] - state["memory"] * module.retention()[:, None]).norm(dim=-1) > 1e-6
    assert changed.tolist() == [
        [False, False, False, True, False, False],
        [False, True, False, False, False, False],
    ]
    renewed = new["age"] < state["age"] + 1
    assert renewed.tolist() == changed.tolist()


def test_decay_shrinks_slot_norms_by_the_slot_retention():
    module = small(num_slots=5)
    gate = sum(module.head_sizes[:4])
    with torch.no_grad():
        module.heads.bias[gate] = -40.0  # write gate ~ 0: only decay acts
        module.decay_logit.copy_(torch.tensor([logit(p) for p in (0.5, 0.8, 0.9, 0.99, 0.999)]))
    state = module.initial_state(2)
    state["memory"] = torch.randn(2, 5, 4)
    with torch.no_grad():
        _, new = module(torch.randn(3, 2, 3), state, torch.zeros(3, 2, dtype=torch.bool))
    before, after = state["memory"].norm(dim=-1), new["memory"].norm(dim=-1)
    assert (after < before).all()
    retention = torch.tensor([0.5, 0.8, 0.9, 0.99, 0.999])
    torch.testing.assert_close(after, before * retention**3)


def warm_state(module: SlotMemory, batch: int = 3, steps: int = 4):
    torch.manual_seed(1)
    with torch.no_grad():
        _, state = module(
            torch.randn(steps, batch, 3),
            module.initial_state(batch),
            torch.zeros(steps, batch, dtype=torch.bool),
        )
    return state


@pytest.mark.parametrize("controller", ["mlp", "gru", "transformer"])
def test_reset_only_rows_with_episode_starts(controller):
    module = small(controller=controller).eval()
    state = warm_state(module)
    x = torch.randn(2, 3, 3)
    starts = torch.zeros(2, 3, dtype=torch.bool)
    starts[0, 1] = True
    with torch.no_grad():
        y, _ = module(x, state, starts)
        y_kept, _ = module(x, state, torch.zeros_like(starts))
        y_fresh, _ = module(x, module.initial_state(3), torch.zeros_like(starts))
    torch.testing.assert_close(y[:, [0, 2]], y_kept[:, [0, 2]], rtol=0, atol=0)
    torch.testing.assert_close(y[:, 1], y_fresh[:, 1], rtol=0, atol=1e-6)
    assert not torch.allclose(y_kept[:, 1], y_fresh[:, 1])

    reset = module.reset_rows(state, starts[0])
    init = module.initial_state(3)
    for key, value in reset.items():
        assert torch.equal(value[1], init[key][1]), key
        assert torch.equal(value[[0, 2]], state[key][[0, 2]]), key


def test_reset_on_episode_start_false_keeps_the_slot_bank():
    module = small(reset_on_episode_start=False)
    assert module.persistent
    gate = sum(module.head_sizes[:4])
    with torch.no_grad():
        module.heads.bias[gate] = -40.0
    state = warm_state(module)
    starts = torch.ones(1, 3, dtype=torch.bool)
    with torch.no_grad():
        _, new = module(torch.randn(1, 3, 3), state, starts)
    torch.testing.assert_close(new["memory"], state["memory"] * module.retention()[:, None])
    torch.testing.assert_close(new["age"], state["age"] + 1)
    reset = module.reset_rows(state, starts[0])
    init = module.initial_state(3)
    for key in ("memory", "age", "usage"):
        assert torch.equal(reset[key], state[key])
    for key in ("read", "ctrl_h", "write_rate"):
        assert torch.equal(reset[key], init[key])

    episodic = small(reset_on_episode_start=True)
    with torch.no_grad():
        episodic.heads.bias[gate] = -40.0
        _, new = episodic(torch.randn(1, 3, 3), state, starts)
    assert new["memory"].abs().max() < 1e-10


def test_module_copies_after_a_training_forward():
    module = small()
    y, _ = module(
        torch.randn(2, 3, 3), module.initial_state(3), torch.zeros(2, 3, dtype=torch.bool)
    )
    twin = copy.deepcopy(module)
    assert twin.aux_loss().item() == 0.0 and module.aux_loss().requires_grad


def test_diagnostics_on_hand_built_state():
    module = small(num_slots=4, num_read_heads=1, read_top_k=2)
    state = module.initial_state(2)
    state["usage"] = torch.tensor([[1.0, 1.0, 0.0, 0.0], [3.0, 0.0, 0.0, 0.0]])
    state["read_weights"] = torch.tensor([[[0.5, 0.5]], [[1.0, 0.0]]])
    state["age"] = torch.tensor([[0.0, 1.0, 2.0, 3.0], [4.0, 5.0, 6.0, 7.0]])
    state["write_rate"] = torch.tensor([0.2, 0.4])
    state["memory"][0, 0, 0] = 1.0
    state["memory"][0, 2, 1] = 0.5
    state["memory"][1, 3, 2] = -2.0
    diag = module.diagnostics(state)
    expected = {
        "slot_usage_entropy": math.log(2) / 2,
        "read_effective_slots": 1.5,
        "read_sparsity": 1 - 1.5 / 4,
        "slot_age_mean": 3.5,
        "slot_age_max": 7.0,
        "write_rate": 0.3,
        "live_slots": 1.5,
    }
    assert diag.keys() == expected.keys()
    for key, value in expected.items():
        assert diag[key] == pytest.approx(value, rel=1e-6, abs=1e-7), key


# ------------------------------------------------------------------ protocol


def test_registered_and_built_by_name():
    module = memory.make("slot", input_dim=5, num_slots=16)
    assert isinstance(module, SlotMemory) and module.output_dim == module.hidden_dim
    y, state = module(
        torch.randn(2, 3, 5), module.initial_state(3), torch.zeros(2, 3, dtype=torch.bool)
    )
    assert y.shape == (2, 3, module.output_dim)
    assert all(v.shape[0] == 3 for v in state.values())


def test_bad_arguments_say_how_to_fix_them():
    with pytest.raises(ValueError, match="read_top_k=8 must be <= num_slots=4"):
        SlotMemory(3, num_slots=4, read_top_k=8)
    with pytest.raises(ValueError, match="controller must be one of"):
        SlotMemory(3, controller="lstm")
    module = small()
    with pytest.raises(ValueError, match="input_dim=3"):
        module(torch.randn(2, 3, 4), module.initial_state(3), torch.zeros(2, 3, dtype=torch.bool))


@pytest.mark.parametrize("controller", ["mlp", "gru", "transformer"])
def test_two_chunks_equal_one_call(controller):
    module = small(controller=controller, num_slots=16).eval()
    torch.manual_seed(2)
    x = torch.randn(9, 3, 3)
    starts = torch.rand(9, 3) < 0.2
    init = module.initial_state(3)
    with torch.no_grad():
        y, state = module(x, init, starts)
        y1, mid = module(x[:4], init, starts[:4])
        y2, end = module(x[4:], mid, starts[4:])
    torch.testing.assert_close(torch.cat([y1, y2]), y, rtol=0, atol=1e-5)
    for key in state:
        torch.testing.assert_close(end[key], state[key], rtol=0, atol=1e-5, msg=key)


@pytest.mark.parametrize("controller", ["mlp", "gru", "transformer"])
def test_batch_rows_are_independent(controller):
    module = small(controller=controller).eval()
    x = torch.randn(5, 3, 3)
    starts = torch.zeros(5, 3, dtype=torch.bool)
    with torch.no_grad():
        y, _ = module(x, module.initial_state(3), starts)
        x[:, 1] += torch.randn(5, 3)
        y2, _ = module(x, module.initial_state(3), starts)
    assert torch.equal(y[:, [0, 2]], y2[:, [0, 2]])
    assert not torch.allclose(y[:, 1], y2[:, 1])


@pytest.mark.parametrize("controller", ["mlp", "gru", "transformer"])
def test_gradients_reach_every_parameter(controller):
    module = small(controller=controller)
    y, _ = module(
        torch.randn(4, 3, 3), module.initial_state(3), torch.zeros(4, 3, dtype=torch.bool)
    )
    y.square().mean().backward()
    for name, param in module.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name


def test_slot_log_gradients_match_plain_tensor_reference():
    """SlotLog's shared-buffer backward equals autograd through plain indexing, also on a second pass."""
    from memworld.memory.slot.log import SlotLog

    gen = torch.Generator().manual_seed(0)
    m0 = torch.randn(2, 3, 4, generator=gen, dtype=torch.float64, requires_grad=True)
    adds = torch.randn(3, 2, 2, 4, generator=gen, dtype=torch.float64, requires_grad=True)
    reads = [
        torch.tensor([[0, 1], [2, 2]]),
        torch.tensor([[4, 3], [5, 0]]),
        torch.tensor([[6, 7]] * 2),
    ]

    def run(fast: bool):
        log = SlotLog(m0, capacity=6) if fast else None
        plain = torch.cat([m0, m0.new_zeros(2, 1, 4)], dim=1)
        rows = torch.arange(2)[:, None]
        total = m0.new_zeros(())
        for step in range(3):
            pos = reads[step]
            got = log.read(pos) if fast else plain[rows, pos]
            new = got * 0.5 + adds[step]  # (2, 2, 4): written values depend on what was read
            if fast:
                log.append(new)
            else:
                plain = torch.cat([plain, new], dim=1)
            total = total + (got.sin() * (step + 1)).sum()
        final = torch.tensor([[7, 8, 9], [1, 9, 4]])
        return total + (log.read(final) if fast else plain[rows, final]).square().sum()

    want = torch.autograd.grad(run(False), (m0, adds))
    out = run(True)
    for _ in range(2):  # retain_graph: a second backward must give the same gradients
        got = torch.autograd.grad(out, (m0, adds), retain_graph=True)
        for g, w in zip(got, want, strict=True):
            torch.testing.assert_close(g, w)


def test_slot_log_refuses_writes_past_capacity():
    from memworld.memory.slot.log import SlotLog

    log = SlotLog(torch.zeros(1, 2, 3), capacity=2)
    log.append(torch.ones(1, 2, 3))
    with pytest.raises(RuntimeError, match="capacity"):
        log.append(torch.ones(1, 1, 3))


def test_slot_log_is_freed_with_its_graph():
    """Autograd nodes must not hold the log (the log holds their output): no leaked cycle."""
    import gc
    import weakref

    from memworld.memory.slot.log import SlotLog

    m0 = torch.randn(2, 3, 4, requires_grad=True)
    log = SlotLog(m0, capacity=2)
    ref = weakref.ref(log)
    read = log.read(torch.tensor([[0, 1], [2, 2]]))
    log.append(read * 2)
    total = log.read(torch.tensor([[4, 5], [4, 0]])).sum()
    del log, read
    total.backward()
    del total
    gc.collect()
    assert ref() is None
    assert m0.grad is not None and m0.grad.abs().sum() > 0


def test_controller_gets_the_raw_read_and_the_output_its_layernorm():
    module = small()
    x = torch.randn(3, 2, 3, generator=torch.Generator().manual_seed(0))
    starts = torch.zeros(3, 2, dtype=torch.bool)
    starts[0] = True
    with torch.no_grad():
        _, state = module(x[:2], module.initial_state(2), starts[:2])
        seen = []
        original = module.controller.step
        module.controller.step = lambda u, s: (seen.append(u), original(u, s))[1]
        y, after = module(x[2:], state, starts[2:])
        h, _ = original(seen[0], {k: v for k, v in state.items() if k.startswith("ctrl_")})
    read_in = seen[0][:, 3:].view(2, module.num_read_heads, module.slot_dim)
    torch.testing.assert_close(read_in, state["read"], rtol=0, atol=0)
    assert not torch.allclose(state["read"], module.read_norm(state["read"]), atol=1e-2)
    expected = h + module.fuse(module.read_norm(after["read"]).flatten(1))
    torch.testing.assert_close(y[0], expected, rtol=1e-5, atol=1e-6)
