"""SLMEnv: one SLM's address choice as a Gymnasium env, rewarded by the paired branch."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces

from memworld.memory.base import check_range
from memworld.world_models.leworld.config import preset
from memworld.world_models.leworld.data import RolloutSource
from memworld.world_models.leworld.rollout import paired_branch_reward, slm_branch_losses
from memworld.world_models.leworld.slm import pointer_features
from memworld.world_models.leworld.system import LeWorldSystem

ACTION_ENTRIES = ("address high byte", "address low byte", "range choice")


class SLMEnv(gym.Env):
    """Choose SLM ``slm_index``'s address range against a frozen BLM and memory.

    **Description.** An episode is one episode of the underlying world-state
    task (oracle actions, a random one with probability ``1 - oracle_prob``),
    replayed through a frozen LeWorld system. Each step the task's observation
    has been written to the bit memory; the agent picks the start address
    (high byte, low byte) and, where ``with_range``, the range length of one
    SLM's read; the other SLMs read their own argmax ranges; the BLM routes and
    predicts the next world state.

    **Observation.** ``Box(low, high, (2 * obs_dim + request_dim + 4 *
    pointer_freqs,), float32)``: the SLM's inputs: past observation, current
    observation (the task's bounds), the BLM's info request from the last step
    and Fourier features of the write pointer (both in [-1, 1]).

    **Action.** ``MultiDiscrete([num_high, num_low])`` (256, 256), plus
    ``len(range_choices)`` where ``with_range``.

    **Reward.** Paired branch: the BLM's next-state MSE with this SLM's read
    masked out minus the MSE with it (the other SLMs routed as the BLM chose).

    **End.** Terminates when the task's episode ends; truncates after
    ``seq_len`` steps.

    **Arguments.** ``system`` (default: a fresh small-preset system, frozen),
    ``env_id``, ``slm_index``, ``seq_len``, ``with_range``, ``oracle_prob``.

    **Version history.** v0: first release.
    """

    metadata = {"render_modes": []}

    def __init__(
        self,
        system: LeWorldSystem | None = None,
        env_id: str = "memworld/OccludedDynamicsEasy-v0",
        slm_index: int = 0,
        seq_len: int = 32,
        with_range: bool = True,
        oracle_prob: float = 0.8,
        seed: int = 0,
    ) -> None:
        check_range("SLMEnv seq_len", seq_len, 1, integer=True, fix="steps per episode, e.g. 32")
        check_range("SLMEnv oracle_prob", oracle_prob, 0, 1, fix="a probability, e.g. 0.8")
        self.env_id, self.seq_len, self.oracle_prob = env_id, seq_len, oracle_prob
        self.source = RolloutSource(env_id, 1, seq_len, seed, oracle_prob)
        if system is None:
            torch.manual_seed(seed)
            system = LeWorldSystem(preset("small"), self.source.obs_dim, self.source.state_dim)
        if not 0 <= slm_index < system.num_slms:
            raise ValueError(f"slm_index must be in 0..{system.num_slms - 1}, got {slm_index}")
        self.system = system.eval().requires_grad_(False)
        self.slm_index = slm_index
        mem, slm = system.config.memory, system.config.slm
        self.with_range = with_range and len(slm.range_choices) > 1
        nvec = [mem.num_high, mem.num_low] + ([len(slm.range_choices)] if self.with_range else [])
        self.action_space = spaces.MultiDiscrete(nvec)
        task_space = self.source.env.single_observation_space
        low = np.asarray(task_space.low, np.float32).reshape(-1)
        high = np.asarray(task_space.high, np.float32).reshape(-1)
        unit = np.ones(system.config.blm.request_dim + 4 * slm.pointer_freqs, np.float32)
        self.observation_space = spaces.Box(
            np.concatenate([low, low, -unit]), np.concatenate([high, high, unit]), dtype=np.float32
        )
        self._batch = None

    def _observe(self) -> np.ndarray:
        s = self.state
        features = pointer_features(
            s["pointer"], self.system.config.memory, self.system.config.slm.pointer_freqs
        )
        obs = torch.cat([s["past_obs"], self._batch.obs[self.t], s["request"], features], dim=1)
        return (
            obs[0]
            .numpy()
            .astype(np.float32)
            .clip(self.observation_space.low, self.observation_space.high)
        )

    def _write(self) -> None:
        self.state, _ = self.system.write(self.state, self._batch.obs[self.t])

    def reset(
        self, *, seed: int | None = None, options: dict | None = None
    ) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        if seed is not None:
            self.source = RolloutSource(self.env_id, 1, self.seq_len, seed, self.oracle_prob)
        self._batch = self.source.batch()
        self.t = 0
        with torch.no_grad():
            self.state = self.system.initial_state(1)
            self._write()
            return self._observe(), {"oracle_address": int(self._batch.oracle_address[0, 0])}

    def _checked(self, action: Any) -> np.ndarray:
        """``action`` as int64, or a ValueError naming the entry outside the action space."""
        given, nvec = np.asarray(action), self.action_space.nvec
        if given.shape != nvec.shape or given.dtype.kind not in "iuf":
            raise ValueError(
                f"SLMEnv action must be {len(nvec)} integers in {self.action_space}, got {action!r}"
            )
        ok = (given >= 0) & (given < nvec) & (given == np.floor(given))  # NaN fails too
        if not ok.all():
            i = int(np.argmin(ok))
            raise ValueError(
                f"SLMEnv action {given.tolist()} is outside {self.action_space}: entry {i} "
                f"({ACTION_ENTRIES[i]}) must be an integer in [0, {nvec[i] - 1}], got {given[i]}"
            )
        return given.astype(np.int64)

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        action = self._checked(action)
        mem = self.system.config.memory
        n = self.system.num_slms
        addresses = torch.full((1, n), -1, dtype=torch.long)
        addresses[0, self.slm_index] = int(action[0]) * mem.num_low + int(action[1])
        ranges = None
        if self.with_range:
            ranges = torch.full((1, n), -1, dtype=torch.long)
            ranges[0, self.slm_index] = int(action[2])
        obs, target = self._batch.obs[self.t], self._batch.target[self.t]
        with torch.no_grad():
            out = self.system.think(self.state, obs, "hard", addresses, ranges=ranges)
            losses = slm_branch_losses(self.system, obs, out, target)
            loss_with, loss_without = (x[0, self.slm_index] for x in losses)
            reward = float(paired_branch_reward(loss_without, loss_with))
            info = {"loss_with": float(loss_with), "loss_without": float(loss_without)}
            self.state = {
                **self.state,
                "past_obs": obs,
                "request": out.request,
                "pointer": self.state["pointer"] + 1,
            }
            self.t += 1
            if self.t >= self.seq_len:  # the window ends with the task's episode still running
                terminated, truncated = False, True
                self.t = self.seq_len - 1  # the last observation stands in for the next one
            else:
                terminated, truncated = not bool(self._batch.valid[self.t, 0]), False
                if not terminated:
                    self._write()
            info["oracle_address"] = int(self._batch.oracle_address[self.t, 0])
            return self._observe(), reward, terminated, truncated, info
