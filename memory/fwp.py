"""A fast-weight memory: an outer-product weight matrix written and read at every step.

Per head, a slow network maps each input to a query, a key, a value and a write
strength ``beta``; the fast weight matrix ``W`` (value width x key width) is
decayed, written and then read::

    W_t = gamma * W_{t-1} + beta_t * v_t phi(k_t)^T        y_t = W_t phi(q_t)

with ``phi`` a softmax over the key width (positive features that sum to one),
so a read is a convex mixture of the written values.  Queries, keys and values
are computed from a short causal convolution of the last ``conv_width`` inputs
of the episode: a key then says what came just before a step as well as what
it holds, which is what lets a query ask for "the step after X" (with an
additive update alone, a read can tell writes apart only by their content and
their decay, not by their order).  The update is linear in ``W``, so a chunk runs
in closed form: a step's read is the carried ``W`` decayed to it plus a causal,
decayed linear attention over the chunk's own writes.  A long chunk is cut into
blocks of ``max_block`` steps, all computed at once (:func:`fwp_blocks`), so the
attention scores stay ``max_block`` squared; only the fast weights carried from one
block into the next go block by block (a loop over blocks, not over steps).
:func:`fwp_reference` is the step-by-step recurrence the chunk path is tested
against; a rollout step (``T == 1``, :meth:`FastWeightMemory.step`) runs the
recurrence directly, and is tested against :meth:`FastWeightMemory.forward_reference`.
"""

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
from memworld.memory.window import episode_index


def feature_map(z: Tensor) -> Tensor:
    """A softmax over the last axis: positive features that sum to one."""
    return torch.softmax(z, dim=-1)


def fwp_block(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    log_decay: Tensor,
    weights: Tensor,
    starts: Tensor,
) -> tuple[Tensor, Tensor]:
    """Reads and the final fast weights of one block of ``C`` steps, all at once.

    Args:
        query, key: (B, H, C, dk) feature-mapped queries and keys.
        value: (B, H, C, dv) values, already scaled by the write strength.
        log_decay: (H,) ``log gamma`` (negative).
        weights: (B, H, dv, dk) fast weights carried into the block.
        starts: (C, B) bool, episode starts (the row's fast weights are zeroed before it).

    Returns:
        reads (B, H, C, dv) and the fast weights after the block (B, H, dv, dk).
    """
    steps = query.shape[2]
    segment = starts.long().cumsum(dim=0).transpose(0, 1)  # (B, C): 0 = carried episode
    position = torch.arange(steps, device=query.device)
    lag = position[:, None] - position[None, :]  # (C, C): t - s
    same = (segment[:, :, None] == segment[:, None, :]) & (lag >= 0)  # (B, C, C)
    decay = torch.exp(log_decay[:, None, None] * lag.clamp(min=0))  # (H, C, C): gamma^(t-s)
    scores = query @ key.transpose(-1, -2)  # (B, H, C, C)
    scores = torch.where(same[:, None], scores * decay, 0)
    reads = scores @ value  # (B, H, C, dv)
    from_carried = (segment == 0)[:, None, :, None]  # (B, 1, C, 1)
    carried_decay = torch.exp(log_decay[:, None] * (position + 1))  # (H, C): gamma^(t+1)
    carried_reads = (query @ weights.transpose(-1, -2)) * carried_decay[..., None]
    reads = reads + torch.where(from_carried, carried_reads, 0)
    # Fast weights after the block: the last step's episode's writes, decayed to the end.
    in_last = (segment == segment[:, -1:])[:, None, :, None]  # (B, 1, C, 1)
    write_decay = torch.exp(log_decay[:, None] * (steps - 1 - position))[..., None]  # (H, C, 1)
    written = torch.where(in_last, value * write_decay, 0).transpose(-1, -2) @ key
    kept = torch.where(
        (segment[:, -1] == 0)[:, None, None, None],
        weights * torch.exp(log_decay * steps)[:, None, None],
        0,
    )
    return reads, kept + written


def fwp_blocks(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    log_decay: Tensor,
    weights: Tensor,
    starts: Tensor,
    block: int,
) -> tuple[Tensor, Tensor]:
    """:func:`fwp_block` over ``T / block`` blocks at once (``T`` a multiple of ``block``).

    Within each block the reads are the same decayed causal attention as in
    :func:`fwp_block`, computed for every block in one batched product; only the fast
    weights carried from one block into the next go block by block (a loop of
    ``T / block`` small updates, not of ``T`` steps).  Arguments as in :func:`fwp_block`.
    """
    batch, heads, steps, _ = query.shape
    blocks = steps // block
    # (B, H, nb, C, .) views: block j holds steps j * C .. j * C + C - 1.
    query, key, value = (t.view(batch, heads, blocks, block, -1) for t in (query, key, value))
    segment = starts.view(blocks, block, batch).long().cumsum(dim=1).permute(2, 0, 1)  # (B, nb, C)
    position = torch.arange(block, device=query.device)
    lag = position[:, None] - position[None, :]  # (C, C): t - s
    same = (segment[..., :, None] == segment[..., None, :]) & (lag >= 0)  # (B, nb, C, C)
    decay = torch.exp(log_decay[:, None, None] * lag.clamp(min=0))  # (H, C, C)
    # Masks as float factors folded into small tensors before they meet the big ones
    # (a broadcast torch.where is several times slower than a product on the CPU).
    decay = same[:, None] * torch.exp(log_decay[:, None, None] * lag.clamp(min=0))[:, None]
    reads = (query @ key.transpose(-1, -2) * decay) @ value  # decay (B, H, nb, C, C)
    # What each block writes into the fast weights by its end, and whether it keeps the past.
    in_last = (segment == segment[..., -1:])[:, None, :, :, None]  # (B, 1, nb, C, 1)
    write_decay = torch.exp(log_decay[:, None] * (block - 1 - position))[:, None, :, None]
    written = (value * (in_last * write_decay)).transpose(-1, -2) @ key  # (B, H, nb, dv, dk)
    # gamma^C where the block keeps the fast weights it was entered with, 0 where it starts
    # an episode: (B, H, nb, 1, 1).
    block_decay = torch.exp(log_decay * block)[:, None, None, None]  # (H, 1, 1, 1)
    kept = (segment[..., -1] == 0)[:, None, :, None, None] * block_decay
    entering = []  # fast weights at each block's start: (B, H, dv, dk) each
    # unbind, not indexing: its backward is one stack, not a zero-filled copy per block.
    for kept_j, written_j in zip(kept.unbind(2), written.unbind(2)):
        entering.append(weights)
        weights = torch.addcmul(written_j, weights, kept_j)
    carried = torch.stack(entering, dim=2)  # (B, H, nb, dv, dk)
    carried_decay = torch.exp(log_decay[:, None] * (position + 1))[:, None, :, None]  # (H,1,C,1)
    from_carried = (segment == 0)[:, None, :, :, None]  # (B, 1, nb, C, 1)
    reads = reads + query @ carried.transpose(-1, -2) * (from_carried * carried_decay)
    return reads.view(batch, heads, steps, -1), weights


def fwp_reference(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    log_decay: Tensor,
    weights: Tensor,
    starts: Tensor,
) -> tuple[Tensor, Tensor]:
    """:func:`fwp_block`'s recurrence one step at a time (the spec it is held to)."""
    gamma = torch.exp(log_decay)[:, None, None]  # (H, 1, 1)
    reads = []
    for t in range(query.shape[2]):
        keep = ~starts[t][:, None, None, None]  # (B, 1, 1, 1)
        weights = torch.where(keep, gamma * weights, 0)
        weights = weights + value[:, :, t, :, None] * key[:, :, t, None, :]  # write
        reads.append((weights @ query[:, :, t, :, None]).squeeze(-1))  # read
    return torch.stack(reads, dim=2), weights


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
        kernels = native.rollout_steps() if x.device.type == "cpu" else None
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
