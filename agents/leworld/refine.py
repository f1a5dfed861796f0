"""Phase-3 refinement with an SB3 agent: PPO trains one SLM's address policy in SLMEnv.

The in-system refinement (REINFORCE on every SLM's sampled address and on the
BLM's info request, :meth:`memworld.world_models.leworld.training.LeWorldTrainer.refine_loss`)
is the default phase 3; this is the same decision trained by a separate SB3
policy against the frozen system, with the same paired-branch reward.
"""

from __future__ import annotations

from memworld.world_models.leworld.system import LeWorldSystem


def train_slm_policy(
    system: LeWorldSystem,
    env_id: str,
    slm_index: int = 0,
    total_timesteps: int = 2048,
    seq_len: int = 32,
    seed: int = 0,
    **ppo_kwargs,
):
    """Train PPO on :class:`SLMEnv` for ``slm_index``; returns the SB3 model."""
    from stable_baselines3 import PPO

    from memworld.agents.leworld.slm_env import SLMEnv
    from memworld.agents.sb3_logging import stdout_logger

    env = SLMEnv(system, env_id, slm_index, seq_len, seed=seed)
    kwargs = dict(n_steps=256, batch_size=64, verbose=0, seed=seed)
    kwargs.update(ppo_kwargs)
    model = PPO("MlpPolicy", env, **kwargs)
    if model.tensorboard_log is None:
        model.set_logger(stdout_logger(model.verbose))
    return model.learn(total_timesteps=total_timesteps)
