"""Rollout storage for memory policies: steps, episode starts, and one state per sequence.

Everything per step lives in preallocated ``(n_steps, n_envs, ...)`` arrays, as
in SB3's ``RolloutBuffer``.  The memory state is *not* stored per step: only at
the start of each sequence (the whole rollout, or each chunk of
``sequence_length`` steps when truncated BPTT is used).  Training replays a
sequence from its stored state through its steps, resetting rows at the stored
episode starts, which reproduces the rollout's states exactly.

A sequence is (chunk ``c``, env ``e``), numbered ``s = c * n_envs + e``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.buffers import BaseBuffer, RolloutBuffer

from memworld.agents.ppo_checks import check_bptt_len
from memworld.memory.base import State


class MemorySequenceSamples(NamedTuple):
    """A minibatch of ``B`` whole sequences of ``T`` steps, time-major.

    Per-step fields have leading axis ``T * B`` (step ``t`` of sequence ``b`` is
    row ``t * B + b``), the layout the policy reshapes to (T, B, ...).
    """

    observations: th.Tensor | dict[str, th.Tensor]  # (T*B, *obs_shape)
    actions: th.Tensor  # (T*B, action_dim)
    old_values: th.Tensor  # (T*B,)
    old_log_prob: th.Tensor  # (T*B,)
    advantages: th.Tensor  # (T*B,)
    returns: th.Tensor  # (T*B,)
    episode_starts: th.Tensor  # (T, B) bool
    states: State  # name -> (B, ...): the state before step 0


class MemoryRolloutBuffer(RolloutBuffer):
    """SB3's rollout buffer plus the memory state at the start of each sequence.

    Args:
        buffer_size: steps per env in a rollout (``n_steps``).
        observation_space: observation space (``Dict`` spaces are stored per key).
        action_space: action space.
        device: where sampled minibatches and stored states live.
        gae_lambda: GAE lambda.
        gamma: discount factor.
        n_envs: number of envs.
        sequence_length: steps per replayed sequence (truncated BPTT length);
            None means the whole rollout.  Must divide ``buffer_size``.
    """

    def __init__(
        self,
        buffer_size: int,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        device: th.device | str = "auto",
        gae_lambda: float = 1,
        gamma: float = 0.99,
        n_envs: int = 1,
        sequence_length: int | None = None,
    ) -> None:
        if sequence_length is None:
            sequence_length = buffer_size
        check_bptt_len(sequence_length, buffer_size)
        self.sequence_length = sequence_length
        self.n_chunks = buffer_size // sequence_length
        super().__init__(
            buffer_size,
            observation_space,
            action_space,
            device=device,
            gae_lambda=gae_lambda,
            gamma=gamma,
            n_envs=n_envs,
        )

    @property
    def n_sequences(self) -> int:
        return self.n_chunks * self.n_envs

    def reset(self) -> None:
        steps_envs = (self.buffer_size, self.n_envs)
        if isinstance(self.observation_space, spaces.Dict):  # one array per key
            self.observations = {
                key: np.zeros((*steps_envs, *self.obs_shape[key]), dtype=space.dtype)
                for key, space in self.observation_space.spaces.items()
            }
        else:
            self.observations = np.zeros(
                (*steps_envs, *self.obs_shape), dtype=self.observation_space.dtype
            )
        self.actions = np.zeros((*steps_envs, self.action_dim), dtype=self.action_space.dtype)
        self.rewards = np.zeros(steps_envs, dtype=np.float32)
        self.returns = np.zeros(steps_envs, dtype=np.float32)
        self.episode_starts = np.zeros(steps_envs, dtype=bool)
        self.values = np.zeros(steps_envs, dtype=np.float32)
        self.log_probs = np.zeros(steps_envs, dtype=np.float32)
        self.advantages = np.zeros(steps_envs, dtype=np.float32)
        self.generator_ready = False
        # name -> (n_chunks, n_envs, ...); allocated at the first add, when shapes are known.
        self.sequence_states: State | None = None
        BaseBuffer.reset(self)

    def add(  # type: ignore[override]
        self,
        obs: np.ndarray | dict[str, np.ndarray],
        action: np.ndarray,
        reward: np.ndarray,
        episode_start: np.ndarray,
        value: th.Tensor,
        log_prob: th.Tensor,
        state: State | None = None,
    ) -> None:
        """Store one step of every env.

        Args:
            state: the memory state *before* this step (batch ``n_envs``).  It is
                needed, and copied, only at a sequence start
                (``pos % sequence_length == 0``); elsewhere it is ignored.
        """
        if self.pos % self.sequence_length == 0:
            if state is None:
                raise ValueError(
                    f"step {self.pos} starts a sequence: pass the memory state before it as state="
                )
            self._store_state(self.pos // self.sequence_length, state)
        # reshape: Discrete observations arrive as (n_envs,) and are stored as (n_envs, 1).
        if isinstance(self.observations, dict):
            for key, array in self.observations.items():
                array[self.pos] = np.asarray(obs[key]).reshape(array.shape[1:])
        else:
            self.observations[self.pos] = np.asarray(obs).reshape(self.observations.shape[1:])
        self.actions[self.pos] = np.asarray(action).reshape((self.n_envs, self.action_dim))
        self.rewards[self.pos] = np.asarray(reward)
        self.episode_starts[self.pos] = np.asarray(episode_start)
        self.values[self.pos] = value.detach().cpu().numpy().flatten()
        self.log_probs[self.pos] = log_prob.detach().cpu().numpy().reshape(self.n_envs)
        self.pos += 1
        if self.pos == self.buffer_size:
            self.full = True

    def _store_state(self, chunk: int, state: State) -> None:
        if self.sequence_states is None:
            self.sequence_states = {
                name: th.zeros((self.n_chunks, *value.shape), dtype=value.dtype, device=self.device)
                for name, value in state.items()
            }
        for name, value in state.items():
            if value.shape[0] != self.n_envs:
                raise ValueError(
                    f"state[{name!r}] has batch {value.shape[0]}, expected n_envs={self.n_envs}; "
                    "memory state tensors must be batch-first"
                )
            self.sequence_states[name][chunk].copy_(value)

    def compute_returns_and_advantage(self, last_values: th.Tensor, dones: np.ndarray) -> None:
        """GAE(lambda) as SB3 computes it (a time-limit bootstrap is already in the rewards)."""
        starts = self.episode_starts
        self.episode_starts = starts.astype(np.float32)
        try:
            super().compute_returns_and_advantage(last_values, dones)
        finally:
            self.episode_starts = starts

    def get(  # type: ignore[override]
        self, sequences_per_batch: int | None = None
    ) -> Iterator[MemorySequenceSamples]:
        """Yield minibatches of ``sequences_per_batch`` whole sequences in random order."""
        assert self.full, "the rollout is not complete yet"
        if self.sequence_states is None:
            raise RuntimeError("no memory state was stored; pass state= to add()")
        batch = self.n_sequences if sequences_per_batch is None else int(sequences_per_batch)
        data = self._sequence_major()
        order = np.random.permutation(self.n_sequences)
        for start in range(0, self.n_sequences, batch):
            yield self._get_sequences(data, th.as_tensor(order[start : start + batch]))

    def _sequence_major(self) -> dict[str, th.Tensor | dict[str, th.Tensor]]:
        """(n_steps, n_envs, ...) arrays -> tensors (T, n_sequences, ...), converted once per get()."""
        length, n_seq = self.sequence_length, self.n_sequences

        def convert(array: np.ndarray) -> th.Tensor:
            # (n_chunks * T, n_envs, ...) -> (n_chunks, T, n_envs, ...) -> (T, n_chunks * n_envs, ...)
            tail = array.shape[2:]
            array = array.reshape(self.n_chunks, length, self.n_envs, *tail).swapaxes(0, 1)
            return th.as_tensor(
                np.ascontiguousarray(array).reshape(length, n_seq, *tail), device=self.device
            )

        observations = (
            {key: convert(value) for key, value in self.observations.items()}
            if isinstance(self.observations, dict)
            else convert(self.observations)
        )
        return {
            "observations": observations,
            "actions": convert(self.actions.astype(np.float32, copy=False)),
            "values": convert(self.values),
            "log_probs": convert(self.log_probs),
            "advantages": convert(self.advantages),
            "returns": convert(self.returns),
            "episode_starts": convert(self.episode_starts),
            # name -> (n_chunks, n_envs, ...) -> (n_sequences, ...)
            "states": {k: v.reshape(n_seq, *v.shape[2:]) for k, v in self.sequence_states.items()},
        }

    def _get_sequences(self, data: dict, idx: th.Tensor) -> MemorySequenceSamples:
        length, batch = self.sequence_length, len(idx)
        idx = idx.to(self.device)

        def steps(tensor: th.Tensor) -> th.Tensor:
            # (T, n_sequences, ...) -> (T, B, ...) -> (T*B, ...)
            return tensor.index_select(1, idx).reshape(length * batch, *tensor.shape[2:])

        observations = data["observations"]
        observations = (
            {key: steps(value) for key, value in observations.items()}
            if isinstance(observations, dict)
            else steps(observations)
        )
        return MemorySequenceSamples(
            observations=observations,
            actions=steps(data["actions"]),
            old_values=steps(data["values"]),
            old_log_prob=steps(data["log_probs"]),
            advantages=steps(data["advantages"]),
            returns=steps(data["returns"]),
            episode_starts=data["episode_starts"].index_select(1, idx),
            states={k: v.index_select(0, idx) for k, v in data["states"].items()},
        )
