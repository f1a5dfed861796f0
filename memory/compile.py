"""Optional ``torch.compile`` of a module's step function, with an eager fallback.

A memory module that has a step function (a plain function of tensors, such as
SlotMemory's rollout step) wraps it in :class:`CompiledStep`.  Whether it is
compiled is decided by, in order:

1. the environment variable ``MEMWORLD_COMPILE``: ``0``/``false``/``off`` turns
   compiling off everywhere, ``1``/``true``/``on`` turns it on where the module
   argument is left at ``None``;
2. the module's ``compile`` argument (``True``/``False``);
3. otherwise off: at the sizes memworld runs, the first compile costs a minute
   or more and the per-call gain does not repay it in a short run (docs/speed.md).

The compiled function is built once per wrapper with static shapes
(``dynamic=False``: one graph per input shape, cached by torch, whose on-disk
caches also keep the generated code between processes).  If no C++ compiler
is found, or compiling or running the compiled function fails, the wrapper
warns once and runs the eager function from then on.
"""

from __future__ import annotations

import os
import shutil
import warnings
from collections.abc import Callable
from typing import Any

import torch

ENV_VAR = "MEMWORLD_COMPILE"
_OFF = ("0", "false", "off", "no")
_ON = ("1", "true", "on", "yes")
_WARNED: set[str] = set()


def compile_wanted(flag: bool | None) -> bool:
    """Whether to compile, from ``MEMWORLD_COMPILE`` and a module's ``compile`` argument."""
    env = os.environ.get(ENV_VAR, "").strip().lower()
    if env in _OFF:
        return False
    if flag is not None:
        return bool(flag)
    return env in _ON


def have_cxx_compiler() -> bool:
    """Whether a C++ compiler that torch's CPU code generator can use is on the PATH."""
    names = [os.environ.get("CXX", ""), "g++", "c++", "clang++"]
    return any(name and shutil.which(name) for name in names)


class CompiledStep:
    """``fn`` compiled on first use, or ``fn`` itself where compiling is off or fails.

    Args:
        fn: the eager step function.
        enabled: the module's ``compile`` argument (``None``: follow ``MEMWORLD_COMPILE``).
        name: what to call the function in the fallback warning.
    """

    def __init__(self, fn: Callable[..., Any], enabled: bool | None, name: str) -> None:
        self.fn, self.name = fn, name
        self.enabled = compile_wanted(enabled)
        self.compiled: Callable[..., Any] | None = None
        self.failed = False

    def __call__(self, *args: Any) -> Any:
        if not self.enabled or self.failed:
            return self.fn(*args)
        if self.compiled is None:
            if not have_cxx_compiler():
                return self._fall_back("no C++ compiler (g++, c++ or clang++) on the PATH", args)
            self.compiled = torch.compile(self.fn, dynamic=False)
        try:
            return self.compiled(*args)
        except Exception as err:  # noqa: BLE001 (any compiler failure: run eagerly)
            return self._fall_back(f"{type(err).__name__}: {str(err).splitlines()[0][:200]}", args)

    def _fall_back(self, reason: str, args: tuple) -> Any:
        self.failed = True
        if self.name not in _WARNED:  # one warning per process and step function
            _WARNED.add(self.name)
            warnings.warn(
                f"{self.name}: torch.compile is unavailable ({reason}); running eagerly. "
                f"Set {ENV_VAR}=0 or compile=False to skip the attempt.",
                RuntimeWarning,
                stacklevel=3,
            )
        return self.fn(*args)

    def __getstate__(self) -> dict:
        # A compiled function cannot be pickled or deep-copied; it is rebuilt on first use.
        return {**self.__dict__, "compiled": None}
