"""A Small LeWorld Model: chooses which address range of the bit memory to read.

Each SLM sees the past observation, the current one, its own learned
characteristics vector, the BLM's info request from the previous step and the
memory's write pointer (as Fourier features of its two bytes: a CPU's stack
pointer, without which an absolute address cannot track time). It outputs
product-key address logits (256 for the high byte + 256 for the low byte, one
of 65,536 addresses from 512 logits, Lample et al. 2019) and range-length
logits; the system reads that range and the SLM summarises the words it got,
each with its age (steps behind the write pointer, :func:`word_ages`).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from world_models.leworld.config import MemoryConfig, SLMConfig


def mlp(sizes: list[int]) -> nn.Sequential:
    """Linear layers with LayerNorm + GELU between them (none after the last)."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers += [nn.LayerNorm(b), nn.GELU()]
    return nn.Sequential(*layers)


def pointer_features(pointer: Tensor, memory: MemoryConfig, freqs: int) -> Tensor:
    """Fourier features of an address's high and low bytes: ``(B,)`` -> ``(B, 4 * freqs)``."""
    high = torch.div(pointer, memory.num_low, rounding_mode="floor").float() / memory.num_high
    low = torch.remainder(pointer, memory.num_low).float() / memory.num_low
    scales = 2.0 * math.pi * (2.0 ** torch.arange(freqs, device=pointer.device)).float()
    angles = torch.cat([high[:, None] * scales, low[:, None] * scales], dim=1)  # (B, 2 * freqs)
    return torch.cat([angles.sin(), angles.cos()], dim=1)


AGE_FEATURES = 2


def word_ages(address: Tensor, pointer: Tensor, memory: MemoryConfig) -> Tensor:
    """How long ago each word of a read was written: ``(B,), (B,)`` -> ``(B, range_len, 2)``.

    Word ``j`` of a range from ``address`` sits ``age = pointer - address - j``
    steps behind the write pointer (the ring taken into account). Features:
    ``log1p(age) / log(num_words)`` for words already written this episode
    and 0 otherwise, and a flag "written at or before the pointer". A read that
    knows *when* its words were written can extrapolate from them (a position
    seen ``age`` steps ago plus ``age`` steps of motion); without it an
    address is only a content lookup.
    """
    j = torch.arange(memory.range_len, device=address.device)
    age = torch.remainder(pointer[:, None] - address[:, None] - j, memory.num_words)
    past = age <= pointer[:, None]  # wrapped-around ages point at words not yet written
    scaled = torch.log1p(age.float()) / math.log(memory.num_words)
    return torch.stack([torch.where(past, scaled, 0.0), past.float()], dim=-1)


class SLM(nn.Module):
    """One Small LeWorld Model.

    Args:
        obs_dim: width of an observation (what is written to memory each step).
        word_dim: width of one decoded memory word.
        memory: the memory's configuration (address bytes, range, decoded word width).
        config: this SLM's sizes.
        request_dim: width of the BLM's info request.
    """

    def __init__(
        self, obs_dim: int, word_dim: int, memory: MemoryConfig, config: SLMConfig, request_dim: int
    ) -> None:
        super().__init__()
        if any(r < 1 or r > memory.range_len for r in config.range_choices):
            raise ValueError(
                f"SLMConfig.range_choices {config.range_choices} must lie in 1..{memory.range_len} "
                "(MemoryConfig.range_len); raise range_len or drop the longer choices"
            )
        self.memory = memory
        self.config = config
        self.characteristics = nn.Parameter(torch.randn(config.char_dim) * 0.5)
        self.state_in = nn.Linear(obs_dim, config.state_dim)
        width = 2 * config.state_dim + config.char_dim + request_dim + 4 * config.pointer_freqs
        self.trunk = mlp([width] + [config.hidden] * config.layers)
        self.trunk_act = nn.Sequential(nn.LayerNorm(config.hidden), nn.GELU())
        self.high_head = nn.Linear(config.hidden, memory.num_high)
        self.low_head = nn.Linear(config.hidden, memory.num_low)
        self.range_head = nn.Linear(config.hidden, max(len(config.range_choices), 1))
        # A read: range_len decoded words (flattened, order kept), their weights and ages.
        self.read_out = mlp(
            [memory.range_len * (word_dim + 1 + AGE_FEATURES), config.read_dim, config.read_dim]
        )

    def address_logits(
        self, past_obs: Tensor, obs: Tensor, request: Tensor, pointer: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        """``(B, obs_dim) x2, (B, request_dim), (B,)`` -> high ``(B, 256)``, low ``(B, 256)``,
        range ``(B, len(range_choices))`` logits."""
        batch = obs.shape[0]
        x = torch.cat(
            [
                self.state_in(past_obs),
                self.state_in(obs),
                self.characteristics.expand(batch, -1),
                request,
                pointer_features(pointer, self.memory, self.config.pointer_freqs),
            ],
            dim=1,
        )
        h = self.trunk_act(self.trunk(x))
        return self.high_head(h), self.low_head(h), self.range_head(h)

    def word_weights(
        self, range_logits: Tensor, hard: bool, choice: Tensor | None = None
    ) -> Tensor:
        """Weight of each of the ``range_len`` words of a read: ``(B, range_len)``.

        Soft: ``P(length > j)`` under the range distribution (differentiable);
        hard: 1 for the first ``length`` words of the argmax (or given ``choice``) length.
        """
        lengths = torch.tensor(
            self.config.range_choices or (self.memory.range_len,), device=range_logits.device
        )
        positions = torch.arange(self.memory.range_len, device=range_logits.device)
        covers = (positions[None, :] < lengths[:, None]).float()  # (choices, range_len)
        if hard or choice is not None:
            pick = range_logits.argmax(-1) if choice is None else choice
            return covers[pick]
        return torch.softmax(range_logits, -1) @ covers

    def summarise(self, words: Tensor, weights: Tensor, ages: Tensor) -> Tensor:
        """Read summary for the BLM: words ``(B, range_len, word_dim)``, their weights and
        ages ``(B, range_len, 2)`` (:func:`word_ages`) -> ``(B, read_dim)``."""
        x = torch.cat([words * weights[..., None], weights[..., None], ages], dim=-1)
        return self.read_out(x.flatten(1))
