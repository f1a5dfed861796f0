"""Maps the repository's top-level folders onto the one ``memworld`` namespace.

envs/, memory/, agents/ and world_models/ stay at the top of the repository but
install and import only as ``memworld.envs``, ``memworld.memory``,
``memworld.agents`` and ``memworld.world_models``, so memworld never shadows a
user's own ``envs`` package or PyPI's ``agents`` / ``memory``.  Everything else
is in pyproject.toml.
"""

from setuptools import find_packages, setup

FOLDERS = {
    "memworld": "memworld",
    "memworld.envs": "envs",
    "memworld.memory": "memory",
    "memworld.agents": "agents",
    "memworld.world_models": "world_models",
}

packages: list[str] = []
for name, folder in FOLDERS.items():
    packages += [name] + [f"{name}.{sub}" for sub in find_packages(folder)]

setup(packages=packages, package_dir=FOLDERS)
