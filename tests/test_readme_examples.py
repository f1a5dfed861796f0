"""The README's Python examples run as printed, with the training budgets cut.

Each ```python block runs in its own interpreter in a scratch folder (the examples
write a checkpoint and a video there), with ``.learn(N)`` turned into ``.learn(256)``.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_the_readme_has_its_four_examples():
    assert len(BLOCKS) == 4, [block.splitlines()[0] for block in BLOCKS]


def extensions_dir() -> str | None:
    """Where this process's C++ kernels (memory/native.py) were built, so that an example
    with a scratch HOME loads them rather than building them again (a minute each time)."""
    from memworld.memory import native

    built = native.loops() if native.wanted() else None
    return str(Path(built.__file__).parent.parent) if built is not None else None


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_example_runs(index, tmp_path):
    code = re.sub(r"\.learn\([\d_]+\)", ".learn(256)", BLOCKS[index])
    extensions = extensions_dir()
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
        | ({"TORCH_EXTENSIONS_DIR": extensions} if extensions else {}),
    )
    assert done.returncode == 0, f"README example {index}:\n{code}\n{done.stderr[-3000:]}"
