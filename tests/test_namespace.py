"""memworld imports only under its own name: a user's ``envs``/``agents``/``memory``
packages, first on ``sys.path``, neither shadow memworld's nor get shadowed by it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SCRIPT = """
import sys
import gymnasium as gym
import memworld
from memworld import MemoryDQN, MemoryPPO, MemorySAC, make_vec_env, memory

env = gym.make("memworld:memworld/RepeatPreviousEasy-v0")
assert env.reset(seed=0)[0].shape == env.observation_space.shape
assert "gru" in memory.names() and MemoryDQN.__name__ == "MemoryDQN" and MemorySAC.__name__ == "MemorySAC"
model = MemoryPPO("MlpPolicy", make_vec_env("memworld/RepeatPreviousEasy-v0", n_envs=2),
                  n_steps=16, batch_size=32, policy_kwargs=dict(memory="gru"), seed=0)
model.learn(32)
for name in ("envs", "agents", "memory", "world_models"):
    module = sys.modules.get(name)
    assert module is None or getattr(module, "USER_PACKAGE", False), (name, module)
import envs, agents, memory as user_memory
assert envs.USER_PACKAGE and agents.USER_PACKAGE and user_memory.USER_PACKAGE
print("ok", memworld.__version__)
"""


def user_project(tmp_path: Path) -> Path:
    """A folder holding the package names RL projects (and PyPI) commonly use."""
    for name in ("envs", "agents", "memory", "world_models"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text("USER_PACKAGE = True\n")
    return tmp_path


def run_in(folder: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(folder), "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, *args], cwd=folder, env=env, capture_output=True, text=True, timeout=300
    )


def test_user_packages_do_not_collide(tmp_path: Path) -> None:
    result = run_in(user_project(tmp_path), "-c", SCRIPT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ok ")


def test_cli_list_beside_user_packages(tmp_path: Path) -> None:
    result = run_in(user_project(tmp_path), "-m", "memworld.cli", "list")
    assert result.returncode == 0, result.stderr
    assert "memworld/RepeatPreviousEasy-v0" in result.stdout


def test_import_memworld_registers_without_torch() -> None:
    code = (
        "import sys, gymnasium as gym, memworld;"
        "gym.make('memworld/RepeatPreviousEasy-v0');"
        "print('torch' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"
