"""Range checks of PPO hyperparameters, shared by MemoryPPO and the configs that build it.

``check_hyperparams`` refuses out-of-range values in a dict of keyword arguments
(MemoryPPO's, or SB3's PPO/A2C/DQN ones: the names mean the same there), so the
constructor, ``memworld train`` configs and sweep files fail the same way before
any training.  ``sequences_per_batch`` checks ``batch_size`` against the rollout.
"""

from __future__ import annotations

from typing import Any

from memworld.memory.base import check_range

# name -> (check_range limits, fix).  Keys absent from a dict are not checked.
RULES: dict[str, tuple[dict, str]] = {
    "n_steps": (dict(low=1, integer=True), "e.g. 128"),
    "batch_size": (dict(low=1, integer=True), "e.g. n_steps * n_envs // 2, or None"),
    "n_epochs": (dict(low=1, integer=True), "e.g. 10"),
    "bptt_len": (dict(low=1, integer=True), "a divisor of n_steps, or None for whole rollouts"),
    "gamma": (dict(low=0, high=1), "0.9-0.99 is usual"),
    "gae_lambda": (dict(low=0, high=1), "0.95 is usual"),
    "ent_coef": (dict(low=0), "e.g. 0.01, or 0 for no entropy bonus"),
    "vf_coef": (dict(low=0), "e.g. 0.5"),
    "aux_coef": (dict(low=0), "e.g. 1.0, or 0 to ignore the memory's aux_loss"),
    "max_grad_norm": (dict(low=0, open_low=True), "e.g. 0.5, or float('inf') for no clipping"),
    "target_kl": (dict(low=0, open_low=True), "e.g. 0.02, or None for no limit"),
    "learning_rate": (dict(low=0, open_low=True), "e.g. 3e-3, or a schedule (a callable)"),
    "clip_range": (dict(low=0, open_low=True), "e.g. 0.2, or a schedule (a callable)"),
    "clip_range_vf": (dict(low=0, open_low=True), "e.g. 0.2, or None for no value clipping"),
    "torch_threads": (dict(low=1, integer=True), "e.g. 1, or None to leave torch's setting"),
}
NONE_OK = {"batch_size", "bptt_len", "target_kl", "clip_range_vf", "learning_rate", "torch_threads"}
SCHEDULES = {"learning_rate", "clip_range", "clip_range_vf"}  # a callable is also accepted


def check_hyperparams(hyperparams: dict[str, Any], prefix: str = "MemoryPPO ") -> None:
    """Raise ValueError naming ``prefix + name`` for the first out-of-range value."""
    for name, value in hyperparams.items():
        if name not in RULES or (value is None and name in NONE_OK):
            continue
        if callable(value) and name in SCHEDULES:
            continue
        limits, fix = RULES[name]
        check_range(prefix + name, value, **limits, fix=fix)


def check_bptt_len(length: int, n_steps: int) -> None:
    """``length`` (bptt_len, or n_steps without it) must be a positive divisor of ``n_steps``."""
    check_range("bptt_len", length, 1, integer=True, fix="a divisor of n_steps")
    if n_steps % length != 0:
        raise ValueError(
            f"bptt_len={length} must be a positive divisor of n_steps={n_steps}; "
            "choose e.g. n_steps // 2, or None for whole rollouts"
        )


def sequences_per_batch(
    batch_size: int | None, n_steps: int, n_envs: int, bptt_len: int | None = None
) -> int:
    """Whole sequences per minibatch for ``batch_size`` env-steps (None: half the rollout)."""
    length = n_steps if bptt_len is None else bptt_len
    check_bptt_len(length, n_steps)
    n_sequences = n_steps // length * n_envs
    if batch_size is None:
        return max(1, n_sequences // 2)
    suggestion = length * max(1, n_sequences // 2)
    rollout = n_steps * n_envs
    if batch_size > rollout:
        raise ValueError(
            f"MemoryPPO batch_size={batch_size} is larger than the rollout, n_steps * n_envs = "
            f"{n_steps} * {n_envs} = {rollout} env-steps; use batch_size <= {rollout} "
            f"(e.g. {suggestion}), raise n_steps or n_envs, or pass None"
        )
    if batch_size % length != 0:
        raise ValueError(
            f"batch_size={batch_size} env-steps must be a multiple of the sequence length "
            f"{length} (bptt_len, or n_steps without it): a minibatch is whole sequences. "
            f"Use e.g. batch_size={suggestion}, or None"
        )
    return batch_size // length
