"""GTrXL, the registered module: the chunk path, the rollout step (Python, or C++ without
grad) and the keys and values a rollout step carries over."""

from __future__ import annotations

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
from memworld.memory.gtrxl.block import GTrXLBlock
from memworld.memory.window import episode_index


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

    step_keeps_time = True

    def step(self, x: Tensor, state: State, starts: Tensor) -> tuple[Tensor, State]:
        """One rollout step, ``x (1, B, input_dim)``, ``starts (1, B)``: :meth:`python_step`,
        or without grad on the CPU in float32 the same arithmetic in C++ where memworld's
        C++ kernels are built (memory/native.py: the products through BLAS, the layer
        norms, the attention and the gates' elementwise work as plain loops; sums may round
        in another order).  Without grad, a step whose memory is the one the previous step
        returned (the same tensor, not written since) with the weights unchanged reuses
        that step's keys and values of the memory's places
        (:meth:`_remembered_keys_values`) and projects only the new step; any other state
        is projected whole.  No input checks: :meth:`forward` makes them."""
        kernels = native.rollout_steps(x)
        if kernels is not None and not torch.is_grad_enabled() and x.dtype == torch.float32:
            plan = self._native_plan()
            remembered = self._remembered_keys_values(state["memory"], plan)
            in_weight, in_bias, flat, offsets, eps, norm_out, heads = plan
            y, memory, valid, *keys_values = kernels.gtrxl_step_nograd(
                x, state["memory"], state["valid"], starts, remembered or [], in_weight,
                in_bias, flat, offsets, eps, *norm_out[1:], heads,
            )  # fmt: skip
        else:
            plan = self.step_plan()
            remembered = self._remembered_keys_values(state["memory"], plan)
            y, memory, valid, keys_values = self._python_step(x[0], state, starts[0], remembered)
            y = y[None]
        # Inference-mode tensors keep no version counter: nothing is kept for them.  (Set
        # in __dict__: nn.Module's __setattr__ costs microseconds.)
        if not (torch.is_grad_enabled() or memory.is_inference()):
            self.__dict__["_keys_values"] = (plan, memory, memory._version, keys_values)
        return y, {"memory": memory, "valid": valid}

    def python_step(self, x: Tensor, state: State, starts: Tensor) -> tuple[Tensor, State]:
        """:meth:`step` in torch calls from Python, the memory's keys and values computed
        afresh: ``x (1, B, input_dim)``, ``starts (1, B)``."""
        y, memory, valid, _ = self._python_step(x[0], state, starts[0])
        return y[None], {"memory": memory, "valid": valid}

    def _python_step(
        self, x: Tensor, state: State, starts: Tensor, remembered: list | None = None
    ) -> tuple[Tensor, Tensor, Tensor, list[Tensor]]:
        """:meth:`step` in torch calls from Python, ``x (B, input_dim)``, ``starts (B,)``:
        the mask is the memory's ``valid`` flags
        (one host check for the rows that start) plus the reversed distance bias, and each
        block runs :meth:`GTrXLBlock.step` on the weights folded once per parameter change
        (:meth:`step_plan`), on the memory's keys and values ``remembered`` where given.
        Returns the output, the new memory and valid flags, and each layer's keys and
        values of the new memory's places."""
        in_weight, in_bias, blocks, norm_out = self.step_plan()
        memory = state["memory"]
        valid = state["valid"]  # (B, M), 0/1
        if bool(starts.any()):
            valid = valid.masked_fill(starts.bool().view(-1, 1), 0.0)
        visible = F.pad(valid, (0, 1), value=1.0)  # (B, M + 1): the memory, then the step
        log_visible = visible.log()[:, None, None]  # (B, 1, 1, M + 1): 0 or -inf
        new_valid = visible[:, 1:]
        keep = new_valid[..., None]
        h = F.linear(x, in_weight, in_bias)  # (B, d)
        new_memory, keys_values = [], []
        for layer, (block, block_plan) in enumerate(zip(self.blocks, blocks)):
            seq = torch.cat([memory[:, layer], h[:, None]], dim=1)  # (B, M + 1, d)
            new_memory.append(seq[:, 1:] * keep)  # zeros outside the episode
            kv_memory = None if remembered is None else remembered[layer]
            h, kv = block.step(seq, log_visible, block_plan, kv_memory)
            # The places of the new memory; those outside the episode stay masked.
            keys_values.append(kv[:, 1:])
        y = F.layer_norm(h, *norm_out)
        return y, torch.stack(new_memory, dim=1), new_valid, keys_values

    def _remembered_keys_values(self, memory: Tensor, plan: tuple) -> list[Tensor] | None:
        """Each layer's keys and values of ``memory``'s places (B, M, 2d), kept by the last
        step without grad, where ``memory`` is the tensor that step returned, unwritten
        since (its version counter), and ``plan`` the same folded weights (a new object
        after any parameter change, memory/derived.py); else None.  A place outside the
        episode holds the keys of the state before its zeroing, which the mask hides."""
        kept = self.__dict__.get("_keys_values")
        if torch.is_grad_enabled() or kept is None:
            return None
        kept_plan, kept_memory, version, keys_values = kept
        if kept_plan is plan and kept_memory is memory and memory._version == version:
            return keys_values
        return None

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

    def _native_plan(self) -> tuple:
        """:meth:`step_plan` as the C++ step reads it: the input projection, every block's
        19 tensors flattened into one and where each starts (each gate's candidate weight
        untransposed), their two layer norms' eps, the output LayerNorm's arguments and the
        heads (folded once per parameter change, without grad)."""
        return derived(self, "native_plan", self._build_native_plan)

    def _build_native_plan(self) -> tuple:
        in_weight, in_bias, blocks, norm_out = self.step_plan()
        tensors, eps = [], []
        for norm_attn, qkv, bias, out, gate_attn, norm_mlp, mlp, gate_mlp in blocks:
            # Each gate's candidate weight as the Linear holds it (U_g, not its transpose).
            gates = [(*gate[:2], gate[2].t()) for gate in (gate_attn, gate_mlp)]
            tensors += [*norm_attn[1:3], *qkv, bias, *out, *gates[0], *norm_mlp[1:3]]
            tensors += [*mlp[0], *mlp[1], *gates[1]]
            eps += [norm_attn[3], norm_mlp[3]]
        flat, offsets = native.flat_plan(tensors)
        return in_weight, in_bias, flat, offsets, eps, norm_out, self.blocks[0].num_heads

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
