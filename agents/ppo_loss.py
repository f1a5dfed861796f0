"""The clipped PPO objective on one minibatch, apart from the loop that feeds it."""

from __future__ import annotations

from dataclasses import dataclass

import torch as th
from torch.nn import functional as F

from agents.buffers import MemorySequenceSamples


@dataclass
class PPOLosses:
    """The terms of one minibatch's loss and its two diagnostics.

    Args:
        policy: clipped surrogate loss (to minimise).
        value: MSE of the (optionally clipped) values against the returns.
        entropy: minus the mean entropy (minus the mean log-prob without a closed form).
        approx_kl: ``mean((r - 1) - log r)``, the k3 KL estimate, ``r`` the ratio.
        clip_fraction: share of samples whose ratio left ``[1 - clip, 1 + clip]``.
    """

    policy: th.Tensor
    value: th.Tensor
    entropy: th.Tensor
    approx_kl: float
    clip_fraction: float


def ppo_losses(
    values: th.Tensor,
    log_prob: th.Tensor,
    entropy: th.Tensor | None,
    batch: MemorySequenceSamples,
    clip_range: float,
    clip_range_vf: float | None = None,
    normalize_advantage: bool = True,
) -> PPOLosses:
    """SB3 PPO's loss terms for replayed ``values`` and ``log_prob`` (flat, ``T * B``)."""
    advantages = batch.advantages
    if normalize_advantage and len(advantages) > 1:
        advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
    log_ratio = log_prob - batch.old_log_prob
    ratio = th.exp(log_ratio)
    surrogate = th.min(
        advantages * ratio, advantages * th.clamp(ratio, 1 - clip_range, 1 + clip_range)
    )
    if clip_range_vf is not None:
        values = batch.old_values + th.clamp(
            values - batch.old_values, -clip_range_vf, clip_range_vf
        )
    with th.no_grad():
        approx_kl = th.mean((ratio - 1) - log_ratio).item()
        clip_fraction = th.mean((th.abs(ratio - 1) > clip_range).float()).item()
    return PPOLosses(
        policy=-surrogate.mean(),
        value=F.mse_loss(batch.returns, values),
        entropy=-th.mean(-log_prob) if entropy is None else -th.mean(entropy),
        approx_kl=approx_kl,
        clip_fraction=clip_fraction,
    )
