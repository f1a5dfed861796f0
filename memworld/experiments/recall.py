"""Supervised recall at a given distance: how far back a memory module can carry one symbol.

A sequence of ``distance + 1`` steps shows a cue symbol at step 0 (one-hot, with
a cue flag), random distractor symbols at steps ``1 .. distance - 1`` (one-hot,
no flag) and, at step ``distance``, a query flag and no symbol.  A memory module
followed by a linear head must name the cue at the query step (cross-entropy
there only).  Training is plain supervised learning on fresh random batches, so
unlike an RL task nothing depends on exploration: accuracy on held-out
sequences measures only whether the module carried the symbol ``distance`` steps
across the distractors.  Chance is ``1 / num_symbols``.

One model is trained per module on a mixture of distances (each batch draws
one of them, uniformly) and then evaluated at each: one training run per module
instead of one per distance, and the budget a long distance gets is the same
for every module.
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from memworld import memory


def recall_batch(
    distance: int, batch_size: int, num_symbols: int, generator: torch.Generator
) -> tuple[Tensor, Tensor]:
    """Inputs ``(distance + 1, B, num_symbols + 2)`` and the cue symbols ``(B,)``.

    Channels: the symbol's one-hot, then the cue flag, then the query flag.
    """
    if distance < 1:
        raise ValueError(f"distance must be an integer >= 1, got {distance!r}")
    steps = distance + 1
    symbols = torch.randint(num_symbols, (steps, batch_size), generator=generator)
    x = torch.zeros(steps, batch_size, num_symbols + 2)
    x[:-1].scatter_(2, symbols[:-1, :, None], 1.0)  # the cue and the distractors
    x[0, :, num_symbols] = 1.0  # cue flag
    x[-1, :, num_symbols + 1] = 1.0  # query flag, no symbol
    return x, symbols[0]


class RecallModel(nn.Module):
    """A memory module (or, for ``"mlp"``, none) and a linear head read at the last step.

    Args:
        name: a registered memory module, or ``"mlp"`` for a two-layer MLP on the
            current input alone (the no-memory baseline).
        num_symbols: classes of the cue.
        memory_kwargs: keyword arguments for the memory module.
    """

    def __init__(self, name: str, num_symbols: int, memory_kwargs: dict | None = None) -> None:
        super().__init__()
        input_dim = num_symbols + 2
        if name == "mlp":
            self.memory = None
            self.body = nn.Sequential(nn.Linear(input_dim, 64), nn.Tanh())
            width = 64
        else:
            self.memory = memory.make(name, input_dim=input_dim, **(memory_kwargs or {}))
            width = self.memory.output_dim
        self.head = nn.Linear(width, num_symbols)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Logits at the query step (B, num_symbols) and the memory's auxiliary loss."""
        if self.memory is None:
            return self.head(self.body(x[-1])), torch.zeros(())
        starts = torch.zeros(x.shape[:2], dtype=torch.bool)
        starts[0] = True
        y, state = self.memory(x, self.memory.initial_state(x.shape[1]), starts)
        return self.head(y[-1]), self.memory.aux_loss(state)


def train_recall(
    name: str,
    distances: tuple[int, ...],
    seed: int,
    updates: int,
    batch_size: int,
    num_symbols: int = 4,
    eval_sequences: int = 128,
    memory_kwargs: dict | None = None,
    train_distances: tuple[int, ...] | None = None,
) -> dict:
    """Train one model on a mixture of ``distances``; return its held-out accuracy at each.

    With ``train_distances``, training draws from those instead (evaluation still
    covers every one of ``distances``).

    Adam at the module's ``recommended_lr`` (1e-3 for ``"mlp"``), gradients
    clipped to norm 1, ``updates`` batches of ``batch_size`` fresh sequences,
    each batch at one distance drawn uniformly from ``distances``.

    Returns:
        ``{"accuracy": {distance: fraction correct}, "final_loss": ..., "train_seconds": ...}``
    """
    torch.manual_seed(seed)
    model = RecallModel(name, num_symbols, memory_kwargs)
    lr = 1e-3 if model.memory is None else model.memory.recommended_lr
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    start, losses = time.perf_counter(), []
    mixture = train_distances or distances
    for _ in range(updates):
        distance = mixture[int(torch.randint(len(mixture), (), generator=generator))]
        x, target = recall_batch(distance, batch_size, num_symbols, generator)
        logits, aux = model(x)
        loss = F.cross_entropy(logits, target) + aux
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        losses.append(float(loss.detach()))
    train_seconds = time.perf_counter() - start
    model.eval()
    accuracy = {}
    for distance in distances:
        held_out = torch.Generator().manual_seed(10_000 + seed)
        correct = 0
        with torch.no_grad():
            for lo in range(0, eval_sequences, 32):
                x, target = recall_batch(
                    distance, min(32, eval_sequences - lo), num_symbols, held_out
                )
                correct += int((model(x)[0].argmax(-1) == target).sum())
        accuracy[distance] = correct / eval_sequences
    return {
        "accuracy": accuracy,
        "final_loss": float(sum(losses[-20:]) / len(losses[-20:])),
        "train_seconds": train_seconds,
        "eval_seconds": time.perf_counter() - start - train_seconds,
    }
