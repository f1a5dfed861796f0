"""Search spaces of a sweep file: ``{key: {kind: args}}`` with ``kind`` one of SPACE_KINDS.

Sampled here for the built-in random search, turned into Ray Tune domains for Optuna.
"""

from __future__ import annotations

from typing import Any

import numpy as np

SPACE_KINDS = ("uniform", "loguniform", "randint", "choice")


def sample_space(space: dict, rng: np.random.Generator) -> dict:
    """One sample of a search space (``randint`` is ``[low, high)`` as in Ray Tune)."""
    sample = {}
    for key, spec in space.items():
        ((kind, args),) = spec.items()
        if kind == "uniform":
            sample[key] = float(rng.uniform(*args))
        elif kind == "loguniform":
            sample[key] = float(np.exp(rng.uniform(np.log(args[0]), np.log(args[1]))))
        elif kind == "randint":
            sample[key] = int(rng.integers(args[0], args[1]))
        else:
            sample[key] = args[int(rng.integers(len(args)))]
    return sample


def tune_space(space: dict) -> dict:
    """A search space as Ray Tune domains (for Optuna)."""
    from ray import tune

    makers = {"uniform": tune.uniform, "loguniform": tune.loguniform, "randint": tune.randint}
    out = {}
    for key, spec in space.items():
        ((kind, args),) = spec.items()
        out[key] = tune.choice(list(args)) if kind == "choice" else makers[kind](*args)
    return out


def check_space(key: str, spec: Any) -> None:
    if not (isinstance(spec, dict) and len(spec) == 1 and next(iter(spec)) in SPACE_KINDS):
        raise ValueError(
            f"search.space.{key} must be one of {[{k: '...'} for k in SPACE_KINDS]}, got {spec!r}"
        )


def space_ends(spec: dict) -> list:
    """The values at the ends of a search-space entry (every value of a ``choice``)."""
    ((kind, args),) = spec.items()
    return list(args) if kind == "choice" else [args[0], args[1] - (kind == "randint")]
