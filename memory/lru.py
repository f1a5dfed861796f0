"""A Linear Recurrent Unit: a complex diagonal linear recurrence trained by a parallel scan.

Each layer keeps ``state_dim`` complex numbers per row and updates them with
``h_t = lambda * h_{t-1} + gamma * (B u_t)``: a diagonal, time-invariant
recurrence whose eigenvalues ``lambda = exp(-exp(nu) + i exp(theta))`` lie
strictly inside the unit circle for every value of the parameters, so it can
neither explode nor need a gradient clip to stay stable.  ``gamma =
sqrt(1 - |lambda|^2)`` scales the input so that slowly decaying channels (those
near the circle, which remember longest) do not grow larger than fast ones.
The read is ``Re(C h_t) + D * u_t``.

Because the recurrence is linear, a chunk of ``T`` steps runs as a parallel
scan over ``(lambda, b_t)`` pairs in ``2 log2 T`` tensor operations with no loop
over the steps (a work-efficient tree: about ``2 T`` multiply-adds in all): each
level folds spans of ``2^k`` steps into the next, with the multiplier
``lambda^(2^k)`` zeroed where an episode starts inside a span (a boolean mask
combined up the same tree).  A rollout step (``T == 1``, :meth:`LRU.step`) is one
real matmul per layer on weights folded from the parameters.  :func:`lru_reference`
is the step-by-step recurrence the scan is tested against, and
:meth:`LRU.forward_reference` the chunk code the one-step path is tested against.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from memworld.memory import native
from memworld.memory.base import State, SteppedMemory, check_positive_int, check_range, register
from memworld.memory.derived import derived


def _scan(
    lam: Tensor, b: Tensor, links: Tensor, h0: Tensor | None = None, reverse: bool = False
) -> Tensor:
    """``h_0 = b_0 + h0``, ``h_t = links_t * lam * h_{t-1} + b_t``: a work-efficient
    (Brent-Kung) scan, in place on a copy of ``b``.

    Up the tree, level ``k`` (``o = 2^k``) folds into every step ``t = (j + 1) 2o - 1``
    the span of ``o`` steps before its own: afterwards ``h[t]`` holds the recurrence over
    the ``2o`` steps ending at ``t`` as if started from zero.  Down the tree, every step
    halfway between two such steps adds the complete prefix before its span.  A span's
    multiplier is ``lam^o`` where none of its links is cut and zero otherwise
    (``linked[k]``, one flag per span and row, combined up the tree), so nothing is
    divided and nothing grows.  Level ``k`` touches ``T / 2^(k+1)`` steps: about ``2 T``
    multiply-adds in all, in ``2 log2 T`` tensor operations, where a scan that updates
    every step at every level does ``T log2 T``.

    ``reverse`` runs backwards in time (``h_t = b_t + links_t * lam * h_{t+1}``, the
    last step first; ``links`` and the tree are then in reversed order, ``links[i]``
    for step ``T - 1 - i``) on the same buffer, without flipping it.
    """
    steps = b.shape[0]
    h = b.clone()
    if h0 is not None:
        h[-1 if reverse else 0] += h0

    def views(first: int, offset: int, count: int) -> tuple[Tensor, Tensor]:
        """Steps ``first + 2o j`` and ``offset`` before them (j < count), reversed or not;
        strided views, so the in-place update reads other steps than it writes."""
        if not reverse:
            return h[first :: 2 * offset][:count], h[first - offset :: 2 * offset][:count]
        last = steps - 1 - first - 2 * offset * (count - 1)  # the first in time
        return h[last :: 2 * offset][:count], h[last + offset :: 2 * offset][:count]

    def fold(right: Tensor, left: Tensor, link: Tensor, power: Tensor) -> None:
        if not bool(link.all()):  # a full-size mask only where some link is cut
            left = torch.where((link.flip(0) if reverse else link)[:, :, None], left, 0)
        right.addcmul_(left, power)

    linked, powers = [links], [lam]  # linked[k][i]: the span of 2^k steps ending at (i+1) 2^k - 1
    while 2 ** len(linked) <= steps:
        level = len(linked) - 1
        o = 2**level
        count = steps // (2 * o)
        link = linked[level][1::2][:count]
        fold(*views(2 * o - 1, o, count), link, powers[level])
        linked.append(link & linked[level][0::2][:count])
        powers.append(powers[level] * powers[level])
    for level in reversed(range(len(linked) - 1)):
        o = 2**level
        count = len(range(3 * o - 1, steps, 2 * o))
        if count:
            fold(*views(3 * o - 1, o, count), linked[level][2::2][:count], powers[level])
    return h


class _ScanWithResets(torch.autograd.Function):
    """The scan with a hand-written backward: the gradient with respect to ``b`` is the
    same scan run backwards in time with ``conj(lam)``, and the gradient with respect to
    ``lam`` is ``sum_t conj(h_{t-1}) g_t`` over linked steps.  Autograd through the
    scan's slices would keep every level's tensors and cost ten times as much."""

    @staticmethod
    def forward(ctx, lam: Tensor, b: Tensor, keep: Tensor, h0: Tensor) -> Tensor:
        h = _scan(lam.detach(), b.detach(), keep, h0.detach())
        ctx.save_for_backward(lam, h, keep)
        return h

    @staticmethod
    def backward(ctx, grad_h: Tensor) -> tuple[Tensor, Tensor, None, Tensor]:
        lam, h, keep = ctx.saved_tensors
        # g_t = grad_t + conj(lam) keep_{t+1} g_{t+1}: the same scan backwards in time, where
        # reversed step i links to i - 1 through keep[T - i] (step 0's link is never used).
        links = torch.cat([keep[:1], keep.flip(0)[:-1]])
        grad_b = _scan(lam.conj(), grad_h, links, reverse=True)
        # grad_lam = sum over linked (t, b) of conj(h_{t-1}) g_t: the links as the weights of
        # one product over (t, b), where masking a full-size copy and then summing cost more.
        products = (h[:-1].conj() * grad_b[1:]).flatten(0, 1)  # (M, N), M = (T - 1) B
        grad_lam = keep[1:].reshape(1, -1).to(products.dtype).mm(products).squeeze(0)
        return grad_lam, grad_b, None, grad_b[0]


def scan_with_resets(lam: Tensor, b: Tensor, keep: Tensor, h0: Tensor | None = None) -> Tensor:
    """All ``h_t = keep_t * lam * h_{t-1} + b_t`` (with ``h_{-1} = 0``) at once.

    Args:
        lam: (N,) complex eigenvalues, shared by every step and row.
        b: (T, B, N) complex inputs.
        keep: (T, B) bool, False where a row's episode starts (its past is dropped).
        h0: (B, N) complex added to ``b[0]``: the carried state, already multiplied by
            ``lam`` and dropped where the first step starts an episode (default zero).

    Returns:
        (T, B, N) complex: every ``h_t``, in ``2 log2 T`` tensor operations.
    """
    h0 = torch.zeros_like(b[0]) if h0 is None else h0
    return _ScanWithResets.apply(lam, b, keep.bool(), h0)


def lru_reference(lam: Tensor, b: Tensor, keep: Tensor, h0: Tensor) -> Tensor:
    """The recurrence of :func:`scan_with_resets` one step at a time (the spec it is held to).

    ``h0`` (B, N) is the carried state; returns every ``h_t`` (T, B, N).
    """
    h, out = h0, []
    for b_t, keep_t in zip(b.unbind(0), keep.unbind(0)):
        h = torch.where(keep_t[:, None], lam * h, torch.zeros_like(h)) + b_t
        out.append(h)
    return torch.stack(out)


class LRULayer(nn.Module):
    """One residual block: LayerNorm, the linear recurrence, GELU, a gated linear unit.

    Args:
        d_model: width of the block's input and output.
        state_dim: complex state entries (the recurrence's eigenvalues).
        r_min, r_max: range of the eigenvalues' moduli at initialisation.
        max_phase: eigenvalue phases are drawn from ``[0, max_phase]``.
    """

    def __init__(
        self, d_model: int, state_dim: int, r_min: float, r_max: float, max_phase: float
    ) -> None:
        super().__init__()
        self.state_dim = state_dim
        self.norm = nn.LayerNorm(d_model)
        # Eigenvalues uniform on the ring r_min <= |lambda| <= r_max.
        u1, u2 = torch.rand(state_dim), torch.rand(state_dim)
        radius_sq = u1 * (r_max**2 - r_min**2) + r_min**2
        self.nu_log = nn.Parameter(torch.log(-0.5 * torch.log(radius_sq)))
        self.theta_log = nn.Parameter(torch.log(max_phase * u2 + 1e-4))
        self.gamma_log = nn.Parameter(torch.log(torch.sqrt(1 - radius_sq)))
        # Complex B (N, d) as its real rows then its imaginary rows; complex C (d, N) as
        # (real, imag) pairs. Real matmuls: torch's complex matmul is slower on the CPU.
        self.b_proj = nn.Parameter(torch.randn(2 * state_dim, d_model) / math.sqrt(2 * d_model))
        self.c_proj = nn.Parameter(torch.randn(d_model, state_dim, 2) / math.sqrt(state_dim))
        self.skip = nn.Parameter(torch.randn(d_model))
        self.glu = nn.Linear(d_model, 2 * d_model)
        # (re, im) pairs times this are Re's signs: Re(c h) = c_re h_re - c_im h_im.
        self.register_buffer("conj_sign", torch.tensor([1.0, -1.0]), persistent=False)

    def eigenvalues(self) -> Tensor:
        """(N,) complex, modulus ``exp(-exp(nu_log)) < 1``."""
        return torch.exp(torch.complex(-torch.exp(self.nu_log), torch.exp(self.theta_log)))

    def step_weights(self) -> Tensor:
        """``(2N + d, 2N + d)``: one step as one real matmul, ``[h_t, y_t] = [h_{t-1}, u_t] @
        W^T`` with the states as interleaved (re, im) pairs and ``y_t = Re(C h_t) + D u_t``."""
        lam = self.eigenvalues()
        n = lam.shape[0]
        # (N, 2, 2): [[re, -im], [im, re]] maps (re, im) of h to (re, im) of lambda * h.
        blocks = torch.stack(
            [torch.stack([lam.real, -lam.imag], -1), torch.stack([lam.imag, lam.real], -1)], -2
        )
        eye = torch.eye(n, dtype=blocks.dtype, device=blocks.device)
        rotate = (eye[:, None, :, None] * blocks[:, :, None, :]).reshape(2 * n, 2 * n)
        # B's real rows then imaginary rows -> interleaved, scaled by gamma: (2N, d).
        drive = (
            self.b_proj.view(2, n, -1).transpose(0, 1) * torch.exp(self.gamma_log)[:, None, None]
        )
        transition = torch.cat([rotate, drive.reshape(2 * n, -1)], dim=1)  # (2N, 2N + d)
        read = (self.c_proj * self.conj_sign).flatten(1)  # (d, 2N): Re(C h) on the pairs
        output = read @ transition + F.pad(torch.diag(self.skip), (2 * n, 0))  # (d, 2N + d)
        return torch.cat([transition, output])

    def drive(self, u: Tensor) -> Tensor:
        """``gamma * (B u)``: (T, B, d) real -> (T, B, N) complex.

        B's rows are interleaved (re, im) and scaled by ``gamma`` before the product, so
        the product's output is the complex result as it lies in memory (no copy)."""
        n = self.state_dim
        weight = (
            self.b_proj.view(2, n, -1).transpose(0, 1) * torch.exp(self.gamma_log)[:, None, None]
        )
        out = F.linear(u, weight.reshape(2 * n, -1))  # (T, B, 2N): (re, im) pairs
        return torch.view_as_complex(out.view(*out.shape[:-1], n, 2))

    def readout(self, x: Tensor, u: Tensor, h: Tensor) -> Tensor:
        """Block output from the input ``x``, its normalised ``u`` and the states ``h``."""
        # Re(C h) = C_re h_re - C_im h_im, one real matmul over the (re, im) pairs.
        weight = (self.c_proj * self.conj_sign).flatten(1)  # (d, 2N)
        y = torch.addcmul(F.linear(torch.view_as_real(h).flatten(-2), weight), self.skip, u)
        return x + F.glu(F.linear(F.gelu(y), self.glu.weight, self.glu.bias))


@register("lru")
class LRU(SteppedMemory):
    """Linear Recurrent Units stacked as residual blocks.

    Follows the LRU paper in the recurrence: a complex diagonal ``lambda`` with
    the ``exp(-exp(nu) + i exp(theta))`` parametrisation, eigenvalues drawn on a
    ring ``[r_min, r_max]`` with phases in ``[0, max_phase]``, the ``gamma``
    normalisation (trained, initialised to ``sqrt(1 - |lambda|^2)``), the read
    ``Re(C h) + D u``, and blocks of pre-LayerNorm, GELU and a gated linear unit
    around a residual.  memworld chooses: a linear encoder to ``d_model``
    before the first block and a final LayerNorm; ``r_min = 0.5`` (RL episodes
    need fast channels as well as slow ones); phases up to ``pi`` (the paper narrows
    the range only for its longest-range task; channels that turn by up to half a
    circle a step let a read tell the input of a few steps ago from the last one's,
    which RepeatPrevious needs: docs/memory_models.md); resets drop the state to zero
    inside the scan.  State: ``h (B, num_layers, state_dim, 2)``, the complex
    states as (real, imag) pairs.

    Args:
        input_dim: width of each input.
        d_model: width of the blocks and of the output (default 64).
        state_dim: complex state entries per layer (default 64).
        num_layers: stacked blocks (default 1, like the LSTM it replaces: faster, and
            the more reliable learner on short-memory tasks; a second block, whose
            recurrence reads the first one's nonlinear output, can store one feature of
            the input apart from the rest and recalls four times as far in
            docs/memory_models.md).
        r_min: smallest eigenvalue modulus at initialisation, in [0, r_max) (default 0.5).
        r_max: largest eigenvalue modulus at initialisation, in (r_min, 1) (default 0.999).
        max_phase: largest eigenvalue phase at initialisation, in (0, 2 pi] (default pi).
    """

    recommended_lr = 3e-3

    def __init__(
        self,
        input_dim: int,
        d_model: int = 64,
        state_dim: int = 64,
        num_layers: int = 1,
        r_min: float = 0.5,
        r_max: float = 0.999,
        max_phase: float = math.pi,
    ) -> None:
        for name, value in [("d_model", d_model), ("state_dim", state_dim)]:
            check_positive_int(name, value)
        check_positive_int("num_layers", num_layers)
        check_range("r_max", r_max, 0, 1, open_low=True, open_high=True, fix="0.999 is usual")
        check_range("r_min", r_min, 0, r_max, open_high=True, fix="pick r_min < r_max, e.g. 0.5")
        check_range("max_phase", max_phase, 0, 2 * math.pi, open_low=True, fix="pi is the default")
        super().__init__(input_dim, d_model)
        self.d_model, self.state_dim, self.num_layers = d_model, state_dim, num_layers
        self.input_proj = nn.Linear(input_dim, d_model)
        self.layers = nn.ModuleList(
            LRULayer(d_model, state_dim, r_min, r_max, max_phase) for _ in range(num_layers)
        )
        self.norm_out = nn.LayerNorm(d_model)

    def _param_dtype(self) -> torch.dtype:
        # The input checks' dtype, without walking every parameter at each step.
        return self.input_proj.weight.dtype

    def initial_state(self, batch_size: int, device: torch.device | str = "cpu") -> State:
        return {"h": torch.zeros(batch_size, self.num_layers, self.state_dim, 2, device=device)}

    step_keeps_time = True

    def step(self, x: Tensor, state: State, starts: Tensor) -> tuple[Tensor, State]:
        """One rollout step, ``x (1, B, input_dim)``, ``starts (1, B)``: :meth:`python_step`'s
        torch calls made from C++ on the CPU where memworld's C++ kernels are built
        (memory/native.py; the same operations, so the same results), else from Python."""
        kernels = native.rollout_steps(x)
        if kernels is None:
            return self.python_step(x, state, starts)
        in_weight, in_bias, blocks, out_norm = self.step_plan()
        norms, weights, glu_weights, glu_biases = zip(*blocks)
        y, h = kernels.lru_step(
            x, state["h"], starts, in_weight, in_bias, [n[1] for n in norms],
            [n[2] for n in norms], [n[3] for n in norms], weights, glu_weights, glu_biases,
            *out_norm[1:],
        )  # fmt: skip
        return y, {"h": h}

    def python_step(self, x: Tensor, state: State, starts: Tensor) -> tuple[Tensor, State]:
        """One rollout step, ``x (1, B, input_dim)``, ``starts (1, B)``: the recurrence itself.

        The arithmetic of :meth:`forward_reference` at ``T == 1`` in fewer torch calls
        (at rollout sizes each call costs microseconds from Python, as much as its
        arithmetic): the state stays real, as (re, im) pairs, and each layer's update
        and read are real matmuls on weights folded once per parameter change
        (:meth:`step_plan`); no host check for the rows that start; the
        time axis of one is kept throughout (``step_keeps_time``).
        No input checks: :meth:`forward` makes them.
        """
        batch, layers, width = x.shape[1], self.num_layers, 2 * self.state_dim
        in_weight, in_bias, blocks, out_norm = self.step_plan()
        if starts.dtype != torch.bool:
            starts = starts.bool()
        # Zero the rows that start, always: one call, where asking whether any row starts
        # is two and waits on the answer.
        carried = state["h"].masked_fill(starts.view(-1, 1, 1, 1), 0.0)  # (B, L, N, 2)
        carried = carried.reshape(1, batch, layers * width)  # each layer's (re, im) pairs in a row
        h_seq = F.linear(x, in_weight, in_bias)  # (1, B, d)
        finals = []
        for index, (norm, weight, glu_weight, glu_bias) in enumerate(blocks):
            u = F.layer_norm(h_seq, *norm)
            own = carried if layers == 1 else carried[..., index * width : (index + 1) * width]
            # [h_t, Re(C h_t) + D u_t] from [h_{t-1}, u_t] in one product: (1, B, 2N + d).
            h, y = F.linear(torch.cat([own, u], dim=-1), weight).split(
                [width, self.d_model], dim=-1
            )
            finals.append(h)
            h_seq = h_seq + F.glu(F.linear(F.gelu(y), glu_weight, glu_bias))
        new_h = finals[0] if layers == 1 else torch.cat(finals, dim=-1)
        y = F.layer_norm(h_seq, *out_norm)
        new_h = new_h.view(batch, layers, self.state_dim, 2)
        if new_h.dtype != state["h"].dtype:
            new_h = new_h.to(state["h"].dtype)
        return y, {"h": new_h}

    def step_plan(self) -> tuple:
        """Every tensor a rollout step reads, each layer's :meth:`LRULayer.step_weights`
        folded: ``(input weight, input bias, per layer (layer_norm arguments, step
        weights, GLU weight, GLU bias), output layer_norm arguments)``.  Without grad it
        is cached while no parameter changes (memory/derived.py), so a step looks
        nothing up."""
        return derived(self, "step_plan", self._step_plan)

    def _step_plan(self) -> tuple:
        def norm_args(norm: nn.LayerNorm) -> tuple:
            return norm.normalized_shape, norm.weight, norm.bias, norm.eps

        blocks = tuple(
            (norm_args(layer.norm), layer.step_weights(), layer.glu.weight, layer.glu.bias)
            for layer in self.layers
        )
        return self.input_proj.weight, self.input_proj.bias, blocks, norm_args(self.norm_out)

    def forward_reference(
        self, x: Tensor, state: State, episode_starts: Tensor
    ) -> tuple[Tensor, State]:
        """The chunk path: each layer's recurrence as one scan over the chunk."""
        self.check_inputs(x, episode_starts, state)
        keep = ~episode_starts.bool()  # (T, B)
        carried = torch.view_as_complex(state["h"].contiguous())  # (B, L, N)
        h_seq = self.input_proj(x)  # (T, B, d)
        finals = []
        for index, layer in enumerate(self.layers):
            u = layer.norm(h_seq)
            lam = layer.eigenvalues()
            b = layer.drive(u)  # (T, B, N)
            h0 = torch.where(keep[0, :, None], lam * carried[:, index], 0)
            if x.shape[0] == 1:
                h = b + h0
            else:
                h = scan_with_resets(lam, b, keep, h0)
            finals.append(h[-1])
            h_seq = layer.readout(h_seq, u, h)
        new_h = torch.view_as_real(torch.stack(finals, dim=1))  # (B, L, N, 2)
        return self.norm_out(h_seq), {"h": new_h.to(state["h"].dtype)}

    @torch.no_grad()
    def diagnostics(self, state: State) -> dict[str, float]:
        moduli = torch.cat([layer.eigenvalues().abs() for layer in self.layers])
        return {
            "state_norm": float(state["h"].flatten(2).norm(dim=-1).mean()),
            "eigenvalue_modulus_max": float(moduli.max()),
            # Steps for the slowest channel to fall to 1/e: how far the memory can reach.
            "slowest_decay_steps": float(-1 / torch.log(moduli.max().clamp(max=1 - 1e-7))),
        }
