"""Value-target normalisation: the critic learns returns in units of their running spread.

With a memory shared by actor and critic, the value loss's gradient flows into the
memory next to the policy's.  Its size grows with the scale of the returns
(hundreds on CartPole with ``gamma=0.999``, thousands with larger rewards), and
once it dominates, gradient clipping shrinks the policy's share to nothing.  A
:class:`ValueNormalizer` keeps running statistics (a debiased exponential
average of the mean and second moment of each rollout's returns); the value
loss is taken between the critic's head output and ``(return - mean) / std``,
so its gradient has the same size whatever the reward scale.

Two modes:

- ``"popart"``: when the statistics move, the critic's last linear layer is
  rescaled so that its outputs in return units stay exactly what they were
  (Preserving Outputs Precisely while Adaptively Rescaling Targets).  The
  first statistics of a fresh policy are set without a rescale.
- ``"running"``: the statistics move and the head is left alone, so its
  outputs in return units jump with them until the next update corrects them.
"""

from __future__ import annotations

import torch as th
from torch import nn

VALUE_NORMS = ("popart", "running")


class ValueNormalizer(nn.Module):
    """Running mean and standard deviation of value targets, and the maps in and out of them.

    Args:
        mode: ``"popart"`` (rescale the value head so its outputs are preserved when
            the statistics move) or ``"running"`` (leave it).
        decay: weight of the previous statistics at each update, in [0, 1): 0 uses
            the last rollout's returns only; 0.9 (default) averages over about
            the last 10 rollouts.
        min_std: floor of the standard deviation, in return units.  1 (default):
            targets are scaled down when returns spread by more than a reward unit,
            never scaled up, so a task whose returns are already about unit scale
            trains as with raw returns (the mean is still taken out, and PopArt
            keeps the head's outputs when it moves).
    """

    def __init__(self, mode: str = "popart", decay: float = 0.9, min_std: float = 1.0) -> None:
        super().__init__()
        if mode not in VALUE_NORMS:
            raise ValueError(
                f"value_norm={mode!r} is not one of {VALUE_NORMS}; pass 'popart', "
                "'running', or None for raw value targets"
            )
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"value_norm decay={decay} must be in [0, 1), e.g. 0.9")
        self.mode, self.decay, self.min_std = mode, float(decay), float(min_std)
        # Identity until the first update (mean 0, std 1), so a policy saved before it
        # had statistics loads with the outputs it had.
        self.register_buffer("mean", th.zeros(()))
        self.register_buffer("var", th.ones(()))
        self.register_buffer("std", th.ones(()))  # sqrt(var) floored, kept with it
        self.register_buffer("weight", th.zeros(()))  # sum of the averaged weights (debiasing)

    def normalize(self, values: th.Tensor) -> th.Tensor:
        """Return units -> the critic's units."""
        return (values - self.mean) / self.std

    def denormalize(self, values: th.Tensor) -> th.Tensor:
        """The critic's units -> return units."""
        return th.addcmul(self.mean, values, self.std)

    @th.no_grad()
    def update(self, returns: th.Tensor, value_head: nn.Linear) -> None:
        """Fold a rollout's ``returns`` into the statistics (a debiased moving average);
        in ``"popart"`` mode rescale ``value_head`` so its outputs in return units stay."""
        old_mean, old_std, old_weight = self.mean.clone(), self.std.clone(), float(self.weight)
        returns = returns.detach().flatten().to(self.mean.dtype)
        batch_mean, batch_var = returns.mean(), returns.var(unbiased=False)
        new_weight = self.decay * self.weight + 1.0
        share = 1.0 / new_weight  # the rollout's share in the debiased average
        mean = (1 - share) * old_mean + share * batch_mean
        # The variance of the mixture of the old statistics and the rollout's, each about
        # the new mean (no mean-of-squares difference, which loses float32 precision).
        self.var.mul_(1 - share).add_((1 - share) * (old_mean - mean) ** 2)
        self.var.add_(share * (batch_var + (batch_mean - mean) ** 2))
        self.std.copy_(self.var.clamp_min(self.min_std**2).sqrt())
        self.mean.copy_(mean)
        self.weight.copy_(new_weight)
        # The first statistics are set without a rescale: an untrained critic's outputs
        # carry nothing worth keeping, and shrinking its head by 1/std would shrink the
        # value gradient into the memory with it.
        if self.mode == "popart" and old_weight > 0:
            value_head.weight.mul_(old_std / self.std)
            value_head.bias.mul_(old_std).add_(old_mean - self.mean).div_(self.std)

    def _load_from_state_dict(
        self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
    ) -> None:
        # A policy saved before value normalisation existed has no statistics: keep the
        # identity ones (its critic was trained on raw returns) instead of failing, with a
        # weight above 0 so that "popart" keeps that critic's outputs at the first update.
        if not any(key.startswith(prefix) for key in state_dict):
            self.weight.fill_(1e-6)
            return
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )
