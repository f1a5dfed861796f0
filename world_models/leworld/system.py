"""The LeWorld system: bit memory + three SLMs + BLM, stepped through an episode.

Each step ``t`` (all rows of the batch at once):

1. the observation ``o_t`` is encoded to 32 bits and written at the write
   pointer (address ``t``: the memory is a log, like RAM filled by a CPU);
2. SLM ``i`` reads ``o_{t-1}``, ``o_t``, its characteristics, the BLM's info
   request ``r_{t-1}`` and the pointer, picks an address (high byte, low byte)
   and a range length, and reads that range (soft top-k product read in
   training, hard argmax in evaluation, or an address given from outside:
   random, oracle, a policy's action);
3. the BLM routes among the three reads with a straight-through mask, predicts
   the world state ``s_{t+1}`` and emits the request ``r_t``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from memworld.world_models.leworld.blm import BLM
from memworld.world_models.leworld.config import (
    REFERENCE_OBS_DIM,
    REFERENCE_STATE_DIM,
    LeWorldConfig,
)
from memworld.world_models.leworld.memory_iface import LeWorldMemory
from memworld.world_models.leworld.slm import SLMBank, word_ages

# How LeWorldSystem.read reads memory (``mode``).
READ_MODES = ("soft", "hard", "straight", "sample")


@dataclass
class StepOutput:
    """What one system step produced (``B`` rows, ``N`` SLMs)."""

    prediction: Tensor  # (B, state_dim)
    request: Tensor  # (B, request_dim), the request for the next step
    mask: Tensor  # (B, N) straight-through mask (0/1 forward)
    probs: Tensor  # (B, N) gate probabilities
    reads: Tensor  # (B, N, read_dim)
    addresses: Tensor  # (B, N) long, the start address each SLM read (argmax in soft mode)
    high_logits: Tensor  # (B, N, num_high)
    low_logits: Tensor  # (B, N, num_low)
    range_logits: Tensor  # (B, N, choices)
    range_choice: Tensor  # (B, N) long
    bits: Tensor  # (B, word_bits) the word written this step
    hidden: Tensor | None = None  # (B, d_model) the BLM trunk output the request came from


class LeWorldSystem(nn.Module):
    """Memory + SLMs + BLM.

    Args:
        config: sizes (:func:`memworld.world_models.leworld.config.preset`).
        obs_dim: observation width (written to memory, seen by SLMs and BLM).
        state_dim: world-state width (what the BLM predicts).
    """

    def __init__(
        self,
        config: LeWorldConfig | None = None,
        obs_dim: int = REFERENCE_OBS_DIM,
        state_dim: int = REFERENCE_STATE_DIM,
    ) -> None:
        super().__init__()
        self.config = config = config or LeWorldConfig()
        self.obs_dim, self.state_dim = int(obs_dim), int(state_dim)
        self.memory = LeWorldMemory(obs_dim, config.memory)
        self.slms = SLMBank(
            obs_dim, self.memory.word_dim, config.memory, config.slm, config.blm.request_dim
        )
        self.blm = BLM(obs_dim, state_dim, config.slm.read_dim, config.slm.num_slms, config.blm)

    @property
    def num_slms(self) -> int:
        return len(self.slms)

    def parameter_table(self) -> list[tuple[str, int]]:
        """(component, parameters) rows, as in the document's table, with the total."""
        count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
        rows = [("Artificial Memory (bit enc/dec)", count(self.memory))]
        per_slm = count(self.slms) // self.num_slms  # every SLM has the same sizes
        rows += [(f"SLM-{i}", per_slm) for i in range(self.num_slms)]
        rows += [("BLM", count(self.blm)), ("Total", count(self))]
        return rows

    def initial_state(self, batch_size: int, device: torch.device | str = "cpu") -> dict:
        """Empty memory, zero past observation and request, pointer at address 0."""
        return {
            "memory": self.memory.initial_state(batch_size, device),
            "past_obs": torch.zeros(batch_size, self.obs_dim, device=device),
            "request": torch.zeros(batch_size, self.config.blm.request_dim, device=device),
            "pointer": torch.zeros(batch_size, dtype=torch.long, device=device),
        }

    def write(self, state: dict, obs: Tensor) -> tuple[dict, Tensor]:
        """Encode ``obs`` and write it at each row's pointer; returns the new state and bits."""
        bits = self.memory.encode(obs)
        memory = self.memory.write(state["memory"], bits, state["pointer"])
        return {**state, "memory": memory}, bits

    def read(
        self,
        state: dict,
        obs: Tensor,
        request: Tensor,
        mode: str = "soft",
        addresses: Tensor | None = None,
        gumbel: Tensor | None = None,
        ranges: Tensor | None = None,
    ) -> dict[str, Tensor]:
        """Every SLM picks a range and reads it.

        ``mode``: ``"soft"`` (top-k product read, differentiable), ``"hard"``
        (argmax), ``"straight"`` (the argmax read forward, the soft read's gradient
        backward), ``"sample"`` (argmax of logits + ``gumbel`` noise ``(B, N,
        num_high + num_low + choices)``, for policy gradient). ``addresses``
        ``(B, N)`` long overrides the start address of every SLM (entries
        ``< 0`` keep the SLM's own choice); such a read covers the longest
        range, or the range-choice index in ``ranges`` ``(B, N)`` where given.
        """
        mem = self.config.memory
        high, low, rng = self.slms.address_logits(state["past_obs"], obs, request, state["pointer"])
        picks = (high, low, rng)
        if mode == "sample":
            noise = gumbel.split([mem.num_high, mem.num_low, rng.shape[-1]], -1)
            picks = tuple(logits + g for logits, g in zip(picks, noise))
        high_pick, low_pick, choice = (logits.argmax(-1) for logits in picks)
        address = high_pick * mem.num_low + low_pick  # (B, N)
        forced = None  # (N,) bool: the SLMs given an address, which read like a hard read
        if addresses is not None:
            forced = (addresses >= 0).any(0)
            address = torch.where(addresses >= 0, addresses, address)
            # An outside address reads the full range unless a range is given.
            full = torch.full_like(choice, rng.shape[-1] - 1)
            given = full if ranges is None else torch.where(ranges >= 0, ranges, full)
            choice = torch.where(forced, given, choice)
        forced_any = forced is not None and bool(forced.any())
        if mode != "soft" or forced_any:  # not needed by a plain soft read (phase 2's)
            hard_weights = self.slms.word_weights(rng, hard=True, choice=choice)
        if mode != "soft":
            words, weights = self.memory.read_hard(state["memory"], address), hard_weights
        if mode in ("soft", "straight"):
            starts, mix = self.memory.candidates(high, low)  # (B, N, C)
            soft_weights = self.slms.word_weights(rng, hard=False)
            if forced_any:  # all weight on the given start
                one = torch.zeros_like(mix)
                one[..., 0] = 1.0
                mix = torch.where(forced[:, None], one, mix)
                first = torch.where(forced, address, starts[..., 0])
                starts = torch.cat([first[..., None], starts[..., 1:]], -1)
                soft_weights = torch.where(forced[:, None], hard_weights, soft_weights)
            soft_words = self.memory.read(state["memory"], starts, mix)
            if mode == "soft":
                words, weights = soft_words, soft_weights
            else:  # straight-through: the argmax read forward, the soft read's gradient backward
                words = words + soft_words - soft_words.detach()
                weights = weights + soft_weights - soft_weights.detach()
        ages = word_ages(address, state["pointer"], mem)
        reads = self.slms.summarise(words, weights, ages)
        return dict(reads=reads, addr=address, high=high, low=low, range=rng, choice=choice)

    def step(
        self,
        state: dict,
        obs: Tensor,
        mode: str = "soft",
        addresses: Tensor | None = None,
        mask_override: Tensor | None = None,
        request_override: Tensor | None = None,
        gumbel: Tensor | None = None,
        ranges: Tensor | None = None,
    ) -> tuple[StepOutput, dict]:
        """One step for observations ``obs`` ``(B, obs_dim)``; returns the output and next state.

        Writes ``obs``, then :meth:`think`. ``mask_override`` ``(B, N)``:
        entries ``>= 0`` replace the BLM's mask (0: read masked out, 1: kept);
        ``request_override`` replaces the incoming request (zeros for the
        paired no-request branch).
        """
        state, bits = self.write(state, obs)
        out = self.think(
            state, obs, mode, addresses, mask_override, request_override, gumbel, ranges
        )
        out.bits = bits
        next_state = {
            "memory": state["memory"],
            "past_obs": obs,
            "request": out.request,
            "pointer": state["pointer"] + 1,
        }
        return out, next_state

    def think(
        self,
        state: dict,
        obs: Tensor,
        mode: str = "soft",
        addresses: Tensor | None = None,
        mask_override: Tensor | None = None,
        request_override: Tensor | None = None,
        gumbel: Tensor | None = None,
        ranges: Tensor | None = None,
    ) -> StepOutput:
        """Read, route and predict on a memory already holding this step's word (no write):
        a paired branch re-runs this with one decision changed."""
        request_in = state["request"] if request_override is None else request_override
        read = self.read(state, obs, request_in, mode, addresses, gumbel, ranges)
        mask, probs = self.blm.route(obs, read["reads"])
        if mask_override is not None:
            mask = torch.where(mask_override >= 0, mask_override.to(mask.dtype), mask)
        prediction, request, hidden = self.blm(obs, read["reads"], mask, probs)
        return StepOutput(
            prediction,
            request,
            mask,
            probs,
            read["reads"],
            read["addr"],
            read["high"],
            read["low"],
            read["range"],
            read["choice"],
            torch.zeros((), device=prediction.device),
            hidden,
        )

    def predict_with_mask(self, obs: Tensor, out: StepOutput, mask: Tensor) -> Tensor:
        """Re-run the BLM on the same reads with another mask (a paired branch): ``mask``
        ``(B, N)`` -> ``(B, state_dim)``, or ``K`` masks ``(K, B, N)`` in one call ->
        ``(K, B, state_dim)``."""
        if mask.dim() == 2:
            return self.blm(obs, out.reads, mask, out.probs)[0]
        k = mask.shape[0]
        prediction, _, _ = self.blm(
            obs.repeat(k, 1), out.reads.repeat(k, 1, 1), mask.flatten(0, 1), out.probs.repeat(k, 1)
        )
        return prediction.view(k, obs.shape[0], -1)
