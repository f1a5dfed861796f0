"""Run folders: ``runs/<env>/<algo>-<memory>/<date-time>-s<seed>/`` and their config."""

from __future__ import annotations

import dataclasses
import datetime as _dt
import importlib.metadata
import json
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

PACKAGES = ("memworld", "torch", "gymnasium", "stable-baselines3", "sb3-contrib", "numpy")


def package_versions() -> dict[str, Any]:
    """What a run's numbers depend on besides its config: the installed versions of the
    packages it uses (``None`` if absent), torch's CPU thread count (another count sums
    floats in another order, enough to flip a thin-margin result), the process's nice
    level (what share of a busy CPU its timings had; ``None`` where the OS has none) and the memworld
    source commit (``None`` outside a git checkout; ``+dirty`` with uncommitted changes)."""
    import torch

    versions: dict[str, Any] = {"python": sys.version.split()[0], "platform": platform.platform()}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    versions["torch_threads"] = torch.get_num_threads()
    versions["nice"] = os.nice(0) if hasattr(os, "nice") else None  # the CPU share it had
    versions["memworld_commit"] = source_commit()
    return versions


def source_commit() -> str | None:
    """The git commit of the memworld source tree, ``+dirty`` if tracked files differ."""
    root = Path(__file__).resolve().parent.parent

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(
                ["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    top = git("rev-parse", "--show-toplevel")
    if top is None or Path(top).resolve() != root:  # not a checkout of memworld itself
        return None
    commit = git("rev-parse", "HEAD")
    if not commit:
        return None
    dirty = git("status", "--porcelain", "--untracked-files=no")
    return commit + ("+dirty" if dirty else "")


def run_dir(
    env_id: str, algo: str, memory: str | None, seed: int, root: str | Path = "runs"
) -> Path:
    """A new, unique run folder for this env / algorithm / memory / seed."""
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    env_name = env_id.split("/")[-1]
    base = Path(root) / env_name / f"{algo}-{memory or 'none'}" / f"{stamp}-s{seed}"
    path, n = base, 1
    while path.exists():
        n += 1
        path = base.with_name(f"{base.name}-{n}")
    path.mkdir(parents=True)
    return path


def write_json(path: str | Path, data: Any) -> Path:
    """Write ``data`` as indented JSON (dataclasses and numpy scalars allowed)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, default=_jsonable))
    return path


def write_results(path: str | Path, data: dict) -> Path:
    """:func:`write_json` of a result file (an experiment's results.json, a bench's JSON)
    with :func:`package_versions` added under ``"versions"``."""
    return write_json(path, {**data, "versions": package_versions()})


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text())


def read_run_config(run: str | Path, section: str, command: str) -> dict:
    """``run``'s config.json, refused by name unless ``command`` wrote the folder: it must
    hold a config.json with a ``section`` key (``"train"`` for ``memworld train``,
    ``"training"`` for ``memworld leworld train``)."""
    path = Path(run) / "config.json"
    if not path.is_file():
        raise ValueError(
            f"{str(run)!r} is not a run folder (no config.json); pass a folder written by "
            f"`{command}`"
        )
    config = read_json(path)
    if not isinstance(config, dict) or section not in config:
        raise ValueError(
            f"{str(run)!r} was not written by `{command}` (its config.json has no "
            f"{section!r}); pass a folder written by `{command}`"
        )
    return config


def _jsonable(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj):
        return dataclasses.asdict(obj)
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, type):
        return f"{obj.__module__}.{obj.__qualname__}"
    return repr(obj)


def checkpoint(run: str | Path, which: str | Path = "best") -> Path:
    """The ``best`` (falling back to ``latest``) or ``latest`` checkpoint of a run, or
    ``which`` itself when it is the path of a checkpoint file."""
    folder = Path(run) / "checkpoints"
    if str(which) not in ("best", "latest"):
        path = Path(which)
        if path.is_file():
            return path
        raise ValueError(
            f"checkpoint {str(which)!r} is neither 'best', 'latest' nor a checkpoint file; "
            f"pass one of those (the run's files: {sorted(p.name for p in folder.glob('*.zip'))})"
        )
    for name in (which, "latest") if which == "best" else (which,):
        if (folder / f"{name}.zip").exists():
            return folder / f"{name}.zip"
    raise ValueError(f"no {which} checkpoint in {folder}; train the run first")


class torch_threads:  # noqa: N801  (used as a context manager)
    """Set torch's CPU thread count inside a ``with`` block, restore it after."""

    def __init__(self, threads: int) -> None:
        self.threads = threads

    def __enter__(self) -> None:
        import torch

        self.before = torch.get_num_threads()
        torch.set_num_threads(self.threads)

    def __exit__(self, *exc: object) -> None:
        import torch

        torch.set_num_threads(self.before)
