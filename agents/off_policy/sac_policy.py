"""The policy of MemorySAC: a memory actor and twin critics whose memory reads the actions.

Actor: features -> memory -> MLP -> a tanh-squashed Gaussian.  Critic: features
and the *previous* action -> memory -> two Q heads, each reading the memory's
output and the action taken.  The critic's target network is a copy of the
critic.  By default actor and critic have separate memories; with
``shared_memory=True`` the actor reads the critic's memory (detached: the memory
learns from the critic's loss only).

The recurrent state is a flat dict: the actor's memory under ``"pi."``, the
critic's under ``"qf."`` and the previous action under ``"prev_action"``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.distributions import SquashedDiagGaussianDistribution
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor, FlattenExtractor
from stable_baselines3.common.type_aliases import Schedule
from torch import nn

from memworld.agents.off_policy.common import (
    DEFAULT_MEMORY,
    SequenceEncoder,
    mlp,
    predict_recurrent,
    prefixed,
    unprefixed,
)
from memworld.agents.optimizers import optimizer_defaults
from memworld.memory.base import MemoryModule, State

LOG_STD_MIN, LOG_STD_MAX = -20.0, 2.0
PI, QF, PREV = "pi.", "qf.", "prev_action"


class MemoryActor(nn.Module):
    """Gaussian actor head (tanh-squashed) over memory outputs, with its own encoder or none."""

    def __init__(
        self,
        encoder: SequenceEncoder | None,
        input_dim: int,
        action_dim: int,
        net_arch: list[int],
        activation_fn: type[nn.Module],
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.latent = mlp(input_dim, -1, net_arch, activation_fn)
        width = net_arch[-1] if net_arch else input_dim
        self.mu = nn.Linear(width, action_dim)
        self.log_std = nn.Linear(width, action_dim)
        self.dist = SquashedDiagGaussianDistribution(action_dim)

    def sample(self, hidden: th.Tensor, deterministic: bool = False) -> tuple[th.Tensor, th.Tensor]:
        """Actions in [-1, 1] and their log-probabilities from memory outputs (..., D)."""
        shape = hidden.shape[:-1]
        latent = self.latent(hidden.reshape(-1, hidden.shape[-1]))
        log_std = self.log_std(latent).clamp(LOG_STD_MIN, LOG_STD_MAX)
        if deterministic:
            actions = th.tanh(self.mu(latent))
            log_prob = th.zeros(latent.shape[0], device=latent.device)
        else:
            actions, log_prob = self.dist.log_prob_from_params(self.mu(latent), log_std)
        return actions.reshape(*shape, -1), log_prob.reshape(shape)


class MemoryCritic(nn.Module):
    """Twin Q heads over a memory that reads the features and the previous action."""

    def __init__(
        self,
        encoder: SequenceEncoder,
        action_dim: int,
        net_arch: list[int],
        activation_fn: type[nn.Module],
    ) -> None:
        super().__init__()
        self.encoder = encoder
        width = encoder.output_dim + action_dim
        self.q1 = mlp(width, 1, net_arch, activation_fn)
        self.q2 = mlp(width, 1, net_arch, activation_fn)

    def encode(self, obs: th.Tensor, state: State, starts: th.Tensor, prev_actions: th.Tensor):
        """Memory outputs (T, B, D) and the state after step T-1."""
        return self.encoder(obs, state, starts, prev_actions)

    def q(self, hidden: th.Tensor, actions: th.Tensor) -> tuple[th.Tensor, th.Tensor]:
        """Both Q-values (...,) of ``actions`` given memory outputs ``hidden``."""
        x = th.cat([hidden, actions], dim=-1)
        return self.q1(x).squeeze(-1), self.q2(x).squeeze(-1)


class MemorySACPolicy(BasePolicy):
    """SAC policy with memory modules in the actor and the critics.

    Args:
        observation_space: the env's observation space.
        action_space: a Box space.
        lr_schedule: learning-rate schedule of both optimizers.
        net_arch: hidden layers of the MLPs after the memories (default ``[64, 64]``;
            a dict ``dict(pi=[...], qf=[...])`` sets them apart).
        activation_fn: activation of the MLPs.
        features_extractor_class: the encoder before each memory (default: flatten).
        features_extractor_kwargs: its keyword arguments.
        normalize_images: scale uint8 images to [0, 1].
        optimizer_class: optimizer (default Adam).
        optimizer_kwargs: its keyword arguments (None: ``fused=True`` for Adam and AdamW).
        memory: registered memory name or a ``MemoryModule`` subclass (default ``"gru"``).
        memory_kwargs: keyword arguments of the memory modules.
        shared_memory: one memory (the critic's) for actor and critic (False: one each).
        use_sde: not supported (must be False).
    """

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Box,
        lr_schedule: Schedule,
        net_arch: list[int] | dict[str, list[int]] | None = None,
        activation_fn: type[nn.Module] = nn.ReLU,
        features_extractor_class: type[BaseFeaturesExtractor] = FlattenExtractor,
        features_extractor_kwargs: dict[str, Any] | None = None,
        normalize_images: bool = True,
        optimizer_class: type[th.optim.Optimizer] = th.optim.Adam,
        optimizer_kwargs: dict[str, Any] | None = None,
        memory: str | type[MemoryModule] = DEFAULT_MEMORY,
        memory_kwargs: dict[str, Any] | None = None,
        shared_memory: bool = False,
        use_sde: bool = False,
    ) -> None:
        if not isinstance(action_space, spaces.Box):
            raise ValueError(
                f"action_space must be Box for MemorySAC, got {action_space}; "
                "use MemoryDQN for Discrete actions"
            )
        if use_sde:
            raise ValueError("use_sde: MemorySAC has no gSDE; pass use_sde=False")
        super().__init__(
            observation_space,
            action_space,
            features_extractor_class,
            features_extractor_kwargs,
            optimizer_class=optimizer_class,
            optimizer_kwargs=optimizer_defaults(optimizer_class, optimizer_kwargs),
            normalize_images=normalize_images,
            squash_output=True,
        )
        self.net_arch = [64, 64] if net_arch is None else net_arch
        arch = (
            self.net_arch
            if isinstance(self.net_arch, dict)
            else dict(pi=self.net_arch, qf=self.net_arch)
        )
        self.activation_fn = activation_fn
        self.memory_name, self.memory_kwargs = memory, dict(memory_kwargs or {})
        self.shared_memory = bool(shared_memory)
        self.action_dim = int(np.prod(action_space.shape))
        self._qf_arch = list(arch["qf"])
        self.critic = self._critic()
        actor_encoder = None if self.shared_memory else self._encoder(0)
        width = self.critic.encoder.output_dim if self.shared_memory else actor_encoder.output_dim
        self.actor = MemoryActor(
            actor_encoder, width, self.action_dim, list(arch["pi"]), activation_fn
        )
        self.critic_target = self._critic()  # built, not deep-copied: a memory may hold a store
        self.critic_target.load_state_dict(self.critic.state_dict())
        self.critic_target.requires_grad_(False)
        self.critic_target.train(False)
        self.actor.optimizer = self.optimizer_class(  # type: ignore[assignment]
            self.actor.parameters(), lr=lr_schedule(1), **self.optimizer_kwargs
        )
        self.critic.optimizer = self.optimizer_class(  # type: ignore[assignment]
            self.critic.parameters(), lr=lr_schedule(1), **self.optimizer_kwargs
        )

    def _critic(self) -> MemoryCritic:
        encoder = self._encoder(self.action_dim)
        return MemoryCritic(encoder, self.action_dim, self._qf_arch, self.activation_fn)

    def _encoder(self, extra_dim: int) -> SequenceEncoder:
        return SequenceEncoder(
            self.observation_space,
            self.features_extractor_class(self.observation_space, **self.features_extractor_kwargs),
            self.memory_name,
            self.memory_kwargs,
            extra_dim=extra_dim,
            normalize_images=self.normalize_images,
        )

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data.update(
            net_arch=self.net_arch,
            activation_fn=self.activation_fn,
            features_extractor_class=self.features_extractor_class,
            features_extractor_kwargs=self.features_extractor_kwargs,
            normalize_images=self.normalize_images,
            optimizer_class=self.optimizer_class,
            optimizer_kwargs=self.optimizer_kwargs,
            memory=self.memory_name,
            memory_kwargs=self.memory_kwargs,
            shared_memory=self.shared_memory,
            lr_schedule=self._dummy_schedule,
        )
        return data

    def set_training_mode(self, mode: bool) -> None:
        self.actor.train(mode)
        self.critic.train(mode)
        self.training = mode

    # ---------------------------------------------------------------- state
    def initial_state(self, batch_size: int) -> State:
        """The state of ``batch_size`` fresh episodes."""
        state = prefixed(QF, self.critic.encoder.memory.initial_state(batch_size, self.device))
        if self.actor.encoder is not None:
            state.update(
                prefixed(PI, self.actor.encoder.memory.initial_state(batch_size, self.device))
            )
        state[PREV] = th.zeros(batch_size, self.action_dim, device=self.device)
        return state

    def split(self, state: State) -> tuple[State, State]:
        """(actor memory state, critic memory state); the actor's is empty when shared."""
        return unprefixed(PI, state), unprefixed(QF, state)

    def actor_hidden(
        self, obs: th.Tensor, state: State, starts: th.Tensor, critic_hidden: th.Tensor
    ) -> tuple[th.Tensor, State]:
        """The actor's memory outputs over (T, B) steps (the critic's, detached, when shared)."""
        if self.actor.encoder is None:
            return critic_hidden.detach(), state
        return self.actor.encoder(obs, state, starts)

    # -------------------------------------------------------------- acting
    def step(
        self, obs: th.Tensor, state: State, starts: th.Tensor, deterministic: bool = False
    ) -> tuple[th.Tensor, State]:
        """One step for a batch (``starts`` (B,)): actions in [-1, 1] and the next state."""
        starts2 = starts.view(1, -1)
        prev = th.where(starts.view(-1, 1), 0.0, state[PREV])
        pi_state, qf_state = self.split(state)
        hidden_q, qf_state = self.critic.encode(
            obs.unsqueeze(0), qf_state, starts2, prev.unsqueeze(0)
        )
        hidden_pi, pi_state = self.actor_hidden(obs.unsqueeze(0), pi_state, starts2, hidden_q)
        actions, _ = self.actor.sample(hidden_pi[0], deterministic)
        new_state = {**prefixed(QF, qf_state), **prefixed(PI, pi_state), PREV: actions}
        return actions, new_state

    def forward(self, obs: th.Tensor, state: State, starts: th.Tensor, deterministic: bool = False):  # type: ignore[override]
        return self.step(obs, state, starts, deterministic)

    def _predict(
        self,
        observation: th.Tensor,
        state: State,
        episode_starts: th.Tensor,  # type: ignore[override]
        deterministic: bool = False,
    ) -> tuple[th.Tensor, State]:
        return self.step(observation, state, episode_starts, deterministic)

    def predict(  # type: ignore[override]
        self,
        observation: np.ndarray,
        state: dict[str, np.ndarray] | None = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = False,
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Actions (in the env's units) and the next state, with sb3-contrib RecurrentPPO's
        convention."""
        return predict_recurrent(self, observation, state, episode_start, deterministic)
