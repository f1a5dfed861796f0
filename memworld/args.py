"""Argument helpers the command line's parts share (env ids, flags, seeds, devices, config
keys, shipped files).

Each part (``memworld.cli``, ``memworld.leworld.cli``, ``memworld.sweep.cli``,
``memworld.experiments.cli``, the demo) imports these from here, so no two
parts import each other.
"""

from __future__ import annotations

import argparse
import difflib
import re
from pathlib import Path

DEVICES = "cpu, cuda, cuda:N (N: the GPU's index), mps or auto"


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


def check_seed(name: str, seed: object) -> None:
    """Refuse a seed numpy and torch cannot take: an integer in [0, 2**32 - 1]."""
    from memworld.memory.base import check_range

    check_range(name, seed, 0, 2**32 - 1, integer=True, fix="e.g. 0")


def check_device(name: str, device: object) -> None:
    """Refuse a device torch does not name (``gpu``): it must be one of DEVICES."""
    if not (isinstance(device, str) and re.fullmatch(r"cpu|cuda(:\d+)?|mps|auto", device)):
        raise ValueError(f"{name} must be {DEVICES}, got {device!r}")


def resolve_device(name: str, flag: str = "--device"):
    """``cpu``, ``cuda``, ``cuda:N``, ``mps`` or ``auto`` (CUDA when there is one) -> a
    ``torch.device`` this machine has. A device it lacks is refused by name: handed on to
    SB3 it would quietly train on the CPU."""
    import torch

    check_device(flag, name)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ValueError(
                f"{flag} {name!r}: this torch build sees no CUDA device; use cpu or auto instead"
            )
        if device.index is not None and device.index >= count:
            raise ValueError(
                f"{flag} {name!r}: this machine has {count} CUDA device(s), cuda:0 to "
                f"cuda:{count - 1}; use one of those, cpu or auto instead"
            )
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(
            f"{flag} 'mps': this torch build sees no MPS device; use cpu or auto instead"
        )
    return device


def check_keys(what: str, given: dict, accepted: set[str]) -> None:
    """Refuse keys not in ``accepted``, naming each one's closest accepted key."""
    unknown = sorted(set(given) - accepted)
    if unknown:
        close = {k: difflib.get_close_matches(k, accepted, n=1) for k in unknown}
        hints = ", ".join(f"{c[0]!r} for {k!r}" for k, c in close.items() if c)
        raise ValueError(
            f"unknown {what}: {unknown}"
            + (f" (did you mean {hints}?)" if hints else "")
            + f"; valid: {sorted(accepted)}"
        )
