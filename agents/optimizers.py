"""The optimiser arguments memworld's algorithms fill in when a user leaves them unset.

MemoryPPO, MemoryDQN and MemorySAC take SB3's ``optimizer_class`` / ``optimizer_kwargs``
policy arguments; :func:`optimizer_defaults` is what all three do with them.  Adam's fused
kernel writes the parameters without moving their version counters, so anything that
caches values derived from the weights must not key on those counters alone
(memory/derived.py counts optimiser steps instead).
"""

from __future__ import annotations

from typing import Any

import torch as th


def optimizer_defaults(
    optimizer_class: type[th.optim.Optimizer],
    optimizer_kwargs: dict[str, Any] | None,
    **sb3_defaults: Any,
) -> dict[str, Any] | None:
    """Adam's fused kernel when the optimizer's arguments are left to us: one op updates
    every parameter where the default runs about eight per tensor (a tenth of a gradient
    step of MemoryDQN(gru) on the CPU; the step itself 1.16 -> 0.41 ms for MemoryPPO's
    LSTM-256 policy).  ``sb3_defaults`` are the arguments SB3 would give the same
    algorithm (``eps=1e-5`` for PPO's Adam).  Given arguments are kept as they are."""
    if optimizer_kwargs is None and optimizer_class in (th.optim.Adam, th.optim.AdamW):
        return {**sb3_defaults, "fused": True}
    return optimizer_kwargs
