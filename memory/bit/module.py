"""BitMemory: a policy memory over the packed bit store of leworld-slm-blm.md.

Each step ``t`` of a row (the store is :class:`memworld.memory.bit.store.BitStore`):

1. controller: ``h_t = GRUCell([x_t, read_{t-1}], h_{t-1})``;
2. write: ``x_t`` is encoded to ``word_bits`` straight-through bits and stored
   as hard bits at the write address ``w_t``: the row's write pointer
   (``write_mode="pointer"``, default; it then advances by one, modulo
   ``num_words``) or the argmax of the controller's write logits
   (``write_mode="learned"``, ``half_size * high + low``);
3. read: the controller's read logits (high half, low half) pick a range of
   ``range_len`` words.  With ``read_addressing="relative"`` (default) the
   address counts back from this step's write: ``(w_t - (half_size * high +
   low)) mod num_words``, so "the input of d steps ago" is the constant offset
   d; ``"absolute"`` uses ``half_size * high + low`` itself.  In training the
   read is Product Key Memory's soft read (the best ``keep`` of the top-k x
   top-k candidates, softmax over ``high + low`` logits); in eval it is the
   hard argmax.  Each word of the range is decoded and tagged
   with whether it was written this episode (``(range_len, input_dim + 1)``);
4. output: ``y_t = h_t + W_fuse(read_t)`` (residual fusion, ``output_dim = hidden_dim``).

State (batch-first): ``words (B, N)`` int32 and ``written (B, N)`` bool (the
store), ``pointer (B,)`` long, ``h (B, hidden)``, ``read (B, range_len *
(input_dim + 1))`` and ``read_entropy (B,)`` (entropy, in nats, of the last
read's address distribution over all N addresses), and ``write_address`` /
``read_address (B,)`` long, the last step's write address and the start of its
highest-weight read range (for monitors and videos).  An episode start zeroes the
row's words and flags with ``torch.where``, like every other state tensor.

:meth:`aux_loss` is ``recon_weight`` times the codec's reconstruction error of
the inputs written in the **last forward call** (call it after that call, before
the next), kept on the module as SlotMemory keeps its aux terms.

Where the document (and the issue) left a choice, and what was chosen:

- What is written.  Storage is hard bits, so nothing that reads memory can
  train what was written; a controller-produced value would only ever learn from
  the reconstruction loss.  The module therefore writes the encoded input
  ``x_t``, as the document's LeWorld system writes the encoded observation, and
  the codec is an autoencoder of the inputs (``vector_dim = input_dim``).
- Write addresses get no gradient either, for the same reason.  The default
  ``pointer`` mode makes memory a ring buffer of the episode's inputs that
  relative reads can index by age; ``learned`` write logits are a fixed hash of
  the controller state unless some other loss trains them (their parameters are
  listed in ``no_grad_params``).
- ``num_words`` defaults to 4,096 (``addr_bits_per_half=6``, 64 x 64), not the
  document's 65,536: a pointer write fills one word per step, so 4,096 words
  hold any episode of up to 4,096 steps, and every episode start costs
  ``O(num_words)``.  Pass ``addr_bits_per_half=8`` for the document's 64K words.
- ``codec_hidden=108`` is the document's codec size (21,048 parameters) at
  ``input_dim=64``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from memworld.memory.base import MemoryModule, State, check_positive_int, check_range, register
from memworld.memory.bit.bits import address_entropy, pack_bits
from memworld.memory.bit.chunk import chunk_forward
from memworld.memory.bit.rollout import rollout_forward
from memworld.memory.bit.store import BitStore

WRITE_MODES = ("pointer", "learned")
READ_ADDRESSING = ("relative", "absolute")


@register("bit")
class BitMemory(MemoryModule):
    """Packed bit memory read by product-key addresses from a GRU controller.

    Args:
        input_dim: width of each input; also what is encoded and written each step.
        hidden_dim: controller width and output width (default 64).
        addr_bits_per_half: bits per address half; ``num_words = 4 ** addr_bits_per_half``
            (default 6: 4,096 words; 8 gives the document's 65,536).
        word_bits: bits per stored word, at most 32 (default 32).
        range_len: consecutive words one read returns (default 4).
        top_k: candidates per address half in the training-time soft read (default 4).
        keep: candidates of the top_k**2 the soft read decodes, best first (default
            None: top_k, as Product Key Memory keeps; pass top_k**2 to decode all).
        codec_hidden: hidden width of the bit encoder and decoder (default 108).
        write_mode: ``"pointer"`` (default) or ``"learned"`` write addresses.
        read_addressing: ``"relative"`` (default, back from this step's write) or ``"absolute"``.
        recon_weight: weight of the reconstruction loss in :meth:`aux_loss` (default 1.0).
    """

    def __init__(
        self,
        input_dim: int,
        hidden_dim: int = 64,
        addr_bits_per_half: int = 6,
        word_bits: int = 32,
        range_len: int = 4,
        top_k: int = 4,
        keep: int | None = None,
        codec_hidden: int = 108,
        write_mode: str = "pointer",
        read_addressing: str = "relative",
        recon_weight: float = 1.0,
    ) -> None:
        check_positive_int("hidden_dim", hidden_dim)
        super().__init__(input_dim, hidden_dim)
        if write_mode not in WRITE_MODES:
            raise ValueError(f"write_mode must be one of {WRITE_MODES}, got {write_mode!r}")
        if read_addressing not in READ_ADDRESSING:
            raise ValueError(
                f"read_addressing must be one of {READ_ADDRESSING}, got {read_addressing!r}"
            )
        self.store = BitStore(
            vector_dim=input_dim,
            addr_bits_per_half=addr_bits_per_half,
            word_bits=word_bits,
            range_len=range_len,
            top_k=top_k,
            keep=top_k if keep is None else keep,
            codec_hidden=codec_hidden,
        )
        self.hidden_dim = hidden_dim
        self.write_mode = write_mode
        self.read_addressing = read_addressing
        check_range("recon_weight", recon_weight, 0, fix="0 turns the codec loss off")
        self.recon_weight = float(recon_weight)
        self.read_dim = range_len * (input_dim + 1)
        half = self.store.half_size
        self.controller = nn.GRUCell(input_dim + self.read_dim, hidden_dim)
        self.read_head = nn.Linear(hidden_dim, 2 * half)  # high logits | low logits
        self.write_head = nn.Linear(hidden_dim, 2 * half) if write_mode == "learned" else None
        self.fuse = nn.Linear(self.read_dim, hidden_dim)
        self._last_recon: Tensor | None = None

    @property
    def no_grad_params(self) -> tuple[str, ...]:
        """Parameters no loss of this module reaches (hard write addresses)."""
        return ("write_head.weight", "write_head.bias") if self.write_head is not None else ()

    def __getstate__(self) -> dict:
        # The cached reconstruction loss holds an autograd graph, which cannot be copied or pickled.
        return {**self.__dict__, "_last_recon": None}

    # ----------------------------------------------------------------- state
    def initial_state(self, batch_size: int, device: torch.device | str = "cpu") -> State:
        state = self.store.initial_state(batch_size, device)
        state.update(
            pointer=torch.zeros(batch_size, dtype=torch.long, device=device),
            h=torch.zeros(batch_size, self.hidden_dim, device=device),
            read=torch.zeros(batch_size, self.read_dim, device=device),
            read_entropy=torch.zeros(batch_size, device=device),
            write_address=torch.zeros(batch_size, dtype=torch.long, device=device),
            read_address=torch.zeros(batch_size, dtype=torch.long, device=device),
        )
        return state

    # --------------------------------------------------------------- forward
    def forward(self, x: Tensor, state: State, episode_starts: Tensor) -> tuple[Tensor, State]:
        """The controller's input projection and the decoding of stored words run once a
        chunk (memory/bit/chunk.py); one step without grad (a rollout) runs
        memory/bit/rollout.py; one step with grad, or ``fast_path = False``, runs
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

    def forward_reference(
        self, x: Tensor, state: State, episode_starts: Tensor
    ) -> tuple[Tensor, State]:
        """The plain step loop the fast path is tested against."""
        self.check_inputs(x, episode_starts, state)
        steps, batch, _ = x.shape
        starts = episode_starts.to(device=x.device, dtype=torch.bool)
        reset_at = starts.any(dim=1).tolist()  # one host sync for the whole chunk
        init = self.initial_state(batch, x.device) if any(reset_at) else None
        # What is written does not depend on the recurrence: encode the whole chunk at once.
        bits = self.store.encode(x)  # (T, B, W), straight-through
        self._last_recon = (self.store.decode(bits) - x).square().mean()
        packed = pack_bits(bits)  # (T, B) int32
        # Writes go in place into this call's own copy: the caller's state is never changed.
        state = {**state, "words": state["words"].clone(), "written": state["written"].clone()}
        hidden, reads = [], []
        xs = x.unbind(0)  # not x[t]: each indexing backward would zero-fill all of x
        for t in range(steps):
            if reset_at[t]:
                rows = starts[t]
                state = {
                    k: torch.where(rows.view(-1, *[1] * (v.dim() - 1)), init[k], v)
                    for k, v in state.items()
                }
            h = self.controller(torch.cat([xs[t], state["read"]], dim=-1), state["h"])
            address = self._write_address(h, state["pointer"])
            state = self.store.write_words(state, address, packed[t], inplace=True, wrap=True)
            high, low = self.read_head(h).chunk(2, dim=-1)
            read, read_address = self._read(state, high, low, address)
            pointer = torch.remainder(state["pointer"] + 1, self.store.num_words)
            state = {**state, "pointer": pointer, "h": h, "read": read}
            state.update(write_address=address.detach(), read_address=read_address)
            hidden.append(h)
            reads.append(read)
        state["read_entropy"] = address_entropy(high, low).detach()  # of the last step's read
        return torch.stack(hidden) + self.fuse(torch.stack(reads)), state

    def _write_address(self, h: Tensor, pointer: Tensor) -> Tensor:
        if self.write_head is None:
            return pointer
        high, low = self.write_head(h).chunk(2, dim=-1)
        return self.store.address(high, low)

    def _read(
        self, state: State, high: Tensor, low: Tensor, write_address: Tensor
    ) -> tuple[Tensor, Tensor]:
        """Read one range from the read logits ``(B, H)`` x2.

        Returns the read ``(B, range_len * (input_dim + 1))`` and the ``(B,)``
        start address of the range with the highest weight.
        """
        if self.training:
            addresses, weights = self.store.candidates(high, low)  # (B, C), (B, C)
        else:
            addresses = self.store.address(high, low)[:, None]  # (B, 1)
            weights = torch.ones_like(addresses, dtype=high.dtype)
        if self.read_addressing == "relative":
            addresses = torch.remainder(write_address[:, None] - addresses, self.store.num_words)
        # wrap=True: addresses are in range by construction; it skips a per-step range check.
        decoded = self.store.read_vectors(state, addresses, wrap=True)  # (B, C, L, V)
        flags = self.store.is_written(state, addresses, wrap=True).to(high.dtype)[
            ..., None
        ]  # (B, C, L, 1)
        words = torch.cat([decoded, flags], dim=-1)
        best = addresses.gather(1, weights.detach().argmax(dim=1, keepdim=True)).squeeze(1)
        return torch.einsum("bc,bclv->blv", weights, words).flatten(1), best

    # ------------------------------------------------------------ objectives
    def aux_loss(self, state: State | None = None) -> Tensor:
        """``recon_weight`` x reconstruction MSE of the last forward call's inputs (``state`` unused)."""
        if self._last_recon is None:
            return torch.zeros((), device=self._device())
        return self.recon_weight * self._last_recon

    @torch.no_grad()
    def diagnostics(self, state: State) -> dict[str, float]:
        """Words written, read address entropy (nats, of at most ``log num_words``), codec bit error."""
        return {
            "fraction_written": self.store.fraction_written(state),
            "read_address_entropy": float(state["read_entropy"].mean()),
            "codec_bit_error": self.store.bit_error(state),
        }
