"""mkdocs hook: lays out the ``memworld`` package as it installs, for the API reference.

The repository keeps envs/, memory/, agents/ and world_models/ at the top and setup.py
installs them as ``memworld.envs``, ... ; griffe (mkdocstrings) reads source by path, so
this copies the Python files into ``build/docs_src/memworld/`` (memworld/'s own plus the
four folders under their installed names; griffe resolves symlinks, so copies) before mkdocs reads its plugins' settings. mkdocs.yml points
the Python handler's ``paths`` there.
"""

from __future__ import annotations

import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parent
TREE = ROOT / "build" / "docs_src"
FOLDERS = {"envs": "envs", "memory": "memory", "agents": "agents", "world_models": "world_models"}


def on_startup(command: str, dirty: bool) -> None:
    """Runs before any plugin's ``on_config``: mkdocstrings drops search paths that do not
    exist when it sets up, so on a fresh clone the tree must be there first."""
    package = TREE / "memworld"
    if package.exists():
        shutil.rmtree(TREE)
    only_python = shutil.ignore_patterns("__pycache__", "*.pyc", "_shipped")
    shutil.copytree(ROOT / "memworld", package, ignore=only_python, dirs_exist_ok=True)
    for name, folder in FOLDERS.items():
        shutil.copytree(ROOT / folder, package / name, ignore=only_python)
