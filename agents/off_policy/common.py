"""Pieces the memory policies share: the encoder and sequence reshapes (both off-policy
policies), the state-key prefixes and ``predict`` (MemoryPPO's policy too).

A policy's recurrent state is a flat dict of batch-first tensors, as in
:mod:`memworld.agents.policies`: the algorithm, the buffer and ``predict``
store, index and pass it on, and never look inside.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.preprocessing import preprocess_obs
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor, create_mlp
from stable_baselines3.common.utils import polyak_update
from torch import nn

from memworld.memory import make as make_memory
from memworld.memory.base import MemoryModule, State
from memworld.memory.derived import clear_derived

DEFAULT_MEMORY = "gru"


class SequenceEncoder(nn.Module):
    """Features extractor then memory: time-major observations to memory outputs.

    Args:
        observation_space: the env's observation space.
        features_extractor: an SB3 features extractor for one observation.
        memory: a memory module name or class (see ``memworld.memory.names()``).
        memory_kwargs: keyword arguments of the memory module.
        extra_dim: width of an extra input concatenated to the features before
            the memory (the previous action for a critic; 0: none).
        normalize_images: scale uint8 images to [0, 1] (SB3's preprocessing).
    """

    def __init__(
        self,
        observation_space: spaces.Space,
        features_extractor: BaseFeaturesExtractor,
        memory: str | type[MemoryModule],
        memory_kwargs: dict[str, Any],
        extra_dim: int = 0,
        normalize_images: bool = True,
    ) -> None:
        super().__init__()
        self.observation_space = observation_space
        self.features_extractor = features_extractor
        self.normalize_images = normalize_images
        self.extra_dim = extra_dim
        self.memory = make_memory(
            memory, input_dim=features_extractor.features_dim + extra_dim, **memory_kwargs
        )
        self.output_dim = self.memory.output_dim

    def forward(
        self,
        obs: th.Tensor,
        state: State,
        episode_starts: th.Tensor,
        extra: th.Tensor | None = None,
    ) -> tuple[th.Tensor, State]:
        """``obs`` (T, B, *obs_shape), ``extra`` (T, B, extra_dim), ``episode_starts`` (T, B)
        -> memory outputs (T, B, D) and the state after step T-1."""
        steps, batch = episode_starts.shape
        flat = obs.reshape(steps * batch, *obs.shape[2:])
        x = self.features_extractor(
            preprocess_obs(flat, self.observation_space, self.normalize_images)
        )
        x = x.float().reshape(steps, batch, -1)
        if self.extra_dim:
            x = th.cat([x, extra.float()], dim=-1)
        return self.memory(x, state, episode_starts)


def mlp(input_dim: int, output_dim: int, net_arch: list[int], activation_fn: type[nn.Module]):
    """SB3's ``create_mlp`` as one ``nn.Sequential``."""
    return nn.Sequential(*create_mlp(input_dim, output_dim, net_arch, activation_fn))


@th.no_grad()
def copy_buffers(online: nn.Module, target: nn.Module) -> None:
    """Copy the non-parameter buffers (running statistics, flags, any dtype) to a target net."""
    for to, source in zip(target.buffers(), online.buffers()):
        to.copy_(source)


def update_target(online: nn.Module, target: nn.Module, tau: float) -> None:
    """Move ``target`` towards ``online``: SB3's ``polyak_update`` of the parameters (``tau``
    1: a copy), the buffers copied, and the quantities a memory module derived from its old
    parameters for one-step calls dropped (``polyak_update`` writes through ``.data``, which
    the cache of memory/derived.py cannot see)."""
    polyak_update(online.parameters(), target.parameters(), tau)
    copy_buffers(online, target)
    clear_derived(target)


def prefixed(prefix: str, state: State) -> State:
    return {prefix + k: v for k, v in state.items()}


def unprefixed(prefix: str, state: State) -> State:
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


def predict_recurrent(
    policy: BasePolicy,
    observation: np.ndarray,
    state: dict[str, np.ndarray] | None,
    episode_start: np.ndarray | None,
    deterministic: bool,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """sb3-contrib RecurrentPPO's ``predict`` convention for a policy with
    ``initial_state(n)`` and ``_predict(obs, state, starts, deterministic)``.

    ``state`` is what the last call returned (None: fresh episodes);
    ``episode_start`` (B,) marks the rows whose episode starts with this
    observation; Dict observations count their rows from the first entry.  Returns the
    actions (in the env's units: unscaled where the policy squashes, clipped to the
    action space where it does not, as SB3's ``predict``) and the next state.
    """
    policy.set_training_mode(False)
    obs_tensor, vectorized = policy.obs_to_tensor(observation)
    first = next(iter(obs_tensor.values())) if isinstance(obs_tensor, dict) else obs_tensor
    n_envs = first.shape[0]
    if episode_start is None:
        episode_start = np.zeros(n_envs, dtype=bool)
    with th.no_grad():
        if state is None:
            torch_state = policy.initial_state(n_envs)
        else:
            torch_state = {k: th.as_tensor(v, device=policy.device) for k, v in state.items()}
        starts = th.as_tensor(np.asarray(episode_start), device=policy.device).bool().view(n_envs)
        actions, torch_state = policy._predict(obs_tensor, torch_state, starts, deterministic)
    new_state = {k: v.cpu().numpy() for k, v in torch_state.items()}
    actions = actions.cpu().numpy().reshape((-1, *policy.action_space.shape))
    if isinstance(policy.action_space, spaces.Box):
        if policy.squash_output:  # actions in [-1, 1]: back to the env's units
            actions = policy.unscale_action(actions)
        else:
            actions = np.clip(actions, policy.action_space.low, policy.action_space.high)
    if not vectorized:
        actions = actions.squeeze(axis=0)
    return actions, new_state
