"""SB3 actor-critic policies with a memory module between the features and the heads.

The data path is SB3's (``features_extractor`` -> ``mlp_extractor`` -> heads)
with one :class:`memworld.memory.MemoryModule` inserted after the features extractor::

    obs (T*B, ...) -> features (T*B, F) -> memory (T, B, F) -> (T, B, D) -> mlp -> pi, V

The policy's recurrent state is a flat dict of batch-first tensors.  With a
shared memory it is the module's own state; with separate actor and critic
memories the keys are prefixed ``"pi."`` and ``"vf."``.  The algorithm and the
buffer only store, index and pass this dict on: they never look inside.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.distributions import Distribution
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.torch_layers import (
    BaseFeaturesExtractor,
    CombinedExtractor,
    FlattenExtractor,
    MlpExtractor,
    NatureCNN,
)
from stable_baselines3.common.type_aliases import PyTorchObs, Schedule
from torch import nn

from memworld.agents.off_policy.common import predict_recurrent, prefixed, unprefixed
from memworld.agents.optimizers import optimizer_defaults
from memworld.agents.value_norm import ValueNormalizer
from memworld.memory import make as make_memory
from memworld.memory.base import MemoryModule, State, check_range

DEFAULT_MEMORY = "lstm"
DEFAULT_VALUE_NORM = "popart"

PI_PREFIX, VF_PREFIX = "pi.", "vf."


class MemoryActorCriticPolicy(ActorCriticPolicy):
    """Actor-critic policy whose features pass through a memory module.

    Takes every argument of SB3's ``ActorCriticPolicy`` (``net_arch`` is the MLP
    after the memory; ``features_extractor_class`` the encoder before it) plus:

    Args:
        memory: registered name of a memory module (see ``memory.names()``) or a
            :class:`memworld.memory.MemoryModule` subclass.  It is built with
            ``input_dim`` = the features extractor's output width.  The default,
            ``"lstm"``, trains about 7x faster than ``"gru"`` on CPU (torch's
            fused LSTM kernels) and learns as well on the RepeatPrevious tasks.
        memory_kwargs: keyword arguments for the memory module (e.g.
            ``dict(hidden_dim=128)``).
        shared_memory: one memory for actor and critic (True, the default:
            half the compute) or a separate one for each (False).  A shared
            memory needs a shared features extractor.
        value_norm: how the critic's targets are scaled (see
            :mod:`memworld.agents.value_norm`): ``"popart"`` (default) learns
            returns in units of their running mean and spread and rescales the
            value head so its outputs are kept when the statistics move;
            ``"running"`` the same without the rescale; None raw returns.  With
            a shared memory it keeps the value loss's gradient into the memory
            the same size whatever the scale of the rewards.  Values that the
            policy returns are always in return units.
        value_grad_to_memory: factor on the value loss's gradient into a shared
            memory, in [0, 1] (1, default: unchanged; 0: the memory learns from
            the policy and auxiliary losses only).  The forward pass is unchanged.
    """

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        lr_schedule: Schedule,
        net_arch: list[int] | dict[str, list[int]] | None = None,
        activation_fn: type[nn.Module] = nn.Tanh,
        ortho_init: bool = True,
        use_sde: bool = False,
        log_std_init: float = 0.0,
        full_std: bool = True,
        use_expln: bool = False,
        squash_output: bool = False,
        features_extractor_class: type[BaseFeaturesExtractor] = FlattenExtractor,
        features_extractor_kwargs: dict[str, Any] | None = None,
        share_features_extractor: bool = True,
        normalize_images: bool = True,
        optimizer_class: type[th.optim.Optimizer] = th.optim.Adam,
        optimizer_kwargs: dict[str, Any] | None = None,
        memory: str | type[MemoryModule] = DEFAULT_MEMORY,
        memory_kwargs: dict[str, Any] | None = None,
        shared_memory: bool = True,
        value_norm: str | None = DEFAULT_VALUE_NORM,
        value_grad_to_memory: float = 1.0,
    ) -> None:
        check_range("value_grad_to_memory", value_grad_to_memory, 0.0, 1.0, fix="e.g. 1.0 or 0.0")
        if shared_memory and not share_features_extractor:
            raise ValueError(
                "shared_memory=True needs share_features_extractor=True: one memory cannot "
                "read two feature streams; set shared_memory=False for separate ones"
            )
        # Read by _build_mlp_extractor, which ActorCriticPolicy.__init__ calls.
        self.memory_name = memory
        self.memory_kwargs = dict(memory_kwargs or {})
        self.shared_memory = bool(shared_memory)
        self.value_grad_to_memory = float(value_grad_to_memory)
        self.value_norm = value_norm
        super().__init__(
            observation_space,
            action_space,
            lr_schedule,
            net_arch,
            activation_fn,
            ortho_init,
            use_sde,
            log_std_init,
            full_std,
            use_expln,
            squash_output,
            features_extractor_class,
            features_extractor_kwargs,
            share_features_extractor,
            normalize_images,
            optimizer_class,
            # SB3's PPO gives Adam eps=1e-5; the fused kernel on top (same arithmetic).
            optimizer_defaults(
                optimizer_class,
                optimizer_kwargs,
                **({"eps": 1e-5} if optimizer_class is th.optim.Adam else {}),
            ),
        )
        # After super().__init__: a module with buffers only, outside the optimizer.
        self.value_normalizer = None if value_norm is None else ValueNormalizer(value_norm)

    # ------------------------------------------------------------- building
    def _build_mlp_extractor(self) -> None:
        self.memory = make_memory(
            self.memory_name, input_dim=self.features_dim, **self.memory_kwargs
        )
        self.critic_memory = (
            None
            if self.shared_memory
            else make_memory(self.memory_name, input_dim=self.features_dim, **self.memory_kwargs)
        )
        self.mlp_extractor = MlpExtractor(
            self.memory.output_dim,
            net_arch=self.net_arch,
            activation_fn=self.activation_fn,
            device=self.device,
        )

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data.update(
            memory=self.memory_name,
            memory_kwargs=self.memory_kwargs,
            shared_memory=self.shared_memory,
            share_features_extractor=self.share_features_extractor,
            value_norm=self.value_norm,
            value_grad_to_memory=self.value_grad_to_memory,
        )
        return data

    # --------------------------------------------------------------- values
    def _values(self, latent_vf: th.Tensor) -> th.Tensor:
        """The value head's output in return units."""
        values = self.value_net(latent_vf)
        return (
            values if self.value_normalizer is None else self.value_normalizer.denormalize(values)
        )

    def normalize_values(self, values: th.Tensor) -> th.Tensor:
        """Return units -> the units the critic is trained in (unchanged without ``value_norm``)."""
        return values if self.value_normalizer is None else self.value_normalizer.normalize(values)

    def update_value_norm(self, returns: th.Tensor) -> None:
        """Fold a rollout's returns into the value statistics (nothing without ``value_norm``)."""
        if self.value_normalizer is not None:
            self.value_normalizer.update(returns, self.value_net)

    # ---------------------------------------------------------------- state
    def initial_state(self, batch_size: int) -> State:
        """The state of ``batch_size`` fresh episodes (a flat dict of batch-first tensors)."""
        pi_state = self.memory.initial_state(batch_size, self.device)
        if self.critic_memory is None:
            return pi_state
        vf_state = self.critic_memory.initial_state(batch_size, self.device)
        return _join(pi_state, vf_state)

    def _split(self, state: State) -> tuple[State, State | None]:
        if self.critic_memory is None:
            return state, None
        return unprefixed(PI_PREFIX, state), unprefixed(VF_PREFIX, state)

    def aux_loss(self, state: State) -> th.Tensor:
        """Sum of the memories' auxiliary losses for the last forward pass."""
        pi_state, vf_state = self._split(state)
        loss = self.memory.aux_loss(pi_state)
        if self.critic_memory is not None:
            loss = loss + self.critic_memory.aux_loss(vf_state)
        return loss

    def memory_diagnostics(self, state: State) -> dict[str, float]:
        """The memories' diagnostics; the critic's (if separate) are prefixed ``critic_``."""
        pi_state, vf_state = self._split(state)
        out = dict(self.memory.diagnostics(pi_state))
        if self.critic_memory is not None:
            out.update(
                {f"critic_{k}": v for k, v in self.critic_memory.diagnostics(vf_state).items()}
            )
        return out

    # -------------------------------------------------------------- forward
    def _latents(
        self, obs: PyTorchObs, state: State, episode_starts: th.Tensor
    ) -> tuple[th.Tensor, th.Tensor, State]:
        """Run ``T`` steps of ``B`` sequences through features, memory and MLP.

        Args:
            obs: observations, time-major and flattened: leading axis ``T * B``.
            state: the state before step 0 (batch ``B``).
            episode_starts: (T, B) bool; a row is reset before the step it starts on.

        Returns:
            latent_pi (T*B, Dpi), latent_vf (T*B, Dvf), the state after step T-1.
        """
        num_steps, batch = episode_starts.shape
        features = self.extract_features(obs)
        pi_features, vf_features = (
            (features, features) if self.share_features_extractor else features
        )
        pi_state, vf_state = self._split(state)
        # (T*B, F) -> (T, B, F): the memory wants time first.
        memory_pi, pi_state = self.memory(
            pi_features.reshape(num_steps, batch, -1), pi_state, episode_starts
        )
        if self.critic_memory is None:
            memory_vf, new_state = memory_pi, pi_state
            if self.value_grad_to_memory != 1.0 and th.is_grad_enabled():
                # Same values, the value loss's gradient into the memory scaled.
                scale = self.value_grad_to_memory
                memory_vf = scale * memory_pi + (1.0 - scale) * memory_pi.detach()
        else:
            memory_vf, vf_state = self.critic_memory(
                vf_features.reshape(num_steps, batch, -1), vf_state, episode_starts
            )
            new_state = _join(pi_state, vf_state)
        latent_pi = self.mlp_extractor.forward_actor(memory_pi.reshape(num_steps * batch, -1))
        latent_vf = self.mlp_extractor.forward_critic(memory_vf.reshape(num_steps * batch, -1))
        return latent_pi, latent_vf, new_state

    def forward(  # type: ignore[override]
        self,
        obs: PyTorchObs,
        state: State,
        episode_starts: th.Tensor,
        deterministic: bool = False,
    ) -> tuple[th.Tensor, th.Tensor, th.Tensor, State]:
        """One step for a batch: actions, values (B, 1), log-probs (B,) and the next state.

        ``episode_starts`` is (B,) bool.
        """
        latent_pi, latent_vf, state = self._latents(obs, state, episode_starts.view(1, -1))
        values = self._values(latent_vf)
        if isinstance(self.action_space, spaces.Discrete):
            actions, log_prob = _sample_categorical(self.action_net(latent_pi), deterministic)
            return actions, values, log_prob, state
        distribution = self._get_action_dist_from_latent(latent_pi)
        actions = distribution.get_actions(deterministic=deterministic)
        log_prob = distribution.log_prob(actions)
        actions = actions.reshape((-1, *self.action_space.shape))  # type: ignore[misc]
        return actions, values, log_prob, state

    def evaluate_actions(  # type: ignore[override]
        self,
        obs: PyTorchObs,
        actions: th.Tensor,
        state: State,
        episode_starts: th.Tensor,
    ) -> tuple[th.Tensor, th.Tensor, th.Tensor | None, State]:
        """Replay ``T`` steps of ``B`` sequences from ``state``.

        ``obs`` and ``actions`` are time-major with leading axis ``T * B``;
        ``episode_starts`` is (T, B).  Returns values (T*B, 1), log-probs (T*B,),
        entropy (T*B,) and the state after the last step.
        """
        latent_pi, latent_vf, state = self._latents(obs, state, episode_starts)
        distribution = self._get_action_dist_from_latent(latent_pi)
        return (
            self._values(latent_vf),
            distribution.log_prob(actions),
            distribution.entropy(),
            state,
        )

    def get_distribution(  # type: ignore[override]
        self, obs: PyTorchObs, state: State, episode_starts: th.Tensor
    ) -> tuple[Distribution, State]:
        """The action distribution of one step (``episode_starts`` (B,)) and the next state."""
        latent_pi, _, state = self._latents(obs, state, episode_starts.view(1, -1))
        return self._get_action_dist_from_latent(latent_pi), state

    def predict_values(  # type: ignore[override]
        self, obs: PyTorchObs, state: State, episode_starts: th.Tensor
    ) -> th.Tensor:
        """Values (B, 1) of one step from ``state`` (``episode_starts`` (B,))."""
        _, latent_vf, _ = self._latents(obs, state, episode_starts.view(1, -1))
        return self._values(latent_vf)

    def _predict(  # type: ignore[override]
        self,
        observation: PyTorchObs,
        state: State,
        episode_starts: th.Tensor,
        deterministic: bool = False,
    ) -> tuple[th.Tensor, State]:
        distribution, state = self.get_distribution(observation, state, episode_starts)
        return distribution.get_actions(deterministic=deterministic), state

    def predict(  # type: ignore[override]
        self,
        observation: np.ndarray | dict[str, np.ndarray],
        state: dict[str, np.ndarray] | None = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = False,
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Actions for a batch of observations, with sb3-contrib RecurrentPPO's convention.

        Args:
            observation: one observation or a batch (one per env).
            state: the state this method returned last time (a dict of numpy
                arrays, batch-first), or None for fresh episodes.
            episode_start: (B,) bool, True where an episode starts with this
                observation (its state is reset first); None means all False.
            deterministic: take the distribution's mode instead of sampling.

        Returns:
            the actions and the next state; pass it back in the next call.
        """
        return predict_recurrent(self, observation, state, episode_start, deterministic)


class MemoryActorCriticCnnPolicy(MemoryActorCriticPolicy):
    """:class:`MemoryActorCriticPolicy` with SB3's ``NatureCNN`` encoder for image observations."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("features_extractor_class", NatureCNN)
        super().__init__(*args, **kwargs)


class MemoryMultiInputActorCriticPolicy(MemoryActorCriticPolicy):
    """:class:`MemoryActorCriticPolicy` with SB3's ``CombinedExtractor`` for Dict observations."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("features_extractor_class", CombinedExtractor)
        super().__init__(*args, **kwargs)


def _sample_categorical(logits: th.Tensor, deterministic: bool) -> tuple[th.Tensor, th.Tensor]:
    """Actions (B,) and their log-probs from logits (B, n): what SB3's categorical
    distribution computes, draw for draw, without building a distribution object (whose
    argument checks cost more than the sampling in a one-step rollout)."""
    log_probs = logits - logits.logsumexp(dim=-1, keepdim=True)
    probs = th.softmax(log_probs, dim=-1)
    actions = probs.argmax(dim=-1) if deterministic else th.multinomial(probs, 1, True).squeeze(-1)
    return actions, log_probs.gather(-1, actions.unsqueeze(-1)).squeeze(-1)


def _join(pi_state: State, vf_state: State) -> State:
    return {**prefixed(PI_PREFIX, pi_state), **prefixed(VF_PREFIX, vf_state)}
