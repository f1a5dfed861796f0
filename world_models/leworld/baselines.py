"""Baselines LeWorld is compared with: trained on as many batches of the run's rollout stream
(the batches after LeWorld's), evaluated on the same held-out episodes.

- ``no_memory``: a LeWorld system trained and evaluated with every read masked
  out, so its BLM sees only the current observation (:func:`no_memory_loss`);
- ``gru``: a GRU world model (observation -> GRU -> next world state) whose
  parameter count matches the LeWorld system's;
- ``random_addresses`` / ``oracle_addresses``: the trained LeWorld system with
  every SLM's start address replaced by a uniform written address, or by the
  range that ends at the address where the needed past observation was written
  (:func:`memworld.world_models.leworld.data.oracle_addresses`).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from memworld.world_models.leworld.data import Batch, RolloutSource
from memworld.world_models.leworld.rollout import masked_mean, step_loss
from memworld.world_models.leworld.system import LeWorldSystem


class GRUWorldModel(nn.Module):
    """Observation sequence -> next world state, through a GRU of ``hidden`` units."""

    def __init__(self, obs_dim: int, state_dim: int, hidden: int) -> None:
        super().__init__()
        self.gru = nn.GRU(obs_dim, hidden)
        self.head = nn.Sequential(
            nn.Linear(hidden, hidden), nn.GELU(), nn.Linear(hidden, state_dim)
        )

    @classmethod
    def matching(cls, obs_dim: int, state_dim: int, params: int) -> GRUWorldModel:
        """The GRU world model whose parameter count is closest to ``params``."""
        count = lambda h: 3 * h * (obs_dim + h + 2) + h * h + h + h * state_dim + state_dim  # noqa: E731
        hidden = min(range(8, 4096), key=lambda h: abs(count(h) - params))
        return cls(obs_dim, state_dim, hidden)

    def forward(self, obs: Tensor) -> Tensor:
        """``(T, B, obs_dim)`` -> ``(T, B, state_dim)``."""
        h, _ = self.gru(obs)
        return self.head(h)

    def step_loss(self, batch: Batch) -> Tensor:
        """``(T, B)`` next-state MSE."""
        return (self(batch.obs) - batch.target).pow(2).mean(-1)


def no_memory_loss(system: LeWorldSystem, batch: Batch) -> Tensor:
    """``(T, B)`` next-state MSE of ``system`` with every read masked out.

    A masked read reaches the BLM's trunk as ``read * 0 * gate``, so each step's
    prediction depends on its observation alone (the request only moves reads
    nobody sees): one BLM call over all ``T * B`` steps gives what
    ``run_sequence`` with a mask override of zeros gives, and
    the same gradients (zero for the SLMs, the router and the codec), without
    stepping the memory and the SLMs through the sequence.
    """
    obs = batch.obs.flatten(0, 1)
    off = obs.new_zeros(obs.shape[0], system.num_slms)
    reads = obs.new_zeros(obs.shape[0], system.num_slms, system.blm.read_dim)
    prediction, _, _ = system.blm(obs, reads, off, off)
    return step_loss(prediction, batch.target.flatten(0, 1)).view(batch.valid.shape)


def train_baselines(
    system_factory,
    source: RolloutSource,
    updates: int,
    lr: float = 1e-3,
    log=None,
    device: torch.device | str = "cpu",
) -> dict[str, nn.Module]:
    """Train the no-memory system and the parameter-matched GRU for ``updates`` batches each,
    on ``device``; the models are returned there."""
    no_memory: LeWorldSystem = system_factory().to(device)
    gru = GRUWorldModel.matching(
        source.obs_dim, source.state_dim, sum(p.numel() for p in no_memory.parameters())
    ).to(device)
    opts = {
        "no_memory": torch.optim.Adam(no_memory.parameters(), lr),
        "gru": torch.optim.Adam(gru.parameters(), lr),
    }
    for step in range(updates):
        batch = source.batch().to(device)
        losses = {
            "no_memory": masked_mean(no_memory_loss(no_memory, batch), batch.valid),
            "gru": masked_mean(gru.step_loss(batch), batch.valid),
        }
        for name, loss in losses.items():
            opts[name].zero_grad(set_to_none=True)
            loss.backward()
            opts[name].step()
        if log is not None:
            log(
                {
                    "phase": "baselines",
                    "step": step,
                    **{f"{k}_mse": v.item() for k, v in losses.items()},
                }
            )
    return {"no_memory": no_memory, "gru": gru}


def random_addresses(batch: Batch, num_slms: int, generator: torch.Generator) -> Tensor:
    """``(T, B, N)`` uniform written addresses (step ``t`` has written ``0 .. t``)."""
    t_len, b = batch.valid.shape
    device = generator.device
    steps = torch.arange(t_len, dtype=torch.float, device=device)[:, None, None] + 1
    uniform = torch.rand(t_len, b, num_slms, generator=generator, device=device)
    return (uniform * steps).long().to(batch.obs.device)


def oracle_start(batch: Batch, num_slms: int, range_len: int) -> Tensor:
    """``(T, B, N)``: the range that ends at the oracle address (so it holds the motion before it)."""
    start = (batch.oracle_address - range_len + 1).clamp_min(0)
    return start[..., None].expand(*start.shape, num_slms)
