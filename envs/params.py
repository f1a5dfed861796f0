"""Frozen parameter dataclasses with declared ranges, checked on construction."""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import numpy as np


@dataclasses.dataclass(frozen=True, kw_only=True)
class TaskParams:
    """Base of every task's parameters.

    Subclasses are frozen dataclasses.  ``RANGES`` maps a field to its inclusive
    ``(low, high)``; ``CHOICES`` maps a field to its allowed values.  Both are
    checked in ``__post_init__`` (and read by the property tests), and
    :meth:`check` adds the constraints between fields.

    Args:
        max_episode_steps: time limit after which an episode is *truncated*;
            ``None`` means the task's own length decides.
    """

    max_episode_steps: int | None = None

    RANGES: ClassVar[dict[str, tuple[float, float]]] = {}
    CHOICES: ClassVar[dict[str, tuple[Any, ...]]] = {}

    def __post_init__(self) -> None:
        ranges = {**self.RANGES, "max_episode_steps": (1, 10**7)}  # a derived limit comes last
        for name, (low, high) in ranges.items():
            value = getattr(self, name)
            if value is None and name == "max_episode_steps":
                continue
            is_int_field = isinstance(low, int) and isinstance(high, int)
            numbers = (int, np.integer) if is_int_field else (int, float, np.integer, np.floating)
            ok_type = isinstance(value, numbers)
            if isinstance(value, bool | np.bool_) or not ok_type or not low <= value <= high:
                kind = "an integer" if is_int_field else "a number"
                raise ValueError(
                    f"{type(self).__name__}.{name} must be {kind} in [{low}, {high}], "
                    f"got {value!r}; pass {name}=<value in range>"
                )
            if isinstance(value, np.integer | np.floating):  # stored as a Python number
                object.__setattr__(self, name, value.item())
        for name, allowed in self.CHOICES.items():
            value = getattr(self, name)
            if value not in allowed:
                raise ValueError(
                    f"{type(self).__name__}.{name} must be one of {allowed}, got {value!r}"
                )
        self.check()

    def check(self) -> None:
        """Constraints between fields; raise ValueError naming the fields and the fix."""

    @classmethod
    def build(cls, **kwargs: Any) -> TaskParams:
        """Construct from keyword arguments, naming the valid ones when one is unknown."""
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(kwargs) - fields)
        if unknown:
            raise ValueError(
                f"unknown argument(s) {unknown} for {cls.__name__}; valid: {sorted(fields)}"
            )
        return cls(**kwargs)


def require(condition: bool, message: str) -> None:
    """Raise ValueError(message) unless ``condition``."""
    if not condition:
        raise ValueError(message)
