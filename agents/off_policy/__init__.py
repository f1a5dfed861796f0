"""Off-policy algorithms with any memory module: MemoryDQN, MemorySAC and their sequence replay."""

from memworld.agents.off_policy.memory_dqn import MemoryDQN
from memworld.agents.off_policy.memory_sac import MemorySAC
from memworld.agents.off_policy.q_policy import MemoryQPolicy
from memworld.agents.off_policy.sac_policy import MemorySACPolicy
from memworld.agents.off_policy.sequence_buffer import SequenceReplayBuffer, SequenceSamples

__all__ = [
    "MemoryDQN",
    "MemoryQPolicy",
    "MemorySAC",
    "MemorySACPolicy",
    "SequenceReplayBuffer",
    "SequenceSamples",
]
