"""LSTM and GRU baselines on the weights of ``nn.LSTM``/``nn.GRU``.

A chunk with no episode start inside it (after its first step) runs through one
oneDNN/cuDNN ``nn.LSTM``/``nn.GRU`` call; otherwise the chunk is split at the
steps where some row starts an episode, and only the rows that start are reset
(with ``torch.where``) between the pieces.  Past a crossover in the number of
pieces (a fraction of the chunk's length, per device, printed by
``python bench/memory_ops.py``) one call per piece costs more than the
alternative, and the chunk runs instead:

- on the CPU, through the hand-written sequence kernels of memory/fused_rnn.py
  (one autograd node per layer and chunk, resets as a mask): ``fused_above``,
  0 for the GRU, whose kernels beat torch's CPU GRU even on an unsplit chunk; for the
  LSTM, by default, the crossover of whichever step loops run (C++ or Python,
  memory/native.py);
- elsewhere, step by step through the fused cells (``torch.lstm_cell`` /
  ``torch.gru_cell``, the same weights): ``step_loop_above``.

A one-step call (``T == 1``, a rollout step) skips all of that: the rows that
start are zeroed with one ``masked_fill`` and each layer is one fused cell call
(:meth:`_Recurrent.step`), the same ops as a bare ``nn.GRUCell``/``nn.LSTMCell``.

All paths give the same values, states and gradients (tests/test_recurrent.py,
tests/test_fast_paths.py); ``forward_reference`` is the chunk code above, which
the one-step path is tested against.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from memworld.memory import fused_rnn, native
from memworld.memory.base import State, SteppedMemory, check_positive_int, register


class _Recurrent(SteppedMemory):
    cell_cls: type[nn.RNNBase]
    cell_fn: staticmethod
    state_names: tuple[str, ...]
    layer_fn: staticmethod  # fused_rnn's sequence kernel for one layer (CPU)
    # On the CPU, a chunk of T steps that splits into more than this fraction of T pieces
    # runs through layer_fn (the crossover `python bench/memory_ops.py` prints); None:
    # fused_above_loops's, by which step loops the kernels run (C++ or Python).
    fused_above: float | None = 0.0
    fused_above_loops: dict[str, float] = {}
    # Elsewhere, run step by step through the fused cells when a chunk of T steps splits
    # into more than this fraction of T pieces, per device type (absent: never). Set per
    # subclass from the crossovers that `python bench/memory_ops.py --device ...` prints.
    step_loop_above: dict[str, float] = {}

    def __init__(self, input_dim: int, hidden_dim: int = 128, num_layers: int = 1) -> None:
        check_positive_int("hidden_dim", hidden_dim)
        check_positive_int("num_layers", num_layers)
        super().__init__(input_dim, hidden_dim)
        self.hidden_dim = hidden_dim
        self.num_layers = num_layers
        self.rnn = self.cell_cls(input_dim, hidden_dim, num_layers=num_layers)

    def initial_state(self, batch_size: int, device: torch.device | str = "cpu") -> State:
        z = torch.zeros(batch_size, self.num_layers, self.hidden_dim, device=device)
        return {name: z.clone() for name in self.state_names}

    def step(self, x: Tensor, state: State, starts: Tensor) -> tuple[Tensor, State]:
        """One step: :meth:`python_step`'s torch calls made from C++ on the CPU where
        memworld's C++ kernels are built (memory/native.py; the same operations, so the same
        results), else from Python."""
        kernels = native.rollout_steps(x)
        if kernels is None:
            return self.python_step(x, state, starts)
        hidden = [state[n] for n in self.state_names]
        y, *new = kernels.recurrent_step(
            x, hidden, starts, self.rnn._flat_weights, not self.persistent
        )
        return y, dict(zip(self.state_names, new))

    def python_step(self, x: Tensor, state: State, starts: Tensor) -> tuple[Tensor, State]:
        """One step: ``x (B, input_dim)``, ``starts (B,)`` -> ``y (B, hidden)`` and the state.

        The rows that start are zeroed (one host sync tells whether any does), then
        each layer is one ``torch.gru_cell``/``torch.lstm_cell`` call on the module's
        weights.  No input checks: :meth:`forward` makes them.
        """
        hidden = [state[n] for n in self.state_names]  # each (B, L, H)
        if not self.persistent and bool(starts.any()):
            rows = starts.bool().view(-1, 1, 1)
            hidden = [h.masked_fill(rows, 0.0) for h in hidden]
        inp, per_layer = x, []
        for layer in range(self.num_layers):
            hx = tuple(h[:, layer] for h in hidden)
            out = self.cell_fn(inp, hx if len(hx) > 1 else hx[0], *self._layer_weights(layer))
            out = out if isinstance(out, tuple) else (out,)
            per_layer.append(out)
            inp = out[0]
        return inp, {n: torch.stack(h, dim=1) for n, h in zip(self.state_names, zip(*per_layer))}

    def forward_reference(
        self, x: Tensor, state: State, episode_starts: Tensor
    ) -> tuple[Tensor, State]:
        """The chunk paths (split sequence calls, fused kernels or the step loop)."""
        self.check_inputs(x, episode_starts, state)
        starts = episode_starts.bool()
        # Split points: steps where some row starts an episode (step 0 is handled by reset).
        cuts = [0] + (starts[1:].any(dim=1).nonzero().flatten() + 1).tolist() + [x.shape[0]]
        if x.device.type == "cpu" and len(cuts) - 1 > self._fused_crossover(x) * x.shape[0]:
            return self._fused(x, state, starts)
        if len(cuts) - 1 > self.step_loop_above.get(x.device.type, 1.0) * x.shape[0]:
            return self._step_loop(x, state, starts)
        outputs = []
        for lo, hi in zip(cuts[:-1], cuts[1:]):
            if hi == lo:
                continue
            state = self.reset_rows(state, starts[lo])
            # state tensors are (B, L, H); torch wants (L, B, H).
            hx = tuple(state[n].transpose(0, 1).contiguous() for n in self.state_names)
            y, hx = self.rnn(x[lo:hi], hx if len(hx) > 1 else hx[0])
            hx = hx if isinstance(hx, tuple) else (hx,)
            state = {n: h.transpose(0, 1) for n, h in zip(self.state_names, hx)}
            outputs.append(y)
        return torch.cat(outputs, dim=0), state

    def _fused_crossover(self, x: Tensor) -> float:
        if self.fused_above is not None:
            return self.fused_above
        compiled = fused_rnn.step_loops(x) is not fused_rnn.PythonLoops
        # An unsplit chunk always takes the sequence call (0.56-0.60x the fused kernel's time).
        return max(self.fused_above_loops["cpp" if compiled else "python"], 1 / x.shape[0])

    def _layer_weights(self, layer: int) -> list[Tensor]:
        # nn.RNNBase keeps its weights in this order, updated on .to() and assignment.
        return self.rnn._flat_weights[4 * layer : 4 * layer + 4]

    def _param_dtype(self) -> torch.dtype:
        return self.rnn._flat_weights[0].dtype

    def _keep(self, starts: Tensor, dtype: torch.dtype) -> Tensor:
        """``(T, B, 1)``: 0 where a row starts an episode (its state is zeroed), else 1."""
        keep = (~starts).to(dtype).unsqueeze(-1)
        return torch.ones_like(keep) if self.persistent else keep

    def _fused(self, x: Tensor, state: State, starts: Tensor) -> tuple[Tensor, State]:
        """Each layer over the whole chunk in one ``layer_fn`` call, resets as a mask."""
        keep, inp, finals = self._keep(starts, x.dtype), x, []
        for layer in range(self.num_layers):
            hx = tuple(state[n][:, layer] for n in self.state_names)
            inp, last = self.layer_fn(inp, hx, keep, self._layer_weights(layer))
            finals.append(last)
        return inp, {n: torch.stack(h, dim=1) for n, h in zip(self.state_names, zip(*finals))}

    def _step_loop(self, x: Tensor, state: State, starts: Tensor) -> tuple[Tensor, State]:
        """One fused cell call per step and layer; rows that start get the (zero) initial state."""
        keep = self._keep(starts, x.dtype).unsqueeze(-1)  # (T, B, 1, 1)
        weights = [self._layer_weights(layer) for layer in range(self.num_layers)]
        hidden = [state[n] for n in self.state_names]  # each (B, L, H)
        outputs = []
        for x_t, keep_t in zip(x.unbind(0), keep.unbind(0)):
            hidden = [h * keep_t for h in hidden]
            per_layer, inp = [], x_t
            for layer, w in enumerate(weights):
                hx = tuple(h[:, layer] for h in hidden)
                out = self.cell_fn(inp, hx if len(hx) > 1 else hx[0], *w)
                out = out if isinstance(out, tuple) else (out,)
                per_layer.append(out)
                inp = out[0]
            hidden = [torch.stack(parts, dim=1) for parts in zip(*per_layer)]
            outputs.append(inp)
        return torch.stack(outputs), dict(zip(self.state_names, hidden))

    @torch.no_grad()
    def diagnostics(self, state: State) -> dict[str, float]:
        h = state["h"]
        return {"hidden_norm": float(h.norm(dim=-1).mean()), "hidden_abs_max": float(h.abs().max())}


@register("lstm")
class LSTM(_Recurrent):
    """LSTM baseline.

    Args:
        input_dim: width of the input.
        hidden_dim: hidden and output width (default 128).
        num_layers: stacked layers (default 1).
    """

    cell_cls = nn.LSTM
    cell_fn = staticmethod(torch.lstm_cell)
    layer_fn = staticmethod(fused_rnn.lstm_layer)
    state_names = ("h", "c")
    # oneDNN's nn.LSTM is faster up to about 10 pieces of 128 against the C++ step loops
    # and 24 against the Python ones (CPU, 4 rows, hidden 128-256: docs/speed.md)
    fused_above = None
    fused_above_loops = {"cpp": 0.078, "python": 0.1875}
    step_loop_above = {"cuda": 0.5}  # crossover of 128 pieces on the H200: ~64


@register("gru")
class GRU(_Recurrent):
    """GRU baseline.

    Args:
        input_dim: width of the input.
        hidden_dim: hidden and output width (default 128).
        num_layers: stacked layers (default 1).
    """

    cell_cls = nn.GRU
    cell_fn = staticmethod(torch.gru_cell)
    layer_fn = staticmethod(fused_rnn.gru_layer)
    state_names = ("h",)
    step_loop_above = {"cuda": 0.5}  # crossover of 128 pieces on the H200: ~64
