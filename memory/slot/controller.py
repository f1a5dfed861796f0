"""Controllers of SlotMemory: one step ``u (B, in) -> h (B, hidden)`` with batch-first state.

- ``mlp``: two tanh layers, stateless (all recurrence goes through the slot memory).
- ``gru``: a GRU cell; state ``ctrl_h (B, hidden)``.
- ``transformer``: one pre-LayerNorm causal Transformer block over the last
  ``window`` steps; its keys and values are the state ``ctrl_k``/``ctrl_v``
  ``(B, window, hidden)`` with ``ctrl_valid (B, window)`` marking filled places
  (newest last), and a learned per-head bias for each relative position.

The step input is ``u = [x_t, read_{t-1}]``.  For the chunk path
(memory/slot/chunk.py) each controller also splits its first layer in two:
:meth:`prepare` applies the ``x`` columns (and the bias) to a whole chunk in one
product and returns the ``read`` columns, transposed; :meth:`step_prepared` then
adds only ``read_{t-1} @ W_read`` per step (one ``addmm``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from memworld.memory.base import State, check_positive_int


def split_first_layer(layer: nn.Linear, x: Tensor) -> tuple[Tensor, Tensor]:
    """``layer`` applied to the ``x`` columns of its input for a whole chunk ``x (T, B, in)``,
    bias included, and the transposed weight of the remaining (read) columns ``(read, out)``."""
    width = x.shape[-1]
    return F.linear(x, layer.weight[:, :width], layer.bias), layer.weight[:, width:].t()


class MLPController(nn.Module):
    """Stateless two-layer tanh MLP."""

    def __init__(self, input_dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(input_dim, hidden_dim),
            nn.Tanh(),
            nn.Linear(hidden_dim, hidden_dim),
            nn.Tanh(),
        )

    def initial_state(self, batch_size: int, device: torch.device | str) -> State:
        return {}

    def step(self, u: Tensor, state: State) -> tuple[Tensor, State]:
        return self.net(u), state

    def prepare(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return split_first_layer(self.net[0], x)

    def step_prepared(
        self, projected: Tensor, read: Tensor, read_weight: Tensor, state: State
    ) -> tuple[Tensor, State]:
        z = torch.tanh(torch.addmm(projected, read, read_weight))
        return torch.tanh(self.net[2](z)), state


class GRUController(nn.Module):
    """A GRU cell."""

    def __init__(self, input_dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.hidden_dim = hidden_dim
        self.cell = nn.GRUCell(input_dim, hidden_dim)

    def initial_state(self, batch_size: int, device: torch.device | str) -> State:
        return {"ctrl_h": torch.zeros(batch_size, self.hidden_dim, device=device)}

    def step(self, u: Tensor, state: State) -> tuple[Tensor, State]:
        h = self.cell(u, state["ctrl_h"])
        return h, {"ctrl_h": h}

    def prepare(self, x: Tensor) -> tuple[Tensor, Tensor]:
        width = x.shape[-1]
        weight = self.cell.weight_ih
        return F.linear(x, weight[:, :width], self.cell.bias_ih), weight[:, width:].t()

    def step_prepared(
        self, projected: Tensor, read: Tensor, read_weight: Tensor, state: State
    ) -> tuple[Tensor, State]:
        # nn.GRUCell's equations, with the input part of the gates given.
        h = state["ctrl_h"]
        gi = torch.addmm(projected, read, read_weight)  # (B, 3 * hidden): r, z, n
        gh = F.linear(h, self.cell.weight_hh, self.cell.bias_hh)
        i_r, i_z, i_n = gi.chunk(3, dim=-1)
        h_r, h_z, h_n = gh.chunk(3, dim=-1)
        reset = torch.sigmoid(i_r + h_r)
        update = torch.sigmoid(i_z + h_z)
        new = torch.tanh(i_n + reset * h_n)
        h = new + update * (h - new)
        return h, {"ctrl_h": h}


class TransformerController(nn.Module):
    """One causal Transformer block over a sliding window of ``window`` steps.

    Args:
        input_dim: width of the step input.
        hidden_dim: model width (divisible by ``num_heads``).
        window: number of steps attended to, the current one included.
        num_heads: attention heads.
    """

    def __init__(
        self, input_dim: int, hidden_dim: int, window: int = 16, num_heads: int = 4
    ) -> None:
        super().__init__()
        check_positive_int("controller_window", window)
        check_positive_int("controller_heads", num_heads)
        if hidden_dim % num_heads:
            raise ValueError(
                f"hidden_dim={hidden_dim} must be divisible by controller_heads={num_heads}; "
                "change one of them"
            )
        self.hidden_dim, self.window, self.num_heads = hidden_dim, window, num_heads
        self.input_proj = nn.Linear(input_dim, hidden_dim)
        self.norm_attn = nn.LayerNorm(hidden_dim)
        self.qkv = nn.Linear(hidden_dim, 3 * hidden_dim)
        self.out_proj = nn.Linear(hidden_dim, hidden_dim)
        # (heads, window): bias for the key `window - 1 - j` steps in the past.
        self.position_bias = nn.Parameter(torch.zeros(num_heads, window))
        self.norm_mlp = nn.LayerNorm(hidden_dim)
        self.mlp = nn.Sequential(
            nn.Linear(hidden_dim, 2 * hidden_dim), nn.GELU(), nn.Linear(2 * hidden_dim, hidden_dim)
        )

    def initial_state(self, batch_size: int, device: torch.device | str) -> State:
        cache = torch.zeros(batch_size, self.window, self.hidden_dim, device=device)
        return {
            "ctrl_k": cache,
            "ctrl_v": cache.clone(),
            # 1.0 where the window holds a step of this episode (float so buffers store it as-is).
            "ctrl_valid": torch.zeros(batch_size, self.window, device=device),
        }

    def step(self, u: Tensor, state: State) -> tuple[Tensor, State]:
        return self._block(self.input_proj(u), state)

    def prepare(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return split_first_layer(self.input_proj, x)

    def step_prepared(
        self, projected: Tensor, read: Tensor, read_weight: Tensor, state: State
    ) -> tuple[Tensor, State]:
        return self._block(torch.addmm(projected, read, read_weight), state)

    def _block(self, z: Tensor, state: State) -> tuple[Tensor, State]:
        """The block on the projected input ``z (B, hidden)``."""
        batch = z.shape[0]
        heads, head_dim = self.num_heads, self.hidden_dim // self.num_heads
        q, k, v = self.qkv(self.norm_attn(z)).chunk(3, dim=-1)
        # Shift the window left by one and put the current step last.
        keys = torch.cat([state["ctrl_k"][:, 1:], k[:, None]], dim=1)  # (B, W, hidden)
        values = torch.cat([state["ctrl_v"][:, 1:], v[:, None]], dim=1)
        valid = torch.cat([state["ctrl_valid"][:, 1:], valid_now(batch, z.device)], dim=1)  # (B, W)
        logits = torch.einsum(
            "bhd,bwhd->bhw", q.view(batch, heads, head_dim), keys.view(batch, -1, heads, head_dim)
        ) / math.sqrt(head_dim)  # (B, heads, W)
        logits = logits + self.position_bias
        logits = logits.masked_fill(valid[:, None, :] < 0.5, float("-inf"))
        attn = torch.softmax(logits, dim=-1)
        mixed = torch.einsum("bhw,bwhd->bhd", attn, values.view(batch, -1, heads, head_dim))
        z = z + self.out_proj(mixed.reshape(batch, self.hidden_dim))
        h = z + self.mlp(self.norm_mlp(z))
        return h, {"ctrl_k": keys, "ctrl_v": values, "ctrl_valid": valid}


def valid_now(batch: int, device: torch.device) -> Tensor:
    return torch.ones(batch, 1, device=device)


CONTROLLERS = {"mlp": MLPController, "gru": GRUController, "transformer": TransformerController}


def make_controller(
    kind: str, input_dim: int, hidden_dim: int, window: int, num_heads: int
) -> nn.Module:
    """Build the controller named ``kind`` (``mlp``, ``gru`` or ``transformer``)."""
    if kind not in CONTROLLERS:
        raise ValueError(f"controller must be one of {sorted(CONTROLLERS)}, got {kind!r}")
    if kind == "transformer":
        return TransformerController(input_dim, hidden_dim, window=window, num_heads=num_heads)
    return CONTROLLERS[kind](input_dim, hidden_dim)
