"""MemoryDQN: double DQN over sequences replayed from stored memory states (R2D2-style).

Each gradient step draws windows of rows from the :class:`SequenceReplayBuffer`,
warms the memory on the first ``burn_in`` rows without gradients, then runs the
online network over the rest in one memory forward for the whole batch.  The
target network runs over the same window from the same stored state.  Targets
are n-step double-DQN returns that stop at episode ends, optionally in the
rescaled value space h(x); priorities (optional) mix the largest and the mean
TD error of each window.
"""

from __future__ import annotations

from typing import Any, ClassVar, TypeVar

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.type_aliases import GymEnv, MaybeCallback, Schedule
from stable_baselines3.common.utils import LinearSchedule

from memworld.agents.off_policy.base import MemoryOffPolicyAlgorithm
from memworld.agents.off_policy.common import update_target
from memworld.agents.off_policy.q_policy import MemoryQPolicy
from memworld.agents.off_policy.targets import n_step_returns, rescale, unrescale
from memworld.memory.base import State, check_range

SelfMemoryDQN = TypeVar("SelfMemoryDQN", bound="MemoryDQN")


class MemoryDQN(MemoryOffPolicyAlgorithm):
    """Double DQN with any memory module, trained on stored-state sequences.

    Args:
        policy: ``"MlpPolicy"`` (alias ``"MemoryPolicy"``) or a :class:`MemoryQPolicy`
            subclass; choose the memory with ``policy_kwargs=dict(memory="gru")``.
        env: the environment (an SB3 ``VecEnv``, a Gymnasium env or an id); Discrete actions.
        learning_rate: Adam learning rate, or a schedule.
        buffer_size: rows kept in the replay buffer, all envs together.
        learning_starts: env steps of random actions before learning starts.
        batch_size: windows (sequences) per gradient step.
        tau: target-network update coefficient (1: hard copy).
        gamma: discount factor.
        train_freq: env steps (per env) between updates, or ``(n, "step")``.
        gradient_steps: gradient steps per update (-1: as many as env steps collected).
        target_update_interval: env steps between target-network updates.
        exploration_fraction: fraction of training over which epsilon falls.
        exploration_initial_eps: epsilon at the start.
        exploration_final_eps: epsilon at the end.
        max_grad_norm: gradient clipping norm.
        aux_coef: weight of the memory module's ``aux_loss`` in the loss.
        n_steps: rewards summed before bootstrapping (n-step returns).
        seq_len: rows per window that carry the loss.
        burn_in: rows before them that only warm the memory (no loss, no gradient).
        state_stride: rows between stored memory states, where windows start
            (None: ``max(1, seq_len // 2)``).
        stored_state: replay each window from the memory state the rollout had
            there (True) or from the memory's initial state (False: zero start).
        value_rescaling: learn Q in the rescaled space h(x) = sign(x)(sqrt(|x|+1)-1)
            + 1e-3 x and bootstrap through its inverse.
        prioritized: prioritized sequence replay.
        priority_alpha: priority exponent.
        priority_beta: importance-weight exponent.
        priority_eta: weight of the window's largest TD error in its priority.
        stats_window_size: episodes averaged for ``rollout/`` logging.
        tensorboard_log: TensorBoard log folder (None: no TensorBoard).
        policy_kwargs: keyword arguments of the policy (see :class:`MemoryQPolicy`).
        verbose: 0 silent, 1 info, 2 debug.
        seed: seed of the random generators.
        device: ``"cpu"``, ``"cuda"`` or ``"auto"``.
        _init_setup_model: build the networks now.
    """

    policy_aliases: ClassVar[dict[str, type[BasePolicy]]] = {
        "MlpPolicy": MemoryQPolicy,
        "MemoryPolicy": MemoryQPolicy,
    }
    policy: MemoryQPolicy

    def __init__(
        self,
        policy: str | type[MemoryQPolicy],
        env: GymEnv | str,
        learning_rate: float | Schedule = 1e-3,
        buffer_size: int = 100_000,
        learning_starts: int = 1_000,
        batch_size: int = 32,
        tau: float = 1.0,
        gamma: float = 0.99,
        train_freq: int | tuple[int, str] = 1,
        gradient_steps: int = 1,
        target_update_interval: int = 1_000,
        exploration_fraction: float = 0.3,
        exploration_initial_eps: float = 1.0,
        exploration_final_eps: float = 0.05,
        max_grad_norm: float = 10.0,
        aux_coef: float = 1.0,
        n_steps: int = 1,
        seq_len: int = 16,
        burn_in: int = 0,
        state_stride: int | None = None,
        stored_state: bool = True,
        value_rescaling: bool = False,
        prioritized: bool = False,
        priority_alpha: float = 0.9,
        priority_beta: float = 0.6,
        priority_eta: float = 0.9,
        stats_window_size: int = 100,
        tensorboard_log: str | None = None,
        policy_kwargs: dict[str, Any] | None = None,
        verbose: int = 0,
        seed: int | None = None,
        device: th.device | str = "auto",
        _init_setup_model: bool = True,
    ) -> None:
        check_range("n_steps", n_steps, 1, integer=True, fix="e.g. 1, 3 or 5")
        check_range(
            "target_update_interval", target_update_interval, 1, integer=True, fix="e.g. 1000"
        )
        check_range("exploration_fraction", exploration_fraction, 0.0, 1.0, fix="e.g. 0.3")
        check_range("tau", tau, 0.0, 1.0, fix="1.0 for a hard copy, e.g. 0.005 for soft updates")
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
            n_steps=n_steps,
            policy_kwargs=policy_kwargs,
            stats_window_size=stats_window_size,
            tensorboard_log=tensorboard_log,
            verbose=verbose,
            device=device,
            seed=seed,
            sde_support=False,
            support_multi_env=True,
            supported_action_spaces=(spaces.Discrete,),
        )
        self.target_update_interval = target_update_interval
        self.exploration_fraction = exploration_fraction
        self.exploration_initial_eps = exploration_initial_eps
        self.exploration_final_eps = exploration_final_eps
        self.exploration_rate = exploration_initial_eps
        self.max_grad_norm = max_grad_norm
        self.aux_coef = aux_coef
        self.value_rescaling = bool(value_rescaling)
        self.lookahead = n_steps
        self._n_calls = 0
        self._init_sequences(
            seq_len,
            burn_in,
            state_stride,
            stored_state,
            prioritized,
            priority_alpha,
            priority_beta,
            priority_eta,
        )
        if _init_setup_model:
            self._setup_model()

    def _setup_model(self) -> None:
        self.lookahead = self.n_steps
        super()._setup_model()
        self.exploration_schedule = LinearSchedule(
            self.exploration_initial_eps, self.exploration_final_eps, self.exploration_fraction
        )
        self._explore_rng = np.random.default_rng(self.seed)

    def _get_torch_save_params(self) -> tuple[list[str], list[str]]:
        return ["policy", "policy.optimizer"], []

    def _excluded_save_params(self) -> list[str]:
        return [*super()._excluded_save_params(), "_explore_rng"]

    # ---------------------------------------------------------------- rollout
    def _on_step(self) -> None:
        self._n_calls += 1
        if self._n_calls % max(self.target_update_interval // self.n_envs, 1) == 0:
            update_target(self.policy.q_net, self.policy.q_net_target, self.tau)
        self.exploration_rate = self.exploration_schedule(self._current_progress_remaining)
        self.logger.record("rollout/exploration_rate", self.exploration_rate)

    def _act(
        self, obs: th.Tensor, state: State, starts: th.Tensor, warmup: bool
    ) -> tuple[np.ndarray, np.ndarray, State]:
        q, next_state = self.policy.step(obs, state, starts)
        if warmup:
            actions = self._explore_rng.integers(0, self.action_space.n, size=starts.shape[0])
        else:
            actions = self._epsilon_greedy(q.argmax(-1).cpu().numpy(), self.exploration_rate)
        return actions, actions.astype(np.float32), next_state

    def _epsilon_greedy(self, greedy: np.ndarray, epsilon: float) -> np.ndarray:
        explore = self._explore_rng.random(greedy.shape[0]) < epsilon
        random = self._explore_rng.integers(0, self.action_space.n, size=greedy.shape[0])
        return np.where(explore, random, greedy)

    def predict(  # type: ignore[override]
        self,
        observation: np.ndarray,
        state: dict[str, np.ndarray] | None = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = False,
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Greedy actions (epsilon-greedy unless ``deterministic``) and the next state,
        with sb3-contrib RecurrentPPO's convention; the memory always advances."""
        actions, state = self.policy.predict(observation, state, episode_start, deterministic)
        if not deterministic and self.exploration_rate > 0:
            rng = getattr(self, "_explore_rng", None) or np.random.default_rng()
            flat = np.asarray(actions).reshape(-1)
            explore = rng.random(flat.shape[0]) < self.exploration_rate
            flat = np.where(explore, rng.integers(0, self.action_space.n, flat.shape[0]), flat)
            actions = flat.reshape(np.shape(actions))
        return actions, state

    # ------------------------------------------------------------------ train
    def train(self, gradient_steps: int, batch_size: int = 32) -> None:
        """``gradient_steps`` double-DQN steps on windows of ``batch_size`` sequences."""
        self.policy.set_training_mode(True)
        self._update_learning_rate(self.policy.optimizer)
        losses, q_means = [], []  # kept as tensors: one host sync per call, not per step
        for _ in range(gradient_steps):
            data = self.replay_buffer.sample(batch_size)
            loss, td, mask, q_mean = self.sequence_loss(data)
            self.policy.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            th.nn.utils.clip_grad_norm_(self.policy.q_net.parameters(), self.max_grad_norm)
            self.policy.optimizer.step()
            if self.prioritized:
                self.replay_buffer.update_priorities(data.env_indices, data.start_rows, td, mask)
            losses.append(loss.detach())
            q_means.append(q_mean)
        self._n_updates += gradient_steps
        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
        if losses:
            self.logger.record("train/loss", float(th.stack(losses).mean()))
            self.logger.record("train/q_mean", float(th.stack(q_means).mean()))

    def sequence_loss(self, data) -> tuple[th.Tensor, th.Tensor, th.Tensor, th.Tensor]:
        """Loss of one batch of windows: (loss, TD errors (seq_len, B), loss mask, mean Q
        (a detached scalar tensor))."""
        policy, b, s, n = self.policy, self.burn_in, self.seq_len, self.n_steps
        batch = data.observations.shape[1]
        state = data.states if data.states is not None else policy.initial_state(batch)
        obs, starts = data.observations, data.episode_starts
        with th.no_grad():
            hidden_target, _ = policy.q_net_target.encoder(obs, state, starts)
            q_target = policy.q_net_target.head(hidden_target[b:])  # (s + n, B, A)
            if b:  # the memory alone: the burn-in rows need no Q-values
                _, state = policy.q_net.encoder(obs[:b], state, starts[:b])
        q, final_state = policy.q_net(obs[b:], state, starts[b:])  # (s + n, B, A)
        with th.no_grad():
            next_actions = q.detach().argmax(-1, keepdim=True)
            values = q_target.gather(-1, next_actions).squeeze(-1)
            if self.value_rescaling:
                values = unrescale(values)
            returns = n_step_returns(
                data.rewards[b:],
                data.is_terminal[b:],
                data.terminated[b:],
                values,
                self.gamma,
                n,
                s,
            )
            targets = rescale(returns) if self.value_rescaling else returns
        taken = q[:s].gather(-1, data.actions[b : b + s].long()).squeeze(-1)
        mask = self.replay_buffer.loss_mask(data)
        maskf = mask.float()
        per_row = th.nn.functional.smooth_l1_loss(taken, targets, reduction="none")
        loss = (per_row * maskf * data.weights[None, :]).sum() / maskf.sum().clamp(min=1.0)
        loss = loss + self.aux_coef * policy.memory.aux_loss(final_state)
        return loss, (taken - targets).detach(), mask, taken.detach().mean()

    def learn(
        self: SelfMemoryDQN,
        total_timesteps: int,
        callback: MaybeCallback = None,
        log_interval: int = 4,
        tb_log_name: str = "MemoryDQN",
        reset_num_timesteps: bool = True,
        progress_bar: bool = False,
    ) -> SelfMemoryDQN:
        return super().learn(
            total_timesteps=total_timesteps,
            callback=callback,
            log_interval=log_interval,
            tb_log_name=tb_log_name,
            reset_num_timesteps=reset_num_timesteps,
            progress_bar=progress_bar,
        )
