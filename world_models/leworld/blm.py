"""The Big LeWorld Model: routes among the SLM reads, predicts the next world state,
and asks for what it needs next.

Routing is a straight-through sigmoid mask over the SLMs (hard ``[1, 0, 1]``
forward, sigmoid gradient backward), each kept read scaled by its gate value as
in Switch Transformers. The trunk is a residual MLP over the current
observation and the routed reads; its heads give the next world state and an
info request (``tanh``, so a zero request is the neutral "ask nothing") that
conditions every SLM's search at the next step. The BLM has no recurrent state
of its own: whatever it knows about the past came through the memory.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from memworld.world_models.leworld.config import BLMConfig
from memworld.world_models.leworld.routing import straight_through_mask
from memworld.world_models.leworld.slm import mlp


class ResidualBlock(nn.Module):
    def __init__(self, d_model: int, d_ff: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.LayerNorm(d_model), nn.Linear(d_model, d_ff), nn.GELU(), nn.Linear(d_ff, d_model)
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.net(x)


class BLM(nn.Module):
    """Router + next-state predictor + info requester.

    Args:
        obs_dim: width of an observation.
        state_dim: width of the world state to predict.
        read_dim: width of one SLM read summary.
        num_slms: SLMs to route among.
        config: sizes.
    """

    def __init__(
        self, obs_dim: int, state_dim: int, read_dim: int, num_slms: int, config: BLMConfig
    ) -> None:
        super().__init__()
        self.num_slms = num_slms
        self.read_dim = read_dim
        self.config = config
        self.obs_in = nn.Linear(obs_dim, config.d_model)
        self.gate = mlp([obs_dim + num_slms * read_dim, config.gate_hidden, num_slms])
        nn.init.constant_(self.gate[-1].bias, config.gate_bias)
        self.reads_in = nn.Linear(num_slms * read_dim, config.d_model)
        self.trunk = nn.Sequential(
            *[ResidualBlock(config.d_model, config.d_ff) for _ in range(config.blocks)],
            nn.LayerNorm(config.d_model),
        )
        self.next_state = nn.Linear(config.d_model, state_dim)
        self.request = nn.Linear(config.d_model, config.request_dim)

    def route(self, obs: Tensor, reads: Tensor) -> tuple[Tensor, Tensor]:
        """``obs (B, obs_dim), reads (B, N, read_dim)`` -> straight-through mask and probs ``(B, N)``."""
        logits = self.gate(torch.cat([obs, reads.flatten(1)], dim=1))
        return straight_through_mask(logits)

    def forward(
        self, obs: Tensor, reads: Tensor, mask: Tensor, probs: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Predict from the routed reads.

        ``mask`` ``(B, N)`` (0/1 forward) and ``probs`` (gate values) weigh each
        read: ``read_i * mask_i * probs_i``. Returns the next world state ``(B,
        state_dim)``, the info request ``(B, request_dim)`` and the trunk's
        output ``(B, d_model)`` it was read from (:meth:`request_from`).
        """
        routed = reads * (mask * probs)[..., None]  # (B, N, read_dim)
        h = self.trunk(self.obs_in(obs) + self.reads_in(routed.flatten(1)))
        return self.next_state(h), self.request_from(h), h

    def request_from(self, hidden: Tensor) -> Tensor:
        """The info request of a trunk output: ``(B, d_model) -> (B, request_dim)`` in (-1, 1)."""
        return torch.tanh(self.request(hidden))
