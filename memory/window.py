"""Memory without recurrence: a frame stack and sliding-window attention.

Both see only a fixed number of recent steps of the current episode, so a task
whose answer lies further back than the window is out of their reach: they are
the "no long-term memory" baselines.  Both process a whole chunk at once: the
carried window is put before the chunk, every step reads the ``k`` (or ``W``)
positions that end at it, and a per-row episode index (a cumulative count of
``episode_starts``) hides positions that belong to an earlier episode.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from memworld.memory.base import (
    MemoryModule,
    State,
    check_heads,
    check_positive_int,
    register,
)


def episode_index(valid: Tensor, episode_starts: Tensor) -> Tensor:
    """Episode index of every position of ``[carried window; chunk]``, per row.

    Args:
        valid: (B, W) float, 1.0 where a carried position belongs to the episode
            that is running when the chunk begins.
        episode_starts: (T, B) bool.

    Returns:
        (B, W + T) long: carried positions get 0 (or -1 where not valid), chunk
        step ``t`` gets the number of episode starts at steps ``<= t``.  Two
        positions belong to the same episode exactly when their indices agree.
    """
    carried = torch.where(valid > 0.5, 0, -1).long()  # (B, W)
    chunk = episode_starts.long().cumsum(dim=0).transpose(0, 1)  # (B, T)
    return torch.cat([carried, chunk], dim=1)


def sliding_windows(seq: Tensor, window: int, steps: int) -> Tensor:
    """(B, C + T, ...) -> (B, T, window, ...): the ``window`` positions ending at each chunk step.

    ``seq`` holds ``C >= window - 1`` carried positions followed by ``steps = T``
    chunk steps; entry ``[:, t, -1]`` is chunk step ``t`` itself and
    ``[:, t, 0]`` the position ``window - 1`` before it.
    """
    # unfold puts the window axis last: (B, C + T - window + 1, ..., window).
    return seq.unfold(1, window, 1)[:, -steps:].movedim(-1, 2)


@register("framestack")
class FrameStack(MemoryModule):
    """The last ``k`` inputs of the episode, concatenated (oldest first).

    Steps before the episode start are zeros.  State: ``frames (B, k, input_dim)``,
    the last ``k`` inputs (newest last) with zeros before the episode start.

    Args:
        input_dim: width of each input.
        k: number of steps stacked, the current one included (default 4).
        output_dim: if given, a linear projection of the ``k * input_dim`` stack to
            this width; if None (default) the stack itself is the output.
    """

    def __init__(self, input_dim: int, k: int = 4, output_dim: int | None = None) -> None:
        check_positive_int("k", k)
        if output_dim is not None:
            check_positive_int("output_dim", output_dim)
        super().__init__(input_dim, output_dim if output_dim is not None else k * input_dim)
        self.k = k
        self.projection = nn.Linear(k * input_dim, output_dim) if output_dim is not None else None

    def initial_state(self, batch_size: int, device: torch.device | str = "cpu") -> State:
        return {"frames": torch.zeros(batch_size, self.k, self.input_dim, device=device)}

    def forward(self, x: Tensor, state: State, episode_starts: Tensor) -> tuple[Tensor, State]:
        self.check_inputs(x, episode_starts, state)
        steps, batch = x.shape[:2]
        frames = state["frames"]  # (B, k, D), zeros before the episode start
        seq = torch.cat([frames, x.transpose(0, 1)], dim=1)  # (B, k + T, D)
        segment = episode_index(torch.ones_like(frames[..., 0]), episode_starts.bool())
        stacks = sliding_windows(seq, self.k, steps)  # (B, T, k, D)
        stack_segment = sliding_windows(segment, self.k, steps)  # (B, T, k)
        same_episode = stack_segment == segment[:, self.k :, None]  # (B, T, k)
        stacks = torch.where(same_episode[..., None], stacks, torch.zeros_like(stacks))
        y = stacks.reshape(batch, steps, self.k * self.input_dim).transpose(0, 1)  # (T, B, k*D)
        if self.projection is not None:
            y = self.projection(y)
        return y, {"frames": stacks[:, -1]}

    @torch.no_grad()
    def diagnostics(self, state: State) -> dict[str, float]:
        filled = state["frames"].abs().sum(-1) > 0  # (B, k)
        return {"window_fill": float(filled.float().mean())}


class _WindowBlock(nn.Module):
    """Pre-LayerNorm block: causal attention over a sliding window, then an MLP."""

    def __init__(self, d_model: int, num_heads: int, window: int, mlp_ratio: int) -> None:
        super().__init__()
        self.num_heads, self.window = num_heads, window
        self.norm_attn = nn.LayerNorm(d_model)
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out_proj = nn.Linear(d_model, d_model)
        # (heads, window): bias for the key `window - 1 - j` steps before the query.
        self.position_bias = nn.Parameter(torch.zeros(num_heads, window))
        self.norm_mlp = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential(
            nn.Linear(d_model, mlp_ratio * d_model),
            nn.GELU(),
            nn.Linear(mlp_ratio * d_model, d_model),
        )

    def forward(
        self, h: Tensor, keys: Tensor, values: Tensor, segment: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        """h (B, T, d); keys/values (B, W, d) carried; segment (B, W + T) episode index.

        Returns the block output (B, T, d) and all keys/values (B, W + T, d).
        """
        batch, steps, d_model = h.shape
        heads, head_dim, window = self.num_heads, d_model // self.num_heads, self.window
        q, k, v = self.qkv(self.norm_attn(h)).chunk(3, dim=-1)  # each (B, T, d)
        all_keys = torch.cat([keys, k], dim=1)  # (B, W + T, d)
        all_values = torch.cat([values, v], dim=1)
        span = all_keys.shape[1]
        q_heads = q.view(batch, steps, heads, head_dim).transpose(1, 2)  # (B, heads, T, e)
        k_heads = all_keys.view(batch, span, heads, head_dim).transpose(1, 2)  # (B, heads, W+T, e)
        v_heads = all_values.view(batch, span, heads, head_dim).transpose(1, 2)
        # Dense scores masked to the band: cheaper on CPU and GPU than gathering windows.
        positions = torch.arange(span, device=h.device)
        distance = positions[-steps:, None] - positions[None, :]  # (T, W + T), query - key
        in_window = (distance >= 0) & (distance < window)
        bias = self.position_bias[
            :, (window - 1 - distance).clamp(0, window - 1)
        ]  # (heads, T, W+T)
        same_episode = segment[:, None, :] == segment[:, -steps:, None]  # (B, T, W + T)
        # The query always sees itself, so no row of the softmax is all -inf.
        mask = bias.masked_fill(~(in_window & same_episode)[:, None], float("-inf"))
        mixed = F.scaled_dot_product_attention(q_heads, k_heads, v_heads, attn_mask=mask)
        mixed = mixed.transpose(1, 2).reshape(batch, steps, d_model)
        h = h + self.out_proj(mixed)
        h = h + self.mlp(self.norm_mlp(h))
        return h, all_keys, all_values

    def step(
        self, h: Tensor, keys: Tensor, values: Tensor, valid: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        """One step: h (B, 1, d); keys/values (B, W, d) carried; valid (B, W) bool, the places
        of the new window (carried shifted left, this step last) the step may see.

        Returns the block output (B, 1, d) and the new window's keys/values (B, W, d).
        """
        batch, _, d_model = h.shape
        heads, head_dim = self.num_heads, d_model // self.num_heads
        q, k, v = self.qkv(self.norm_attn(h)).chunk(3, dim=-1)  # each (B, 1, d)
        keys = torch.cat([keys[:, 1:], k], dim=1)  # (B, W, d)
        values = torch.cat([values[:, 1:], v], dim=1)
        q_heads = q.view(batch, 1, heads, head_dim).transpose(1, 2)  # (B, heads, 1, e)
        k_heads = keys.view(batch, -1, heads, head_dim).transpose(1, 2)  # (B, heads, W, e)
        v_heads = values.view(batch, -1, heads, head_dim).transpose(1, 2)
        # Key j of the window is window - 1 - j steps back: bias column j.
        mask = self.position_bias[None, :, None, :].masked_fill(
            ~valid[:, None, None, :], float("-inf")
        )  # (B, heads, 1, W)
        mixed = F.scaled_dot_product_attention(q_heads, k_heads, v_heads, attn_mask=mask)
        h = h + self.out_proj(mixed.transpose(1, 2).reshape(batch, 1, d_model))
        h = h + self.mlp(self.norm_mlp(h))
        return h, keys, values


@register("window_attention")
class WindowAttention(MemoryModule):
    """Causal multi-head self-attention over the last ``window`` steps: a transformer without memory.

    Each layer is a pre-LayerNorm residual block (attention, then a GELU MLP)
    with a learned per-head bias for each relative position in the window.
    Keys and values of the last ``window`` steps are the state, so a step can
    attend to steps of earlier chunks; positions before the episode start are
    masked (and zeroed in the state).  With one layer, step ``t`` depends on
    steps ``t - window + 1 .. t`` only; ``L`` layers reach ``L * (window - 1)``
    steps back.  State: ``keys``/``values (B, num_layers, window, d_model)``
    (newest last) and ``valid (B, window)``, 1.0 where the place holds a step
    of the current episode (float so rollout buffers store it as-is).

    Args:
        input_dim: width of each input.
        window: steps attended to, the current one included (default 16).
        d_model: model width, divisible by ``num_heads`` (default 64).
        num_heads: attention heads (default 4).
        num_layers: stacked blocks (default 1).
        mlp_ratio: MLP hidden width as a multiple of ``d_model`` (default 2).
        output_dim: if given, a linear projection of the final LayerNorm output to
            this width; if None (default) the output width is ``d_model``.
        max_block: longest piece of a chunk attended in one go; longer chunks are
            processed piece by piece through the carried state (same result;
            scores take ``B * num_heads * max_block * (window + max_block)`` floats).
    """

    def __init__(
        self,
        input_dim: int,
        window: int = 16,
        d_model: int = 64,
        num_heads: int = 4,
        num_layers: int = 1,
        mlp_ratio: int = 2,
        output_dim: int | None = None,
        max_block: int = 64,
    ) -> None:
        for name, value in [
            ("window", window),
            ("d_model", d_model),
            ("num_heads", num_heads),
            ("num_layers", num_layers),
            ("mlp_ratio", mlp_ratio),
            ("max_block", max_block),
        ]:
            check_positive_int(name, value)
        check_heads(d_model, num_heads)
        super().__init__(input_dim, output_dim if output_dim is not None else d_model)
        self.window, self.d_model, self.num_layers, self.max_block = (
            window,
            d_model,
            num_layers,
            max_block,
        )
        self.input_proj = nn.Linear(input_dim, d_model)
        self.blocks = nn.ModuleList(
            _WindowBlock(d_model, num_heads, window, mlp_ratio) for _ in range(num_layers)
        )
        self.norm_out = nn.LayerNorm(d_model)
        self.projection = nn.Linear(d_model, output_dim) if output_dim is not None else None

    def initial_state(self, batch_size: int, device: torch.device | str = "cpu") -> State:
        cache = torch.zeros(batch_size, self.num_layers, self.window, self.d_model, device=device)
        return {
            "keys": cache,
            "values": cache.clone(),
            "valid": torch.zeros(batch_size, self.window, device=device),
        }

    def forward(self, x: Tensor, state: State, episode_starts: Tensor) -> tuple[Tensor, State]:
        if self.use_fast_path(x):
            self.check_inputs(x, episode_starts, state)
            return self._one_step(x[0], state, episode_starts[0].bool())
        return self.forward_reference(x, state, episode_starts)

    def _one_step(self, x: Tensor, state: State, starts: Tensor) -> tuple[Tensor, State]:
        """One step (a rollout): attention over the new window only, its mask the new ``valid``.

        The window after this step is the carried one shifted left with this step last;
        a place is visible where it holds a step of this step's episode (none of the
        carried ones where the row starts), which is also the next ``valid``.
        """
        keep_old = (state["valid"][:, 1:] > 0.5) & ~starts[:, None]  # (B, W - 1)
        valid = torch.cat([keep_old, torch.ones_like(keep_old[:, :1])], dim=1)  # (B, W)
        h = self.input_proj(x)[:, None]  # (B, 1, d)
        new_keys, new_values = [], []
        for layer, block in enumerate(self.blocks):
            h, keys, values = block.step(
                h, state["keys"][:, layer], state["values"][:, layer], valid
            )
            keep = valid[..., None]
            new_keys.append(torch.where(keep, keys, 0.0))
            new_values.append(torch.where(keep, values, 0.0))
        y = self.norm_out(h[:, 0])
        if self.projection is not None:
            y = self.projection(y)
        new_state = {
            "keys": torch.stack(new_keys, dim=1),
            "values": torch.stack(new_values, dim=1),
            "valid": valid.to(state["valid"].dtype),
        }
        return y[None], new_state

    def forward_reference(
        self, x: Tensor, state: State, episode_starts: Tensor
    ) -> tuple[Tensor, State]:
        """The chunk path: every step of the chunk attends in one masked product."""
        self.check_inputs(x, episode_starts, state)
        starts = episode_starts.bool()
        outputs = []
        for lo in range(0, x.shape[0], self.max_block):
            hi = lo + self.max_block
            y, state = self._forward_block(x[lo:hi], state, starts[lo:hi])
            outputs.append(y)
        return torch.cat(outputs, dim=0), state

    def _forward_block(self, x: Tensor, state: State, starts: Tensor) -> tuple[Tensor, State]:
        segment = episode_index(state["valid"], starts)  # (B, W + T)
        # Places of the new window that hold a step of the last step's episode.
        valid = segment[:, -self.window :] == segment[:, -1:]  # (B, W)
        h = self.input_proj(x.transpose(0, 1))  # (B, T, d)
        new_keys, new_values = [], []
        for layer, block in enumerate(self.blocks):
            h, keys, values = block(h, state["keys"][:, layer], state["values"][:, layer], segment)
            keep = valid[..., None]
            # Zeros outside the episode, so a reset state equals the initial state exactly.
            new_keys.append(torch.where(keep, keys[:, -self.window :], 0.0))
            new_values.append(torch.where(keep, values[:, -self.window :], 0.0))
        y = self.norm_out(h)
        if self.projection is not None:
            y = self.projection(y)
        new_state = {
            "keys": torch.stack(new_keys, dim=1),  # (B, L, W, d)
            "values": torch.stack(new_values, dim=1),
            "valid": valid.to(state["valid"].dtype),
        }
        return y.transpose(0, 1), new_state  # (T, B, out)

    @torch.no_grad()
    def diagnostics(self, state: State) -> dict[str, float]:
        return {"window_fill": float(state["valid"].mean())}
