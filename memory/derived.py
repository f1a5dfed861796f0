"""Tensors derived from a module's parameters, computed once while the parameters stay put.

A rollout step is overhead-bound: at 8 rows, each torch call costs about as much
as its arithmetic, so the quantities a step derives from the weights alone (an
eigenvalue matrix, weights folded together) are worth computing once rather than
every step.  :func:`derived` keeps them on the module and recomputes them after any
of these:

- a step of any ``torch.optim`` optimiser in the process (a global step hook counts
  them).  The parameters' version counters alone are not enough: the fused Adam kernel
  (``Adam(fused=True)``, MemoryPPO's default) updates parameters in place without
  bumping them, and a cache keyed on versions alone kept serving the weights of the
  first rollout for the whole of training;
- an in-place write on one of the module's parameters (``load_state_dict``, ``add_``):
  its version counter moves;
- ``.to()`` or ``.double()``: the parameter's storage moves.

The cache is used only with autograd off (a rollout); with grad the quantities are
computed afresh so gradients flow.  A write through ``param.data`` outside an optimiser
skips all three: after one (SB3's ``polyak_update`` writes target networks that way),
call :func:`clear_derived` before the next rollout step of that module (MemoryDQN's and
MemorySAC's target updates do: ``agents/off_policy/common.py``, ``update_target``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.optim.optimizer import register_optimizer_step_post_hook

_ATTRIBUTE = "_derived_cache"
_OPTIMISER_STEPS = [0]  # steps of any torch optimiser in this process


def _count_optimiser_step(optimizer: torch.optim.Optimizer, args: object, kwargs: object) -> None:
    _OPTIMISER_STEPS[0] += 1


register_optimizer_step_post_hook(_count_optimiser_step)


def derived(
    module: nn.Module, name: str, build: Callable[[], tuple[Tensor, ...]]
) -> tuple[Tensor, ...]:
    """``build()``, cached on ``module`` under ``name`` while no optimiser has stepped and
    none of its parameters changed (see the module docstring).

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
    steps = _OPTIMISER_STEPS[0]
    if (
        hit is not None
        and hit[0] == steps
        and hit[1] == [(p._version, p.data_ptr()) for p in hit[3]]
    ):
        return hit[2]
    sources = tuple(module.parameters())
    key = [(p._version, p.data_ptr()) for p in sources]
    value = build()
    cache[name] = (steps, key, value, sources)
    return value


def clear_derived(module: nn.Module) -> None:
    """Drop every cached quantity of ``module`` and its submodules (after a ``.data`` write)."""
    for m in module.modules():
        m.__dict__.pop(_ATTRIBUTE, None)
