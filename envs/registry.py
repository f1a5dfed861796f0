"""Registers every task with Gymnasium as ``memworld/<Task>-v0`` plus presets."""

from __future__ import annotations

import importlib
from dataclasses import dataclass

import gymnasium as gym

# (task name, module under envs.tasks, one-line description of what it tests)
TASKS: list[tuple[str, str, str]] = [
    ("RepeatPrevious", "repeat_previous", "recall the symbol seen `delay` steps earlier"),
    ("RepeatFirst", "repeat_first", "hold the episode's first symbol for the whole episode"),
    ("CountRecall", "count_recall", "count how often the queried value has appeared"),
    ("Autoencode", "autoencode", "replay a watched sequence in reverse after a cue"),
    ("MemoryLength", "bsuite_memory", "carry one context sign through `memory_length` noise steps"),
    ("MemorySize", "bsuite_memory", "hold `num_bits` context bits; one is queried"),
    ("AssociativeRecall", "associative_recall", "act the value paired with a queried key"),
    ("TMaze", "tmaze", "choose the junction arm named by a cue at the corridor's start"),
    ("KeyDoor", "keydoor", "carry a key's colour down a corridor; open the matching door"),
    ("OccludedDynamics", "occluded_dynamics", "track bouncing objects through occlusions"),
]


@dataclass(frozen=True)
class TaskInfo:
    """What the registry knows about one registered id."""

    env_id: str
    task: str
    preset: str | None
    module: str
    description: str
    kwargs: dict


REGISTERED: dict[str, TaskInfo] = {}


def register_all() -> None:
    """Register every task and preset (idempotent)."""
    for task, module_name, description in TASKS:
        module = importlib.import_module(f"memworld.envs.tasks.{module_name}")
        # A module with several tasks keys its presets by task name.
        presets = {None: {}, **module.PRESETS.get(task, module.PRESETS)}
        for preset, kwargs in presets.items():
            env_id = f"memworld/{task}{preset or ''}-v0"
            if env_id in gym.registry:
                continue
            gym.register(
                id=env_id,
                entry_point=f"memworld.envs.tasks.{module_name}:{task}",
                vector_entry_point=f"memworld.envs.tasks.{module_name}:{task}Vec",
                kwargs=dict(kwargs),
            )
            REGISTERED[env_id] = TaskInfo(env_id, task, preset, module_name, description, kwargs)


def env_ids() -> list[str]:
    """All registered memworld ids."""
    return list(REGISTERED)


def resolve_id(name: str) -> str:
    """A Gymnasium id for ``name``: a registered id as is, or a memworld short name
    (``KeyDoorMedium``, ``KeyDoorMedium-v0``) as its ``memworld/<name>-v0`` id.

    Ids of the form ``module:Id`` pass through (Gymnasium imports the module).
    Raises ``ValueError`` naming the closest registered ids otherwise.
    """
    if ":" in name or name in gym.registry:
        return name
    for candidate in (f"memworld/{name}-v0", f"memworld/{name}", f"{name}-v0"):
        if candidate in gym.registry:
            return candidate
    import difflib

    short = lambda i: i.removeprefix("memworld/").removesuffix("-v0")  # noqa: E731
    ids = {short(i): i for i in gym.registry if i.startswith("memworld/")}
    close = [ids[s] for s in difflib.get_close_matches(short(name), ids, n=3, cutoff=0.75)]
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    raise ValueError(
        f"env {name!r} is not a registered Gymnasium id{hint}. Give an id such as "
        "memworld/KeyDoorEasy-v0 or its short name KeyDoorEasy (`memworld list` prints them all)"
    )
