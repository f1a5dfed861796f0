"""MemorySAC: soft actor-critic with memory modules, trained on stored-state sequences.

Each gradient step draws windows of rows from the :class:`SequenceReplayBuffer`.
The memories are warmed on the first ``burn_in`` rows without gradients, then
run over the rest in one forward for the whole batch: the critic's memory reads
the features and the previous action, the actor's memory (separate by default)
the features.  Targets are one-step soft Bellman targets from the target
critic over the same window, stopping at episode ends (a time-limit cut still
bootstraps from the terminal row).  Twin critics, automatic entropy tuning.
"""

from __future__ import annotations

from typing import Any, ClassVar, TypeVar

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.type_aliases import GymEnv, MaybeCallback, Schedule

from memworld.agents.off_policy.base import MemoryOffPolicyAlgorithm
from memworld.agents.off_policy.common import update_target
from memworld.agents.off_policy.sac_policy import PREV, MemorySACPolicy
from memworld.agents.off_policy.targets import n_step_returns
from memworld.memory.base import State, check_range

SelfMemorySAC = TypeVar("SelfMemorySAC", bound="MemorySAC")


class MemorySAC(MemoryOffPolicyAlgorithm):
    """SAC with any memory module in the actor and the twin critics (Box actions).

    Args:
        policy: ``"MlpPolicy"`` (alias ``"MemoryPolicy"``) or a :class:`MemorySACPolicy`
            subclass; choose the memory with ``policy_kwargs=dict(memory="gru")`` and
            share one between actor and critic with ``shared_memory=True``.
        env: the environment (an SB3 ``VecEnv``, a Gymnasium env or an id); Box actions.
        learning_rate: Adam learning rate of actor, critic and entropy coefficient.
        buffer_size: rows kept in the replay buffer, all envs together.
        learning_starts: env steps of uniform random actions before learning starts.
        batch_size: windows (sequences) per gradient step.
        tau: target-critic soft update coefficient.
        gamma: discount factor.
        train_freq: env steps (per env) between updates, or ``(n, "step")``.
        gradient_steps: gradient steps per update (-1: as many as env steps collected).
        ent_coef: entropy coefficient, ``"auto"`` (learned, starting at 1) or ``"auto_0.1"``.
        target_entropy: target of the learned entropy (``"auto"``: -action_dim).
        target_update_interval: gradient steps between target-critic updates.
        aux_coef: weight of the memory modules' ``aux_loss`` in the critic's and the
            actor's losses.
        seq_len: rows per window that carry the loss.
        burn_in: rows before them that only warm the memories (no loss, no gradient).
        state_stride: rows between stored memory states, where windows start
            (None: ``max(1, seq_len // 2)``).
        stored_state: replay each window from the memory states the rollout had
            there (True) or from the initial state (False: zero start).
        stats_window_size: episodes averaged for ``rollout/`` logging.
        tensorboard_log: TensorBoard log folder (None: no TensorBoard).
        policy_kwargs: keyword arguments of the policy (see :class:`MemorySACPolicy`).
        verbose: 0 silent, 1 info, 2 debug.
        seed: seed of the random generators.
        device: ``"cpu"``, ``"cuda"`` or ``"auto"``.
        _init_setup_model: build the networks now.
    """

    policy_aliases: ClassVar[dict[str, type[BasePolicy]]] = {
        "MlpPolicy": MemorySACPolicy,
        "MemoryPolicy": MemorySACPolicy,
    }
    policy: MemorySACPolicy

    def __init__(
        self,
        policy: str | type[MemorySACPolicy],
        env: GymEnv | str,
        learning_rate: float | Schedule = 1e-3,
        buffer_size: int = 100_000,
        learning_starts: int = 1_000,
        batch_size: int = 32,
        tau: float = 0.005,
        gamma: float = 0.99,
        train_freq: int | tuple[int, str] = 1,
        gradient_steps: int = 1,
        ent_coef: str | float = "auto",
        target_entropy: str | float = "auto",
        target_update_interval: int = 1,
        aux_coef: float = 1.0,
        seq_len: int = 16,
        burn_in: int = 0,
        state_stride: int | None = None,
        stored_state: bool = True,
        stats_window_size: int = 100,
        tensorboard_log: str | None = None,
        policy_kwargs: dict[str, Any] | None = None,
        verbose: int = 0,
        seed: int | None = None,
        device: th.device | str = "auto",
        _init_setup_model: bool = True,
    ) -> None:
        check_range("target_update_interval", target_update_interval, 1, integer=True, fix="e.g. 1")
        check_range("tau", tau, 0.0, 1.0, fix="e.g. 0.005")
        super().__init__(
            policy,
            env,
            learning_rate,
            buffer_size=buffer_size,
            learning_starts=learning_starts,
            batch_size=batch_size,
            tau=tau,
            gamma=gamma,
            train_freq=train_freq,
            gradient_steps=gradient_steps,
            policy_kwargs=policy_kwargs,
            stats_window_size=stats_window_size,
            tensorboard_log=tensorboard_log,
            verbose=verbose,
            device=device,
            seed=seed,
            sde_support=False,
            support_multi_env=True,
            supported_action_spaces=(spaces.Box,),
        )
        self.ent_coef = ent_coef
        self.target_entropy = target_entropy
        self.target_update_interval = target_update_interval
        self.aux_coef = aux_coef
        self.log_ent_coef: th.Tensor | None = None
        self.ent_coef_optimizer: th.optim.Adam | None = None
        self.lookahead = 1
        self._init_sequences(seq_len, burn_in, state_stride, stored_state, False, 0.0, 0.0, 0.0)
        if _init_setup_model:
            self._setup_model()

    def _setup_model(self) -> None:
        super()._setup_model()
        if self.target_entropy == "auto":
            self.target_entropy = -float(np.prod(self.action_space.shape))
        self.target_entropy = float(self.target_entropy)
        if isinstance(self.ent_coef, str):
            if not self.ent_coef.startswith("auto"):
                raise ValueError(
                    f"ent_coef must be a float, 'auto' or 'auto_<init>', got {self.ent_coef!r}"
                )
            init = float(self.ent_coef.split("_")[1]) if "_" in self.ent_coef else 1.0
            check_range("ent_coef's initial value", init, 0.0, fix="e.g. 'auto_0.1'")
            self.log_ent_coef = th.log(th.ones(1, device=self.device) * init).requires_grad_(True)
            self.ent_coef_optimizer = th.optim.Adam([self.log_ent_coef], lr=self.lr_schedule(1))
        else:
            self.ent_coef_tensor = th.tensor(float(self.ent_coef), device=self.device)
        self._explore_rng = np.random.default_rng(self.seed)

    def _get_torch_save_params(self) -> tuple[list[str], list[str]]:
        state_dicts = ["policy", "policy.actor.optimizer", "policy.critic.optimizer"]
        if self.ent_coef_optimizer is not None:
            return [*state_dicts, "ent_coef_optimizer"], ["log_ent_coef"]
        return state_dicts, ["ent_coef_tensor"]

    def _excluded_save_params(self) -> list[str]:
        return [*super()._excluded_save_params(), "_explore_rng"]

    # ---------------------------------------------------------------- rollout
    def _act(
        self, obs: th.Tensor, state: State, starts: th.Tensor, warmup: bool
    ) -> tuple[np.ndarray, np.ndarray, State]:
        actions, next_state = self.policy.step(obs, state, starts)
        if warmup:
            random = self._explore_rng.uniform(-1.0, 1.0, size=tuple(actions.shape))
            actions = th.as_tensor(random, dtype=actions.dtype, device=actions.device)
            next_state[PREV] = actions
        scaled = actions.cpu().numpy()
        return self.policy.unscale_action(scaled), scaled, next_state

    # ------------------------------------------------------------------ train
    def train(self, gradient_steps: int, batch_size: int = 32) -> None:
        """``gradient_steps`` SAC steps on windows of ``batch_size`` sequences."""
        policy = self.policy
        policy.set_training_mode(True)
        optimizers = [policy.actor.optimizer, policy.critic.optimizer]
        if self.ent_coef_optimizer is not None:
            optimizers.append(self.ent_coef_optimizer)
        self._update_learning_rate(optimizers)
        # kept as tensors: one host sync per call, not per step
        logs: dict[str, list[th.Tensor]] = {"critic_loss": [], "actor_loss": [], "ent_coef": []}
        for _ in range(gradient_steps):
            data = self.replay_buffer.sample(batch_size)
            for name, value in self.sac_step(data).items():
                logs[name].append(value)
            self._n_updates += 1
            if self._n_updates % self.target_update_interval == 0:
                update_target(policy.critic, policy.critic_target, self.tau)
        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
        for name, values in logs.items():
            if values:
                self.logger.record(f"train/{name}", float(th.stack(values).mean()))

    def sac_step(self, data) -> dict[str, th.Tensor]:
        """One update of the entropy coefficient, the critics and the actor on a batch;
        returns the losses and the entropy coefficient as detached scalar tensors."""
        policy, b, s = self.policy, self.burn_in, self.seq_len
        batch = data.observations.shape[1]
        state = data.states if data.states is not None else policy.initial_state(batch)
        pi_state, qf_state = policy.split(state)
        obs, starts, prev = data.observations, data.episode_starts, data.prev_actions
        with th.no_grad():
            hidden_target, _ = policy.critic_target.encode(obs, qf_state, starts, prev)
            if b:
                burn_q, qf_state = policy.critic.encode(obs[:b], qf_state, starts[:b], prev[:b])
                _, pi_state = policy.actor_hidden(obs[:b], pi_state, starts[:b], burn_q)
        hidden_q, qf_final = policy.critic.encode(obs[b:], qf_state, starts[b:], prev[b:])
        hidden_pi, pi_final = policy.actor_hidden(obs[b:], pi_state, starts[b:], hidden_q)
        actions_pi, log_prob = policy.actor.sample(hidden_pi)  # (s+1, B, A), (s+1, B)
        mask = self.replay_buffer.loss_mask(data).float()
        weight = mask * data.weights[None, :]
        count = mask.sum().clamp(min=1.0)

        ent_coef_loss = None
        if self.log_ent_coef is not None:
            ent_coef = th.exp(self.log_ent_coef.detach())
            target = (log_prob[:s] + self.target_entropy).detach()
            ent_coef_loss = -(self.log_ent_coef * target * mask).sum() / count
            self.ent_coef_optimizer.zero_grad(set_to_none=True)
            ent_coef_loss.backward()
            self.ent_coef_optimizer.step()
        else:
            ent_coef = self.ent_coef_tensor

        with th.no_grad():
            q1_next, q2_next = policy.critic_target.q(hidden_target[b:], actions_pi.detach())
            values = th.min(q1_next, q2_next) - ent_coef * log_prob.detach()
            targets = n_step_returns(
                data.rewards[b:],
                data.is_terminal[b:],
                data.terminated[b:],
                values,
                self.gamma,
                1,
                s,
            )
        q1, q2 = policy.critic.q(hidden_q[:s], data.actions[b : b + s])
        critic_loss = 0.5 * (((q1 - targets) ** 2 + (q2 - targets) ** 2) * weight).sum() / count
        aux = self.aux_coef * policy.critic.encoder.memory.aux_loss(qf_final)
        policy.critic.optimizer.zero_grad(set_to_none=True)
        (critic_loss + aux).backward()
        policy.critic.optimizer.step()

        q1_pi, q2_pi = policy.critic.q(hidden_q[:s].detach(), actions_pi[:s])
        actor_loss = ((ent_coef * log_prob[:s] - th.min(q1_pi, q2_pi)) * weight).sum() / count
        if policy.actor.encoder is not None:
            actor_loss = actor_loss + self.aux_coef * policy.actor.encoder.memory.aux_loss(pi_final)
        policy.actor.optimizer.zero_grad(set_to_none=True)
        actor_loss.backward()
        policy.actor.optimizer.step()
        return {
            "critic_loss": critic_loss.detach(),
            "actor_loss": actor_loss.detach(),
            "ent_coef": ent_coef.detach().reshape(()),
        }

    def learn(
        self: SelfMemorySAC,
        total_timesteps: int,
        callback: MaybeCallback = None,
        log_interval: int = 4,
        tb_log_name: str = "MemorySAC",
        reset_num_timesteps: bool = True,
        progress_bar: bool = False,
    ) -> SelfMemorySAC:
        return super().learn(
            total_timesteps=total_timesteps,
            callback=callback,
            log_interval=log_interval,
            tb_log_name=tb_log_name,
            reset_num_timesteps=reset_num_timesteps,
            progress_bar=progress_bar,
        )
