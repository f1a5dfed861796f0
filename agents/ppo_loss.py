"""The clipped PPO objective on one minibatch, apart from the loop that feeds it."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch as th
from torch.nn import functional as F

from memworld.agents.buffers import MemorySequenceSamples


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


@dataclass
class UpdateStats:
    """The minibatch losses of one ``train()`` call, logged under ``train/`` as SB3's PPO does."""

    entropy: list[float] = field(default_factory=list)
    policy: list[float] = field(default_factory=list)
    value: list[float] = field(default_factory=list)
    aux: list[float] = field(default_factory=list)
    clip_fraction: list[float] = field(default_factory=list)
    approx_kl: list[float] = field(default_factory=list)  # the last epoch's, as SB3 logs it

    def add(self, terms: PPOLosses, aux_loss: th.Tensor) -> None:
        """Record one minibatch."""
        self.entropy.append(terms.entropy.item())
        self.policy.append(terms.policy.item())
        self.value.append(terms.value.item())
        self.aux.append(float(aux_loss.item()))
        self.clip_fraction.append(terms.clip_fraction)
        self.approx_kl.append(terms.approx_kl)

    def record(self, logger) -> None:
        """Log the means: entropy, policy-gradient, value, aux losses, KL, clip fraction."""
        for key, values in [
            ("entropy_loss", self.entropy),
            ("policy_gradient_loss", self.policy),
            ("value_loss", self.value),
            ("aux_loss", self.aux),
            ("approx_kl", self.approx_kl),
            ("clip_fraction", self.clip_fraction),
        ]:
            logger.record(f"train/{key}", np.mean(values))
