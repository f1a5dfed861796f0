"""BitMemory's rollout step: one step without grad, in fewer torch calls.

At one step a call (a rollout, 8 rows) each torch call costs microseconds from Python,
about as much as its arithmetic, and the reference step (``forward_reference`` at
``T == 1``) spends most of its calls on bookkeeping: it builds the word indices of a
range three times (for the write, the read and the written flags), checks addresses and
logits that are in range by construction, and runs the soft-read product over one
candidate in evaluation mode.  :func:`rollout_forward` computes each range once, gathers
a range's words and flags with one index, takes the one candidate as it is, and
otherwise runs the reference's operations in its order, so it computes the same values
(tests/test_fast_dual_bit.py holds it to the reference, in training and evaluation
mode, with pointer and learned writes, relative and absolute reads).
"""

from __future__ import annotations

from types import ModuleType
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from memworld.memory import native
from memworld.memory.base import State
from memworld.memory.bit.bits import (
    logits_entropy,
    pack_bits,
    product_address,
    product_candidates,
    unpack_bits,
)
from memworld.memory.derived import derived

if TYPE_CHECKING:
    from memworld.memory.bit.module import BitMemory


def rollout_forward(
    module: BitMemory, x: Tensor, state: State, episode_starts: Tensor
) -> tuple[Tensor, State]:
    """``module.forward`` for ``x (1, B, input_dim)`` without grad (see the module docstring):
    in evaluation mode on the CPU in float32 the C++ step (:func:`native_step`) where
    memworld's kernels are built, else the torch calls below."""
    module.check_inputs(x, episode_starts, state)
    kernels = native.rollout_steps(x)
    if kernels is not None and not module.training and x.dtype == torch.float32:
        return native_step(kernels, module, x, state, episode_starts)
    store, n = module.store, module.store.num_words
    inputs = x[0]
    starts = episode_starts[0].to(device=x.device, dtype=torch.bool)
    state = module.reset_rows(state, starts)  # one host sync, as the reference's
    # store.encode's straight-through bits: without grad, ``probs - probs.detach()`` is 0.
    logits = store.codec.encoder(inputs)
    bits = (logits > 0).to(logits.dtype)  # (B, W)
    module._last_recon = (store.decode(bits) - inputs).square().mean()
    h = module.controller(torch.cat([inputs, state["read"]], dim=-1), state["h"])
    address = state["pointer"]
    if module.write_head is not None:
        address = product_address(*module.write_head(h).chunk(2, dim=-1))
    # The write: one word at the address, on new tensors (the caller's state is kept).
    slot = torch.remainder(address, n)[:, None]
    words = state["words"].scatter(1, slot, pack_bits(bits)[:, None])
    written = state["written"].scatter(1, slot, True)
    # The read: the candidate ranges' words and written flags, by one index each.
    halves = module.read_head(h).view(h.shape[0], 2, -1)  # high | low address logits
    high, low = halves.unbind(1)
    weights = None
    if module.training:
        addresses, weights = product_candidates(high, low, store.top_k, store.keep)  # (B, C)
    else:
        addresses = product_address(high, low)[:, None]  # (B, 1)
    if module.read_addressing == "relative":
        addresses = torch.remainder(address[:, None] - addresses, n)
    offsets = torch.arange(store.range_len, device=x.device)
    ranges = torch.remainder(addresses[..., None] + offsets, n)  # (B, C, L)
    index = ranges.flatten(1)
    decoded = store.decode(unpack_bits(words.gather(1, index), store.word_bits))
    flags = written.gather(1, index).to(high.dtype)
    found = torch.cat([decoded, flags[..., None]], dim=-1).view(*ranges.shape, -1)  # (B, C, L, V+1)
    if weights is None:  # one candidate of weight 1: the weighted sum is that candidate
        read, best = found[:, 0].flatten(1), addresses[:, 0]
    else:
        read = torch.einsum("bc,bclv->blv", weights, found).flatten(1)
        best = addresses.gather(1, weights.argmax(dim=1, keepdim=True)).squeeze(1)
    new_state = {
        **state,
        "words": words,
        "written": written,
        "pointer": torch.remainder(state["pointer"] + 1, n),
        "h": h,
        "read": read,
        "read_entropy": logits_entropy(halves).sum(-1),  # address_entropy
        "write_address": address,
        "read_address": best,
    }
    return (h + module.fuse(read))[None], new_state


# What the C++ step reads of the state, in its order, and what it returns after ``y``.
NATIVE_STATE_IN = ("words", "written", "pointer", "h", "read")
NATIVE_STATE_OUT = (
    "words", "written", "pointer", "h", "read", "read_entropy", "write_address", "read_address",
)  # fmt: skip


def native_step(
    kernels: ModuleType, module: BitMemory, x: Tensor, state: State, episode_starts: Tensor
) -> tuple[Tensor, State]:
    """The step above in C++ (memory/csrc/bit_step.cpp; evaluation mode, float32, CPU): the
    same arithmetic, its products through BLAS, the controller through ``gru_cell`` and the
    store's packing, copying, addressing and unpacking as plain loops."""
    flat, offsets, sizes = derived(module, "native_plan", lambda: native_plan(module))
    y, *values, recon = kernels.bit_step_nograd(
        x, [state[k] for k in NATIVE_STATE_IN], episode_starts, flat, offsets, sizes
    )
    module.__dict__["_last_recon"] = recon  # (nn.Module's __setattr__ costs microseconds)
    new = dict(zip(NATIVE_STATE_OUT, values))
    return y, {k: new.get(k, v) for k, v in state.items()}


def native_plan(module: BitMemory) -> tuple[Tensor, list[int], list[int]]:
    """What the C++ step reads, built once per parameter change (memory/derived.py): its 18
    tensors flattened into one and where each starts (the write head's empty in pointer
    mode), and six sizes."""
    codec, cell = module.store.codec, module.controller
    layers = [
        codec.encoder[0], codec.encoder[2], codec.decoder[0], codec.decoder[2],
        cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh, module.read_head, module.fuse,
    ]  # fmt: skip
    head = module.write_head
    layers += [head] if head is not None else [cell.bias_ih[:0]] * 2  # empty: pointer writes
    sizes = [
        codec.encoder[0].out_features, module.store.word_bits, module.store.half_size,
        module.store.range_len, int(head is not None), int(module.read_addressing == "relative"),
    ]  # fmt: skip
    flat, offsets = native.flat_plan(layers)
    return flat, offsets, sizes
