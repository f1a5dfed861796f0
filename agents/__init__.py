"""Agents: where envs, memory modules and Stable-Baselines3 meet."""

from memworld.agents.buffers import MemoryRolloutBuffer
from memworld.agents.memory_ppo import MemoryPPO
from memworld.agents.off_policy import MemoryDQN, MemorySAC, SequenceReplayBuffer
from memworld.agents.pmll_wrapper import PersistentMemoryVecWriter, PersistentMemoryWrapper
from memworld.agents.policies import (
    MemoryActorCriticCnnPolicy,
    MemoryActorCriticPolicy,
    MemoryMultiInputActorCriticPolicy,
)
from memworld.agents.vec_env import GymnasiumVecEnvAdapter, make_vec_env

__all__ = [
    "GymnasiumVecEnvAdapter",
    "MemoryActorCriticCnnPolicy",
    "MemoryActorCriticPolicy",
    "MemoryMultiInputActorCriticPolicy",
    "MemoryDQN",
    "MemoryPPO",
    "MemorySAC",
    "MemoryRolloutBuffer",
    "PersistentMemoryVecWriter",
    "PersistentMemoryWrapper",
    "SequenceReplayBuffer",
    "make_vec_env",
]
