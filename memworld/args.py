"""Argument helpers the command line's parts share (env ids, integer flags, shipped files).

Each part (``memworld.cli``, ``memworld.leworld.cli``, ``memworld.sweep.cli``,
``memworld.experiments.cli``, the demo) imports these from here, so no two
parts import each other.
"""

from __future__ import annotations

import argparse
from pathlib import Path


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


def shipped_dir(folder: str) -> Path | None:
    """Where the ``bench`` scripts or ``sweeps`` configs are: inside an installed package
    (``memworld/_shipped/<folder>``, copied there by setup.py) or in the memworld checkout
    that an editable install runs from; None if neither holds them."""
    package = Path(__file__).resolve().parent
    inside = package / "_shipped" / folder
    if inside.is_dir():
        return inside
    checkout = package.parent  # an editable install: memworld/ beside setup.py and bench/
    if (checkout / "setup.py").is_file() and (checkout / folder).is_dir():
        return checkout / folder
    return None


def shipped_file(folder: str, name: str) -> Path:
    """A file of memworld's ``bench`` or ``sweeps`` folder, wherever memworld is installed.

    Raises FileNotFoundError naming what was looked for and where to get it.
    """
    where = shipped_dir(folder)
    if where is not None and (where / name).is_file():
        return where / name
    raise FileNotFoundError(
        f"{folder}/{name} is not shipped with this memworld install"
        + (f" (looked in {where})" if where else "")
        + f"; run it from a memworld checkout instead: `pip install -e .` in the checkout, "
        f"then `memworld ...` there, or `python {folder}/{name}`"
    )


def shipped_names(folder: str, suffix: str) -> list[str]:
    """The stems of the shipped files of ``folder`` that end in ``suffix``."""
    where = shipped_dir(folder)
    return sorted(p.stem for p in where.glob(f"*{suffix}")) if where else []
