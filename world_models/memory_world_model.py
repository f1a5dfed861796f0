"""A next-world-state predictor on top of any memory module, and its evaluation.

``MemoryWorldModel`` reads the observation sequence through a ``MemoryModule``
(any registered name: ``gru``, ``slot``, ``dual``, ``bit``, ...) and predicts
the world state after each step from the observation and the memory's output:
``s_{t+1} = head([o_t, y_t])``, ``y = memory(o_{0..t})``. With ``memory="none"``
the head sees ``o_t`` alone (the no-memory baseline). It trains on the same
:class:`memworld.world_models.leworld.data.RolloutSource` batches as LeWorld: whole
episodes from their first step, so every row starts at ``t = 0``.

The evaluation gives the held-out MSE, its value at each step of the episode,
and its value against **recall distance**: how many steps back the observation
a step needs was seen (``t - oracle_address``: the last sight of the queried
object on OccludedDynamics, of the key on KeyDoor), binned by powers of two.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from memworld.world_models.leworld.data import Batch, RolloutSource
from memworld.world_models.leworld.rollout import masked_mean

NO_MEMORY = "none"
# Recall-distance bins: [0, 1), [1, 2), [2, 4), [4, 8), ... ; the last is open.
DISTANCE_EDGES = (0, 1, 2, 4, 8, 16, 32, 64)


class MemoryWorldModel(nn.Module):
    """Observation sequence -> memory module -> MLP head -> next world state.

    Args:
        obs_dim: observation width.
        state_dim: world-state width (what is predicted).
        memory: a registered memory name (``memworld list memory``), a ``MemoryModule``
            built for ``obs_dim`` inputs, or ``"none"`` for no memory.
        memory_kwargs: keyword arguments of the named module.
        hidden: width of the head's hidden layer.
    """

    def __init__(
        self,
        obs_dim: int,
        state_dim: int,
        memory: str | nn.Module = "gru",
        memory_kwargs: dict | None = None,
        hidden: int = 128,
    ) -> None:
        super().__init__()
        from memworld import memory as memory_lib

        if isinstance(memory, str):
            if memory != NO_MEMORY and memory not in memory_lib.names():
                raise ValueError(
                    f"memory must be one of {[NO_MEMORY, *memory_lib.names()]}, got {memory!r}"
                )
            if memory == NO_MEMORY and memory_kwargs:
                raise ValueError("memory_kwargs configure a memory module; memory='none' has none")
            memory = (
                None
                if memory == NO_MEMORY
                else memory_lib.make(memory, input_dim=obs_dim, **(memory_kwargs or {}))
            )
        elif memory_kwargs:
            raise ValueError("memory_kwargs apply to a memory given by name, not to a module")
        if memory is not None and memory.input_dim != obs_dim:
            raise ValueError(
                f"the memory module reads {memory.input_dim}-wide inputs but obs_dim is "
                f"{obs_dim}; build it with input_dim={obs_dim}"
            )
        self.memory = memory
        width = obs_dim + (memory.output_dim if memory is not None else 0)
        self.head = nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, state_dim))

    def forward(self, obs: Tensor) -> Tensor:
        """``(T, B, obs_dim)`` episodes from their first step -> ``(T, B, state_dim)``."""
        if self.memory is None:
            return self.head(obs)
        t_len, batch = obs.shape[:2]
        starts = torch.zeros(t_len, batch, dtype=torch.bool, device=obs.device)
        starts[0] = True
        state = self.memory.initial_state(batch, obs.device)
        y, _ = self.memory(obs, state, starts)
        return self.head(torch.cat([obs, y], dim=-1))

    def step_loss(self, batch: Batch) -> Tensor:
        """``(T, B)`` next-state MSE."""
        return (self(batch.obs) - batch.target).pow(2).mean(-1)

    def aux_loss(self) -> Tensor:
        """The memory module's auxiliary loss from the last forward pass (0 without one)."""
        if self.memory is None:
            return torch.zeros((), device=self.head[0].weight.device)
        return self.memory.aux_loss()


def train_world_model(
    model: MemoryWorldModel,
    source: RolloutSource,
    updates: int,
    lr: float = 1e-3,
    aux_coef: float = 1.0,
    device: str | torch.device = "cpu",
) -> list[float]:
    """``updates`` Adam steps on fresh batches of ``source``; returns the training MSEs."""
    model.to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    history = []
    for _ in range(updates):
        batch = source.batch().to(device)
        mse = masked_mean(model.step_loss(batch), batch.valid)
        loss = mse + aux_coef * model.aux_loss()
        optimizer.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        history.append(mse.item())
    return history


def distance_bins(distance: Tensor) -> Tensor:
    """Bin index of each recall distance (``>= 0``): ``[0, 1) -> 0``, ``[1, 2) -> 1``,
    ``[2, 4) -> 2``, ... , ``>= DISTANCE_EDGES[-1]`` -> the last bin."""
    edges = torch.tensor(DISTANCE_EDGES, device=distance.device)
    return torch.bucketize(distance, edges, right=True) - 1


def distance_sums(loss: Tensor, valid: Tensor, oracle_address: Tensor) -> tuple[Tensor, Tensor]:
    """Sum of ``loss`` ``(T, B)`` and the number of valid steps in each recall-distance bin
    (distance ``t - oracle_address``): two ``(len(DISTANCE_EDGES),)`` tensors."""
    steps = torch.arange(loss.shape[0], device=loss.device)[:, None].expand_as(oracle_address)
    bins = distance_bins(steps - oracle_address)[valid]
    total = torch.zeros(len(DISTANCE_EDGES), device=loss.device).index_add_(0, bins, loss[valid])
    count = torch.zeros(len(DISTANCE_EDGES), device=loss.device).index_add_(
        0, bins, torch.ones_like(loss[valid])
    )
    return total, count


def ratios(total: Tensor, count: Tensor) -> list[float | None]:
    """``total / count`` per entry, ``None`` where ``count`` is 0 (no data, not a 0 error)."""
    return [float(s / n) if n > 0 else None for s, n in zip(total.tolist(), count.tolist())]


def bin_labels() -> list[str]:
    """``"0"``, ``"1"``, ``"2-3"``, ..., ``"64+"``: the recall distances of each bin."""
    labels = []
    for low, high in zip(DISTANCE_EDGES, (*DISTANCE_EDGES[1:], math.inf)):
        labels.append(
            f"{low}+"
            if high == math.inf
            else (str(low) if high == low + 1 else f"{low}-{high - 1}")
        )
    return labels


@torch.no_grad()
def evaluate_world_model(model: MemoryWorldModel, batches: list[Batch]) -> dict:
    """Held-out next-state MSE of ``model`` on ``batches`` (rows of one source, same
    steps): overall, per step of the episode (``None`` where no episode is still running)
    and per recall-distance bin (with the number of steps in each bin; ``None`` for an
    empty bin)."""
    was_training = model.training
    model.eval()
    batch = Batch.cat(batches)
    loss = model.step_loss(batch.to(model.head[0].weight.device)).cpu()
    model.train(was_training)
    valid = batch.valid
    weight = valid.float()
    total, count = distance_sums(loss, valid, batch.oracle_address)
    return {
        "mse": masked_mean(loss, valid).item(),
        "per_step": ratios((loss * weight).sum(1), weight.sum(1)),
        "by_distance": ratios(total, count),
        "distance_counts": [int(n) for n in count],
        "distance_bins": bin_labels(),
    }
