"""The memory protocol every module implements, and the registry that names them.

A memory module maps an input sequence ``x`` of shape ``(T, B, input_dim)`` and a
state (a dict of batch-first tensors) to an output ``(T, B, output_dim)`` and the
next state.  ``episode_starts[t, b]`` resets row ``b`` to its initial state
*before* step ``t`` is processed.  Algorithms and buffers only see this protocol.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor, nn

State = dict[str, Tensor]


class MemoryModule(nn.Module):
    """Base class of all memory modules.

    Args:
        input_dim: width of each input vector.
        output_dim: width of each output vector.

    Subclasses implement :meth:`initial_state` and :meth:`forward`; they may
    override :meth:`aux_loss` and :meth:`diagnostics`.  ``persistent = True``
    marks a module whose memory deliberately survives episode starts.
    ``recommended_lr`` is the Adam learning rate MemoryPPO uses for the module
    when the user gives none.

    Fast paths: a module with a faster way to compute the same thing (a one-step
    rollout path, a compiled step) keeps its plain code as
    :meth:`forward_reference`, and :meth:`forward` takes the fast path only while
    ``fast_path`` is True (set it to False on an instance, or with
    :func:`reference_mode`, to run the reference everywhere).  Tests hold every
    fast path to its reference.
    """

    persistent: bool = False
    recommended_lr: float = 3e-3
    fast_path: bool = True

    def __init__(self, input_dim: int, output_dim: int) -> None:
        super().__init__()
        check_positive_int("input_dim", input_dim)
        check_positive_int("output_dim", output_dim)
        self.input_dim = int(input_dim)
        self.output_dim = int(output_dim)

    def initial_state(self, batch_size: int, device: torch.device | str = "cpu") -> State:
        raise NotImplementedError

    def forward(self, x: Tensor, state: State, episode_starts: Tensor) -> tuple[Tensor, State]:
        raise NotImplementedError

    def forward_reference(
        self, x: Tensor, state: State, episode_starts: Tensor
    ) -> tuple[Tensor, State]:
        """The plain computation the fast paths must equal (a module without one: ``forward``)."""
        return self.forward(x, state, episode_starts)

    def use_fast_path(self, x: Tensor) -> bool:
        """Whether ``forward`` may take a one-step fast path for ``x``: ``fast_path`` is on and
        ``x`` holds one step (``T == 1``)."""
        return self.fast_path and x.dim() == 3 and x.shape[0] == 1

    def aux_loss(self, state: State | None = None) -> Tensor:
        """Auxiliary loss from the last forward pass; zero where a module has none."""
        return torch.zeros((), device=self._device(state))

    @torch.no_grad()
    def diagnostics(self, state: State) -> dict[str, float]:
        """Scalar summaries of a state (slot usage, read sparsity, ...)."""
        return {}

    def reset_rows(self, state: State, starts: Tensor) -> State:
        """Return ``state`` with the rows where ``starts`` (B,) is True set to the initial state."""
        if self.persistent or not bool(starts.any()):
            return state
        init = self.initial_state(starts.shape[0], starts.device)
        out = {}
        for name, value in state.items():
            mask = starts.view(-1, *([1] * (value.dim() - 1)))
            out[name] = torch.where(mask, init[name].to(value.dtype), value)
        return out

    def check_inputs(self, x: Tensor, episode_starts: Tensor, state: State | None = None) -> None:
        """Refuse a badly shaped or typed ``x``, ``episode_starts`` other than 0/1, and (when
        given) a ``state`` missing a key or built for another batch size.  Costs one host
        sync (the 0/1 check of non-bool ``episode_starts``) per call."""
        if x.dim() != 3 or x.shape[-1] != self.input_dim or x.shape[0] == 0:
            raise ValueError(
                f"x must have shape (T, B, input_dim={self.input_dim}) with at least one step "
                f"(T >= 1), got {tuple(x.shape)}; add a time axis with x.unsqueeze(0) for one step"
            )
        want = self._param_dtype()
        if not x.is_floating_point() or want not in (None, x.dtype):
            want_name = f"dtype {want} (the module's parameters)" if want else "a floating dtype"
            raise ValueError(
                f"x must have {want_name}, got {x.dtype}; "
                "pass x.float() (or convert the module, e.g. module.double())"
            )
        if tuple(episode_starts.shape) != tuple(x.shape[:2]):
            raise ValueError(
                f"episode_starts must have shape (T, B)={tuple(x.shape[:2])}, "
                f"got {tuple(episode_starts.shape)}"
            )
        if episode_starts.dtype != torch.bool and bool(
            ((episode_starts != 0) & (episode_starts != 1)).any()
        ):
            raise ValueError(
                "episode_starts must hold only 0/1 (or bool) values, got others "
                f"(e.g. {episode_starts[(episode_starts != 0) & (episode_starts != 1)][0].item()}); "
                "pass the done flags as a bool tensor"
            )
        if state is not None:
            self.check_state(state, x.shape[1])

    def _param_dtype(self) -> torch.dtype | None:
        """The dtype of the first floating parameter (None without one); x must have it."""
        return next((p.dtype for p in self.parameters() if p.is_floating_point()), None)

    def check_state(self, state: State, batch_size: int) -> None:
        """Refuse a ``state`` without the keys of :meth:`initial_state` or whose tensors'
        batch axis is not ``batch_size``."""
        if getattr(self, "_state_keys", None) is None:
            try:  # on the meta device: shapes only, nothing allocated
                self._state_keys = tuple(self.initial_state(1, "meta"))
            except Exception:  # an initial_state that cannot run on meta: check sizes only
                self._state_keys = ()
        missing = [k for k in self._state_keys if k not in state]
        if missing:
            raise ValueError(
                f"state is missing {missing}; build it with module.initial_state(batch_size) "
                "and pass the state forward returned"
            )
        for key, value in state.items():
            if isinstance(value, Tensor) and value.dim() and value.shape[0] != batch_size:
                raise ValueError(
                    f"state[{key!r}] has batch size {value.shape[0]} but x has B={batch_size}; "
                    f"build the state with module.initial_state({batch_size})"
                )

    def _device(self, state: State | None = None) -> torch.device:
        """Where the module lives: its first parameter or buffer, else ``state``'s, else CPU."""
        for p in self.parameters():
            return p.device
        for b in self.buffers():
            return b.device
        for value in (state or {}).values():
            return value.device
        return torch.device("cpu")


class SteppedMemory(MemoryModule):
    """A memory module whose one-step calls (rollouts) run :meth:`step`, a lean path that
    tests hold to :meth:`forward_reference`; every other call (a chunk, or ``fast_path``
    off) runs the reference.  Subclasses implement :meth:`step` and
    :meth:`forward_reference`.

    A subclass whose step works on a leading time axis of one (``x (1, B, input_dim)``,
    ``starts (1, B)``, ``y (1, B, output_dim)``) sets ``step_keeps_time = True`` and saves
    the calls that drop and restore it."""

    step_keeps_time = False

    def forward(self, x: Tensor, state: State, episode_starts: Tensor) -> tuple[Tensor, State]:
        if not self.use_fast_path(x):
            return self.forward_reference(x, state, episode_starts)
        self.check_inputs(x, episode_starts, state)
        if self.step_keeps_time:
            return self.step(x, state, episode_starts)
        y, new_state = self.step(x[0], state, episode_starts[0])
        return y[None], new_state

    def step(self, x: Tensor, state: State, starts: Tensor) -> tuple[Tensor, State]:
        """One step: ``x (B, input_dim)``, ``starts (B,)`` -> ``y (B, output_dim)`` and the
        state.  No input checks: :meth:`forward` makes them."""
        raise NotImplementedError

    def forward_reference(
        self, x: Tensor, state: State, episode_starts: Tensor
    ) -> tuple[Tensor, State]:
        raise NotImplementedError


class reference_mode:  # noqa: N801 (used like a function: ``with reference_mode(m):``)
    """Context manager: ``module`` (and every memory module inside it) runs its reference path.

    Args:
        module: a module; each :class:`MemoryModule` in ``module.modules()`` has its
            ``fast_path`` switched off inside the block and restored after it.
    """

    def __init__(self, module: nn.Module) -> None:
        self.modules = [m for m in module.modules() if isinstance(m, MemoryModule)]
        self.saved: list[bool] = []

    def __enter__(self) -> nn.Module:
        self.saved = [m.__dict__.get("fast_path") for m in self.modules]
        for m in self.modules:
            m.fast_path = False
        return self.modules[0] if self.modules else None

    def __exit__(self, *exc: object) -> None:
        for m, value in zip(self.modules, self.saved):
            if value is None:
                m.__dict__.pop("fast_path", None)
            else:
                m.fast_path = value


def check_positive_int(name: str, value: int) -> None:
    if not isinstance(value, int | torch.SymInt) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def check_heads(d_model: int, num_heads: int) -> None:
    """Refuse a width that the attention heads do not divide evenly."""
    if d_model % num_heads:
        raise ValueError(
            f"d_model={d_model} must be divisible by num_heads={num_heads}; "
            "change one of them (e.g. d_model=64, num_heads=4)"
        )


def check_range(
    name: str,
    value: object,
    low: float = -math.inf,
    high: float = math.inf,
    *,
    integer: bool = False,
    open_low: bool = False,
    open_high: bool = False,
    fix: str = "",
) -> None:
    """Refuse ``value`` unless it is a number (an ``int`` if ``integer``) in the range.

    The error names the argument, the allowed range and, if given, the fix:
    ``check_range("gamma", 1.5, 0, 1, fix="0.99 is usual")`` raises
    ``ValueError: gamma must be a number in [0, 1], got 1.5; 0.99 is usual``.
    NaN, booleans and (with ``integer``) floats such as 4.5 are refused.
    """
    kinds = (int, np.integer) if integer else (int, float, np.integer, np.floating)
    ok = isinstance(value, kinds) and not isinstance(value, bool | np.bool_)
    if ok:
        above = value > low if open_low else value >= low
        below = value < high if open_high else value <= high
        ok = bool(above and below)  # False for NaN
    if not ok:
        interval = f"{'(' if open_low or low == -math.inf else '['}{_bound(low)}, "
        interval += f"{_bound(high)}{')' if open_high or high == math.inf else ']'}"
        kind = "an integer" if integer else "a number"
        raise ValueError(
            f"{name} must be {kind} in {interval}, got {value!r}" + (f"; {fix}" if fix else "")
        )


def _bound(x: float) -> str:
    if x in (math.inf, -math.inf):
        return "inf" if x > 0 else "-inf"
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


_REGISTRY: dict[str, type[MemoryModule]] = {}


def register(name: str) -> Callable[[type[MemoryModule]], type[MemoryModule]]:
    """Class decorator: make a module constructible as ``memory.make(name, ...)``."""

    def wrap(cls: type[MemoryModule]) -> type[MemoryModule]:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"memory module name {name!r} is already registered")
        _REGISTRY[name] = cls
        cls.registry_name = name
        return cls

    return wrap


def get(name: str | type[MemoryModule]) -> type[MemoryModule]:
    """The class of a registered memory module (a class is returned as it is)."""
    if isinstance(name, type):
        return name
    key = name.lower()
    if key not in _REGISTRY:
        raise ValueError(f"unknown memory module {name!r}; choose one of {sorted(_REGISTRY)}")
    return _REGISTRY[key]


def make(name: str | type[MemoryModule], input_dim: int, **kwargs) -> MemoryModule:
    """Build a registered memory module by name (or from a class)."""
    return get(name)(input_dim=input_dim, **kwargs)


def names() -> list[str]:
    """Names of all registered memory modules."""
    return sorted(_REGISTRY)
