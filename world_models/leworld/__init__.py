"""LeWorld (shared/seeds/leworld-slm-blm.md): three SLMs choose address ranges in a bit
memory, a BLM routes among their reads, predicts the next world state and asks for
what it needs next."""

from memworld.world_models.leworld.config import (
    BLMConfig,
    LeWorldConfig,
    MemoryConfig,
    SLMConfig,
    TrainingConfig,
    preset,
)
from memworld.world_models.leworld.system import LeWorldSystem, StepOutput

__all__ = [
    "BLMConfig",
    "LeWorldConfig",
    "LeWorldSystem",
    "MemoryConfig",
    "SLMConfig",
    "StepOutput",
    "TrainingConfig",
    "preset",
]
