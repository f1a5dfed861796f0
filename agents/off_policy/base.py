"""What MemoryDQN and MemorySAC share: rollouts that write per-env streams with memory states.

``collect_rollouts`` carries each env's memory state from step to step, writes
one row per env and step to the :class:`SequenceReplayBuffer` (with the state
the memory had before it), and one terminal row for each episode that ends
(its last observation, and whether it terminated or was cut by a time limit).
Everything else - ``learn``, logging, callbacks, ``save``/``load``, seeding -
is SB3's ``OffPolicyAlgorithm``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch as th
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.noise import ActionNoise
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm
from stable_baselines3.common.type_aliases import RolloutReturn, TrainFreq
from stable_baselines3.common.utils import obs_as_tensor, should_collect_more_steps
from stable_baselines3.common.vec_env import VecEnv

from memworld.agents.off_policy.sequence_buffer import SequenceReplayBuffer, action_dim
from memworld.agents.sb3_logging import stdout_logger
from memworld.memory.base import State, check_range


class MemoryOffPolicyAlgorithm(OffPolicyAlgorithm):
    """Base of the off-policy memory algorithms (see :class:`MemoryDQN`, :class:`MemorySAC`).

    Subclasses set ``self.lookahead`` (rows after the loss rows the targets
    need) before ``_setup_model`` and implement :meth:`_act` and ``train``.
    The sequence arguments (``seq_len``, ``burn_in``, ``state_stride``,
    ``stored_state``, ``prioritized``, ``priority_alpha``, ``priority_beta``,
    ``priority_eta``) are documented on the subclasses.
    """

    replay_buffer: SequenceReplayBuffer  # type: ignore[assignment]
    lookahead: int = 1

    def _init_sequences(
        self,
        seq_len: int,
        burn_in: int,
        state_stride: int | None,
        stored_state: bool,
        prioritized: bool,
        priority_alpha: float,
        priority_beta: float,
        priority_eta: float,
    ) -> None:
        check_range("seq_len", seq_len, 1, integer=True, fix="e.g. 16")
        check_range("burn_in", burn_in, 0, integer=True, fix="e.g. 0 or 8")
        if state_stride is not None:
            check_range("state_stride", state_stride, 1, integer=True, fix="e.g. seq_len // 2")
        self.seq_len, self.burn_in, self.state_stride = seq_len, burn_in, state_stride
        self.stored_state, self.prioritized = bool(stored_state), bool(prioritized)
        self.priority_alpha, self.priority_beta = priority_alpha, priority_beta
        self.priority_eta = priority_eta
        self._last_memory_state: State | None = None
        self._last_prev_actions: np.ndarray | None = None

    def _setup_model(self) -> None:
        self._setup_lr_schedule()
        self.set_random_seed(self.seed)
        self.replay_buffer = SequenceReplayBuffer(
            self.buffer_size,
            self.observation_space,
            self.action_space,
            n_envs=self.n_envs,
            seq_len=self.seq_len,
            burn_in=self.burn_in,
            lookahead=self.lookahead,
            state_stride=self.state_stride,
            store_states=self.stored_state,
            prioritized=self.prioritized,
            alpha=self.priority_alpha,
            beta=self.priority_beta,
            eta=self.priority_eta,
            device=self.device,
            seed=self.seed,
        )
        self.policy = self.policy_class(  # type: ignore[assignment]
            self.observation_space, self.action_space, self.lr_schedule, **self.policy_kwargs
        )
        self.policy = self.policy.to(self.device)
        self._convert_train_freq()
        self._last_memory_state = None
        self._last_prev_actions = None

    def _excluded_save_params(self) -> list[str]:
        return [*super()._excluded_save_params(), "_last_memory_state", "_last_prev_actions"]

    def _act(
        self, obs: th.Tensor, state: State, starts: th.Tensor, warmup: bool
    ) -> tuple[np.ndarray, np.ndarray, State]:
        """One rollout step: the env's actions, the actions as stored, the next state."""
        raise NotImplementedError

    def _batch_state(self, n_envs: int) -> State:
        state = self._last_memory_state
        if state is None or next(iter(state.values())).shape[0] != n_envs:
            state = self.policy.initial_state(n_envs)  # type: ignore[operator]
        return state

    def collect_rollouts(  # type: ignore[override]
        self,
        env: VecEnv,
        callback: BaseCallback,
        train_freq: TrainFreq,
        replay_buffer: SequenceReplayBuffer,
        action_noise: ActionNoise | None = None,
        learning_starts: int = 0,
        log_interval: int | None = None,
    ) -> RolloutReturn:
        """Step the envs ``train_freq`` steps, writing each env's stream (see the module)."""
        self.policy.set_training_mode(False)
        n_envs = env.num_envs
        steps, episodes = 0, 0
        state = self._batch_state(n_envs)
        width = action_dim(self.action_space)
        prev = self._last_prev_actions
        if prev is None or prev.shape[0] != n_envs:
            prev = np.zeros((n_envs, width), dtype=np.float32)
        callback.on_rollout_start()
        while should_collect_more_steps(train_freq, steps, episodes):
            starts_np = np.asarray(self._last_episode_starts, dtype=bool)
            prev[starts_np] = 0.0
            with th.no_grad():
                obs = obs_as_tensor(self._last_obs, self.device)  # type: ignore[arg-type]
                starts = th.as_tensor(starts_np, device=self.device)
                warmup = self.num_timesteps < learning_starts
                env_actions, stored, next_state = self._act(obs, state, starts, warmup)
            new_obs, rewards, dones, infos = env.step(env_actions)
            self.num_timesteps += n_envs
            steps += 1
            callback.update_locals(locals())
            if not callback.on_step():
                return RolloutReturn(steps * n_envs, episodes, continue_training=False)
            self._update_info_buffer(infos, dones)
            stored = stored.reshape(n_envs, width).astype(np.float32)
            replay_buffer.add(
                self._last_obs,  # type: ignore[arg-type]
                stored,
                prev,
                rewards,
                starts_np,
                np.zeros(n_envs, dtype=bool),
                np.zeros(n_envs, dtype=bool),
                state,
            )
            done_rows = np.flatnonzero(dones)
            if done_rows.size:
                self._add_terminal_rows(replay_buffer, done_rows, infos, stored, next_state)
            prev = stored.copy()
            state = next_state
            self._last_obs = new_obs  # type: ignore[assignment]
            self._last_episode_starts = dones
            self._update_current_progress_remaining(self.num_timesteps, self._total_timesteps)
            self._on_step()
            for _ in done_rows:
                episodes += 1
                self._episode_num += 1
                if log_interval is not None and self._episode_num % log_interval == 0:
                    self.dump_logs()
        self._last_memory_state = state
        self._last_prev_actions = prev
        callback.on_rollout_end()
        return RolloutReturn(steps * n_envs, episodes, continue_training=True)

    def _add_terminal_rows(
        self,
        replay_buffer: SequenceReplayBuffer,
        rows: np.ndarray,
        infos: list[dict],
        stored: np.ndarray,
        next_state: State,
    ) -> None:
        """One terminal row per finished episode: its last observation, with the state the
        memory had after the episode's last step (before the reset)."""
        terminal_obs, terminated = [], []
        for i in rows:
            obs = infos[i].get("terminal_observation")
            truncated = bool(infos[i].get("TimeLimit.truncated", False))
            if obs is None:  # no terminal observation: nothing to bootstrap from
                obs, truncated = np.zeros(self.observation_space.shape, np.float32), False
            terminal_obs.append(np.asarray(obs))
            terminated.append(not truncated)
        index = th.as_tensor(rows, device=self.device)
        rows_state = {k: v.index_select(0, index) for k, v in next_state.items()}
        n = rows.size
        replay_buffer.add(
            np.stack(terminal_obs),
            np.zeros((n, stored.shape[1]), dtype=np.float32),
            stored[rows],
            np.zeros(n, dtype=np.float32),
            np.zeros(n, dtype=bool),
            np.ones(n, dtype=bool),
            np.asarray(terminated),
            rows_state,
            env_indices=rows,
        )

    def predict(  # type: ignore[override]
        self,
        observation: np.ndarray,
        state: dict[str, np.ndarray] | None = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = False,
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Actions and the next state, with sb3-contrib RecurrentPPO's convention."""
        return self.policy.predict(observation, state, episode_start, deterministic)

    def _setup_learn(self, *args: Any, **kwargs: Any) -> tuple[int, BaseCallback]:
        # As MemoryPPO: print as SB3 does, but make no $TMPDIR/SB3-* folder without tensorboard_log.
        custom = self._custom_logger
        if self.tensorboard_log is None and not custom:
            self._logger = stdout_logger(self.verbose)
            self._custom_logger = True
        try:
            return super()._setup_learn(*args, **kwargs)
        finally:
            self._custom_logger = custom
