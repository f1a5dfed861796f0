"""The C++ step loops of the CPU GRU and LSTM kernels (memory/csrc/rnn_loops.cpp), built on first use.

memory/fused_rnn.py's kernels walk a chunk step by step; in Python each step costs six or
so torch calls, which at a few rows and hidden 64-256 cost more than the arithmetic.  The
same loops in C++ make a step one BLAS call and one pass over its values.  They are
compiled with torch's extension builder the first time a process needs them (about 30 s
on 2 cores; :func:`prebuild` does it ahead, as ``make install`` does) and kept in torch's extension cache (``TORCH_EXTENSIONS_DIR``, by default
``~/.cache/torch_extensions``), which later processes load in well under a second.

Whether they are used is decided by, in order: the environment variable
``MEMWORLD_CPP_LOOPS`` (``0``/``false``/``off`` turns them off, so the Python loops run);
then whether a C++ compiler and ninja are found and the build succeeds.  Where not, one
warning says why, and the Python loops (the same arithmetic) run.
"""

from __future__ import annotations

import os
import shutil
import warnings
from pathlib import Path
from types import ModuleType

ENV_VAR = "MEMWORLD_CPP_LOOPS"
_OFF = ("0", "false", "off", "no")
SOURCE = Path(__file__).parent / "csrc" / "rnn_loops.cpp"
_state: dict[str, ModuleType | None] = {}


def wanted() -> bool:
    """False where ``MEMWORLD_CPP_LOOPS`` turns the C++ loops off."""
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


def _build(verbose: bool = False) -> ModuleType:
    from torch.utils.cpp_extension import load

    return load(
        name="memworld_rnn_loops",
        sources=[str(SOURCE)],
        extra_cflags=["-O3"],
        verbose=verbose,
    )


def loops() -> ModuleType | None:
    """The compiled loops, or None (off, or unavailable: warned once per process)."""
    if "module" in _state:
        return _state["module"]
    module, reason = None, None
    if not wanted():
        pass
    elif not any(shutil.which(c) for c in (os.environ.get("CXX", ""), "c++", "g++") if c):
        reason = "no C++ compiler (c++ or g++) on the PATH"
    elif not _ninja_on_path():
        reason = "ninja is not installed (pip install ninja)"
    else:
        try:
            module = _build()
        except Exception as err:  # noqa: BLE001 (any build failure: the Python loops run)
            reason = f"{type(err).__name__}: {str(err).splitlines()[0][:200] if str(err) else ''}"
    if reason is not None:
        warnings.warn(
            f"memworld's C++ GRU/LSTM step loops are unavailable ({reason}); the Python "
            f"loops run instead (same results, slower on small batches). Set {ENV_VAR}=0 "
            "to skip the attempt.",
            RuntimeWarning,
            stacklevel=3,
        )
    _state["module"] = module
    return module


def prebuild() -> str:
    """Build the loops now (or find them built) and say so: what ``make install`` runs."""
    return "ready" if loops() is not None else "unavailable: the Python loops will run"
