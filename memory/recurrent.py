"""LSTM and GRU baselines built on torch's fused cells.

When no episode starts inside a chunk (after its first step) the whole chunk
runs through one cuDNN/fused ``nn.LSTM``/``nn.GRU`` call; otherwise the chunk is
split at the steps where some row starts an episode, and only the rows that
start are reset (with ``torch.where``) between the pieces.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from memory.base import MemoryModule, State, check_positive_int, register


class _Recurrent(MemoryModule):
    cell_cls: type[nn.RNNBase]
    state_names: tuple[str, ...]

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

    def forward(self, x: Tensor, state: State, episode_starts: Tensor) -> tuple[Tensor, State]:
        self.check_inputs(x, episode_starts)
        starts = episode_starts.bool()
        # Split points: steps where some row starts an episode (step 0 is handled by reset).
        cuts = [0] + (starts[1:].any(dim=1).nonzero().flatten() + 1).tolist() + [x.shape[0]]
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
    state_names = ("h", "c")


@register("gru")
class GRU(_Recurrent):
    """GRU baseline.

    Args:
        input_dim: width of the input.
        hidden_dim: hidden and output width (default 128).
        num_layers: stacked layers (default 1).
    """

    cell_cls = nn.GRU
    state_names = ("h",)
