"""The linear memories (lru, fwp): their chunk paths equal their step-by-step references.

Values, carried states and gradients, with episode starts inside the chunk and a
carried state at its start; and a chunk equals the same steps fed one at a time
(the rollout path).
"""

from __future__ import annotations

import pytest
import torch

from memworld import memory
from memworld.memory.fwp import feature_map, fwp_block, fwp_blocks, fwp_reference
from memworld.memory.lru import lru_reference, scan_with_resets

STEPS, BATCH = 45, 3


def starts_inside(steps: int = STEPS, batch: int = BATCH, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    starts = torch.rand(steps, batch, generator=gen) < 0.1
    starts[7, 0] = starts[20, 1] = True  # at least one start inside the chunk per row ...
    starts[:, 2] = False  # ... and one row that carries its state through
    starts[0, 0] = True  # a start at the first step drops the carried state
    return starts


def test_lru_scan_equals_step_by_step_reference_values_and_gradients():
    gen = torch.Generator().manual_seed(1)
    n = 6
    # Moduli from 0.05 to 0.9999: a fast and a very slow channel in one scan.
    radius = torch.linspace(0.05, 0.9999, n)
    lam = torch.polar(radius, torch.rand(n, generator=gen) * 3).requires_grad_(True)
    b = torch.randn(STEPS, BATCH, n, dtype=torch.cfloat, generator=gen).requires_grad_(True)
    h0 = torch.randn(BATCH, n, dtype=torch.cfloat, generator=gen)
    starts = starts_inside()
    keep = ~starts
    grad_out = torch.randn(STEPS, BATCH, n, dtype=torch.cfloat, generator=gen)

    reference = lru_reference(lam, b, keep, h0)
    ref_grads = torch.autograd.grad((reference * grad_out.conj()).real.sum(), [lam, b])
    folded = torch.cat([b[:1] + torch.where(keep[0, :, None], lam * h0, 0), b[1:]])
    fast = scan_with_resets(lam, folded, keep)
    fast_grads = torch.autograd.grad((fast * grad_out.conj()).real.sum(), [lam, b])

    torch.testing.assert_close(fast, reference, atol=1e-5, rtol=0)
    for got, want in zip(fast_grads, ref_grads):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    # Row 0 restarts at step 7: nothing before it reaches step 7 onwards.
    torch.testing.assert_close(reference[7, 0], b[7, 0])


@pytest.mark.parametrize("steps", [1, 2, 3, 8, 13, 64, 129])
def test_lru_scan_at_every_tree_shape(steps):
    """The scan's tree has a different shape for each length (powers of two and not):
    values and gradients against the recurrence, with resets and a carried state."""
    gen = torch.Generator().manual_seed(steps)
    lam = torch.polar(torch.rand(4, generator=gen) * 0.5 + 0.5, torch.rand(4, generator=gen) * 3)
    lam.requires_grad_(True)
    b = torch.randn(steps, 3, 4, dtype=torch.cfloat, generator=gen).requires_grad_(True)
    h0 = torch.randn(3, 4, dtype=torch.cfloat, generator=gen)
    keep = torch.rand(steps, 3, generator=gen) > 0.2
    grad_out = torch.randn(steps, 3, 4, dtype=torch.cfloat, generator=gen)
    reference = lru_reference(lam, b, keep, h0)
    fast = scan_with_resets(lam, b, keep, torch.where(keep[0, :, None], lam * h0, 0))
    torch.testing.assert_close(fast, reference, atol=1e-5, rtol=0)
    grads = [
        torch.autograd.grad((h * grad_out.conj()).real.sum(), [lam, b]) for h in (fast, reference)
    ]
    for got, want in zip(*grads):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_lru_scan_on_a_hand_made_case():
    lam = torch.tensor([0.5 + 0j])
    b = torch.tensor([1.0, 2.0, 4.0, 8.0], dtype=torch.cfloat).view(4, 1, 1)
    keep = torch.tensor([True, True, False, True]).view(4, 1)
    h = scan_with_resets(lam, b, keep).real.flatten()
    # 1; 0.5 * 1 + 2 = 2.5; reset: 4; 0.5 * 4 + 8 = 10
    assert h.tolist() == [1.0, 2.5, 4.0, 10.0]


@pytest.mark.parametrize("steps, block", [(STEPS, None), (40, 8), (STEPS, STEPS), (40, 1)])
def test_fwp_block_forms_equal_step_by_step_reference_values_and_gradients(steps, block):
    """fwp_block (one block) and fwp_blocks (every block at once) against the recurrence."""
    gen = torch.Generator().manual_seed(2)
    heads, dk = 2, 4
    query = torch.randn(BATCH, heads, steps, dk, generator=gen).requires_grad_(True)
    key = torch.randn(BATCH, heads, steps, dk, generator=gen).requires_grad_(True)
    value = torch.randn(BATCH, heads, steps, dk, generator=gen).requires_grad_(True)
    log_decay = torch.tensor([-0.01, -0.7]).requires_grad_(True)
    weights = torch.randn(BATCH, heads, dk, dk, generator=gen).requires_grad_(True)
    starts = starts_inside()[:steps]
    leaves = [query, key, value, log_decay, weights]
    grad_reads = torch.randn(BATCH, heads, steps, dk, generator=gen)
    grad_weights = torch.randn(BATCH, heads, dk, dk, generator=gen)

    def run(fn):
        reads, final = fn(feature_map(query), feature_map(key), value, log_decay, weights, starts)
        loss = (reads * grad_reads).sum() + (final * grad_weights).sum()
        return reads, final, torch.autograd.grad(loss, leaves)

    form = fwp_block if block is None else lambda *args: fwp_blocks(*args, block)
    reads, final, grads = run(form)
    ref_reads, ref_final, ref_grads = run(fwp_reference)
    torch.testing.assert_close(reads, ref_reads, atol=1e-5, rtol=0)
    torch.testing.assert_close(final, ref_final, atol=1e-5, rtol=0)
    for got, want in zip(grads, ref_grads):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_fwp_reads_what_was_written_decayed():
    # One head, one-hot keys/queries: W after writes v1 (key e0) then v2 (key e1), read e0.
    query = torch.tensor([[1.0, 0.0], [1.0, 0.0]]).view(1, 1, 2, 2)
    key = torch.tensor([[1.0, 0.0], [0.0, 1.0]]).view(1, 1, 2, 2)
    value = torch.tensor([[3.0, 0.0], [0.0, 5.0]]).view(1, 1, 2, 2)
    log_decay = torch.log(torch.tensor([0.5]))
    reads, final = fwp_block(
        query, key, value, log_decay, torch.zeros(1, 1, 2, 2), torch.zeros(2, 1, dtype=bool)
    )
    assert torch.allclose(reads.flatten(), torch.tensor([3.0, 0.0, 1.5, 0.0]))
    assert torch.allclose(final.flatten(), torch.tensor([1.5, 0.0, 0.0, 5.0]))


@pytest.mark.parametrize(
    "name, kwargs",
    [
        ("lru", {"d_model": 8, "state_dim": 6, "num_layers": 2}),
        ("fwp", {"d_model": 8, "max_block": 8}),
    ],
)
def test_chunk_equals_steps_one_at_a_time_values_states_and_gradients(name, kwargs):
    torch.manual_seed(0)
    module = memory.make(name, input_dim=5, **kwargs)
    gen = torch.Generator().manual_seed(3)
    steps = 24  # covers the starts at 7 and 20; shorter keeps the step loop cheap
    x = torch.randn(steps, BATCH, 5, generator=gen)
    starts = starts_inside(steps)
    with torch.no_grad():  # a carried state from an earlier chunk
        _, carried = module(torch.randn(6, BATCH, 5, generator=gen), module.initial_state(BATCH),
                            torch.ones(6, BATCH, dtype=torch.bool))  # fmt: skip
    readout = torch.randn(module.output_dim, generator=gen)

    def gradients(y, state):
        loss = (y * readout).sum() + sum(v.sum() for v in state.values())
        return torch.autograd.grad(loss, list(module.parameters()))

    y, state = module(x, carried, starts)
    grads = gradients(y, state)
    outputs, step_state = [], carried
    for t in range(steps):  # the rollout path: T == 1
        y_t, step_state = module(x[t : t + 1], step_state, starts[t : t + 1])
        outputs.append(y_t)
    step_grads = gradients(torch.cat(outputs), step_state)
    torch.testing.assert_close(y, torch.cat(outputs), atol=1e-5, rtol=0)
    for key in state:
        torch.testing.assert_close(state[key], step_state[key], atol=1e-5, rtol=0)
    for got, want in zip(grads, step_grads):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)


def test_lru_eigenvalues_stay_inside_the_unit_circle():
    module = memory.make("lru", input_dim=3, state_dim=16)
    with torch.no_grad():
        module.layers[0].nu_log.fill_(-30.0)  # exp(-exp(-30)): as close to 1 as float allows
    assert (module.layers[0].eigenvalues().abs() <= 1).all()
    assert set(module.diagnostics(module.initial_state(2))) >= {"state_norm", "slowest_decay_steps"}


@pytest.mark.parametrize(
    "name, kwargs, match",
    [
        ("lru", {"r_min": 0.9, "r_max": 0.5}, "r_min"),
        ("lru", {"r_max": 1.0}, "r_max"),
        ("fwp", {"d_model": 10, "num_heads": 4}, "num_heads"),
    ],
)
def test_bad_arguments_are_refused_with_the_argument_named(name, kwargs, match):
    with pytest.raises(ValueError, match=match):
        memory.make(name, input_dim=3, **kwargs)
