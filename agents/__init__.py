"""Agents: where envs, memory modules and Stable-Baselines3 meet."""

from agents.buffers import MemoryRolloutBuffer
from agents.memory_ppo import MemoryPPO
from agents.pmll_wrapper import PersistentMemoryWrapper as PersistentMemoryWrapper
from agents.policies import (
    MemoryActorCriticCnnPolicy,
    MemoryActorCriticPolicy,
    MemoryMultiInputActorCriticPolicy,
)
from agents.vec_env import GymnasiumVecEnvAdapter, make_vec_env

__all__ = [
    "GymnasiumVecEnvAdapter",
    "MemoryActorCriticCnnPolicy",
    "MemoryActorCriticPolicy",
    "MemoryMultiInputActorCriticPolicy",
    "MemoryPPO",
    "MemoryRolloutBuffer",
    "make_vec_env",
]
