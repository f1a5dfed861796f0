"""memworld's C++ kernels (memory/csrc/), built on first use with torch's extension builder.

Two extensions, each a few plain functions of tensors:

- ``rnn_loops`` (rnn_loops.cpp): the step loops of the CPU GRU and LSTM sequence kernels
  (memory/fused_rnn.py), forward and backward;
- ``rollout_steps`` (rollout_steps.cpp, gtrxl_step.cpp, slot_step.cpp, bit_step.cpp,
  blas.cpp): one rollout step of ``lstm``, ``gru``, ``fwp``, ``lru``, ``gtrxl``, ``slot`` and
  ``bit`` (their Python steps' torch calls made from C++; ``fwp``, ``gtrxl``, ``slot`` and
  ``bit`` without grad as plain loops between their products, the last three's products
  through the BLAS torch carries).

At the sizes memworld trains and acts (a few rows, widths 64-256) a torch call from Python
costs a few microseconds whatever its arithmetic; from C++ the same calls cost about one.
Each extension is compiled the first time a process asks for it (about 30 s on 2 cores;
:func:`prebuild` builds both ahead, as ``make install`` does) into torch's extension cache
(``TORCH_EXTENSIONS_DIR``, by default ``~/.cache/torch_extensions``), which later processes
load in well under a second.

Whether they are used is decided by, in order: the environment variable ``MEMWORLD_CPP``
(``0``/``false``/``off`` turns them off: the Python code runs); then whether a C++ compiler
and ninja are found and the build succeeds.  Where not, one warning per extension says why
and the Python code (the same arithmetic) runs.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import warnings
from pathlib import Path
from types import ModuleType

import torch
from torch import Tensor

from memworld.memory.compile import have_cxx_compiler

ENV_VAR = "MEMWORLD_CPP"
_OFF = ("0", "false", "off", "no")
SOURCES = Path(__file__).parent / "csrc"
# Each extension and its source files (in memory/csrc/); the first binds the functions.
SOURCE_FILES = {
    "rnn_loops": ("rnn_loops.cpp",),
    "rollout_steps": (
        "rollout_steps.cpp",
        "gtrxl_step.cpp",
        "slot_step.cpp",
        "bit_step.cpp",
        "blas.cpp",
    ),
}
EXTENSIONS = tuple(SOURCE_FILES)
_built: dict[str, ModuleType | None] = {}


def wanted() -> bool:
    """False where ``MEMWORLD_CPP`` turns the C++ kernels off."""
    return os.environ.get(ENV_VAR, "").strip().lower() not in _OFF


def _ninja_on_path() -> bool:
    """Whether ``ninja`` runs, adding the ``ninja`` package's binary folder to PATH if needed
    (a virtual environment that is not activated has its own binaries off the PATH)."""
    if shutil.which("ninja"):
        return True
    try:
        import ninja  # the PyPI package ships the binary
    except ImportError:
        return False
    os.environ["PATH"] = ninja.BIN_DIR + os.pathsep + os.environ.get("PATH", "")
    return shutil.which("ninja") is not None


def _build(name: str) -> ModuleType:
    from torch.utils.cpp_extension import load

    sources = [str(SOURCES / file) for file in SOURCE_FILES[name]]
    # torch rebuilds an extension when its sources or flags change, not its headers: a
    # digest of the headers in the flags makes an edited header rebuild it too.
    headers = hashlib.sha1(b"".join(path.read_bytes() for path in sorted(SOURCES.glob("*.h"))))
    flags = ["-O3", f"-DMEMWORLD_HEADERS={headers.hexdigest()[:16]}"]
    return load(name=f"memworld_{name}", sources=sources, extra_cflags=flags)


def extension(name: str) -> ModuleType | None:
    """The compiled extension ``name`` (one of :data:`EXTENSIONS`), or None: off, or
    unavailable (warned once per process and extension)."""
    if name not in EXTENSIONS:
        raise ValueError(f"name={name!r}: memworld's C++ extensions are {EXTENSIONS}")
    if name in _built:
        return _built[name]
    module, reason = None, None
    if not wanted():
        pass
    elif not have_cxx_compiler():
        reason = "no C++ compiler (g++, c++ or clang++) on the PATH"
    elif not _ninja_on_path():
        reason = "ninja is not installed (pip install ninja)"
    else:
        try:
            module = _build(name)
        except Exception as err:  # noqa: BLE001 (any build failure: the Python code runs)
            reason = f"{type(err).__name__}: {str(err).splitlines()[0][:200] if str(err) else ''}"
    if reason is not None:
        warnings.warn(
            f"memworld's C++ kernels ({name}) are unavailable ({reason}); the Python code "
            f"runs instead (same results, slower at small sizes). Set {ENV_VAR}=0 to skip "
            "the attempt.",
            RuntimeWarning,
            stacklevel=3,
        )
    _built[name] = module
    return module


def loops() -> ModuleType | None:
    """The GRU/LSTM kernels' step loops (``rnn_loops``), or None."""
    return extension("rnn_loops")


def rollout_steps(x: Tensor) -> ModuleType | None:
    """The rollout steps (``rollout_steps``) for a step on ``x``'s device, or None: off the
    CPU (they are built for it), off, or unavailable."""
    return extension("rollout_steps") if x.device.type == "cpu" else None


def flat_plan(parts: list) -> tuple[Tensor, list[int]]:
    """The tensors of ``parts`` (a tensor, or a layer's weight then bias) one after the other
    in one float tensor, detached, and where each starts: how a C++ step takes its weights
    (one argument to pass, not dozens)."""
    tensors: list[Tensor] = []
    for part in parts:
        tensors += [part] if isinstance(part, Tensor) else [part.weight, part.bias]
    offsets = [0]
    for t in tensors[:-1]:
        offsets.append(offsets[-1] + t.numel())
    return torch.cat([t.detach().reshape(-1) for t in tensors]), offsets


def prebuild() -> str:
    """Build every extension now (or find it built) and say so: what ``make install`` runs."""
    ready = [name for name in EXTENSIONS if extension(name) is not None]
    return f"ready: {', '.join(ready)}" if ready else "unavailable: the Python code will run"
