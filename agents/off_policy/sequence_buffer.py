"""A replay buffer of per-env streams that samples fixed-length sequences for memory policies.

Each env writes its own stream of rows, in the order it lived them.  A row is
either a *step* (an observation, the action taken on it, the reward that
followed) or an episode's *terminal row* (the last observation, on which no
action was taken, and whether the episode terminated or was cut by a time
limit).  Episodes follow each other in the stream: a terminal row, then the
next episode's first row, flagged ``episode_start``.

:meth:`SequenceReplayBuffer.sample` draws windows of ``burn_in + seq_len +
lookahead`` consecutive rows of one stream.  A window may hold several
episodes: the memory is reset where ``episode_starts`` says so (a mask, no
padding copies) and the terminal rows carry no loss.  The first ``burn_in``
rows only warm the memory; the loss is on the next ``seq_len``; the last
``lookahead`` rows give the targets of the last loss rows (n-step returns).

Memory state: every ``state_stride`` rows the buffer keeps the memory state the
rollout had before that row (the *stored state*), and windows start only on
those rows, so a window's memory is replayed from the state the agent really
had there.  With ``store_states=False`` nothing is kept and windows start from
the memory's initial state (a *zero start*).

Prioritized replay (optional): one priority per stored-state slot, a mix of
the largest and the mean absolute TD error of the window's loss rows
(``eta * max + (1 - eta) * mean``); windows are drawn in proportion to
``priority ** alpha`` and weighted by ``(N * P) ** -beta`` scaled to a largest
weight of 1.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch as th
from gymnasium import spaces

from memworld.memory.base import State, check_positive_int, check_range

TORCH_DTYPES = {
    np.dtype(np.float32): th.float32,
    np.dtype(np.float64): th.float32,
    np.dtype(np.uint8): th.uint8,
    np.dtype(np.int64): th.int64,
    np.dtype(np.int32): th.int64,
    np.dtype(np.int8): th.int64,
    np.dtype(np.bool_): th.float32,
}


class SequenceSamples(NamedTuple):
    """A batch of ``B`` windows of ``L`` rows, time-major.

    Attributes:
        observations: (L, B, *obs_shape).
        actions: (L, B, action_dim) as stored (zeros on terminal rows).
        prev_actions: (L, B, action_dim): the action before each row's
            observation in its episode (zeros on an episode's first row).
        rewards: (L, B).
        episode_starts: (L, B) bool; the memory is reset before such a row.
        is_terminal: (L, B) bool; the row is an episode's last observation (no action).
        terminated: (L, B) bool; a terminal row whose episode ended in the task
            (no bootstrap), as opposed to a time-limit cut.
        states: the memory state before row 0 (batch-first), or None (zero start).
        weights: (B,) importance weights (ones without prioritized replay).
        env_indices: (B,) numpy: the stream each window comes from.
        start_rows: (B,) numpy: the absolute row (in its stream) each window starts on.
    """

    observations: th.Tensor
    actions: th.Tensor
    prev_actions: th.Tensor
    rewards: th.Tensor
    episode_starts: th.Tensor
    is_terminal: th.Tensor
    terminated: th.Tensor
    states: State | None
    weights: th.Tensor
    env_indices: np.ndarray
    start_rows: np.ndarray


def action_dim(action_space: spaces.Space) -> int:
    """Width of a stored action: 1 for Discrete, the flat size for Box."""
    if isinstance(action_space, spaces.Discrete):
        return 1
    if isinstance(action_space, spaces.Box):
        return int(np.prod(action_space.shape))
    raise ValueError(
        f"action_space must be Discrete or Box for the sequence replay buffer, "
        f"got {type(action_space).__name__}"
    )


class SequenceReplayBuffer:
    """Per-env streams of rows, sampled as windows replayed from stored memory states.

    Args:
        buffer_size: rows kept in all (split evenly between the envs, each
            stream rounded down to a multiple of ``state_stride``).
        observation_space: a Box, Discrete or MultiBinary space (not Dict).
        action_space: Discrete or Box.
        n_envs: number of streams (one per env).
        seq_len: loss rows per window (>= 1).
        burn_in: rows before the loss rows that only warm the memory (>= 0).
        lookahead: rows after the loss rows that only give targets (>= 0; n-step
            returns need ``n``, one-step SAC/DQN targets 1).
        state_stride: keep the memory state every this many rows; windows start
            only there.  None (default): ``max(1, seq_len // 2)`` (windows overlap by half).
        store_states: keep the rollout's memory states (True) or replay every
            window from the memory's initial state (False).
        prioritized: draw windows in proportion to their TD-error priority.
        alpha: priority exponent (0: uniform).
        beta: importance-weight exponent.
        eta: weight of the largest TD error in a window's priority (the rest: the mean).
        device: torch device the rows live on (samples come out there).
        seed: seed of the sampling generator.
    """

    def __init__(
        self,
        buffer_size: int,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        n_envs: int = 1,
        seq_len: int = 16,
        burn_in: int = 0,
        lookahead: int = 1,
        state_stride: int | None = None,
        store_states: bool = True,
        prioritized: bool = False,
        alpha: float = 0.9,
        beta: float = 0.6,
        eta: float = 0.9,
        device: th.device | str = "cpu",
        seed: int | None = None,
    ) -> None:
        check_positive_int("n_envs", n_envs)
        check_positive_int("seq_len", seq_len)
        check_range("burn_in", burn_in, 0, integer=True, fix="e.g. 0 or seq_len // 2")
        check_range("lookahead", lookahead, 0, integer=True, fix="e.g. 1 (or n_steps)")
        stride = max(1, seq_len // 2) if state_stride is None else state_stride
        check_positive_int("state_stride", stride)
        check_range("alpha", alpha, 0.0, fix="e.g. 0.9")
        check_range("beta", beta, 0.0, 1.0, fix="e.g. 0.6")
        check_range("eta", eta, 0.0, 1.0, fix="e.g. 0.9")
        if isinstance(observation_space, spaces.Dict):
            raise ValueError(
                "observation_space: Dict observations are not supported by the sequence "
                "replay buffer; flatten them (gymnasium.wrappers.FlattenObservation)"
            )
        self.window = burn_in + seq_len + lookahead
        per_env = (int(buffer_size) // n_envs) // stride * stride
        if per_env < self.window:
            raise ValueError(
                f"buffer_size must keep at least one window (burn_in + seq_len + lookahead = "
                f"{self.window} rows) per env: >= {self.window * n_envs} with {n_envs} envs "
                f"(rounded to state_stride={stride}), got {buffer_size}; raise buffer_size"
            )
        self.buffer_size, self.n_envs, self.capacity = int(buffer_size), n_envs, per_env
        self.seq_len, self.burn_in, self.lookahead = seq_len, burn_in, lookahead
        self.state_stride, self.store_states = stride, bool(store_states)
        self.prioritized, self.alpha, self.beta, self.eta = bool(prioritized), alpha, beta, eta
        self.device = th.device(device)
        self.rng = np.random.default_rng(seed)
        self.observation_space, self.action_space = observation_space, action_space
        self.action_dim = action_dim(action_space)
        self.obs_shape = observation_space.shape or ()
        obs_dtype = TORCH_DTYPES.get(np.dtype(observation_space.dtype), th.float32)
        rows = (per_env, n_envs)
        self.observations = th.zeros(rows + tuple(self.obs_shape), dtype=obs_dtype, device=device)
        self.actions = th.zeros((*rows, self.action_dim), device=device)
        self.prev_actions = th.zeros((*rows, self.action_dim), device=device)
        self.rewards = th.zeros(rows, device=device)
        self.episode_starts = th.zeros(rows, dtype=th.bool, device=device)
        self.is_terminal = th.zeros(rows, dtype=th.bool, device=device)
        self.terminated = th.zeros(rows, dtype=th.bool, device=device)
        self.n_slots = per_env // stride
        self.states: State = {}
        self.priorities = np.zeros((self.n_slots, n_envs), dtype=np.float64)
        self.max_priority = 1.0
        self.count = np.zeros(n_envs, dtype=np.int64)  # rows written per stream, ever

    # ------------------------------------------------------------------ write
    def add(
        self,
        observations: np.ndarray | th.Tensor,
        actions: np.ndarray | th.Tensor,
        prev_actions: np.ndarray | th.Tensor,
        rewards: np.ndarray | th.Tensor,
        episode_starts: np.ndarray | th.Tensor,
        is_terminal: np.ndarray | th.Tensor,
        terminated: np.ndarray | th.Tensor,
        state: State | None,
        env_indices: np.ndarray | None = None,
    ) -> None:
        """Append one row to each stream in ``env_indices`` (default: every env).

        Every argument has one entry per written env (leading axis); ``state`` is
        the memory state before the row (batch ``len(env_indices)``), kept where
        the row lands on a stored-state slot.
        """
        envs = np.arange(self.n_envs) if env_indices is None else np.asarray(env_indices)
        if envs.size == 0:
            return
        count = self.count[envs]
        rows_np = count % self.capacity
        rows, cols = self._index(rows_np), self._index(envs)

        def put(target: th.Tensor, value: np.ndarray | th.Tensor) -> None:
            value = th.as_tensor(np.asarray(value) if not th.is_tensor(value) else value)
            target[rows, cols] = value.to(self.device, target.dtype).reshape(
                (len(envs), *target.shape[2:])
            )

        put(self.observations, observations)
        put(self.actions, actions)
        put(self.prev_actions, prev_actions)
        put(self.rewards, rewards)
        put(self.episode_starts, episode_starts)
        put(self.is_terminal, is_terminal)
        put(self.terminated, terminated)
        on_slot = count % self.state_stride == 0
        if on_slot.any():
            slots = (count[on_slot] // self.state_stride) % self.n_slots
            self.priorities[slots, envs[on_slot]] = self.max_priority
            if self.store_states:
                if state is None:
                    raise ValueError(
                        "state: the buffer stores memory states (store_states=True) and "
                        "needs the state before each row; pass it, or build the buffer "
                        "with store_states=False"
                    )
                pick = self._index(np.flatnonzero(on_slot))
                for key, value in state.items():
                    if key not in self.states:
                        shape = (self.n_slots, self.n_envs, *value.shape[1:])
                        self.states[key] = th.zeros(shape, dtype=value.dtype, device=self.device)
                    self.states[key][self._index(slots), self._index(envs[on_slot])] = (
                        value.detach().to(self.device)[pick]
                    )
        self.count[envs] += 1

    def _index(self, array: np.ndarray) -> th.Tensor:
        return th.as_tensor(np.ascontiguousarray(array), dtype=th.long, device=self.device)

    # ----------------------------------------------------------------- sample
    def candidates(self) -> tuple[np.ndarray, np.ndarray]:
        """Every window that can be drawn now: (env index, absolute start row) arrays."""
        envs, starts = [], []
        for env in range(self.n_envs):
            oldest = max(0, int(self.count[env]) - self.capacity)
            first = -(-oldest // self.state_stride) * self.state_stride
            last = int(self.count[env]) - self.window
            if last >= first:
                rows = np.arange(first, last + 1, self.state_stride, dtype=np.int64)
                envs.append(np.full(rows.shape, env, dtype=np.int64))
                starts.append(rows)
        if not envs:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
        return np.concatenate(envs), np.concatenate(starts)

    def can_sample(self) -> bool:
        """Whether at least one whole window has been written."""
        return bool((self.count >= self.window).any())

    def sample(self, batch_size: int) -> SequenceSamples:
        """Draw ``batch_size`` windows (with replacement)."""
        check_positive_int("batch_size", batch_size)
        envs, starts = self.candidates()
        if envs.size == 0:
            raise ValueError(
                f"the buffer holds no whole window yet ({self.window} rows per stream, "
                f"most written: {int(self.count.max())}); raise learning_starts"
            )
        slots = (starts // self.state_stride) % self.n_slots
        if self.prioritized:
            p = self.priorities[slots, envs] ** self.alpha
            p = p / p.sum()
            pick = self.rng.choice(envs.size, size=batch_size, p=p)
            weights = (envs.size * p[pick]) ** (-self.beta)
            weights = weights / weights.max()
        else:
            pick = self.rng.integers(0, envs.size, size=batch_size)
            weights = np.ones(batch_size)
        env_idx, start = envs[pick], starts[pick]
        return self.get(env_idx, start, weights)

    def get(
        self, env_indices: np.ndarray, start_rows: np.ndarray, weights: np.ndarray | None = None
    ) -> SequenceSamples:
        """The windows of streams ``env_indices`` starting at absolute rows ``start_rows``."""
        env_indices, start_rows = np.asarray(env_indices), np.asarray(start_rows)
        rows_np = (start_rows[None, :] + np.arange(self.window)[:, None]) % self.capacity
        rows = self._index(rows_np)
        cols = self._index(np.broadcast_to(env_indices[None, :], rows_np.shape))
        states = None
        if self.store_states:
            slots = self._index((start_rows // self.state_stride) % self.n_slots)
            envs = self._index(env_indices)
            states = {k: v[slots, envs] for k, v in self.states.items()}
        weights = np.ones(len(env_indices)) if weights is None else weights
        return SequenceSamples(
            observations=self.observations[rows, cols],
            actions=self.actions[rows, cols],
            prev_actions=self.prev_actions[rows, cols],
            rewards=self.rewards[rows, cols],
            episode_starts=self.episode_starts[rows, cols],
            is_terminal=self.is_terminal[rows, cols],
            terminated=self.terminated[rows, cols],
            states=states,
            weights=th.as_tensor(weights, dtype=th.float32, device=self.device),
            env_indices=env_indices,
            start_rows=start_rows,
        )

    def loss_mask(self, samples: SequenceSamples) -> th.Tensor:
        """(seq_len, B) bool: the loss rows that hold a step (terminal rows carry no loss)."""
        return ~samples.is_terminal[self.burn_in : self.burn_in + self.seq_len]

    def update_priorities(
        self, env_indices: np.ndarray, start_rows: np.ndarray, td_errors: th.Tensor, mask: th.Tensor
    ) -> None:
        """Set each window's priority from its loss rows' TD errors (``td_errors``, ``mask``:
        (seq_len, B)): ``eta * max + (1 - eta) * mean`` of the absolute errors."""
        err = (td_errors.detach().abs() * mask).float()
        count = mask.float().sum(0).clamp(min=1.0)
        priority = self.eta * err.max(0).values + (1.0 - self.eta) * err.sum(0) / count
        priority = priority.cpu().numpy().astype(np.float64) + 1e-6
        slots = (np.asarray(start_rows) // self.state_stride) % self.n_slots
        self.priorities[slots, np.asarray(env_indices)] = priority
        self.max_priority = max(self.max_priority, float(priority.max()))
