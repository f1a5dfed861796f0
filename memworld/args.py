"""Argument helpers the command line's parts share (env ids, integer flags).

Each part (``memworld.cli``, ``memworld.leworld.cli``, ``memworld.sweep.cli``,
``memworld.experiments.cli``, the demo) imports these from here, so no two
parts import each other.
"""

from __future__ import annotations

import argparse


def env_arg(name: str) -> str:
    """argparse type of ``--env``: a registered id, or a memworld short name resolved to one."""
    from memworld import envs

    try:
        return envs.resolve_id(name)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def check_flags(args: argparse.Namespace, **limits: tuple[float, float]) -> None:
    """Refuse an integer option out of ``[low, high]``, naming the flag (``--n-envs``)."""
    from memworld.memory.base import check_range

    for dest, (low, high) in limits.items():
        if getattr(args, dest) is not None:
            check_range("--" + dest.replace("_", "-"), getattr(args, dest), low, high, integer=True)
