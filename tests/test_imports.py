"""Every ``from memworld... import name`` in the package, bench and tests resolves.

Many imports sit inside functions (to keep ``import memworld`` light), where a
moved module would only fail when that code path runs; this walks them all.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = ("memworld", "envs", "memory", "agents", "world_models", "bench", "tests")


def memworld_imports() -> list[tuple[str, str, str]]:
    found = []
    for folder in FOLDERS:
        for path in sorted((ROOT / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("memworld"):
                    where = f"{path.relative_to(ROOT)}:{node.lineno}"
                    found += [(where, node.module, alias.name) for alias in node.names]
                elif isinstance(node, ast.Import):
                    found += [
                        (f"{path.relative_to(ROOT)}:{node.lineno}", alias.name, "")
                        for alias in node.names
                        if alias.name.startswith("memworld")
                    ]
    return found


def test_every_memworld_import_resolves() -> None:
    imports = memworld_imports()
    assert len(imports) > 100  # the walk found the package's imports
    broken = []
    for where, module_name, name in imports:
        try:
            module = importlib.import_module(module_name)
            if name and name != "*" and not hasattr(module, name):
                importlib.import_module(f"{module_name}.{name}")
        except ImportError as error:
            if "No module named 'memworld" in str(error) or name:
                broken.append(f"{where}: from {module_name} import {name} ({error})")
        except Exception:  # a module that fails on import for another reason has tests of its own
            continue
    assert not broken, "\n".join(broken)
