"""DualMemory: short-term working memory plus a long-term key/value store (lmcode-dual-memory.md).

Each step ``t`` of a row, for each of ``num_layers`` memory-augmented layers
(memory/dual/layer.py), starting from ``h = W_in x_t``:

0. self-attention over the layer's cache of the last ``attention_window``
   steps of the episode (keys and values in the state, a learned bias per
   distance); residual;
1. short-term memory (S slots): soft gated write of the step (update gate ``u``,
   write address, write projection), then multi-head attention read; residual;
2. long-term memory (C slots): top-k retrieval by cosine similarity weighted by
   importance, softmax over the k retrieved, read mixed into ``h`` through a
   learned gate; every slot's importance decays by ``importance_decay`` and the
   retrieved slots gain their read weight;
3. feed-forward block; residual;
4. long-term write: if ``u > ltm_write_threshold`` (and the row's step count is
   a multiple of ``ltm_write_interval``), the layer's normalised query is stored
   as key and its LayerNormed hidden as value, FIFO into the first empty slot,
   or over the least important slot (oldest among ties) when full;
5. every ``consolidation_interval`` steps of a row, its stores merge keys closer
   than ``consolidation_threshold`` (importance-weighted), freeing slots.

Output: ``y_t = LayerNorm(h)``, width ``hidden_dim``.

The long-term memory is **non-differentiable storage**.  It lives in the state,
one store per batch row and layer (``ltm_keys (B, L, C, key_dim)``, ``ltm_values
(B, L, C, hidden_dim)``, ``ltm_importance``, ``ltm_filled``, ``ltm_written_at``),
so the module stays per-row and a rollout buffer can store and reset it like any
other state.  A forward call copies it once, then writes the copy in place under
``torch.no_grad`` (detached keys and values, one slot a step, no per-step copy).
Reads are differentiable through the query: the top-k scan is a no-grad
``bmm`` + ``topk``, and the k similarities are recomputed from the gathered keys,
so gradients reach the query, sharpness, read and gate networks, never the
stored entries.  The short-term memory ``stm (B, L, S, hidden_dim)`` is an
ordinary differentiable recurrent state.

Experience replay: ``store_experience``, ``query``, ``sample_experiences``,
``mix_experiences`` and ``consolidate`` act on ``self.experience``, a
:class:`memworld.memory.dual.ltm.LongTermMemory` of the same capacity held in buffers
and shared by all rows (the document's model-level store that a trainer fills
and samples at ``memory_sample_ratio``); ``forward`` never touches it.
``consolidate_state`` consolidates the per-row stores of a state on demand.

Where the document is vague, and what was chosen:

- Sizes: the document is a 512-wide, 6-layer language model with 512 short-term
  slots and 10,000 long-term slots per layer.  The RL defaults are
  ``hidden_dim=128``, ``num_layers=1``, ``num_heads=4``, ``stm_slots=16`` and
  ``ltm_capacity=1024``: the long-term store is per batch row here, and 10,000
  slots x (32 + 128) floats x 64 envs is 410 MB of state, copied once per forward
  call and once per stored rollout sequence.  ``ltm_capacity=10_000`` (or
  100,000) works; retrieval is one matmul and one topk.  ``LongTermMemory`` on
  its own defaults to the document's 10,000.
- Kept numbers: ``ltm_top_k=5`` (the document's ``query_memory`` example),
  ``consolidation_threshold=0.1`` (its ``consolidate_memories``),
  ``consolidation_interval=1000`` steps (its trainer's interval),
  ``memory_sample_ratio=0.2`` (its ``MemoryDataset``), and its "small memory
  update rate 0.01" as the importance decay.
- The document's layer is a transformer layer: self-attention, then the two
  memories, then the feed-forward network, with position embeddings.  A
  recurrent step has no sequence of its own to attend over, so the attention
  runs over a KV cache of the last ``attention_window=16`` steps (the size of
  the ``window_attention`` baseline, so the two differ exactly by the memories),
  and positions are a learned bias per head and distance.  Without it
  (``attention_window=0``) nothing tells the layer how old a short-term slot's
  content is: supervised recall of the symbol 4 steps back reached 56% accuracy
  after 400 updates (a GRU: 100% after 150), and MemoryPPO stayed near chance on
  RepeatPreviousEasy.  Beyond the window only the memories reach back.
- "Similar to a KV cache": the short-term memory is read by multi-head attention
  like self-attention over cached steps, but its slots are soft, gated blends
  of steps rather than one step each, so it keeps a summary of more steps than
  it has slots.
- Importance is "how much a slot is read": decayed by ``importance_decay`` every
  step (or query) and raised by the softmax weight of each read; a new entry
  starts at ``initial_importance=1``.  Retrieval logits are ``sharpness * cos +
  importance_weight * log(importance)`` with ``importance_weight=0.1``, so
  similarity dominates and importance breaks near-ties.
- When to write: on the short-term update gate, the module's own signal that
  the step carries something new (``ltm_write_threshold=0.5``; 0 writes every
  step).  Distances for consolidation are Euclidean between unit keys
  (0.1 ~ cosine > 0.995): only near-duplicates merge.
- Retrieval from the per-row stores is an exact scan (one ``bmm`` + ``topk``,
  O(C) a query), not the document's claimed O(log n): exact top-k keeps chunked
  and whole runs equal.  The experience store can use a graph index instead
  (``ltm_index="hnsw"``, memory/dual/index.py), sublinear and approximate.
- Speed: ``forward`` runs the chunk layer by layer with the stateless work of
  each layer batched over the chunk (memory/dual/chunk.py);
  ``forward_reference`` is the plain step loop it is tested against.
- Persistence (``reset_on_episode_start=False``, continual learning) keeps the
  long-term stores, step counts and merge counts across episodes; the
  short-term memory, the working context, still resets.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from memworld.memory.base import MemoryModule, State, check_positive_int, check_range, register
from memworld.memory.dual.chunk import chunk_forward
from memworld.memory.dual.layer import DualMemoryLayer
from memworld.memory.dual.ltm import (
    ExperienceReplay,
    LongTermMemory,
    check_ltm_args,
    ltm_diagnostics,
)
from memworld.memory.dual.reference import LONG_TERM_KEYS, LTM_FIELDS, DualReference
from memworld.memory.dual.rollout import rollout_forward
from memworld.memory.dual.store import LTMBatch

GATE = "the update gate is a sigmoid in (0, 1): 0 writes every step, 1 never"


@register("dual")
class DualMemory(ExperienceReplay, DualReference, MemoryModule):
    """Short-term slot memory and a long-term key/value store with importance, per layer.

    Args:
        input_dim: width of the input.
        ltm_capacity: long-term slots per row and layer, and of the experience
            store (default 1024; the document's 10,000 works, see the module docstring).
        hidden_dim: layer width and output width (default 128).
        num_layers: memory-augmented layers, each with its own memories (default 1).
        num_heads: short-term read heads (default 4; must divide ``hidden_dim``).
        stm_slots: short-term slots S (default 16).
        key_dim: long-term key width (default 32).
        ltm_top_k: entries retrieved per step (default 5).
        ltm_write_threshold: update gate above which a step is written, in [0, 1] (1: never;
            default 0.5).
        ltm_write_interval: write only at step counts divisible by this (default 1).
        importance_weight: weight of ``log(importance)`` in retrieval (default 0.1).
        importance_decay: per-step importance decay, in [0, 1) (default 0.01).
        initial_importance: importance of a new entry (default 1).
        consolidation_threshold: key distance below which entries merge (default 0.1).
        consolidation_interval: steps of a row between consolidations (default 1000).
        memory_sample_ratio: replayed share of a batch in ``mix_experiences`` (default 0.2).
        ffn_mult: feed-forward width as a multiple of ``hidden_dim`` (default 4).
        attention_window: steps each layer's self-attention sees, the current one
            included (default 16; 0 turns the self-attention off).
        reset_on_episode_start: empty both memories at episode starts (default
            True); False keeps the long-term stores (``persistent = True``).
        ltm_index: retrieval from the experience store: ``"exact"`` (default, a scan of
            every slot) or ``"hnsw"`` (a FAISS graph, sublinear, approximate; see
            memory/dual/index.py).  The per-row stores of ``forward`` are always exact.
        ltm_index_candidates: slots the graph returns per query (default None: ``4 *
            ltm_top_k``).
        ltm_index_ef_search: the graph's search width per query (default 64).
    """

    # Attention and LayerNorm-residual layers: at 3e-3 MemoryPPO stalls on some seeds
    # (RepeatPreviousEasy seed 0: -0.46 at 32k; +0.82 at 1e-3).
    recommended_lr = 1e-3

    def __init__(
        self,
        input_dim: int,
        ltm_capacity: int = 1024,
        hidden_dim: int = 128,
        num_layers: int = 1,
        num_heads: int = 4,
        stm_slots: int = 16,
        key_dim: int = 32,
        ltm_top_k: int = 5,
        ltm_write_threshold: float = 0.5,
        ltm_write_interval: int = 1,
        importance_weight: float = 0.1,
        importance_decay: float = 0.01,
        initial_importance: float = 1.0,
        consolidation_threshold: float = 0.1,
        consolidation_interval: int = 1000,
        memory_sample_ratio: float = 0.2,
        ffn_mult: int = 4,
        attention_window: int = 16,
        reset_on_episode_start: bool = True,
        ltm_index: str = "exact",
        ltm_index_candidates: int | None = None,
        ltm_index_ef_search: int = 64,
    ) -> None:
        for name, value in [
            ("hidden_dim", hidden_dim),
            ("num_layers", num_layers),
            ("num_heads", num_heads),
            ("stm_slots", stm_slots),
            ("ltm_write_interval", ltm_write_interval),
            ("consolidation_interval", consolidation_interval),
            ("ffn_mult", ffn_mult),
            ("key_dim", key_dim),
        ]:
            check_positive_int(name, value)
        check_range("attention_window", attention_window, 0, integer=True, fix="0: no attention")
        if attention_window == 1:
            raise ValueError("attention_window must be 0 (no self-attention) or >= 2, got 1")
        check_range("ltm_write_threshold", ltm_write_threshold, 0, 1, fix=GATE)
        check_ltm_args(
            ltm_capacity,
            ltm_top_k,
            importance_decay,
            consolidation_threshold,
            memory_sample_ratio,
            prefix="ltm_",
        )
        super().__init__(input_dim, hidden_dim)
        self.hidden_dim, self.num_layers, self.stm_slots = hidden_dim, num_layers, stm_slots
        self.key_dim, self.value_dim, self.ltm_capacity = key_dim, hidden_dim, ltm_capacity
        self.ltm_top_k = ltm_top_k
        self.ltm_write_threshold = float(ltm_write_threshold)
        self.ltm_write_interval = ltm_write_interval
        self.importance_weight = float(importance_weight)
        self.importance_decay = float(importance_decay)
        self.initial_importance = float(initial_importance)
        self.consolidation_threshold = float(consolidation_threshold)
        self.consolidation_interval = consolidation_interval
        self.attention_window = attention_window
        self.reset_on_episode_start = bool(reset_on_episode_start)
        self.persistent = not self.reset_on_episode_start

        self.embed = nn.Linear(input_dim, hidden_dim)
        self.layers = nn.ModuleList(
            DualMemoryLayer(hidden_dim, stm_slots, num_heads, key_dim, ffn_mult, attention_window)
            for _ in range(num_layers)
        )
        self.out_norm = nn.LayerNorm(hidden_dim)
        self.experience = LongTermMemory(
            key_dim,
            hidden_dim,
            capacity=ltm_capacity,
            top_k=ltm_top_k,
            importance_weight=importance_weight,
            importance_decay=importance_decay,
            initial_importance=initial_importance,
            consolidation_threshold=consolidation_threshold,
            memory_sample_ratio=memory_sample_ratio,
            index=ltm_index,
            index_candidates=ltm_index_candidates,
            index_ef_search=ltm_index_ef_search,
        )

    # ------------------------------------------------------------------ state
    def initial_state(self, batch_size: int, device: torch.device | str = "cpu") -> State:
        b, n = batch_size, self.num_layers
        store = LTMBatch.empty(b * n, self.ltm_capacity, self.key_dim, self.value_dim, device)
        state = {
            key: getattr(store, f).view(b, n, *getattr(store, f).shape[1:])
            for f, key in LTM_FIELDS.items()
        }
        state.update(
            ltm_merges=torch.zeros(b, n, device=device),
            steps=torch.zeros(b, dtype=torch.long, device=device),
        )
        state.update(self._initial_carry(b, device))
        return state

    def _initial_carry(self, batch_size: int, device: torch.device | str) -> State:
        """The per-episode part: attention cache, short-term memory, last step's read statistics."""
        b, n, s, w = batch_size, self.num_layers, self.stm_slots, self.attention_window - 1
        cache = {}
        if self.attention_window:
            cache = {
                "attn_keys": torch.zeros(b, n, w, self.hidden_dim, device=device),
                "attn_values": torch.zeros(b, n, w, self.hidden_dim, device=device),
                "attn_valid": torch.zeros(b, w, device=device),
            }
        return {
            **cache,
            "stm": torch.zeros(b, n, s, self.hidden_dim, device=device),
            "stm_read_weights": torch.zeros(b, n, s, device=device),
            "stm_write_weights": torch.zeros(b, n, s, device=device),
            "stm_gate": torch.zeros(b, n, device=device),
            "ltm_hit_similarity": torch.zeros(b, n, device=device),
        }

    def reset_rows(self, state: State, starts: Tensor) -> State:
        """Rows where ``starts`` (B,) is True back to the initial state (long-term kept if persistent)."""
        if not bool(starts.any()):
            return state
        init = self.initial_state(starts.shape[0], starts.device)
        keep = () if self.reset_on_episode_start else LONG_TERM_KEYS
        return {
            k: v if k in keep else torch.where(starts.view(-1, *[1] * (v.dim() - 1)), init[k], v)
            for k, v in state.items()
        }

    @staticmethod
    def layer_store(ltm: State, layer: int) -> LTMBatch:
        """Views ``(B, C, ...)`` of one layer's stores in the ``(B, L, C, ...)`` state tensors."""
        return LTMBatch(*(ltm[key][:, layer] for key in LTM_FIELDS.values()))

    # ---------------------------------------------------------------- forward
    def forward(self, x: Tensor, state: State, episode_starts: Tensor) -> tuple[Tensor, State]:
        """The chunk runs layer by layer, each layer's stateless work batched over the chunk
        (memory/dual/chunk.py); one step without grad (a rollout) runs
        memory/dual/rollout.py; one step with grad, or ``fast_path = False``, runs
        :meth:`forward_reference`."""
        if not getattr(self, "fast_path", True):
            return self.forward_reference(x, state, episode_starts)
        if x.shape[0] == 1:  # the chunk path's set-up costs more than it saves at one step
            if torch.is_grad_enabled():
                return self.forward_reference(x, state, episode_starts)
            return rollout_forward(self, x, state, episode_starts)
        self.check_inputs(x, episode_starts, state)
        starts = episode_starts.to(device=x.device, dtype=torch.bool)
        return chunk_forward(self, x, state, starts)

    # ---------------------------------------------------------- consolidation
    @torch.no_grad()
    def _consolidate_rows(
        self, ltm: State, rows: Tensor, threshold: float, layers: tuple[int, ...] | None = None
    ) -> None:
        """Consolidate the stores of batch ``rows`` (of ``layers``, default every layer) in
        place; count the merges."""
        for i in range(self.num_layers) if layers is None else layers:
            store = self.layer_store(ltm, i)
            part = store.take(rows)
            merged = part.consolidate(threshold)
            store.put(rows, part)
            ltm["ltm_merges"][:, i].index_add_(0, rows, merged.to(ltm["ltm_merges"].dtype))

    @torch.no_grad()
    def consolidate_state(self, state: State, threshold: float | None = None) -> State:
        """On-demand consolidation of every row's long-term stores; returns a new state."""
        thr = self.consolidation_threshold if threshold is None else float(threshold)
        ltm = {k: state[k].clone() for k in LONG_TERM_KEYS}
        rows = torch.arange(state["steps"].shape[0], device=state["steps"].device)
        self._consolidate_rows(ltm, rows, thr)
        return {**state, **ltm}

    # ------------------------------------------------------------ diagnostics
    @torch.no_grad()
    def diagnostics(self, state: State) -> dict[str, float]:
        """STM gate mean, LTM fill and importance distribution, merges, retrieval hit similarity.

        Averaged over rows and layers; ``ltm_hit_similarity`` is the cosine
        similarity of the best entry retrieved at the last step, over the rows
        that retrieved anything.
        """
        b, n = state["steps"].shape[0], self.num_layers
        store = LTMBatch(
            *(state[key].reshape(b * n, *state[key].shape[2:]) for key in LTM_FIELDS.values())
        )
        hit = state["ltm_hit_similarity"]
        had_hit = hit != 0
        read_weights = state["stm_read_weights"]
        return {
            "stm_gate_mean": float(state["stm_gate"].mean()),
            "stm_read_entropy": float(-torch.xlogy(read_weights, read_weights).sum(-1).mean()),
            **ltm_diagnostics(store, prefix="ltm_"),
            "ltm_merges": float(state["ltm_merges"].mean()),
            "ltm_hit_similarity": float(hit[had_hit].mean()) if bool(had_hit.any()) else 0.0,
            "experience_fill": float(len(self.experience) / self.experience.capacity),
        }
