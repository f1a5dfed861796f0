"""memworld: memory for reinforcement learning.

``import memworld`` registers every task with Gymnasium (``memworld/<Task>-v0``,
so ``gym.make("memworld/RepeatPreviousEasy-v0")`` and the
``"memworld:memworld/..."`` form both work) without importing torch.  The main
entry points are attributes of the package, imported on first use::

    from memworld import MemoryPPO, MemoryDQN, MemorySAC, make_vec_env, memory, record_video

The subpackages are ``memworld.envs``, ``memworld.memory``, ``memworld.agents``
and ``memworld.world_models``.
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from memworld import envs as envs

try:
    __version__ = version("memworld")
except PackageNotFoundError:  # a checkout on sys.path that was never installed
    __version__ = "0+unknown"

# name -> module that defines it; imported lazily so `import memworld` stays light.
_LAZY = {
    "MemoryPPO": "memworld.agents",
    "MemoryDQN": "memworld.agents",
    "MemorySAC": "memworld.agents",
    "MemoryActorCriticPolicy": "memworld.agents",
    "PersistentMemoryWrapper": "memworld.agents",
    "PersistentMemoryVecWriter": "memworld.agents",
    "GymnasiumVecEnvAdapter": "memworld.agents",
    "make_vec_env": "memworld.agents",
    "MemoryModule": "memworld.memory",
    "make_memory": "memworld.memory",
    "record_video": "memworld.video.record",
}
_SUBPACKAGES = ("agents", "memory", "world_models")
_ALIASES = {"make_memory": "make"}


def __getattr__(name: str) -> Any:
    if name in _SUBPACKAGES:
        return importlib.import_module(f"memworld.{name}")
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), _ALIASES.get(name, name))
    raise AttributeError(f"module 'memworld' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY, *_SUBPACKAGES])


__all__ = ["__version__", "envs", *_LAZY, *_SUBPACKAGES]
