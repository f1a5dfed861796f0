"""memworld's memory tasks: batched numpy cores with single-env views.

Importing this package registers every task with Gymnasium::

    import gymnasium as gym

    from memworld import envs
    env = gym.make("memworld/RepeatPreviousEasy-v0")
    vec = gym.make_vec("memworld/RepeatPreviousEasy-v0", num_envs=64,
                       vectorization_mode="vector_entry_point")
"""

from memworld.envs.core import VecTask
from memworld.envs.registry import REGISTERED, TASKS, env_ids, register_all, resolve_id
from memworld.envs.scalar import TaskEnv
from memworld.envs.shift import DistributionShift
from memworld.envs.shift import register as _register_shift

register_all()
_register_shift()

__all__ = [
    "DistributionShift",
    "REGISTERED",
    "TASKS",
    "TaskEnv",
    "VecTask",
    "env_ids",
    "register_all",
    "resolve_id",
]
