"""The BLM's binary routing among SLMs: straight-through sigmoid mask, Switch load balance.

- :func:`straight_through_mask`: hard 0/1 in the forward pass, the sigmoid's
  gradient in the backward pass (the straight-through estimator of Bengio et
  al. 2013, as used for binary gates after Gumbel-Softmax, Jang et al. 2016).
- :func:`load_balance_loss`: Switch Transformers' auxiliary loss
  ``N * sum_i f_i * P_i`` (Fedus et al. 2021), with ``f`` the fraction of rows
  that use SLM ``i`` and ``P`` its mean gate probability, each normalised to a
  distribution because a multi-hot mask does not sum to one.  It is 1 when
  usage is uniform and grows to ``N`` when one SLM takes everything.
"""

from __future__ import annotations

import torch
from torch import Tensor


class _Threshold(torch.autograd.Function):
    """``probs > threshold`` forward (exactly 0/1); identity gradient backward."""

    @staticmethod
    def forward(ctx, probs: Tensor, threshold: float) -> Tensor:
        return (probs > threshold).to(probs.dtype)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:
        return grad, None


def straight_through(probs: Tensor, threshold: float = 0.5) -> Tensor:
    """Hard 0/1 values of ``probs > threshold`` whose gradient is that of ``probs``."""
    return _Threshold.apply(probs, threshold)


def straight_through_mask(gate_logits: Tensor, threshold: float = 0.5) -> tuple[Tensor, Tensor]:
    """Binary mask from gate logits ``(..., N)``.

    Returns ``(mask, probs)``: ``mask`` is exactly 0 or 1 in value (``probs >
    threshold``) and carries ``d probs`` as its gradient; ``probs =
    sigmoid(gate_logits)``.
    """
    probs = torch.sigmoid(gate_logits)
    return straight_through(probs, threshold), probs


def load_balance_loss(mask: Tensor, probs: Tensor, valid: Tensor | None = None) -> Tensor:
    """Switch-style load balance ``N * sum_i f_i P_i`` over rows ``(..., N)``.

    ``mask`` is the (hard) routing mask, ``probs`` the gate probabilities,
    ``valid`` an optional ``(...)`` weight that drops padded steps. Only
    ``probs`` carries gradient, as in Switch Transformers.
    """
    n = mask.shape[-1]
    mask = mask.detach().reshape(-1, n)
    probs = probs.reshape(-1, n)
    weight = (
        torch.ones(mask.shape[0], 1, device=mask.device)
        if valid is None
        else valid.reshape(-1, 1).to(probs.dtype)
    )
    denom = weight.sum().clamp_min(1.0)
    used = (mask * weight).sum(0) / denom  # f_i, (N,)
    mean_prob = (probs * weight).sum(0) / denom  # P_i, (N,)
    used = used / used.sum().clamp_min(1e-8)
    mean_prob = mean_prob / mean_prob.sum().clamp_min(1e-8)
    return n * (used * mean_prob).sum()


@torch.no_grad()
def routing_stats(masks: Tensor, valid: Tensor | None = None, top: int = 5) -> dict:
    """Usage fractions, pattern entropy (nats, over the 2**N masks) and the top patterns.

    ``masks``: ``(..., N)`` hard 0/1 masks; ``valid``: optional ``(...)`` bool.
    """
    n = masks.shape[-1]
    flat = masks.reshape(-1, n).round().long()
    if valid is not None:
        flat = flat[valid.reshape(-1).bool()]
    if flat.shape[0] == 0:
        return {"usage": [0.0] * n, "entropy": 0.0, "top_patterns": []}
    codes = (flat * (2 ** torch.arange(n - 1, -1, -1, device=flat.device))).sum(-1)
    counts = torch.bincount(codes, minlength=2**n).float()
    freq = counts / counts.sum()
    nz = freq[freq > 0]
    order = torch.argsort(counts, descending=True)[:top]
    patterns = [
        {"pattern": [int(b) for b in format(int(c), f"0{n}b")], "fraction": float(freq[c])}
        for c in order
        if counts[c] > 0
    ]
    return {
        "usage": flat.float().mean(0).tolist(),
        "entropy": float(-(nz * nz.log()).sum()),
        "top_patterns": patterns,
    }
