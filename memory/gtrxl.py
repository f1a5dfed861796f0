"""GTrXL: a gated Transformer-XL whose memory of past hidden states is the carried state.

Every layer keeps the last ``mem_len`` hidden states that entered it (the
Transformer-XL memory) and attends from each new step to them and to the
chunk's own earlier steps; keys and values are recomputed from the remembered
states with the layer's current weights.  Residual connections are replaced by
GRU-type gates initialised near the identity, which is what lets the
transformer train under RL's noisy gradients.  A per-row episode index (the
cumulative count of ``episode_starts``, as in memory/window.py) hides every
remembered state from before the row's latest episode start, per step, inside
the chunk as across chunks.  A rollout step (``T == 1``, :meth:`GTrXL.step`) runs
the same arithmetic in fewer torch calls and is tested against
:meth:`GTrXL.forward_reference`, the chunk code.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from memworld.memory.base import (
    State,
    SteppedMemory,
    check_heads,
    check_positive_int,
    register,
)
from memworld.memory.derived import derived
from memworld.memory.window import episode_index


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

    def step(self, seq: Tensor, log_visible: Tensor, plan: tuple) -> Tensor:
        """:meth:`forward` for one step in fewer torch calls, from :meth:`step_plan`.

        ``seq`` (B, M + 1, d) is ``[memory; h]``; ``log_visible`` (B, 1, 1, M + 1) is 0
        where the step may attend and ``-inf`` elsewhere.  Returns (B, d)."""
        norm_attn, query, key_value, bias, out, gate_attn, norm_mlp, mlp, gate_mlp = plan
        batch, span, d_model = seq.shape
        heads = self.num_heads
        head_dim = d_model // heads
        normed = F.layer_norm(seq, *norm_attn)
        # The query of the step alone; keys and values of every place: (B, H, M + 1, e).
        q = F.linear(normed[:, -1], *query).view(batch, heads, 1, head_dim)
        kv = F.linear(normed, *key_value).view(batch, span, 2, heads, head_dim)
        k, v = kv.permute(2, 0, 3, 1, 4).unbind(0)
        mixed = F.scaled_dot_product_attention(q, k, v, attn_mask=log_visible + bias)
        y = gate_step(seq[:, -1], F.relu(F.linear(mixed.view(batch, d_model), *out)), gate_attn)
        hidden = F.relu(F.linear(F.layer_norm(y, *norm_mlp), *mlp[0]))
        return gate_step(y, F.relu(F.linear(hidden, *mlp[1])), gate_mlp)

    def step_plan(self) -> tuple:
        """What :meth:`step` reads: the layer norms' arguments, the query and key-value
        rows of the joint projection, the distance bias reversed ``(H, 1, M + 1)`` (the key
        ``j`` places before the step gets ``position_bias[:, j]``), the output projection,
        the MLP's two layers and both gates' :meth:`GRUGate.step_weights`."""

        def norm_args(norm: nn.LayerNorm) -> tuple:
            return norm.normalized_shape, norm.weight, norm.bias, norm.eps

        d_model = self.qkv.weight.shape[1]
        weight, bias = self.qkv.weight, self.qkv.bias
        first, second = self.mlp[0], self.mlp[2]
        return (
            norm_args(self.norm_attn),
            (weight[:d_model], bias[:d_model]),
            (weight[d_model:], bias[d_model:]),
            self.position_bias.flip(-1)[:, None],
            (self.out_proj.weight, self.out_proj.bias),
            self.gate_attn.step_weights(),
            norm_args(self.norm_mlp),
            ((first.weight, first.bias), (second.weight, second.bias)),
            self.gate_mlp.step_weights(),
        )


@register("gtrxl")
class GTrXL(SteppedMemory):
    """Gated Transformer-XL: pre-LayerNorm attention blocks with GRU-type gates for residuals.

    Follows the GTrXL design in its blocks: LayerNorm before attention and MLP,
    a ReLU on each sublayer's output, and a GRU-type gate (bias 2 at the start,
    so each block begins near the identity) where Transformer-XL adds a
    residual; each layer attends over the remembered hidden states of earlier
    steps.  memworld chooses: gradients flow through the memory inside one
    call (Transformer-XL's stop-gradient holds only at a chunk's start, whose
    state comes from the rollout); a
    learned per-head bias for each relative distance ``0 .. mem_len`` in place
    of sinusoidal relative encodings; a sliding memory, so every step sees
    exactly the ``mem_len`` steps before it whatever its place in the chunk
    (a chunk split in two gives the same outputs as one call); episode starts
    hide the memory; a linear encoder before the first layer and a final
    LayerNorm.  With ``L`` layers a step can reach ``L * mem_len`` steps back.
    State: ``memory (B, num_layers, mem_len, d_model)`` (newest last, zeros
    before the episode start) and ``valid (B, mem_len)``, 1.0 where the place
    holds a step of the current episode.

    Args:
        input_dim: width of each input.
        d_model: model and output width, divisible by ``num_heads`` (default 64).
        num_heads: attention heads (default 4).
        num_layers: stacked blocks (default 1).
        mem_len: remembered steps per layer (default 32).
        mlp_ratio: MLP hidden width as a multiple of ``d_model`` (default 2).
        gate_bias: initial bias of the gates; larger starts closer to the identity (default 2).
        max_block: longest piece of a chunk attended in one go; longer chunks go
            piece by piece through the carried memory (same result). A piece of ``P``
            steps scores ``P (mem_len + P)`` pairs where each query sees ``mem_len + 1``,
            so pieces near ``mem_len`` waste least (default 32: 0.92-1.01x, median 0.96x,
            the time of 64 at T=128 in seven paired runs, docs/memory_models.md).
    """

    recommended_lr = 3e-3

    def __init__(
        self,
        input_dim: int,
        d_model: int = 64,
        num_heads: int = 4,
        num_layers: int = 1,
        mem_len: int = 32,
        mlp_ratio: int = 2,
        gate_bias: float = 2.0,
        max_block: int = 32,
    ) -> None:
        for name, value in [
            ("d_model", d_model),
            ("num_heads", num_heads),
            ("num_layers", num_layers),
            ("mem_len", mem_len),
            ("mlp_ratio", mlp_ratio),
            ("max_block", max_block),
        ]:
            check_positive_int(name, value)
        check_heads(d_model, num_heads)
        super().__init__(input_dim, d_model)
        self.d_model, self.num_layers, self.mem_len = d_model, num_layers, mem_len
        self.max_block = max_block
        self.input_proj = nn.Linear(input_dim, d_model)
        self.blocks = nn.ModuleList(
            GTrXLBlock(d_model, num_heads, mem_len, mlp_ratio, gate_bias) for _ in range(num_layers)
        )
        self.norm_out = nn.LayerNorm(d_model)

    def _param_dtype(self) -> torch.dtype:
        # The input checks' dtype, without walking every parameter at each step.
        return self.input_proj.weight.dtype

    def initial_state(self, batch_size: int, device: torch.device | str = "cpu") -> State:
        return {
            "memory": torch.zeros(
                batch_size, self.num_layers, self.mem_len, self.d_model, device=device
            ),
            "valid": torch.zeros(batch_size, self.mem_len, device=device),
        }

    def step(self, x: Tensor, state: State, starts: Tensor) -> tuple[Tensor, State]:
        """One rollout step, ``x (B, input_dim)``, ``starts (B,)``, in fewer torch calls
        than :meth:`forward_reference` at ``T == 1``: the mask is the memory's ``valid``
        flags (one host check for the rows that start) plus the reversed distance bias,
        and each block runs :meth:`GTrXLBlock.step` on weights folded once per parameter
        change (:meth:`step_plan`).  No input checks: :meth:`forward` makes them."""
        in_weight, in_bias, blocks, norm_out = self.step_plan()
        valid = state["valid"]  # (B, M), 0/1
        if bool(starts.any()):
            valid = valid.masked_fill(starts.bool().view(-1, 1), 0.0)
        visible = F.pad(valid, (0, 1), value=1.0)  # (B, M + 1): the memory, then the step
        log_visible = visible.log()[:, None, None]  # (B, 1, 1, M + 1): 0 or -inf
        new_valid = visible[:, 1:]
        keep = new_valid[..., None]
        h = F.linear(x, in_weight, in_bias)  # (B, d)
        new_memory = []
        for layer, (block, plan) in enumerate(zip(self.blocks, blocks)):
            seq = torch.cat([state["memory"][:, layer], h[:, None]], dim=1)  # (B, M + 1, d)
            new_memory.append(seq[:, 1:] * keep)  # zeros outside the episode
            h = block.step(seq, log_visible, plan)
        y = F.layer_norm(h, *norm_out)
        return y, {"memory": torch.stack(new_memory, dim=1), "valid": new_valid}

    def step_plan(self) -> tuple:
        """Every tensor a rollout step reads, folded once per parameter change without
        grad (memory/derived.py): the input projection, each block's
        :meth:`GTrXLBlock.step_plan` and the output LayerNorm's arguments."""
        return derived(self, "step_plan", self._step_plan)

    def _step_plan(self) -> tuple:
        norm = self.norm_out
        blocks = tuple(block.step_plan() for block in self.blocks)
        norm_out = (norm.normalized_shape, norm.weight, norm.bias, norm.eps)
        return self.input_proj.weight, self.input_proj.bias, blocks, norm_out

    def forward_reference(
        self, x: Tensor, state: State, episode_starts: Tensor
    ) -> tuple[Tensor, State]:
        """The chunk path: masked attention over ``[memory; chunk]`` in pieces."""
        self.check_inputs(x, episode_starts, state)
        starts = episode_starts.bool()
        h = self.input_proj(x.transpose(0, 1))  # (B, T, d)
        outputs = []
        for h_block, block_starts in zip(h.split(self.max_block, 1), starts.split(self.max_block)):
            y, state = self._forward_block(h_block, state, block_starts)
            outputs.append(y)
        return self.norm_out(torch.cat(outputs, dim=1)).transpose(0, 1), state

    def _forward_block(self, h: Tensor, state: State, starts: Tensor) -> tuple[Tensor, State]:
        segment = episode_index(state["valid"], starts)  # (B, M + T)
        # Places of the new memory that hold a step of the last step's episode.
        valid = (segment[:, -self.mem_len :] == segment[:, -1:])[..., None]  # (B, M, 1)
        new_memory = []
        for layer, block in enumerate(self.blocks):
            remembered = state["memory"][:, layer]  # (B, M, d)
            states = torch.cat([remembered, h], dim=1)[:, -self.mem_len :]
            new_memory.append(torch.where(valid, states, 0.0))  # zeros outside the episode
            h = block(h, remembered, segment)
        new_state = {
            "memory": torch.stack(new_memory, dim=1),  # (B, L, M, d)
            "valid": valid[..., 0].to(state["valid"].dtype),
        }
        return h, new_state

    @torch.no_grad()
    def diagnostics(self, state: State) -> dict[str, float]:
        gates = [torch.sigmoid(-b.gate_attn.bias).mean() for b in self.blocks]
        return {
            "memory_fill": float(state["valid"].mean()),
            "attention_gate_open": float(torch.stack(gates).mean()),
        }
