"""The Small LeWorld Models: each chooses which address range of the bit memory to read.

Each SLM sees the past observation, the current one, its own learned
characteristics vector, the BLM's info request from the previous step and the
memory's write pointer (as Fourier features of its two bytes: a CPU's stack
pointer, without which an absolute address cannot track time). It outputs
product-key address logits (256 for the high byte + 256 for the low byte, one
of 65,536 addresses from 512 logits, Lample et al. 2019) and range-length
logits; the system reads that range and the SLM summarises the words it got,
each with its age (steps behind the write pointer, :func:`word_ages`).

The ``N`` SLMs are one module, :class:`SLMBank`: every layer holds ``N`` sets of
weights (slot ``i`` is SLM ``i``'s own) and runs them as one batched matmul, so
a step costs one kernel per layer instead of ``N``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from memworld.world_models.leworld.config import MemoryConfig, SLMConfig


def mlp(sizes: list[int]) -> nn.Sequential:
    """Linear layers with LayerNorm + GELU between them (none after the last)."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers += [nn.LayerNorm(b), nn.GELU()]
    return nn.Sequential(*layers)


class GroupedLinear(nn.Module):
    """``groups`` independent linear layers run as one batched matmul.

    ``(G, B, in_features)`` -> ``(G, B, out_features)``; an input without the
    group axis, ``(B, in_features)``, is fed to every group. Group ``g``'s
    ``weight[g]`` ``(out, in)`` and ``bias[g]`` are an ``nn.Linear``'s, with its
    initialisation.

    Args:
        groups: number of independent layers.
        in_features: input width.
        out_features: output width.
        init: initialise every group now, group 0 first (``False``: the owner calls
            :meth:`reset_group` in the order it wants the random draws).
    """

    def __init__(self, groups: int, in_features: int, out_features: int, init: bool = True) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.weight = nn.Parameter(torch.empty(groups, out_features, in_features))
        self.bias = nn.Parameter(torch.empty(groups, out_features))
        for g in range(groups if init else 0):
            self.reset_group(g)

    def reset_group(self, g: int) -> None:
        """``nn.Linear``'s initialisation of group ``g`` (its random draws, in its order)."""
        with torch.no_grad():
            nn.init.kaiming_uniform_(self.weight[g], a=math.sqrt(5))
            bound = 1.0 / math.sqrt(self.in_features) if self.in_features > 0 else 0.0
            nn.init.uniform_(self.bias[g], -bound, bound)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() == 2:  # one input for every group
            return torch.matmul(x, self.weight.transpose(1, 2)) + self.bias[:, None]
        return torch.baddbmm(self.bias[:, None], x, self.weight.transpose(1, 2))


class GroupedLayerNorm(nn.Module):
    """``groups`` LayerNorms over the last axis of ``(G, B, features)``, each with its own
    gain and bias.

    Args:
        groups: number of independent norms.
        features: normalised width.
    """

    def __init__(self, groups: int, features: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(groups, features))
        self.bias = nn.Parameter(torch.zeros(groups, features))

    def forward(self, x: Tensor) -> Tensor:
        return F.layer_norm(x, x.shape[-1:]) * self.weight[:, None] + self.bias[:, None]


def grouped_mlp(groups: int, sizes: list[int], init: bool = True) -> nn.Sequential:
    """:func:`mlp` with ``groups`` independent sets of weights, on ``(G, B, sizes[0])``."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(GroupedLinear(groups, a, b, init))
        if i < len(sizes) - 2:
            layers += [GroupedLayerNorm(groups, b), nn.GELU()]
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
    """How long ago each word of a read was written: start addresses ``(B, ...)`` and
    the pointer ``(B,)`` -> ``(B, ..., range_len, 2)``.

    Word ``j`` of a range from ``address`` sits ``age = pointer - address - j``
    steps behind the write pointer (the ring taken into account). Features:
    ``log1p(age) / log(num_words)`` for words already written this episode
    and 0 otherwise, and a flag "written at or before the pointer". A read that
    knows *when* its words were written can extrapolate from them (a position
    seen ``age`` steps ago plus ``age`` steps of motion); without it an
    address is only a content lookup.
    """
    j = torch.arange(memory.range_len, device=address.device)
    pointer = pointer.view(-1, *[1] * address.dim())  # (B, 1, ..., 1) against (B, ..., L)
    age = torch.remainder(pointer - address[..., None] - j, memory.num_words)
    past = age <= pointer  # wrapped-around ages point at words not yet written
    scaled = torch.log1p(age.float()) / math.log(memory.num_words)
    return torch.stack([torch.where(past, scaled, 0.0), past.float()], dim=-1)


class SLMBank(nn.Module):
    """The ``config.num_slms`` Small LeWorld Models, each with its own weights, run at once.

    Every method takes and returns the SLM axis second: ``(B, N, ...)``. Slot
    ``i`` of every parameter is SLM ``i``'s, initialised with the random draws
    ``N`` separate ``nn.Linear`` stacks would make, SLM 0 first; checkpoints
    that kept one module per SLM (``slms.0.trunk.0.weight``, ...) still load.

    Args:
        obs_dim: width of an observation (what is written to memory each step).
        word_dim: width of one decoded memory word.
        memory: the memory's configuration (address bytes, range, decoded word width).
        config: the SLMs' sizes and count (``num_slms``).
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
        n = self.num_slms = config.num_slms
        self.memory = memory
        self.config = config
        self.characteristics = nn.Parameter(torch.empty(n, config.char_dim))
        self.state_in = GroupedLinear(n, obs_dim, config.state_dim, init=False)
        width = 2 * config.state_dim + config.char_dim + request_dim + 4 * config.pointer_freqs
        self.trunk = grouped_mlp(n, [width] + [config.hidden] * config.layers, init=False)
        self.trunk_act = nn.Sequential(GroupedLayerNorm(n, config.hidden), nn.GELU())
        choices = max(len(config.range_choices), 1)
        self.high_head = GroupedLinear(n, config.hidden, memory.num_high, init=False)
        self.low_head = GroupedLinear(n, config.hidden, memory.num_low, init=False)
        self.range_head = GroupedLinear(n, config.hidden, choices, init=False)
        # A read: range_len decoded words (flattened, order kept), their weights and ages.
        read_in = memory.range_len * (word_dim + 1 + AGE_FEATURES)
        self.read_out = grouped_mlp(n, [read_in, config.read_dim, config.read_dim], init=False)
        lengths = torch.tensor(config.range_choices or (memory.range_len,))
        covers = (torch.arange(memory.range_len)[None, :] < lengths[:, None]).float()
        self.register_buffer("covers", covers, persistent=False)  # (choices, range_len)
        with torch.no_grad():  # SLM by SLM, in the order of one module per SLM
            layers = [m for m in self.modules() if isinstance(m, GroupedLinear)]
            for i in range(n):
                self.characteristics[i] = torch.randn(config.char_dim) * 0.5
                for layer in layers:
                    layer.reset_group(i)

    def __len__(self) -> int:
        return self.num_slms

    def address_logits(
        self, past_obs: Tensor, obs: Tensor, request: Tensor, pointer: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        """``(B, obs_dim) x2, (B, request_dim), (B,)`` -> high ``(B, N, 256)``, low ``(B, N,
        256)``, range ``(B, N, len(range_choices))`` logits."""
        n, batch = self.num_slms, obs.shape[0]
        shared = torch.cat(
            [request, pointer_features(pointer, self.memory, self.config.pointer_freqs)], dim=1
        )
        x = torch.cat(
            [
                self.state_in(past_obs),
                self.state_in(obs),
                self.characteristics[:, None].expand(n, batch, -1),
                shared.expand(n, batch, -1),
            ],
            dim=2,
        )  # (N, B, width)
        h = self.trunk_act(self.trunk(x))
        heads = (self.high_head(h), self.low_head(h), self.range_head(h))
        return tuple(logits.transpose(0, 1) for logits in heads)

    def word_weights(
        self, range_logits: Tensor, hard: bool, choice: Tensor | None = None
    ) -> Tensor:
        """Weight of each of the ``range_len`` words of a read: ``(B, N, range_len)``.

        Soft: ``P(length > j)`` under the range distribution (differentiable);
        hard: 1 for the first ``length`` words of the argmax (or given ``choice``
        ``(B, N)``) length.
        """
        if hard or choice is not None:
            return self.covers[range_logits.argmax(-1) if choice is None else choice]
        return torch.softmax(range_logits, -1) @ self.covers

    def summarise(self, words: Tensor, weights: Tensor, ages: Tensor) -> Tensor:
        """Read summaries for the BLM: words ``(B, N, range_len, word_dim)``, their weights
        ``(B, N, range_len)`` and ages ``(B, N, range_len, 2)`` (:func:`word_ages`) ->
        ``(B, N, read_dim)``."""
        x = torch.cat([words * weights[..., None], weights[..., None], ages], dim=-1)
        return self.read_out(x.flatten(2).transpose(0, 1)).transpose(0, 1)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        # One module per SLM before 2026-11-29: ``slms.{i}.<name>`` -> slot i of ``slms.<name>``.
        for name in [name for name, _ in self.named_parameters()]:
            old = [f"{prefix}{i}.{name}" for i in range(self.num_slms)]
            if f"{prefix}{name}" not in state_dict and all(k in state_dict for k in old):
                state_dict[f"{prefix}{name}"] = torch.stack([state_dict.pop(k) for k in old])
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
