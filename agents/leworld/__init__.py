"""LeWorld's SLMs and BLM as agents: SLMEnv, paired-branch rewards, phase-3 refinement."""

from memworld.agents.leworld.refine import train_slm_policy
from memworld.agents.leworld.slm_env import SLMEnv
from memworld.world_models.leworld.rollout import paired_branch_reward, slm_rewards

__all__ = ["SLMEnv", "paired_branch_reward", "slm_rewards", "train_slm_policy"]
