"""MemoryPPO's rollout: one policy step per env step, the memory state carried along.

The step is the memory protocol's one-step path under ``no_grad``: observation ->
features -> memory step -> heads -> action.  Only the state before each sequence
is stored (:class:`memworld.agents.buffers.MemoryRolloutBuffer`); a truncated
episode's last reward is bootstrapped from its terminal observation
(:mod:`memworld.agents.time_limits`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.utils import obs_as_tensor
from stable_baselines3.common.vec_env import VecEnv

from memworld.agents.buffers import MemoryRolloutBuffer
from memworld.agents.time_limits import bootstrap_time_limits

if TYPE_CHECKING:
    from memworld.agents.memory_ppo import MemoryPPO


def collect_memory_rollout(
    model: MemoryPPO,
    env: VecEnv,
    callback: BaseCallback,
    rollout_buffer: MemoryRolloutBuffer,
    n_rollout_steps: int,
) -> bool:
    """Fill ``rollout_buffer`` with ``n_rollout_steps`` steps per env (SB3's PPO rollout).

    Returns False where a callback stopped training.  Callbacks see the loop's
    locals as in SB3 (``self`` is ``model``).
    """
    assert model._last_obs is not None, "No previous observation was provided"
    self, policy, device = model, model.policy, model.device  # noqa: F841 (callbacks' locals)
    policy.set_training_mode(False)
    rollout_buffer.reset()
    if model.use_sde:
        policy.reset_noise(env.num_envs)
    state = model._last_memory_state
    if state is None or next(iter(state.values())).shape[0] != env.num_envs:
        state = policy.initial_state(env.num_envs)
    callback.on_rollout_start()
    is_box = isinstance(model.action_space, spaces.Box)
    is_discrete = isinstance(model.action_space, spaces.Discrete)
    resample_sde = model.use_sde and model.sde_sample_freq > 0

    n_steps = 0
    while n_steps < n_rollout_steps:
        if resample_sde and n_steps % model.sde_sample_freq == 0:
            policy.reset_noise(env.num_envs)
        with th.no_grad():
            obs_tensor = obs_as_tensor(model._last_obs, device)  # type: ignore[arg-type]
            starts = th.as_tensor(model._last_episode_starts, device=device, dtype=th.bool)
            actions, values, log_probs, next_state = policy(obs_tensor, state, starts)
        actions = actions.cpu().numpy()
        clipped_actions = actions
        if is_box:
            if policy.squash_output:
                clipped_actions = policy.unscale_action(clipped_actions)
            else:
                clipped_actions = np.clip(actions, model.action_space.low, model.action_space.high)

        new_obs, rewards, dones, infos = env.step(clipped_actions)
        model.num_timesteps += env.num_envs
        callback.update_locals(locals())
        if not callback.on_step():
            return False
        model._update_info_buffer(infos, dones)
        n_steps += 1
        if is_discrete:
            actions = actions.reshape(-1, 1)
        rewards = bootstrap_time_limits(policy, rewards, dones, infos, next_state, model.gamma)
        rollout_buffer.add(
            model._last_obs,  # type: ignore[arg-type]
            actions,
            rewards,
            model._last_episode_starts,  # type: ignore[arg-type]
            values,
            log_probs,
            state=state,
        )
        model._last_obs = new_obs  # type: ignore[assignment]
        model._last_episode_starts = dones
        state = next_state

    model._last_memory_state = state
    with th.no_grad():
        last_starts = th.as_tensor(dones, device=device, dtype=th.bool)
        values = policy.predict_values(obs_as_tensor(new_obs, device), state, last_starts)  # type: ignore[arg-type]
    rollout_buffer.compute_returns_and_advantage(last_values=values, dones=dones)
    for name, value in policy.memory_diagnostics(state).items():
        model.logger.record(f"memory/{name}", value)
    callback.update_locals(locals())
    callback.on_rollout_end()
    return True
