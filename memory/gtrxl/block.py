"""A GTrXL layer: masked attention over the remembered states, GRU-type gates in place of
residuals, an MLP; and the same layer for one step in fewer torch calls."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def attend(q: Tensor, k: Tensor, v: Tensor, mask: Tensor) -> Tensor:
    """Softmax attention, ``softmax(q k^T / sqrt(e) + mask) v``, written out: on the CPU
    with grad, ``F.scaled_dot_product_attention`` with a float mask takes a slower path
    that also scans the mask for rows of ``-inf``; here every row holds its own step,
    so none is empty.  q (B, H, T, e), k and v (B, H, S, e), mask (B, H, T, S)."""
    scores = torch.baddbmm(
        mask.expand(*q.shape[:-1], k.shape[-2]).flatten(0, 1),
        q.flatten(0, 1),
        k.flatten(0, 1).transpose(1, 2),
        alpha=q.shape[-1] ** -0.5,
    )
    return (torch.softmax(scores, dim=-1) @ v.flatten(0, 1)).view(*q.shape[:-1], v.shape[-1])


class GRUGate(nn.Module):
    """``g(x, y)``: a GRU update with ``x`` as the hidden state and ``y`` as the input.

    ``r = s(W_r y + U_r x)``, ``z = s(W_z y + U_z x - bias)``,
    ``h = tanh(W_g y + U_g (r * x))``, out ``(1 - z) * x + z * h``.  A positive
    ``bias`` (default 2) starts the gate near ``out = x``: the block begins as
    the identity, and learns how much of the sublayer to let through.

    Args:
        d_model: width of ``x``, ``y`` and the output.
        bias: initial gate bias.
    """

    def __init__(self, d_model: int, bias: float = 2.0) -> None:
        super().__init__()
        self.from_input = nn.Linear(d_model, 3 * d_model, bias=False)  # W_r, W_z, W_g
        self.from_hidden = nn.Linear(d_model, 2 * d_model, bias=False)  # U_r, U_z
        self.candidate = nn.Linear(d_model, d_model, bias=False)  # U_g
        self.bias = nn.Parameter(torch.full((d_model,), float(bias)))

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        wr, wz, wg = self.from_input(y).chunk(3, dim=-1)
        ur, uz = self.from_hidden(x).chunk(2, dim=-1)
        r = torch.sigmoid(wr + ur)
        z = torch.sigmoid(wz + uz - self.bias)
        h = torch.tanh(wg + self.candidate(r * x))
        return x + z * (h - x)

    def step_weights(self) -> tuple[Tensor, Tensor, Tensor]:
        """``[[W_r, U_r], [W_z, U_z], [W_g, 0]]`` (3d, 2d), its bias ``[0, -bias, 0]`` and
        ``U_g^T``: what :func:`gate_step` reads."""
        from_hidden = self.from_hidden.weight
        width = from_hidden.shape[1]
        hidden = torch.cat([from_hidden, from_hidden.new_zeros(width, width)])  # (3d, d)
        weight = torch.cat([self.from_input.weight, hidden], dim=1)
        zeros = self.bias.new_zeros(width)
        bias = torch.cat([zeros, -self.bias, zeros])
        return weight, bias, self.candidate.weight.t().contiguous()


def gate_step(x: Tensor, y: Tensor, weights: tuple[Tensor, Tensor, Tensor]) -> Tensor:
    """:meth:`GRUGate.forward` on (B, d) rows in fewer torch calls, from the gate's
    :meth:`GRUGate.step_weights`: the products of ``y`` and ``x`` that feed ``r``, ``z`` and
    the candidate as one matmul of ``[y, x]``."""
    weight, bias, candidate = weights
    pre = F.linear(torch.cat([y, x], dim=-1), weight, bias)  # (B, 3d): r, z, W_g y
    r, z, wg = pre.split(x.shape[-1], dim=-1)
    h = torch.tanh(torch.addmm(wg, torch.sigmoid(r) * x, candidate))
    return torch.addcmul(x, torch.sigmoid(z), h - x)


class GTrXLBlock(nn.Module):
    """One layer: ``Y = g(E, relu(MHA(LN([M; E]))))``, ``E' = g(Y, relu(MLP(LN(Y))))``.

    Args:
        d_model: model width, divisible by ``num_heads``.
        num_heads: attention heads.
        mem_len: remembered states the layer attends to before each step.
        mlp_ratio: MLP hidden width as a multiple of ``d_model``.
        gate_bias: initial bias of both gates.
    """

    def __init__(
        self, d_model: int, num_heads: int, mem_len: int, mlp_ratio: int, gate_bias: float
    ) -> None:
        super().__init__()
        self.num_heads, self.mem_len = num_heads, mem_len
        self.norm_attn = nn.LayerNorm(d_model)
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out_proj = nn.Linear(d_model, d_model)
        # (heads, mem_len + 1): learned bias for a key 0 .. mem_len steps before the query.
        self.position_bias = nn.Parameter(torch.zeros(num_heads, mem_len + 1))
        self.gate_attn = GRUGate(d_model, gate_bias)
        self.norm_mlp = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential(
            nn.Linear(d_model, mlp_ratio * d_model),
            nn.ReLU(),
            nn.Linear(mlp_ratio * d_model, d_model),
        )
        self.gate_mlp = GRUGate(d_model, gate_bias)

    def forward(self, h: Tensor, memory: Tensor, segment: Tensor) -> Tensor:
        """h (B, T, d) this layer's inputs; memory (B, M, d) the remembered ones;
        segment (B, M + T) episode index of ``[memory; h]``.  Returns (B, T, d)."""
        batch, steps, d_model = h.shape
        heads, head_dim = self.num_heads, d_model // self.num_heads
        span = memory.shape[1] + steps
        q, k, v = self.qkv(self.norm_attn(torch.cat([memory, h], dim=1))).chunk(3, dim=-1)
        q = q[:, -steps:].reshape(batch, steps, heads, head_dim).transpose(1, 2)  # (B, H, T, e)
        k = k.reshape(batch, span, heads, head_dim).transpose(1, 2)  # (B, H, M + T, e)
        v = v.reshape(batch, span, heads, head_dim).transpose(1, 2)
        positions = torch.arange(span, device=h.device)
        distance = positions[-steps:, None] - positions[None, :]  # (T, M + T): query - key
        in_reach = (distance >= 0) & (distance <= self.mem_len)
        bias = self.position_bias[:, distance.clamp(0, self.mem_len)]  # (H, T, M + T)
        same_episode = segment[:, None, :] == segment[:, -steps:, None]  # (B, T, M + T)
        # The query always sees itself, so no row of the softmax is all -inf.
        mask = torch.where((in_reach & same_episode)[:, None], bias, float("-inf"))
        mixed = attend(q, k, v, mask).transpose(1, 2).reshape(batch, steps, d_model)
        y = self.gate_attn(h, F.relu(self.out_proj(mixed)))
        return self.gate_mlp(y, F.relu(self.mlp(self.norm_mlp(y))))

    def step(
        self, seq: Tensor, log_visible: Tensor, plan: tuple, kv_memory: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """:meth:`forward` for one step in fewer torch calls, from :meth:`step_plan`.

        ``seq`` (B, M + 1, d) is ``[memory; h]``; ``log_visible`` (B, 1, 1, M + 1) is 0
        where the step may attend and ``-inf`` elsewhere.  ``kv_memory`` (B, M, 2d), where
        given, holds the keys and values of the memory's places (from earlier steps, with
        the same weights): then only the new step is normalised and projected.  Returns
        the output (B, d) and the keys and values of every place of ``seq`` (B, M + 1, 2d)."""
        norm_attn, qkv, bias, out, gate_attn, norm_mlp, mlp, gate_mlp = plan
        batch, span, d_model = seq.shape
        heads = self.num_heads
        head_dim = d_model // heads
        if kv_memory is None:
            normed = F.layer_norm(seq, *norm_attn)
            q = F.linear(normed[:, -1], qkv[0][:d_model], qkv[1][:d_model])
            kv = F.linear(normed, qkv[0][d_model:], qkv[1][d_model:])  # (B, M + 1, 2d)
        else:
            q, kv_new = F.linear(F.layer_norm(seq[:, -1], *norm_attn), *qkv).split(
                [d_model, 2 * d_model], dim=-1
            )
            kv = torch.cat([kv_memory, kv_new[:, None]], dim=1)
        # The query of the step alone; keys and values of every place: (B, H, M + 1, e).
        k, v = kv.view(batch, span, 2, heads, head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        q = q.view(batch, heads, 1, head_dim)
        mixed = F.scaled_dot_product_attention(q, k, v, attn_mask=log_visible + bias)
        y = gate_step(seq[:, -1], F.relu(F.linear(mixed.view(batch, d_model), *out)), gate_attn)
        hidden = F.relu(F.linear(F.layer_norm(y, *norm_mlp), *mlp[0]))
        return gate_step(y, F.relu(F.linear(hidden, *mlp[1])), gate_mlp), kv

    def step_plan(self) -> tuple:
        """What :meth:`step` reads: the layer norms' arguments, the joint query-key-value
        projection (query rows first), the distance bias reversed ``(H, 1, M + 1)`` (the key
        ``j`` places before the step gets ``position_bias[:, j]``), the output projection,
        the MLP's two layers and both gates' :meth:`GRUGate.step_weights`."""

        def norm_args(norm: nn.LayerNorm) -> tuple:
            return norm.normalized_shape, norm.weight, norm.bias, norm.eps

        first, second = self.mlp[0], self.mlp[2]
        return (
            norm_args(self.norm_attn),
            (self.qkv.weight, self.qkv.bias),
            self.position_bias.flip(-1)[:, None],
            (self.out_proj.weight, self.out_proj.bias),
            self.gate_attn.step_weights(),
            norm_args(self.norm_mlp),
            ((first.weight, first.bias), (second.weight, second.bias)),
            self.gate_mlp.step_weights(),
        )
