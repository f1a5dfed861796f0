"""Time-limit truncation for memory policies: bootstrap from the terminal observation's value.

A truncated episode did not end in the task, so its last reward gets
``gamma * V(terminal_observation)`` (SB3's convention, GH #633).  For a memory
policy the value needs a memory state: the state *after* the last step, before
the reset, advanced by one step on the terminal observation - the state the
agent would have carried on with.  All truncated envs go through one batched
forward.
"""

from __future__ import annotations

import numpy as np
import torch as th

from memworld.agents.policies import MemoryActorCriticPolicy
from memworld.memory.base import State


def bootstrap_time_limits(
    policy: MemoryActorCriticPolicy,
    rewards: np.ndarray,
    dones: np.ndarray,
    infos: list[dict],
    state: State,
    gamma: float,
) -> np.ndarray:
    """Return ``rewards`` (N,) with ``gamma * V(terminal_observation)`` added where truncated.

    Args:
        policy: the policy whose critic values the terminal observations.
        rewards: rewards of this step, one per env.
        dones: episode ends of this step.
        infos: SB3 per-env infos (``TimeLimit.truncated``, ``terminal_observation``).
        state: the memory state after this step, before any reset (batch N).
        gamma: discount factor.
    """
    rows = [
        i
        for i in np.flatnonzero(dones)
        if infos[i].get("TimeLimit.truncated", False)
        and infos[i].get("terminal_observation") is not None
    ]
    if not rows:
        return rewards
    terminal = [infos[i]["terminal_observation"] for i in rows]
    if isinstance(terminal[0], dict):
        terminal_obs = {k: np.stack([o[k] for o in terminal]) for k in terminal[0]}
    else:
        terminal_obs = np.stack(terminal)
    index = th.as_tensor(rows, device=policy.device)
    with th.no_grad():
        obs_tensor, _ = policy.obs_to_tensor(terminal_obs)
        rows_state = {k: v.index_select(0, index) for k, v in state.items()}
        no_starts = th.zeros(len(rows), dtype=th.bool, device=policy.device)
        terminal_values = policy.predict_values(obs_tensor, rows_state, no_starts)
    rewards = np.array(rewards, dtype=np.float32)
    rewards[rows] += gamma * terminal_values.flatten().cpu().numpy()
    return rewards
