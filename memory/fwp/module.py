"""FastWeightMemory: the module (the equations and choices are in memory/fwp/__init__.py)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from memworld.memory import native
from memworld.memory.base import (
    State,
    SteppedMemory,
    check_heads,
    check_positive_int,
    register,
)
from memworld.memory.derived import derived
from memworld.memory.fwp.chunk import feature_map, fwp_blocks
from memworld.memory.window import episode_index


@register("fwp")
class FastWeightMemory(SteppedMemory):
    """A fast-weight programmer: linear attention written into a carried weight matrix.

    Follows the fast-weight view of linear attention: a slow network writes outer
    products ``v phi(k)^T`` into a per-row fast weight matrix and reads it with
    ``phi(q)``, with an input-dependent write strength ``beta`` and sum-normalised
    positive features.  memworld chooses: a softmax as the feature map (one fused
    operation, where ``elu + 1`` and a division cost five times as much on the CPU);
    an additive update with a learned per-head decay ``gamma = exp(-exp(nu))`` in
    place of the delta rule (additive writes keep the chunk an exact closed form),
    decays initialised from ``1 - 1/4`` to ``1 - 1/512`` across heads (log-spaced); a depthwise
    causal convolution over the last ``conv_width`` inputs of the episode before the
    projections, its taps starting as the mean of those inputs (so a key and a value
    say from the first update on what came just before a step, which a read of "the
    step after X" needs); a residual around the read and a final LayerNorm.  State:
    ``fast_weights (B, num_heads, head_dim, head_dim)``, zero at an episode start,
    and the convolution's last inputs ``recent (B, conv_width - 1, d_model)`` with
    ``recent_valid (B, conv_width - 1)``, 1.0 where a place holds a step of the
    current episode.

    Args:
        input_dim: width of each input.
        d_model: width of the output, divisible by ``num_heads`` (default 64).
        num_heads: fast weight matrices per row (default 2: two 32-wide heads, one fast
            and one slow, learned RepeatPrevious more reliably than four 16-wide ones;
            docs/memory_models.md).
        conv_width: inputs the causal convolution mixes, this one included (default 4).
        max_block: longest block of a chunk computed in one go (default 16).
    """

    recommended_lr = 5e-3

    def __init__(
        self,
        input_dim: int,
        d_model: int = 64,
        num_heads: int = 2,
        conv_width: int = 4,
        max_block: int = 16,
    ) -> None:
        for name, value in [("d_model", d_model), ("num_heads", num_heads)]:
            check_positive_int(name, value)
        check_positive_int("conv_width", conv_width)
        check_positive_int("max_block", max_block)
        check_heads(d_model, num_heads)
        super().__init__(input_dim, d_model)
        self.d_model, self.num_heads, self.max_block = d_model, num_heads, max_block
        self.conv_width = conv_width
        self.head_dim = d_model // num_heads
        self.input_proj = nn.Linear(input_dim, d_model)
        self.norm_in = nn.LayerNorm(d_model)
        # (conv_width, d): depthwise taps, oldest first; start as the mean of the inputs.
        self.conv_taps = nn.Parameter(torch.full((conv_width, d_model), 1.0 / conv_width))
        self.query_key = nn.Linear(d_model, 2 * d_model)
        self.value_strength = nn.Linear(d_model, d_model + num_heads)
        self.out_proj = nn.Linear(d_model, d_model)
        self.norm_out = nn.LayerNorm(d_model)
        horizons = torch.logspace(math.log10(4), math.log10(512), num_heads)  # steps to 1/e
        self.decay_log = nn.Parameter(torch.log(-torch.log1p(-1 / horizons)))

    def log_decay(self) -> Tensor:
        """(H,) ``log gamma = -exp(nu)``: every decay lies in (0, 1)."""
        return -torch.exp(self.decay_log)

    def _param_dtype(self) -> torch.dtype:
        # The input checks' dtype, without walking every parameter at each step.
        return self.input_proj.weight.dtype

    def initial_state(self, batch_size: int, device: torch.device | str = "cpu") -> State:
        shape = (batch_size, self.num_heads, self.head_dim, self.head_dim)
        context = self.conv_width - 1
        return {
            "fast_weights": torch.zeros(shape, device=device),
            "recent": torch.zeros(batch_size, context, self.d_model, device=device),
            "recent_valid": torch.zeros(batch_size, context, device=device),
        }

    def convolve(self, z: Tensor, state: State, starts: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Causal depthwise convolution of ``z`` (B, T, d) within each episode.

        Returns the convolved (B, T, d) and the new ``recent`` and ``recent_valid``."""
        steps, width = z.shape[1], self.conv_width
        segment = episode_index(state["recent_valid"], starts)  # (B, K - 1 + T)
        seq = torch.cat([state["recent"], z], dim=1)  # (B, K - 1 + T, d)
        first = seq.shape[1] - steps  # = K - 1: where the chunk starts in seq
        mixed = z * self.conv_taps[-1]
        for lag in range(1, width):  # the input lag steps back, where it is in the episode
            past = seq[:, first - lag : first - lag + steps]  # (B, T, d)
            same = segment[:, first - lag : first - lag + steps] == segment[:, first:]  # (B, T)
            mixed = torch.addcmul(mixed, past * same[..., None], self.conv_taps[-1 - lag])
        valid = segment[:, seq.shape[1] - (width - 1) :] == segment[:, -1:]  # (B, K - 1)
        recent = torch.where(valid[..., None], seq[:, seq.shape[1] - (width - 1) :], 0)
        return mixed, recent, valid.to(state["recent_valid"].dtype)

    def project(self, z: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(B, T, d) -> queries, keys (B, H, T, dk) feature-mapped; values (B, H, T, dv) * beta."""
        batch, steps, _ = z.shape
        heads, head_dim = self.num_heads, self.head_dim
        # The feature map runs on contiguous (B, T, 2, H, dk) before the heads move forward.
        features = feature_map(self.query_key(z).view(batch, steps, 2, heads, head_dim))
        # Laid out head-major once here, where each batched product would copy them again.
        q, k = features.permute(2, 0, 3, 1, 4).contiguous()  # each (B, H, T, dk)
        v, beta = self.value_strength(z).split([self.d_model, heads], dim=-1)
        v = v.view(batch, steps, heads, head_dim) * torch.sigmoid(beta)[..., None]
        return q, k, v.transpose(1, 2).contiguous()

    step_keeps_time = True

    def step(self, x: Tensor, state: State, starts: Tensor) -> tuple[Tensor, State]:
        """One rollout step, ``x (1, B, input_dim)``, ``starts (1, B)``: :meth:`python_step`'s
        torch calls made from C++ on the CPU where memworld's C++ kernels are built
        (memory/native.py; the same operations, so the same results), else from Python."""
        kernels = native.rollout_steps(x)
        if kernels is None:
            return self.python_step(x, state, starts)
        in_weight, in_bias, norm_in, taps, proj_weight, proj_bias, gamma, out_weight, norm_out = (
            self.step_plan()
        )
        # Without grad (a rollout), the work between the products as plain loops in one pass
        # each; with grad, the same ATen calls as python_step, which autograd records.
        plain = not torch.is_grad_enabled() and x.dtype == torch.float32
        step = kernels.fwp_step_nograd if plain else kernels.fwp_step
        y, weights, recent, valid = step(
            x, state["fast_weights"].contiguous(), state["recent_valid"].contiguous(),
            state["recent"].contiguous(), starts, in_weight, in_bias, *norm_in[1:], taps,
            proj_weight, proj_bias, gamma, out_weight, *norm_out[1:], self.num_heads,
        )  # fmt: skip
        return y, {"fast_weights": weights, "recent": recent, "recent_valid": valid}

    def python_step(self, x: Tensor, state: State, starts: Tensor) -> tuple[Tensor, State]:
        """One rollout step, ``x (1, B, input_dim)``, ``starts (1, B)``: the recurrence itself.

        The arithmetic of :meth:`forward_reference` at ``T == 1`` in fewer torch calls (at
        rollout sizes each costs microseconds from Python, as much as its arithmetic):
        the projections that read the same input run as one matmul on weights stacked
        once per parameter change (:meth:`step_plan`), split rather than sliced, with the
        time axis of one kept (``step_keeps_time``); one host check finds the rows that
        start.  ``recent_valid`` is used as a 0/1 factor, as every state the module
        returns holds it.  No input checks: :meth:`forward` makes them.
        """
        batch, d_model, heads, head_dim = x.shape[1], self.d_model, self.num_heads, self.head_dim
        in_weight, in_bias, norm_in, taps, proj_weight, proj_bias, gamma, out_weight, norm_out = (
            self.step_plan()
        )
        weights, valid, recent = state["fast_weights"], state["recent_valid"], state["recent"]
        if bool(starts.any()):
            rows = starts.bool().view(-1, 1)
            weights = weights.masked_fill(rows.view(-1, 1, 1, 1), 0.0)
            valid = valid.masked_fill(rows, 0.0)
        # One matmul gives u and u + out_proj.bias: (1, B, d) each.
        u, u_out = F.linear(x, in_weight, in_bias).split(d_model, dim=-1)
        z = F.layer_norm(u, *norm_in)
        # (B, K, d): the last K - 1 inputs (zero outside the episode) and this one.
        window = torch.cat([recent * valid.unsqueeze(-1), z.transpose(0, 1)], dim=1)
        mixed = (window * taps).sum(dim=1)  # (B, d)
        query_key, value, beta = F.linear(mixed, proj_weight, proj_bias).split(
            [2 * d_model, d_model, heads], dim=-1
        )
        # Queries and keys (B, H, 1, dk) each; values scaled by the write strength (B, H, dv, 1).
        query, key = torch.softmax(query_key.view(batch, 2, heads, 1, head_dim), -1).unbind(1)
        value = value.view(batch, heads, head_dim, 1) * torch.sigmoid(beta).view(batch, heads, 1, 1)
        # W = gamma W + v k^T, then the read W q: (B, H, dv, dk) and (1, B, d).
        weights = torch.addcmul(weights * gamma, value, key)
        read = (weights * query).sum(dim=-1).view(1, batch, d_model)
        y = F.layer_norm(torch.baddbmm(u_out, read, out_weight), *norm_out)
        new_state = {
            "fast_weights": weights,
            "recent": window[:, 1:],
            "recent_valid": F.pad(valid[:, 1:], (0, 1), value=1.0),
        }
        return y, new_state

    def step_plan(self) -> tuple:
        """Every tensor a step reads, folded once per parameter change (memory/derived.py):
        the input projection stacked twice, ``(2d, input_dim)`` and ``(2d,)``, the second
        copy's bias carrying the output projection's (one matmul gives ``u`` and ``u +
        out_proj.bias``); the input LayerNorm's arguments; the convolution taps; the
        query-key and value-strength projections stacked, ``(3d + H, d)`` and ``(3d + H,)``;
        ``gamma (H, 1, 1)``; the output projection transposed, ``(1, d, d)``; the output
        LayerNorm's arguments."""
        return derived(self, "step_plan", self._step_plan)

    def _step_plan(self) -> tuple:
        proj, qk, vs, out = self.input_proj, self.query_key, self.value_strength, self.out_proj

        def norm_args(norm: nn.LayerNorm) -> tuple:
            return norm.normalized_shape, norm.weight, norm.bias, norm.eps

        return (
            torch.cat([proj.weight, proj.weight]),
            torch.cat([proj.bias, proj.bias + out.bias]),
            norm_args(self.norm_in),
            self.conv_taps,
            torch.cat([qk.weight, vs.weight]),
            torch.cat([qk.bias, vs.bias]),
            torch.exp(self.log_decay())[:, None, None],
            out.weight.t()[None],
            norm_args(self.norm_out),
        )

    def forward_reference(
        self, x: Tensor, state: State, episode_starts: Tensor
    ) -> tuple[Tensor, State]:
        """The chunk path (and at ``T == 1`` the recurrence written plainly)."""
        self.check_inputs(x, episode_starts, state)
        starts = episode_starts.bool()
        if x.shape[0] == 1:
            return self._step(x[0], state, starts[0])
        u = self.input_proj(x.transpose(0, 1))  # (B, T, d)
        z, recent, recent_valid = self.convolve(self.norm_in(u), state, starts)
        query, key, value = self.project(z)
        log_decay, weights, reads = self.log_decay(), state["fast_weights"], []
        steps, block = x.shape[0], min(self.max_block, x.shape[0])
        sizes = [size for size in (steps - steps % block, steps % block) if size]
        # Whole blocks at once, then the remainder; split, not slices: its backward is
        # one concatenation, not a zero-fill per piece.
        pieces = zip(*(t.split(sizes, dim=2) for t in (query, key, value)))
        for piece, piece_starts, size in zip(pieces, starts.split(sizes), sizes):
            piece_reads, weights = fwp_blocks(
                *piece, log_decay, weights, piece_starts, min(block, size)
            )
            reads.append(piece_reads)
        read = torch.cat(reads, dim=2).transpose(1, 2).flatten(2)  # (B, T, d)
        y = self.norm_out(u + self.out_proj(read))
        new_state = {"fast_weights": weights, "recent": recent, "recent_valid": recent_valid}
        return y.transpose(0, 1), new_state

    def _step(self, x: Tensor, state: State, start: Tensor) -> tuple[Tensor, State]:
        """A step, x (B, input_dim), start (B,): the recurrence written plainly."""
        keep = ~start
        u = self.input_proj(x)  # (B, d)
        z = self.norm_in(u)
        valid = (state["recent_valid"] > 0.5) & keep[:, None]  # (B, K - 1)
        recent = torch.where(valid[..., None], state["recent"], 0)  # (B, K - 1, d)
        mixed = (recent * self.conv_taps[:-1]).sum(dim=1) + z * self.conv_taps[-1]
        query, key, value = self.project(mixed[:, None])  # (B, H, 1, dk)
        gamma = torch.exp(self.log_decay())[:, None, None]  # (H, 1, 1)
        weights = torch.where(keep[:, None, None, None], gamma * state["fast_weights"], 0)
        weights = weights + value.transpose(-1, -2) @ key  # write: (B, H, dv, dk)
        read = (query @ weights.transpose(-1, -2)).flatten(1)  # read: (B, d)
        y = self.norm_out(u + self.out_proj(read))
        ones = torch.ones_like(valid[:, :1])
        new_state = {
            "fast_weights": weights,
            "recent": torch.cat([recent, z[:, None]], dim=1)[:, 1:],
            "recent_valid": torch.cat([valid, ones], dim=1)[:, 1:].to(state["recent_valid"].dtype),
        }
        return y[None], new_state

    @torch.no_grad()
    def diagnostics(self, state: State) -> dict[str, float]:
        norms = state["fast_weights"].flatten(2).norm(dim=-1)  # (B, H)
        return {
            "fast_weight_norm": float(norms.mean()),
            "slowest_decay_steps": float(1 / -self.log_decay().max()),
        }
