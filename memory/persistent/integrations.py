"""The PMLL document's two ways into a model: a logits bias and a low-rank delta-W overlay.

Logits bias (HF-style ``logits += alpha * pmll.bias_vector(hidden)``)::

    logits = add_logits_bias(logits, store, query, alpha)

Low-rank overlay (``W_eff = W_base + beta * low_rank(delta)`` with ``delta`` a
bias vector): :class:`LowRankOverlay` wraps an ``nn.Linear`` and adds

    low_rank(delta) = A diag(G delta) B          A: (out, r), B: (r, in), G: (r, delta_dim)

so ``delta = 0`` gives the base layer exactly, the rank is at most ``r``, and
the product is never formed in the forward pass (``x B^T * (G delta)`` then
``A``).  ``A`` starts at zero (as in LoRA), so wrapping changes nothing until
it is trained.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from memworld.memory.persistent.store import PersistentStore


def store_bias(store: PersistentStore, queries: Tensor, k: int | None = None) -> Tensor:
    """(..., dim) queries -> (..., value_dim) bias vectors, on the queries' device and dtype."""
    flat = queries.detach().reshape(-1, queries.shape[-1]).float().cpu().numpy()
    bias = store.bias_vector_batch(flat, k)
    out = torch.as_tensor(bias, device=queries.device, dtype=queries.dtype)
    return out.reshape(*queries.shape[:-1], store.value_dim)


def add_logits_bias(
    logits: Tensor,
    store: PersistentStore,
    queries: Tensor,
    alpha: float = 1.0,
    k: int | None = None,
) -> Tensor:
    """``logits + alpha * bias_vector(queries)``; the store's value_dim must equal the logit width."""
    if logits.shape[-1] != store.value_dim:
        raise ValueError(
            f"logits have width {logits.shape[-1]} but the store's values have "
            f"value_dim={store.value_dim}; store one value entry per logit"
        )
    return logits + alpha * store_bias(store, queries, k)


class LowRankOverlay(nn.Module):
    """``nn.Linear`` with a memory-driven low-rank weight delta.

    Args:
        base: the layer to overlay (its parameters are used as they are).
        delta_dim: width of the bias vector that drives the delta.
        rank: rank ``r`` of the delta (4).
        beta: scale of the delta (1.0).
        freeze_base: stop gradients into the base layer (True).
    """

    def __init__(
        self,
        base: nn.Linear,
        delta_dim: int,
        rank: int = 4,
        beta: float = 1.0,
        freeze_base: bool = True,
    ) -> None:
        super().__init__()
        if not isinstance(base, nn.Linear):
            raise TypeError(f"base must be an nn.Linear, got {type(base).__name__}")
        self.base, self.beta = base, beta
        if freeze_base:
            base.requires_grad_(False)
        self.up = nn.Parameter(torch.zeros(base.out_features, rank))  # A
        self.down = nn.Parameter(torch.randn(rank, base.in_features) / base.in_features**0.5)  # B
        self.gate = nn.Parameter(torch.randn(rank, delta_dim) / delta_dim**0.5)  # G

    def delta_weight(self, delta: Tensor) -> Tensor:
        """``beta * A diag(G delta) B``: (out, in) for one (delta_dim,) delta."""
        return self.beta * (self.up * (self.gate @ delta)) @ self.down

    def effective_weight(self, delta: Tensor) -> Tensor:
        return self.base.weight + self.delta_weight(delta)

    def forward(self, x: Tensor, delta: Tensor) -> Tensor:
        """x: (..., in); delta: (delta_dim,) or (..., delta_dim) matching x's leading axes."""
        gate = delta @ self.gate.T  # (..., r)
        low = (x @ self.down.T) * gate  # (..., r)
        return self.base(x) + self.beta * (low @ self.up.T)
