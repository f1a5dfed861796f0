"""BitStore and BitMemory (leworld-slm-blm.md's bit memory): exact cases on small hand-made inputs."""

from __future__ import annotations

import math

import pytest
import torch

from memworld import memory
from memworld.memory.bit.bits import pack_bits, product_candidates, unpack_bits
from memworld.memory.bit.module import BitMemory
from memworld.memory.bit.store import BitStore

GEN = torch.Generator().manual_seed(0)


def random_bits(*shape: int) -> torch.Tensor:
    return torch.randint(0, 2, shape, generator=GEN).float()


def peaked(index: torch.Tensor, size: int, scale: float = 1.0) -> torch.Tensor:
    """``(B,)`` indices -> ``(B, size)`` logits whose argmax is ``index``."""
    logits = torch.randn(index.shape[0], size, generator=GEN) * 0.1
    return logits.scatter(1, index[:, None], scale)


def address_bias(high: int, low: int, size: int, scale: float) -> torch.Tensor:
    """A head bias ``(2 * size,)`` (high logits | low logits) peaked at ``high`` and ``low``."""
    return torch.cat([peaked(torch.tensor([i]), size, scale)[0] for i in (high, low)])


def small_store(**kwargs) -> BitStore:
    torch.manual_seed(0)
    return BitStore(**{"vector_dim": 5, "addr_bits_per_half": 4, "range_len": 3, **kwargs})


# ------------------------------------------------------------------ packing
def test_pack_unpack_round_trip_including_the_sign_bit():
    bits = random_bits(100, 32)
    bits[0] = 0
    bits[0, 31] = 1  # sign bit only
    bits[1] = 1  # all ones
    words = pack_bits(bits)
    assert words.dtype == torch.int32
    assert words[0].item() == -(2**31) and words[1].item() == -1
    assert torch.equal(unpack_bits(words), bits)
    assert (words < 0).any() and (words > 0).any()
    # Weights are 2**j: bit 0 -> 1, bits 0 and 3 -> 9.
    assert pack_bits(torch.tensor([[1.0] + [0.0] * 31, [1, 0, 0, 1] + [0.0] * 28])).tolist() == [
        1,
        9,
    ]
    # Bool bits and short words pack the same way.
    assert torch.equal(pack_bits(bits.bool()), words)
    assert torch.equal(unpack_bits(pack_bits(bits[:, :7]), 7), bits[:, :7])


def test_pack_rejects_words_wider_than_32_bits():
    with pytest.raises(ValueError, match="32 bits"):
        pack_bits(torch.zeros(2, 33))


# ------------------------------------------------------------ store layout
def test_default_store_is_65536_int32_words_per_row_and_a_21k_codec():
    store = BitStore()
    state = store.initial_state(64)
    assert state["words"].dtype == torch.int32
    assert state["words"].shape == (64, 65_536)
    assert state["words"].numel() * state["words"].element_size() == 16 * 2**20  # 16 MiB
    assert (store.half_size, store.num_words, store.word_bits) == (256, 65_536, 32)
    codec_params = sum(p.numel() for p in store.codec.parameters())
    assert abs(codec_params - 21_000) / 21_000 < 0.05, codec_params
    assert sum(p.numel() for p in store.parameters()) == codec_params  # storage is not a parameter


def test_store_sizes_are_squares_of_powers_of_two():
    assert small_store().num_words == 256
    assert BitStore(addr_bits_per_half=6).num_words == 4096
    with pytest.raises(ValueError, match="top_k"):
        BitStore(addr_bits_per_half=2, range_len=1, top_k=5)
    with pytest.raises(ValueError, match="word_bits"):
        BitStore(word_bits=33)


# ----------------------------------------------------------- reads, writes
def test_read_returns_exactly_the_bits_written_at_256_high_plus_low():
    store = BitStore(range_len=1)
    state = store.initial_state(2)
    high, low = torch.tensor([3, 255]), torch.tensor([7, 0])
    high_logits, low_logits = peaked(high, 256), peaked(low, 256)
    address = store.address(high_logits, low_logits)
    assert address.tolist() == [256 * 3 + 7, 256 * 255 + 0]
    bits = random_bits(2, 32)
    state = store.write(state, address, bits)
    assert torch.equal(store.read(state, address)[:, 0], bits)
    assert torch.equal(store.read(state, address + 1)[:, 0], torch.zeros(2, 32))  # neighbours empty
    # Only those two words changed, and each only in its own row.
    assert state["words"].count_nonzero().item() == int((pack_bits(bits) != 0).sum())
    assert state["written"].nonzero().tolist() == [[0, 3 * 256 + 7], [1, 255 * 256]]
    # The hard read decodes exactly those bits.
    torch.testing.assert_close(
        store.read_hard(state, high_logits, low_logits)[:, 0], store.decode(bits), rtol=0, atol=0
    )


def test_range_read_returns_consecutive_words_and_later_writes_overwrite():
    store = small_store()
    state = store.initial_state(1)
    words = random_bits(1, 5, 32)
    for i in range(5):  # one word at a time at 40, 41, ..., 44
        state = store.write(state, torch.tensor([40 + i]), words[:, i])
    assert torch.equal(store.read(state, torch.tensor([40])), words[:, :3])
    assert torch.equal(store.read(state, torch.tensor([42]), range_len=3), words[:, 2:5])
    assert torch.equal(store.read(state, torch.tensor([43]))[:, 2], torch.zeros(1, 32))
    # A range write lands on consecutive words; a second write replaces the first.
    block = random_bits(1, 4, 32)
    state = store.write(state, torch.tensor([42]), block)
    assert torch.equal(store.read(state, torch.tensor([40]), range_len=6)[0, 2:], block[0])
    assert torch.equal(store.read(state, torch.tensor([40]), range_len=2), words[:, :2])
    assert store.is_written(state, torch.tensor([44]), range_len=3).tolist() == [
        [True, True, False]
    ]


def test_ranges_wrap_around_the_end_of_memory():
    store = small_store()  # 256 words
    state = store.initial_state(1)
    block = random_bits(1, 4, 32)
    state = store.write(state, torch.tensor([254]), block)  # words 254, 255, 0, 1
    assert torch.equal(store.read(state, torch.tensor([254]), range_len=4), block)
    assert torch.equal(store.read(state, torch.tensor([0]), range_len=2), block[:, 2:])
    assert state["written"][0].nonzero().flatten().tolist() == [0, 1, 254, 255]
    # A start address outside memory is refused, unless wrap=True takes it modulo num_words.
    with pytest.raises(ValueError, match=r"address must be in \[0, 255\].*wrap=True"):
        store.read(state, torch.tensor([256 + 255]), range_len=1)
    assert torch.equal(
        store.read(state, torch.tensor([256 + 255]), range_len=1, wrap=True), block[:, 1:2]
    )


def test_write_leaves_its_input_state_alone_unless_in_place():
    store = small_store()
    state = store.initial_state(1)
    new = store.write(state, torch.tensor([5]), torch.ones(1, 32))
    assert state["words"].count_nonzero() == 0 and not state["written"].any()
    assert new["words"][0, 5].item() == -1
    same = store.write(state, torch.tensor([5]), torch.ones(1, 32), inplace=True)
    assert same["words"] is state["words"] and state["words"][0, 5].item() == -1


def test_write_vectors_stores_the_encoded_bits():
    store = small_store()
    vectors = torch.randn(2, 5, generator=GEN)
    state = store.write_vectors(store.initial_state(2), torch.tensor([9, 200]), vectors)
    expected = store.encode(vectors).detach()
    assert set(expected.unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(store.read(state, torch.tensor([9, 200]), range_len=1)[:, 0], expected)


def test_reset_rows_zeroes_only_the_rows_that_start():
    store = small_store()
    state = store.write(store.initial_state(3), torch.tensor([1, 2, 3]), torch.ones(3, 32))
    reset = store.reset_rows(state, torch.tensor([True, False, True]))
    assert reset["words"][[0, 2]].count_nonzero() == 0 and not reset["written"][[0, 2]].any()
    assert torch.equal(reset["words"][1], state["words"][1])
    assert reset["written"][1].nonzero().flatten().tolist() == [2]


# ------------------------------------------------------- product-key reads
def test_candidates_are_the_top_k_product_with_softmax_weights():
    high = torch.tensor([[0.0, 3.0, 1.0, -1.0]])
    low = torch.tensor([[2.0, 0.0, -5.0, 1.5]])
    addresses, weights = product_candidates(high, low, k=2)
    assert addresses.tolist() == [[4 * 1 + 0, 4 * 1 + 3, 4 * 2 + 0, 4 * 2 + 3]]
    scores = torch.tensor([[5.0, 4.5, 3.0, 2.5]])  # high_logit + low_logit of each candidate
    torch.testing.assert_close(weights, torch.softmax(scores, -1))
    # keep: the best `keep` of the k*k, renormalised (Product Key Memory keeps k).
    kept, kept_weights = product_candidates(high, low, k=2, keep=3)
    assert kept.tolist() == [addresses[0, :3].tolist()]
    torch.testing.assert_close(kept_weights, torch.softmax(scores[:, :3], -1))
    with pytest.raises(ValueError, match="keep"):
        product_candidates(high, low, k=2, keep=5)


def test_soft_read_equals_hard_read_when_logits_are_peaked():
    store = small_store()
    state = store.initial_state(2)
    for address in range(0, 256, 3):  # many distinct words, so a wrong weight would show
        state = store.write(state, torch.tensor([address, 255 - address]), random_bits(2, 32))
    high_logits = peaked(torch.tensor([2, 9]), 16, scale=1e3)
    low_logits = peaked(torch.tensor([15, 4]), 16, scale=1e3)
    hard = store.read_hard(state, high_logits, low_logits)
    soft = store.read_soft(state, high_logits, low_logits)
    assert hard.shape == (2, 3, 5)
    torch.testing.assert_close(soft, hard, rtol=0, atol=1e-6)
    # With flat logits the soft read is a real mixture, not the hard read.
    flat = store.read_soft(state, high_logits * 1e-3, low_logits * 1e-3)
    assert not torch.allclose(flat, hard, atol=1e-3)


def test_soft_read_gradient_reaches_the_address_logits_and_the_decoder():
    store = small_store()
    state = store.initial_state(1)
    state = store.write(state, torch.tensor([0]), random_bits(1, 256, 32))  # fill all 256 words
    high = torch.randn(1, 16, generator=GEN, requires_grad=True)
    low = torch.randn(1, 16, generator=GEN, requires_grad=True)
    read = store.read_soft(state, high, low, k=3)
    (read * torch.randn(read.shape, generator=GEN)).sum().backward()
    top_high, top_low = high.topk(3).indices[0], low.topk(3).indices[0]
    for logits, top in ((high, top_high), (low, top_low)):
        assert (logits.grad[0, top] != 0).all()  # every chosen half moves
        rest = torch.ones(16, dtype=torch.bool)
        rest[top] = False
        assert (logits.grad[0, rest] == 0).all()  # the others are outside the top-k
    assert all(
        p.grad is not None and p.grad.abs().sum() > 0 for p in store.codec.decoder.parameters()
    )


def test_encoder_learns_from_the_reconstruction_loss():
    store = small_store()
    store.reconstruction_loss(torch.randn(8, 5, generator=GEN)).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in store.codec.parameters())


# --------------------------------------------------------- the bit module
def bit_module(**kwargs) -> BitMemory:
    torch.manual_seed(0)
    base = {"input_dim": 4, "hidden_dim": 8, "addr_bits_per_half": 4, "range_len": 2}
    return memory.make("bit", **{**base, **kwargs})


def starts_at(steps: int, batch: int, *extra: tuple[int, int]) -> torch.Tensor:
    starts = torch.zeros(steps, batch, dtype=torch.bool)
    starts[0] = True
    for t, b in extra:
        starts[t, b] = True
    return starts


def test_module_is_registered_and_uses_the_protocol_shapes():
    module = memory.make("bit", input_dim=6)
    assert isinstance(module, BitMemory) and module.output_dim == 64
    assert module.store.num_words == 4096 and module.store.vector_dim == 6
    with pytest.raises(ValueError, match="write_mode"):
        bit_module(write_mode="random")


def test_relative_read_returns_the_input_written_d_steps_ago():
    module = bit_module().eval()
    delay = 3
    with torch.no_grad():  # read offset fixed at `delay` (high 0, low delay), whatever h is
        module.read_head.weight.zero_()
        module.read_head.bias.copy_(address_bias(0, delay, 16, 50.0))
        x = torch.randn(7, 2, 4, generator=GEN)
        _, state = module(x, module.initial_state(2), starts_at(7, 2))
    read = state["read"].view(2, 2, 5)  # (B, range_len, input_dim + written flag)
    # Step 6 reads words 3 and 4: the inputs of steps 3 and 4, decoded from their bits.
    expected = module.store.decode(module.store.encode(x[3:5].transpose(0, 1)))
    torch.testing.assert_close(read[..., :4], expected, rtol=0, atol=1e-6)
    assert torch.equal(read[..., 4], torch.ones(2, 2))
    assert state["pointer"].tolist() == [7, 7]
    stored = module.store.read(state, torch.zeros(2, dtype=torch.long), range_len=7)
    assert torch.equal(stored, module.store.encode(x.transpose(0, 1)).detach())


def test_absolute_read_returns_the_word_at_16_high_plus_low():
    module = bit_module(read_addressing="absolute").eval()
    with torch.no_grad():
        module.read_head.weight.zero_()
        module.read_head.bias.copy_(address_bias(0, 2, 16, 50.0))  # address 2, whatever h is
        x = torch.randn(5, 1, 4, generator=GEN)
        y, state = module(x, module.initial_state(1), starts_at(5, 1))
    read = state["read"].view(1, 2, 5)  # words 2 and 3: the inputs of steps 2 and 3
    expected = module.store.decode(module.store.encode(x[2:4, 0]))
    torch.testing.assert_close(read[0, :, :4], expected, rtol=0, atol=1e-6)
    torch.testing.assert_close(y[-1], state["h"] + module.fuse(state["read"]), rtol=0, atol=1e-6)


def test_episode_start_resets_only_that_rows_words():
    module = bit_module().eval()
    x = torch.randn(6, 3, 4, generator=GEN)
    with torch.no_grad():
        _, state = module(x, module.initial_state(3), starts_at(6, 3, (4, 1)))
    # Row 1 restarted at step 4: only steps 4 and 5 are in its memory, at words 0 and 1.
    assert state["written"][1].nonzero().flatten().tolist() == [0, 1]
    assert state["pointer"].tolist() == [6, 2, 6]
    for row in (0, 2):
        assert state["written"][row].nonzero().flatten().tolist() == list(range(6))
    expected = module.store.encode(x[4:6, 1]).detach()
    assert torch.equal(module.store.read(state, torch.tensor([0, 0, 0]))[1], expected)


def test_forward_does_not_change_the_callers_state():
    module = bit_module()
    state = module.initial_state(2)
    module(torch.randn(3, 2, 4), state, starts_at(3, 2))
    assert state["words"].count_nonzero() == 0 and not state["written"].any()


def test_two_chunks_equal_one_call_and_rows_are_independent():
    module = bit_module().eval()
    x = torch.randn(9, 3, 4, generator=GEN)
    starts = starts_at(9, 3, (2, 0), (5, 1), (7, 2))
    with torch.no_grad():
        y, state = module(x, module.initial_state(3), starts)
        y1, state1 = module(x[:5], module.initial_state(3), starts[:5])
        y2, state2 = module(x[5:], state1, starts[5:])
        changed = x.clone()
        changed[:, 1] += 1.0
        y_changed, _ = module(changed, module.initial_state(3), starts)
    torch.testing.assert_close(torch.cat([y1, y2]), y, rtol=0, atol=1e-6)
    for key in state:
        assert torch.equal(state2[key], state[key]), key
    torch.testing.assert_close(y_changed[:, [0, 2]], y[:, [0, 2]], rtol=0, atol=0)
    assert not torch.allclose(y_changed[:, 1], y[:, 1])


def test_training_read_is_soft_and_gives_gradients_to_the_read_head():
    module = bit_module().train()
    x = torch.randn(6, 2, 4, generator=GEN)
    y, state = module(x, module.initial_state(2), starts_at(6, 2))
    (y.square().sum() + module.aux_loss(state)).backward()
    assert module.read_head.weight.grad.abs().sum() > 0
    assert module.store.codec.encoder[0].weight.grad.abs().sum() > 0  # via the aux loss
    assert module.aux_loss().item() > 0


def test_learned_write_mode_writes_at_the_write_heads_argmax():
    module = bit_module(write_mode="learned").eval()
    assert module.no_grad_params == ("write_head.weight", "write_head.bias")
    with torch.no_grad():
        module.write_head.weight.zero_()
        module.write_head.bias.copy_(address_bias(5, 11, 16, 9.0))
        x = torch.randn(1, 2, 4, generator=GEN)
        _, state = module(x, module.initial_state(2), starts_at(1, 2))
    assert state["written"].nonzero().tolist() == [[0, 16 * 5 + 11], [1, 16 * 5 + 11]]


def test_diagnostics_report_fill_entropy_and_bit_error():
    module = bit_module().eval()
    with torch.no_grad():
        _, state = module(
            torch.randn(8, 2, 4, generator=GEN), module.initial_state(2), starts_at(8, 2)
        )
    diag = module.diagnostics(state)
    assert diag["fraction_written"] == pytest.approx(8 / 256)
    assert 0.0 < diag["read_address_entropy"] <= 2 * math.log(16) + 1e-5
    assert 0.0 <= diag["codec_bit_error"] <= 1.0
    empty = module.diagnostics(module.initial_state(2))
    assert empty["fraction_written"] == 0.0 and empty["codec_bit_error"] == 0.0


def test_read_address_entropy_is_exact_for_uniform_and_peaked_read_heads():
    module = bit_module().eval()  # addr_bits_per_half=4: two halves of 16 logits each
    x = torch.randn(3, 2, 4, generator=GEN)
    with torch.no_grad():
        module.read_head.weight.zero_()
        module.read_head.bias.zero_()  # both halves uniform over 16
        _, uniform = module(x, module.initial_state(2), starts_at(3, 2))
        module.read_head.bias.copy_(address_bias(3, 7, 16, 60.0))  # one address takes it all
        _, peaked_state = module(x, module.initial_state(2), starts_at(3, 2))
    # Uniform: H(high) + H(low) = log 16 + log 16 = 5.545177...
    assert module.diagnostics(uniform)["read_address_entropy"] == pytest.approx(5.545177, abs=1e-5)
    # Peaked by 60 nats over 15 others: each half ~ 15 * 60 * exp(-60) ~ 1e-23.
    assert module.diagnostics(peaked_state)["read_address_entropy"] == pytest.approx(0.0, abs=1e-6)


def test_codec_bit_error_counts_the_flipped_bits_of_written_words(monkeypatch):
    module = bit_module().eval()
    state = module.initial_state(1)
    bits = torch.zeros(1, 32)
    bits[0, [0, 3, 5, 8, 13, 21, 30, 31]] = 1.0  # 8 of the 32 bits set
    state = module.store.write(state, torch.tensor([17]), bits)
    # An encoder that returns all zeros flips exactly the 8 set bits: 8 / 32 = 0.25.
    monkeypatch.setattr(
        module.store, "encode", lambda vectors: torch.zeros(*vectors.shape[:-1], 32)
    )
    diag = module.diagnostics(state)
    assert diag["codec_bit_error"] == 0.25
    assert diag["fraction_written"] == 1 / 256
