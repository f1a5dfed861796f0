"""Tensors derived from a module's parameters, computed once while the parameters stay put.

A rollout step is overhead-bound: at 8 rows, each torch call costs about as much
as its arithmetic, so the quantities a step derives from the weights alone (an
eigenvalue matrix, weights folded together) are worth computing once rather than
every step.  :func:`derived` keeps them on the module, keyed on each of its
parameters' version counter and storage address: an optimiser step,
``load_state_dict`` or any in-place write on the parameter bumps the version, and
``.to()`` moves the storage, so the next call recomputes.  The cache is used only
with autograd off (a rollout); with grad the quantities are computed afresh so
gradients flow.  A write through ``param.data`` skips the version counter: after
one (SB3's ``polyak_update`` writes target networks that way), call
:func:`clear_derived` before the next rollout step of that module (MemoryDQN's and
MemorySAC's target updates do: ``agents/off_policy/common.py``, ``update_target``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

_ATTRIBUTE = "_derived_cache"


def derived(
    module: nn.Module, name: str, build: Callable[[], tuple[Tensor, ...]]
) -> tuple[Tensor, ...]:
    """``build()``, cached on ``module`` under ``name`` while none of its parameters changed.

    Args:
        module: where the cache lives (a plain dict attribute, not state_dict); every
            parameter of it is a source, collected when ``build`` runs, so a check looks
            no attribute up (a parameter *replaced* by a new object, rather than written
            into, needs :func:`clear_derived`).
        name: which derived quantities (one module may cache several).
        build: computes the derived tensors from the parameters.
    """
    if torch.is_grad_enabled():
        return build()
    cache = module.__dict__.setdefault(_ATTRIBUTE, {})
    hit = cache.get(name)
    if hit is not None and hit[0] == [(p._version, p.data_ptr()) for p in hit[2]]:
        return hit[1]
    sources = tuple(module.parameters())
    key = [(p._version, p.data_ptr()) for p in sources]
    value = build()
    cache[name] = (key, value, sources)
    return value


def clear_derived(module: nn.Module) -> None:
    """Drop every cached quantity of ``module`` and its submodules (after a ``.data`` write)."""
    for m in module.modules():
        m.__dict__.pop(_ATTRIBUTE, None)
