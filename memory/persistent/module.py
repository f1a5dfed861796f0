"""``PersistentMemory``: the PMLL store behind the memory protocol.

Each step a row's input ``x_t`` is embedded by a fixed random projection into a
key; the store's bias vector for that key is the read (``bias(q) = sum w_i v_i /
sum w_i``), and the output is ``[x_t, bias]`` (or the bias alone).  What is
written is configurable: ``value="next"`` (default) stores ``(key of x_{t-1},
x_t)``, so the read is "what followed inputs like this one"; ``value="input"``
stores ``(key of x_t, x_t)``.  A row's first step of an episode has no
predecessor and writes a zero key, which is never retrieved (similarity 0 <
floor), so every row writes exactly one line per step.

The store persists across episodes (``persistent = True``: resets are ignored)
and is shared by all rows and calls (``shared_across_batch = True``: rows are
not independent).  Writes happen in eval mode (``write="rollout"``), which is
how SB3 collects rollouts; the gradient passes run in train mode and only read.
So that a replayed sequence reads what the rollout read, the state carries
``lines`` (the store prefix a row sees) and ``stride`` (lines written per step
by the rollout): step ``t`` of a chunk reads the store as of ``lines + t *
stride``, never lines written later in the rollout.

Every step adds one line per row, and with ``index="exact"`` novelty and reads
cost O(lines) per step: for long runs pass ``index="faiss-hnsw"`` (or a store
with it).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from memworld.memory.base import MemoryModule, State, check_positive_int, register
from memworld.memory.persistent.config import StoreConfig
from memworld.memory.persistent.store import PersistentStore

WRITE_MODES = ("rollout", "always", "never")


@register("persistent")
class PersistentMemory(MemoryModule):
    """PMLL store read by a key embedding of each input; writes during rollouts.

    Args:
        input_dim: width of each input.
        key_dim: width of the keys (a fixed Gaussian projection of the input) (32).
        value: ``"next"`` (store the input that followed) or ``"input"``.
        k: lines per read (5).
        include_input: output ``[x, bias]`` (True, default) or the bias alone.
        write: ``"rollout"`` (in eval mode), ``"always"`` or ``"never"``.
        store: a :class:`PersistentStore` with ``dim == key_dim`` and
            ``value_dim == input_dim`` to share; None creates one (in memory unless
            ``path`` is given).
        path, backend, index, config: how to create that store.
        seed: seed of the key projection.
    """

    persistent = True
    shared_across_batch = True

    def __init__(
        self,
        input_dim: int,
        key_dim: int = 32,
        value: str = "next",
        k: int = 5,
        include_input: bool = True,
        write: str = "rollout",
        store: PersistentStore | None = None,
        path: str | None = None,
        backend: str | None = None,
        index: str = "exact",
        config: StoreConfig | None = None,
        seed: int = 0,
    ) -> None:
        check_positive_int("input_dim", input_dim)
        check_positive_int("key_dim", key_dim)
        check_positive_int("k", k)
        if value not in ("next", "input"):
            raise ValueError(f"value must be 'next' or 'input', got {value!r}")
        if write not in WRITE_MODES:
            raise ValueError(f"write must be one of {WRITE_MODES}, got {write!r}")
        super().__init__(input_dim, 2 * input_dim if include_input else input_dim)
        self.key_dim, self.value, self.k = key_dim, value, k
        self.include_input, self.write = include_input, write
        if store is None:
            store = PersistentStore(
                path, key_dim, value_dim=input_dim, backend=backend, index=index, config=config
            )
        if store.dim != key_dim or store.value_dim != input_dim:
            raise ValueError(
                f"store has dim={store.dim}, value_dim={store.value_dim}; this module needs "
                f"dim=key_dim={key_dim}, value_dim=input_dim={input_dim}"
            )
        self.store = store
        gen = torch.Generator().manual_seed(seed)
        projection = torch.randn(key_dim, input_dim, generator=gen) / input_dim**0.5
        self.register_buffer("key_projection", projection)

    def initial_state(self, batch_size: int, device: torch.device | str = "cpu") -> State:
        return {
            "lines": torch.full((batch_size,), len(self.store), dtype=torch.int64, device=device),
            "stride": torch.full((batch_size,), batch_size, dtype=torch.int64, device=device),
            "prev_key": torch.zeros(batch_size, self.key_dim, device=device),
            "has_prev": torch.zeros(batch_size, dtype=torch.bool, device=device),
        }

    def _writing(self) -> bool:
        return self.write == "always" or (self.write == "rollout" and not self.training)

    def _read(self, keys: np.ndarray, lines: np.ndarray) -> np.ndarray:
        """(B, value_dim) bias vectors; rows that see different store prefixes are read apart."""
        bias = np.zeros((len(keys), self.input_dim), np.float32)
        size = len(self.store)
        for seen in np.unique(lines):
            rows = lines == seen
            bias[rows] = self.store.bias_vector_batch(
                keys[rows], self.k, as_of=int(min(seen, size))
            )
        return bias

    def forward(self, x: Tensor, state: State, episode_starts: Tensor) -> tuple[Tensor, State]:
        self.check_inputs(x, episode_starts, state)
        steps, batch = x.shape[:2]
        with torch.no_grad():
            keys = (x.detach().float() @ self.key_projection.T).cpu().numpy()  # (T, B, key_dim)
        inputs = x.detach().float().cpu().numpy()  # (T, B, input_dim)
        starts = episode_starts.bool().cpu().numpy()  # (T, B)
        lines = state["lines"].cpu().numpy().copy()  # (B,)
        stride = state["stride"].cpu().numpy()
        if self._writing():
            stride = np.full(batch, batch, np.int64)
        prev_key = state["prev_key"].cpu().numpy().copy()
        has_prev = state["has_prev"].cpu().numpy()
        reads = np.zeros((steps, batch, self.input_dim), np.float32)
        for t in range(steps):
            has_prev = has_prev & ~starts[t]  # no transition across an episode start
            reads[t] = self._read(keys[t], lines)
            if self._writing():
                if self.value == "next":
                    write_keys = np.where(has_prev[:, None], prev_key, 0.0)
                else:
                    write_keys = keys[t]
                self.store.put_many(write_keys, inputs[t], [{"row": b} for b in range(batch)])
            lines = lines + stride
            prev_key, has_prev = keys[t], np.ones(batch, bool)
        bias = torch.as_tensor(reads, device=x.device, dtype=x.dtype)
        y = torch.cat([x, bias], dim=-1) if self.include_input else bias
        device = state["lines"].device
        new_state = {
            "lines": torch.as_tensor(lines, device=device),
            "stride": torch.as_tensor(stride, device=device),
            "prev_key": torch.as_tensor(prev_key, device=device, dtype=torch.float32),
            "has_prev": torch.as_tensor(has_prev, device=device),
        }
        return y, new_state

    @torch.no_grad()
    def diagnostics(self, state: State) -> dict[str, float]:
        return {
            "store_lines": float(len(self.store)),
            "visible_lines": float(state["lines"].float().mean()),
        }
