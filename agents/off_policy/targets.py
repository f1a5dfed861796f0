"""Targets over windows of rows: n-step returns that stop at episode ends, value rescaling.

Rows are time-major ``(rows, B)``.  A terminal row (an episode's last
observation, no action) ends every return that reaches it: the return
bootstraps from the terminal row's value unless the episode terminated in the
task (a time-limit cut still bootstraps).
"""

from __future__ import annotations

import torch as th

RESCALE_EPS = 1e-3


def rescale(x: th.Tensor, eps: float = RESCALE_EPS) -> th.Tensor:
    """The value rescaling h(x) = sign(x) (sqrt(|x| + 1) - 1) + eps x, which squashes large
    returns so one network can fit rewards of very different scales."""
    return th.sign(x) * (th.sqrt(x.abs() + 1.0) - 1.0) + eps * x


def unrescale(x: th.Tensor, eps: float = RESCALE_EPS) -> th.Tensor:
    """The inverse of :func:`rescale` (closed form)."""
    root = th.sqrt(1.0 + 4.0 * eps * (x.abs() + 1.0 + eps))
    return th.sign(x) * (((root - 1.0) / (2.0 * eps)) ** 2 - 1.0)


def n_step_returns(
    rewards: th.Tensor,
    is_terminal: th.Tensor,
    terminated: th.Tensor,
    values: th.Tensor,
    gamma: float,
    n: int,
    length: int,
) -> th.Tensor:
    """n-step returns of the first ``length`` rows of a window.

    Args:
        rewards: (length + n, B) reward after each row (0 on terminal rows).
        is_terminal: (length + n, B) bool: the row is an episode's last observation.
        terminated: (length + n, B) bool: that episode ended in the task (no bootstrap).
        values: (length + n, B) the value to bootstrap from at each row.
        gamma: discount factor.
        n: steps summed before bootstrapping (>= 1).
        length: rows to give a return to.

    Returns:
        (length, B): ``sum_{k<m} gamma^k r_{t+k} + gamma^m * boot * V_{t+m}`` with
        ``m = n``, or fewer where a terminal row comes first (``boot = 0`` there if
        its episode terminated).  A row that is itself terminal gets ``boot * V_t``.
    """
    if rewards.shape[0] < length + n:
        raise ValueError(
            f"rewards must have at least length + n = {length + n} rows, got {rewards.shape[0]}"
        )
    boot = (~(is_terminal & terminated)).to(values.dtype)
    returns = th.zeros_like(values[:length])
    discount = th.ones_like(returns)
    alive = th.ones_like(returns, dtype=th.bool)
    for k in range(n):
        term = is_terminal[k : k + length]
        stop = alive & term
        returns = returns + th.where(
            stop, discount * boot[k : k + length] * values[k : k + length], 0.0
        )
        alive = alive & ~term
        returns = returns + th.where(alive, discount * rewards[k : k + length], 0.0)
        discount = discount * gamma
    tail = discount * boot[n : n + length] * values[n : n + length]
    return returns + th.where(alive, tail, 0.0)
