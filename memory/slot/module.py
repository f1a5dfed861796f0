"""SlotMemory: an explicit slot memory with sparse multi-head addressing (memnet-slot-memory.md).

Each step ``t`` of a row:

1. decay: every slot is multiplied by its retention ``sigmoid(decay_logit_n)``
   (one learnable gate per slot); slots age by one step, usage decays;
2. controller (``mlp``, ``gru`` or causal ``transformer`` over a window) reads
   ``[x_t, read_{t-1}]`` and emits ``h_t``; one linear layer turns ``h_t`` into
   the heads' keys, key strengths, write gates, allocation strengths and erase
   factors, and the semantic bottleneck MLP (hidden -> bottleneck_dim ->
   slot_dim) compresses ``h_t`` into what is written;
3. write (each write head): the ``write_top_k`` slots with the highest
   ``strength * cos(key, slot) + alloc_strength * staleness`` are chosen, where
   ``staleness = age / (age + age_scale) - usage`` prefers stale, least used
   slots (LRU); weights are ``gate * softmax`` over those k, and the update is
   the residual ``m = m * (1 - w * erase) + w * add``;
4. read (each read head): top-``read_top_k`` cosine similarity, softmax of
   ``strength * cos`` over the k chosen slots, weighted sum ``read_t``;
5. output ``y_t = h_t + W_fuse(LayerNorm(read_t))`` (residual fusion); the
   controller gets the raw ``read_t`` back at the next step.

State (batch-first): ``memory (B, N, D)``, ``age (B, N)``, ``usage (B, N)``,
``read (B, H, D)`` (the last raw read), ``read_weights (B, H,
read_top_k)`` (the last read weights), ``read_slots`` and ``write_slots (B, N)``
(the last step's read and gated write weights over the slots, for monitors and
videos), ``write_rate (B,)`` (moving average of the write gate, factor
``usage_decay``) and the controller's ``ctrl_*`` tensors.

Cost: each step scans all N slots once for the top-k (a no-grad ``bmm``); only
the k chosen slots per head enter autograd, decay is applied lazily, and the
dense memory is built once per call (see memory/slot/bank.py).

Where the document is vague, and what was chosen:

- No sizes are given: ``num_slots=64``, ``slot_dim=64``, 4 read heads with
  top-4, 1 write head with top-2, bottleneck 32, controller width 128 are RL
  defaults of this repository, not the document's.
- The document's controller is a Transformer, so ``controller="transformer"``
  is the default (one block, window 16); ``gru`` is cheaper per step.
- Order within a step: write, then read (the read can see this step's write),
  so a one-step chunk still trains the write path.
- "Age and usage": ``age`` counts steps since the slot was last written (a soft
  write of weight w renews it by w: ``age *= 1 - w``), and every slot starts at
  age 0 at a reset, so never-written slots are the oldest.  ``usage`` is a
  moving average (factor ``usage_decay``) of the read and write weights a slot
  receives.  Both are bookkeeping without gradient.
- Several write heads choose their slots from the memory as it was at the start
  of the step and apply their writes one after the other.
- "Global memory pressure" is the mean squared memory entry at the end of the
  forward call; the "optional entropy penalty" is the entropy of the read
  weights over the k chosen slots (weight 0 by default: off).
- ``L_util`` is computed per batch row (each row is a separate memory), from
  the softmax addressing weights of all heads (read and write) averaged over
  heads and steps, then averaged over rows.  The document maximises it, so
  :meth:`aux_loss` adds ``-util_weight * L_util``.
- Persistence across episodes (``reset_on_episode_start=False``) keeps the slot
  bank (memory, age, usage); the controller and the last read still reset.
- Ties between equally good slots (e.g. empty ones) go to the lowest index, so
  a chunked run chooses the same slots as a whole one.
- The document's mixed-precision training is a trainer concern, not this module's.

Aux terms are kept from the last forward call: :meth:`aux_loss` and
:meth:`aux_terms` refer to that call (call them after it, before the next).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from memworld.memory.base import MemoryModule, State, check_positive_int, check_range, register
from memworld.memory.compile import CompiledStep
from memworld.memory.slot.bank import HeadOutputs, SlotBank, slot_utilisation
from memworld.memory.slot.chunk import StepLog, chunk_forward, next_carry
from memworld.memory.slot.controller import make_controller
from memworld.memory.slot.rollout import BANK_KEYS, rollout_forward, rollout_step


@register("slot")
class SlotMemory(MemoryModule):
    """Slot memory bank read and written by a controller with sparse top-k heads.

    Args:
        input_dim: width of the input.
        num_slots: N, slots per batch row (default 64).
        slot_dim: D, width of a slot (default 64).
        hidden_dim: controller width, and the output width (default 128).
        controller: ``"transformer"`` (default, as in the document), ``"gru"`` or ``"mlp"``.
        num_read_heads: H, read heads (default 4).
        num_write_heads: write heads (default 1).
        read_top_k: slots each read head attends to (default 4, at most ``num_slots``).
        write_top_k: slots each write head updates (default 2, at most ``num_slots``).
        bottleneck_dim: width of the semantic bottleneck before a write (default 32).
        controller_window: steps the transformer controller attends to (default 16).
        controller_heads: attention heads of the transformer controller (default 4).
        decay_init: initial per-step retention of every slot, in (0, 1) (default 0.99).
        age_scale: age at which the age part of staleness reaches 1/2 (default 16 steps).
        usage_decay: factor of the usage moving average, in [0, 1) (default 0.99).
        util_weight: weight of the slot-utilisation objective, maximised (default 0.01).
        pressure_weight: weight of the memory-pressure penalty (default 0.001).
        read_entropy_weight: weight of the read-entropy penalty (default 0: off).
        util_eps: epsilon inside the log of L_util (default 1e-8).
        live_threshold: slot norm above which :meth:`diagnostics` counts a slot live (default 1e-3).
        reset_on_episode_start: empty the slot bank at episode starts (default True);
            False keeps it across episodes (``persistent = True``).
        compile: compile the rollout step with ``torch.compile`` (default None: only if
            the environment sets ``MEMWORLD_COMPILE=1``; see memory/compile.py).
    """

    # MemoryPPO's default for it: at 3e-3 the transformer controller collapses (memory
    # gradients fall to ~1e-3 of the GRU's, return at chance); 1e-3 learns (README).
    recommended_lr = 1e-3

    def __init__(
        self,
        input_dim: int,
        num_slots: int = 64,
        slot_dim: int = 64,
        hidden_dim: int = 128,
        controller: str = "transformer",
        num_read_heads: int = 4,
        num_write_heads: int = 1,
        read_top_k: int = 4,
        write_top_k: int = 2,
        bottleneck_dim: int = 32,
        controller_window: int = 16,
        controller_heads: int = 4,
        decay_init: float = 0.99,
        age_scale: float = 16.0,
        usage_decay: float = 0.99,
        util_weight: float = 0.01,
        pressure_weight: float = 1e-3,
        read_entropy_weight: float = 0.0,
        util_eps: float = 1e-8,
        live_threshold: float = 1e-3,
        reset_on_episode_start: bool = True,
        compile: bool | None = None,
    ) -> None:
        for name, value in [
            ("num_slots", num_slots),
            ("slot_dim", slot_dim),
            ("hidden_dim", hidden_dim),
            ("num_read_heads", num_read_heads),
            ("num_write_heads", num_write_heads),
            ("read_top_k", read_top_k),
            ("write_top_k", write_top_k),
            ("bottleneck_dim", bottleneck_dim),
            ("controller_window", controller_window),
        ]:
            check_positive_int(name, value)
        for name, k in [("read_top_k", read_top_k), ("write_top_k", write_top_k)]:
            if k > num_slots:
                raise ValueError(
                    f"{name}={k} must be <= num_slots={num_slots}; lower it or add slots"
                )
        check_range(
            "decay_init", decay_init, 0, 1, open_low=True, open_high=True, fix="0.99 is usual"
        )
        check_range("usage_decay", usage_decay, 0, 1, open_high=True)
        check_range("age_scale", age_scale, 0, open_low=True, fix="a number of steps")
        check_range("util_eps", util_eps, 0, open_low=True, fix="1e-8 is usual")
        weights = (util_weight, pressure_weight, read_entropy_weight)
        for name, value in zip(("util_weight", "pressure_weight", "read_entropy_weight"), weights):
            check_range(name, value, 0, fix="0 turns the term off")
        check_range("live_threshold", live_threshold, 0, fix="a slot norm, 1e-3 is usual")
        super().__init__(input_dim, hidden_dim)
        self.num_slots, self.slot_dim, self.hidden_dim = num_slots, slot_dim, hidden_dim
        self.num_read_heads, self.num_write_heads = num_read_heads, num_write_heads
        self.read_top_k, self.write_top_k = read_top_k, write_top_k
        self.age_scale, self.usage_decay = float(age_scale), float(usage_decay)
        self.util_weight, self.pressure_weight = float(util_weight), float(pressure_weight)
        self.read_entropy_weight, self.util_eps = float(read_entropy_weight), float(util_eps)
        self.live_threshold = float(live_threshold)
        self.reset_on_episode_start = bool(reset_on_episode_start)
        self.persistent = not self.reset_on_episode_start

        self.controller = make_controller(
            controller,
            input_dim + num_read_heads * slot_dim,
            hidden_dim,
            controller_window,
            controller_heads,
        )
        h, hw, d = num_read_heads, num_write_heads, slot_dim
        # read keys, read strengths, write keys, write strengths, write gates,
        # allocation strengths, erase factors
        self.head_sizes = (h * d, h, hw * d, hw, hw, hw, hw * d)
        self.heads = nn.Linear(hidden_dim, sum(self.head_sizes))
        self.bottleneck = nn.Sequential(
            nn.Linear(hidden_dim, bottleneck_dim), nn.GELU(), nn.Linear(bottleneck_dim, hw * d)
        )
        self.decay_logit = nn.Parameter(
            torch.full((num_slots,), math.log(decay_init / (1 - decay_init)))
        )
        self.read_norm = nn.LayerNorm(slot_dim)
        self.fuse = nn.Linear(h * d, hidden_dim)
        self._last_aux: dict[str, object] | None = None
        self._rollout = CompiledStep(rollout_step, compile, "SlotMemory rollout step")
        self._tie_breaks: dict[tuple, tuple[Tensor, Tensor]] = {}

    def __getstate__(self) -> dict:
        # The cached aux terms hold autograd graphs, which cannot be copied or pickled.
        return {**self.__dict__, "_last_aux": None}

    # ------------------------------------------------------------------ state
    def initial_state(self, batch_size: int, device: torch.device | str = "cpu") -> State:
        n, d = self.num_slots, self.slot_dim
        state = {
            "memory": torch.zeros(batch_size, n, d, device=device),
            "age": torch.zeros(batch_size, n, device=device),
            "usage": torch.zeros(batch_size, n, device=device),
        }
        state.update(self._initial_carry(batch_size, device))
        return state

    def _initial_carry(self, batch_size: int, device: torch.device | str) -> State:
        """The per-episode part of the state: controller, last read, read/write statistics."""
        h = self.num_read_heads
        carry = {
            "read": torch.zeros(batch_size, h, self.slot_dim, device=device),
            "read_weights": torch.zeros(batch_size, h, self.read_top_k, device=device),
            "write_rate": torch.zeros(batch_size, device=device),
            "read_slots": torch.zeros(batch_size, self.num_slots, device=device),
            "write_slots": torch.zeros(batch_size, self.num_slots, device=device),
        }
        carry.update(self.controller.initial_state(batch_size, device))
        return carry

    def reset_rows(self, state: State, starts: Tensor) -> State:
        """Rows where ``starts`` (B,) is True back to the initial state (slot bank kept if persistent)."""
        if not bool(starts.any()):
            return state
        init = self.initial_state(starts.shape[0], starts.device)
        keep = () if self.reset_on_episode_start else BANK_KEYS
        return {
            k: v if k in keep else torch.where(starts.view(-1, *[1] * (v.dim() - 1)), init[k], v)
            for k, v in state.items()
        }

    def retention(self) -> Tensor:
        """``(N,)`` per-step retention of each slot, ``sigmoid(decay_logit)``."""
        return torch.sigmoid(self.decay_logit)

    # ---------------------------------------------------------------- forward
    def forward(self, x: Tensor, state: State, episode_starts: Tensor) -> tuple[Tensor, State]:
        """A one-step call without grad (a rollout) runs memory/slot/rollout.py's dense step,
        every other call memory/slot/chunk.py's chunk path (both equal to the reference)."""
        if not self.fast_path:
            return self.forward_reference(x, state, episode_starts)
        if self.use_fast_path(x) and not torch.is_grad_enabled():
            return rollout_forward(self, x, state, episode_starts)
        return chunk_forward(self, x, state, episode_starts)

    def forward_reference(
        self, x: Tensor, state: State, episode_starts: Tensor
    ) -> tuple[Tensor, State]:
        """The reference chunk path: every layer once a step, on a :class:`SlotBank` with lazy
        decay and a log of written values."""
        self.check_inputs(x, episode_starts, state)
        steps, batch, _ = x.shape
        starts = episode_starts.to(device=x.device, dtype=torch.bool)
        reset_at = starts.any(dim=1).tolist()  # one host sync for the whole chunk
        init = self._initial_carry(batch, x.device) if any(reset_at) else None
        bank = SlotBank(
            state["memory"],
            state["age"],
            state["usage"],
            F.logsigmoid(self.decay_logit),
            self.usage_decay,
            capacity=steps * self.num_write_heads * self.write_top_k,
        )
        carry = {k: v for k, v in state.items() if k not in BANK_KEYS}
        outputs, log = [], StepLog()
        xs = x.unbind(0)  # not x[t]: each indexing backward would zero-fill all of x
        for t in range(steps):
            if reset_at[t]:
                rows = starts[t]
                carry = {
                    k: torch.where(rows.view(-1, *[1] * (v.dim() - 1)), init[k], v)
                    for k, v in carry.items()
                }
                if self.reset_on_episode_start:
                    bank.reset(rows)
            bank.advance()
            u = torch.cat([xs[t], carry["read"].flatten(1)], dim=-1)
            ctrl = {k: v for k, v in carry.items() if k.startswith("ctrl_")}
            h, ctrl = self.controller.step(u, ctrl)
            heads = self.head_outputs(h)
            io = bank.read_write(heads, self.read_top_k, self.write_top_k, self.age_scale)
            # LayerNorm on the read for the residual fusion into the output; the
            # controller gets the raw read back (at the memory's own scale): fed back
            # normalised, 256 unit-variance dims drown the input, and neither
            # supervised recall through an SB3 policy at lr 3e-3 nor PPO learned.
            read = self.read_norm(io.read)  # (B, H, D)
            outputs.append(h + self.fuse(read.flatten(1)))
            carry = next_carry(self, ctrl, carry, heads, io)
            log.add(io)
        new_state = log.finish(self, bank, carry, heads, io, steps)
        return torch.stack(outputs), new_state

    def head_outputs(self, h: Tensor) -> HeadOutputs:
        """Split the heads layer's output for ``h`` (B, hidden) into keys, strengths, gates."""
        batch, hw, d = h.shape[0], self.num_write_heads, self.slot_dim
        rk, rs, wk, ws, gate, alloc, erase = self.heads(h).split(self.head_sizes, dim=-1)
        return HeadOutputs(
            read_keys=rk.view(batch, self.num_read_heads, d),
            read_strength=1.0 + F.softplus(rs),
            write_keys=wk.view(batch, hw, d),
            write_strength=1.0 + F.softplus(ws),
            write_gate=torch.sigmoid(gate),
            alloc_strength=F.softplus(alloc),
            erase=torch.sigmoid(erase).view(batch, hw, d),
            add=self.bottleneck(h).view(batch, hw, d),
        )

    # ------------------------------------------------------------- objectives
    def aux_terms(self) -> dict[str, Tensor]:
        """The unweighted auxiliary terms of the last forward call.

        - ``slot_utilisation``: ``L_util = -sum_i w_i log(w_i + eps)``, ``w`` the
          softmax addressing weights of all heads averaged over heads and steps
          (per row, then averaged over rows); high = many slots in use.
        - ``memory_pressure``: mean squared memory entry at the end of the call.
        - ``read_entropy``: mean entropy of the read weights over the k chosen slots.
        """
        if self._last_aux is None:
            zero = torch.zeros((), device=self._device())
            return {"slot_utilisation": zero, "memory_pressure": zero, "read_entropy": zero}
        aux = self._last_aux
        index = torch.cat(aux["index"], dim=1)  # (B, T * (Hw * kw + H * kr))
        weights = torch.cat(aux["weights"], dim=1)
        heads = self.num_read_heads + self.num_write_heads
        mean_weights = torch.zeros(
            index.shape[0], self.num_slots, device=weights.device, dtype=weights.dtype
        ).scatter_add(1, index, weights) / (aux["steps"] * heads)  # (B, N), rows sum to 1
        read_weights = torch.stack(aux["read_weights"])  # (T, B, H, kr)
        return {
            "slot_utilisation": slot_utilisation(mean_weights, self.util_eps).mean(),
            "memory_pressure": aux["memory"].square().mean(),
            "read_entropy": -(read_weights * torch.log(read_weights + self.util_eps))
            .sum(-1)
            .mean(),
        }

    def aux_loss(self, state: State | None = None) -> Tensor:
        """Weighted aux terms of the **last forward call** (``state`` is not used).

        ``-util_weight * L_util + pressure_weight * pressure + read_entropy_weight * entropy``:
        minimising it *maximises* slot utilisation (spreads addressing over the
        slots, the document's cure for addressing collapse), shrinks memory
        (learned forgetting) and, if enabled, sharpens reads.
        """
        terms = self.aux_terms()
        return (
            -self.util_weight * terms["slot_utilisation"]
            + self.pressure_weight * terms["memory_pressure"]
            + self.read_entropy_weight * terms["read_entropy"]
        )

    @torch.no_grad()
    def diagnostics(self, state: State) -> dict[str, float]:
        """Slot-usage entropy, read sparsity, slot ages, write rate and live slots, averaged over rows.

        ``read_sparsity = 1 - read_effective_slots / N`` where the effective number
        of slots a head reads is ``exp(entropy)`` of its last read weights.
        """
        usage = state["usage"]
        share = usage / usage.sum(dim=-1, keepdim=True).clamp_min(1e-12)  # (B, N)
        read_weights = state["read_weights"]  # (B, H, k)
        effective = torch.exp(-torch.xlogy(read_weights, read_weights).sum(-1))  # (B, H)
        live = state["memory"].norm(dim=-1) > self.live_threshold  # (B, N)
        return {
            "slot_usage_entropy": float(-torch.xlogy(share, share).sum(-1).mean()),
            "read_effective_slots": float(effective.mean()),
            "read_sparsity": float(1.0 - effective.mean() / self.num_slots),
            "slot_age_mean": float(state["age"].mean()),
            "slot_age_max": float(state["age"].max()),
            "write_rate": float(state["write_rate"].mean()),
            "live_slots": float(live.sum(-1).float().mean()),
        }
