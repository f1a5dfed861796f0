"""The Q-network policy of MemoryDQN: features -> memory -> MLP -> one Q-value per action."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor, FlattenExtractor
from stable_baselines3.common.type_aliases import Schedule
from torch import nn

from memworld.agents.off_policy.common import (
    DEFAULT_MEMORY,
    SequenceEncoder,
    mlp,
    predict_recurrent,
)
from memworld.agents.optimizers import optimizer_defaults
from memworld.memory.base import MemoryModule, State


class MemoryQNetwork(nn.Module):
    """One Q-network: a :class:`SequenceEncoder` and an MLP head over its outputs."""

    def __init__(self, encoder: SequenceEncoder, n_actions: int, net_arch, activation_fn) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = mlp(encoder.output_dim, n_actions, net_arch, activation_fn)

    def forward(
        self, obs: th.Tensor, state: State, episode_starts: th.Tensor
    ) -> tuple[th.Tensor, State]:
        """``obs`` (T, B, *obs_shape), ``episode_starts`` (T, B) -> Q (T, B, A) and the state."""
        out, state = self.encoder(obs, state, episode_starts)
        return self.head(out), state


class MemoryQPolicy(BasePolicy):
    """DQN policy with a memory module between the features and the Q head (and a target copy).

    Args:
        observation_space: the env's observation space.
        action_space: a Discrete space.
        lr_schedule: learning-rate schedule of the optimizer.
        net_arch: hidden layers of the MLP after the memory (default ``[64]``).
        activation_fn: activation of the MLP.
        features_extractor_class: the encoder before the memory (default: flatten).
        features_extractor_kwargs: its keyword arguments.
        normalize_images: scale uint8 images to [0, 1].
        optimizer_class: optimizer (default Adam).
        optimizer_kwargs: its keyword arguments (None: ``fused=True`` for Adam and AdamW).
        memory: registered memory name or a ``MemoryModule`` subclass (default ``"gru"``).
        memory_kwargs: keyword arguments of the memory module.
    """

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Discrete,
        lr_schedule: Schedule,
        net_arch: list[int] | None = None,
        activation_fn: type[nn.Module] = nn.ReLU,
        features_extractor_class: type[BaseFeaturesExtractor] = FlattenExtractor,
        features_extractor_kwargs: dict[str, Any] | None = None,
        normalize_images: bool = True,
        optimizer_class: type[th.optim.Optimizer] = th.optim.Adam,
        optimizer_kwargs: dict[str, Any] | None = None,
        memory: str | type[MemoryModule] = DEFAULT_MEMORY,
        memory_kwargs: dict[str, Any] | None = None,
    ) -> None:
        if not isinstance(action_space, spaces.Discrete):
            raise ValueError(
                f"action_space must be Discrete for MemoryDQN, got {action_space}; "
                "use MemorySAC for Box actions"
            )
        super().__init__(
            observation_space,
            action_space,
            features_extractor_class,
            features_extractor_kwargs,
            optimizer_class=optimizer_class,
            optimizer_kwargs=optimizer_defaults(optimizer_class, optimizer_kwargs),
            normalize_images=normalize_images,
        )
        self.net_arch = [64] if net_arch is None else list(net_arch)
        self.activation_fn = activation_fn
        self.memory_name = memory
        self.memory_kwargs = dict(memory_kwargs or {})
        self.q_net = self._make_q_net()
        self.q_net_target = self._make_q_net()
        self.q_net_target.load_state_dict(self.q_net.state_dict())
        self.q_net_target.requires_grad_(False)
        self.q_net_target.train(False)
        self.optimizer = self.optimizer_class(
            self.q_net.parameters(), lr=lr_schedule(1), **self.optimizer_kwargs
        )

    def _make_q_net(self) -> MemoryQNetwork:
        encoder = SequenceEncoder(
            self.observation_space,
            self.features_extractor_class(self.observation_space, **self.features_extractor_kwargs),
            self.memory_name,
            self.memory_kwargs,
            normalize_images=self.normalize_images,
        )
        return MemoryQNetwork(encoder, int(self.action_space.n), self.net_arch, self.activation_fn)

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
            lr_schedule=self._dummy_schedule,
        )
        return data

    @property
    def memory(self) -> MemoryModule:
        return self.q_net.encoder.memory

    def initial_state(self, batch_size: int) -> State:
        """The memory state of ``batch_size`` fresh episodes."""
        return self.memory.initial_state(batch_size, self.device)

    def set_training_mode(self, mode: bool) -> None:
        self.q_net.train(mode)
        self.training = mode

    def forward(self, obs: th.Tensor, state: State, episode_starts: th.Tensor):  # type: ignore[override]
        """One step for a batch: greedy actions (B,) and the next state (``episode_starts`` (B,))."""
        return self._predict(obs, state, episode_starts, deterministic=True)

    def step(
        self, obs: th.Tensor, state: State, episode_starts: th.Tensor
    ) -> tuple[th.Tensor, State]:
        """Q-values (B, A) of one step and the next state."""
        q, state = self.q_net(obs.unsqueeze(0), state, episode_starts.view(1, -1))
        return q[0], state

    def _predict(  # type: ignore[override]
        self,
        observation: th.Tensor,
        state: State,
        episode_starts: th.Tensor,
        deterministic: bool = True,
    ) -> tuple[th.Tensor, State]:
        q, state = self.step(observation, state, episode_starts)
        return q.argmax(dim=-1), state

    def predict(  # type: ignore[override]
        self,
        observation: np.ndarray,
        state: dict[str, np.ndarray] | None = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = False,
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Greedy actions and the next state (sb3-contrib RecurrentPPO's convention; the
        algorithm's ``predict`` adds epsilon-greedy exploration when not deterministic)."""
        return predict_recurrent(self, observation, state, episode_start, deterministic)
