"""Maps the repository's top-level folders onto the one ``memworld`` namespace.

envs/, memory/, agents/ and world_models/ stay at the top of the repository but
install and import only as ``memworld.envs``, ``memworld.memory``,
``memworld.agents`` and ``memworld.world_models``, so memworld never shadows a
user's own ``envs`` package or PyPI's ``agents`` / ``memory``.  The benchmark
scripts (bench/*.py) and sweep configs (sweeps/*.yaml) are copied into the
built package as ``memworld/_shipped/bench`` and ``memworld/_shipped/sweeps``,
so ``memworld bench`` and ``memworld sweep memory_table`` work from a wheel
(``memworld.args.shipped_file`` finds them there or in a checkout).
Everything else is in pyproject.toml.
"""

from pathlib import Path

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

FOLDERS = {
    "memworld": "memworld",
    "memworld.envs": "envs",
    "memworld.memory": "memory",
    "memworld.agents": "agents",
    "memworld.world_models": "world_models",
}
SHIPPED = {"bench": "*.py", "sweeps": "*.yaml"}  # folder -> files copied into the package

packages: list[str] = []
for name, folder in FOLDERS.items():
    packages += [name] + [f"{name}.{sub}" for sub in find_packages(folder)]


class BuildWithShipped(build_py):
    """build_py that also copies SHIPPED's files into ``memworld/_shipped/<folder>/``."""

    def run(self) -> None:
        super().run()
        root = Path(__file__).resolve().parent
        for folder, pattern in SHIPPED.items():
            target = Path(self.build_lib) / "memworld" / "_shipped" / folder
            for source in sorted((root / folder).glob(pattern)):
                self.mkpath(str(target))
                self.copy_file(str(source), str(target / source.name))


setup(packages=packages, package_dir=FOLDERS, cmdclass={"build_py": BuildWithShipped})
