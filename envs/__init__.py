"""memworld's memory tasks: batched numpy cores with single-env views.

Importing this package registers every task with Gymnasium::

    import gymnasium as gym, envs
    env = gym.make("memworld/RepeatPreviousEasy-v0")
    vec = gym.make_vec("memworld/RepeatPreviousEasy-v0", num_envs=64,
                       vectorization_mode="vector_entry_point")
"""

from envs.core import TaskEnv, VecTask
from envs.registry import REGISTERED, TASKS, env_ids, register_all

register_all()

__all__ = ["REGISTERED", "TASKS", "TaskEnv", "VecTask", "env_ids", "register_all"]
