"""LeWorld's memory decodes each word once, at its write: its reads must equal BitStore's,
which decode every word they read, in values and in gradients."""

from __future__ import annotations

import torch

from memworld.world_models.leworld.config import MemoryConfig
from memworld.world_models.leworld.memory_iface import LeWorldMemory

CONFIG = MemoryConfig(num_high=16, num_low=16, word_bits=32, range_len=4, top_k=3, hidden=8)


def written_memory() -> tuple[LeWorldMemory, dict, list[torch.Tensor]]:
    """Four writes of two rows: an overwrite (address 5 twice in row 0) and words at the
    end of the ring (255), so a range from 254 wraps onto words 0, 1."""
    torch.manual_seed(0)
    memory = LeWorldMemory(obs_dim=6, config=CONFIG)
    state, written = memory.initial_state(2), []
    for address in ([5, 254], [6, 255], [5, 0], [200, 1]):
        written.append(torch.randint(0, 2, (2, 32)).float())
        memory.write(state, written[-1], torch.tensor(address))
    return memory, state, written


def test_hard_reads_equal_decoding_the_stored_bits():
    memory, state, written = written_memory()
    # Row 0 from 4: unwritten 4, overwritten 5, 6, unwritten 7; row 1 from 254: wraps to 0, 1.
    address = torch.tensor([4, 254])
    got = memory.read_hard(state, address)
    want = memory.store.read_vectors(state, address, wrap=True)
    assert got.shape == (2, CONFIG.range_len, 6)
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)
    # The overwritten word reads as its last write, not the first (the table keeps both).
    assert state["decoded"].shape == (2, 5, 6)  # the unwritten word and four writes
    last, first = memory.store.decode(written[2][0]), memory.store.decode(written[0][0])
    torch.testing.assert_close(got[0, 1], last, rtol=1e-6, atol=1e-6)
    assert (got[0, 1] - first).abs().max() > 1e-3
    assert got[0, 0].equal(got[0, 3])  # both unwritten: the decoded all-zero word


def test_soft_reads_and_their_gradients_equal_bitstores():
    memory, state, _ = written_memory()
    gen = torch.Generator().manual_seed(1)
    # Candidates on the written words: row 0 around 5 and 6, row 1 around 254 (wrapping) and 0.
    high, low = torch.randn(2, 2, 16, generator=gen)
    high[:, 0] += 3.0
    high[1, 15] += 3.0
    low[0, 4:6] += 3.0
    low[1, [0, 14]] += 3.0
    high, low = high.requires_grad_(), low.requires_grad_()
    probe = torch.randn(2, CONFIG.range_len, 6, generator=gen)
    params = [high, low, *memory.store.codec.decoder.parameters()]

    def grads(read) -> list[torch.Tensor]:
        return torch.autograd.grad((read * probe).sum(), params)

    got = memory.read_soft(state, high, low)
    want = memory.store.read_soft(state, high, low)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    for g, w in zip(grads(memory.read_soft(state, high, low)), grads(want)):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-6)


def test_reads_of_several_slms_at_once_equal_one_slm_at_a_time():
    """The system reads every SLM's range in one call, ``(B, N, ...)``: each SLM's words
    must be those of reading its own addresses alone (hard and soft, with three SLMs whose
    candidates hit the overwrite, the wrap and unwritten words)."""
    memory, state, _ = written_memory()
    gen = torch.Generator().manual_seed(2)
    starts = torch.tensor([[4, 5, 250], [254, 0, 199]])  # (B=2, N=3)
    hard = memory.read_hard(state, starts)
    assert hard.shape == (2, 3, CONFIG.range_len, 6)
    high, low = torch.randn(2, 2, 3, 16, generator=gen)
    low[..., 4:7] += 2.0
    soft = memory.read_soft(state, high, low)
    for i in range(3):
        torch.testing.assert_close(hard[:, i], memory.read_hard(state, starts[:, i]))
        torch.testing.assert_close(soft[:, i], memory.read_soft(state, high[:, i], low[:, i]))
    assert (soft[:, 0] - soft[:, 1]).abs().max() > 1e-3  # the SLMs read different words
