"""Packaging: the wheel's contents (py.typed, the shipped bench scripts and sweep
configs, LICENSE), no deprecation warnings when building it, the shipped-file lookup,
and the install hints of optional dependencies."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp("wheel")
    # Build with this environment's setuptools when it is new enough (fast, offline);
    # else in pip's isolated build environment, as a user's `pip install` would.
    isolation = ["--no-build-isolation"] if _setuptools_at_least(77) else []
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", *isolation, "-w", str(out), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (path,) = out.glob("memworld-*.whl")
    return path, done.stdout + done.stderr


def _setuptools_at_least(major: int) -> bool:
    try:
        from importlib.metadata import version

        return int(version("setuptools").split(".")[0]) >= major
    except Exception:
        return False


def test_the_wheel_ships_one_namespace_typing_marker_bench_scripts_and_sweeps(wheel):
    names = zipfile.ZipFile(wheel[0]).namelist()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {"memworld"}, tops  # no top-level envs/, agents/, memory/
    assert "memworld/py.typed" in names
    for script in sorted((ROOT / "bench").glob("*.py")):
        assert f"memworld/_shipped/bench/{script.name}" in names
    assert "memworld/_shipped/sweeps/memory_table.yaml" in names
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    metadata = next(n for n in names if n.endswith(".dist-info/METADATA"))
    text = zipfile.ZipFile(wheel[0]).read(metadata).decode()
    assert "License-Expression: MIT" in text
    assert "Provides-Extra: recurrent" in text and "Provides-Extra: docs" in text


def test_building_the_wheel_warns_of_no_deprecation(wheel):
    assert "deprecat" not in wheel[1].lower(), wheel[1][-3000:]


def test_shipped_files_are_found_and_a_missing_one_names_the_checkout():
    from memworld.args import shipped_file, shipped_names

    assert shipped_file("bench", "env_throughput.py").is_file()
    assert "memory_table" in shipped_names("sweeps", ".yaml")
    with pytest.raises(FileNotFoundError, match="memworld checkout"):
        shipped_file("bench", "no_such_bench.py")


def test_a_sweep_config_is_found_by_name_or_refused_with_the_shipped_names(capsys):
    from memworld.sweep.cli import sweep_config_path

    assert sweep_config_path("memory_table").name == "memory_table.yaml"
    assert sweep_config_path("sweeps/memory_table.yaml").is_file()
    with pytest.raises(ValueError, match=r"memory_tabel.*\['memory_table'\]"):
        sweep_config_path("memory_tabel")


def test_recurrentppo_without_sb3_contrib_says_how_to_install_it(monkeypatch):
    from memworld.train import TrainConfig

    monkeypatch.setitem(sys.modules, "sb3_contrib", None)  # import fails as if not installed
    with pytest.raises(ValueError, match=r'pip install "memworld\[recurrent\]"'):
        TrainConfig(algo="recurrentppo")


def test_license_and_citation_are_there():
    assert "MIT License" in (ROOT / "LICENSE").read_text()
    citation = (ROOT / "CITATION.cff").read_text()
    assert "cff-version:" in citation and "title:" in citation


def test_demo_subcommand_runs_the_demo_with_its_options(monkeypatch):
    import memworld.demo
    from memworld.cli import main

    seen = []
    monkeypatch.setattr(memworld.demo, "run", seen.append)
    main(["demo", "--steps", "100", "--skip-train", "--env", "KeyDoorEasy"])
    (args,) = seen
    assert (args.steps, args.skip_train, args.env) == (100, True, "memworld/KeyDoorEasy-v0")


def test_bench_and_sweep_configs_work_from_the_installed_wheel(wheel, tmp_path):
    site = tmp_path / "site"
    zipfile.ZipFile(wheel[0]).extractall(site)
    code = (
        "import memworld, sys\n"
        "from memworld.args import shipped_file\n"
        "from memworld.sweep.cli import sweep_config_path\n"
        "print(memworld.__file__)\n"
        "print(shipped_file('bench', 'env_throughput.py'))\n"
        "print(sweep_config_path('sweeps/memory_table.yaml'))\n"
        "sys.argv = ['memworld', 'bench', 'envs', '--help']\n"
        "from memworld.cli import main\n"
        "main()\n"
    )
    done = subprocess.run(
        [sys.executable, "-u", "-c", code],  # unbuffered: our prints before the script's
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,  # no checkout here: only the unpacked wheel is on the path
        env={"PYTHONPATH": str(site), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"},
    )
    out = done.stdout
    assert done.returncode == 0, done.stderr[-3000:]
    inside = str(site / "memworld")
    assert out.splitlines()[0] == f"{inside}/__init__.py"
    assert f"{inside}/_shipped/bench/env_throughput.py" in out
    assert f"{inside}/_shipped/sweeps/memory_table.yaml" in out
    assert "usage: env_throughput.py" in out  # the shipped script ran
