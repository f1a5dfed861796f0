"""GRU and LSTM layers over a whole sequence with hand-written backward passes (for the CPU).

torch's CPU GRU, and its LSTM once a chunk must be split at episode starts,
run dozens of autograd-recorded ops per step (``nn.GRU``: ~90 aten calls per
step forward and backward); here one autograd node covers a whole layer and
chunk.  The forward pass runs the cell's equations step by step without
recording and keeps the gates; the backward pass first computes, for all steps
at once, every derivative factor that does not depend on the incoming gradient,
so walking the steps back costs five (LSTM) or six (GRU) ops a step, and the weight
gradients of all steps are a few matrix products at the end.  Resets are a
``keep (T, B, 1)`` mask: the carried state is multiplied by ``keep[t]`` before
step ``t`` (0 where a row starts an episode), so no chunk is split.

The step loops themselves run in C++ where they can (memory/native.py: float32 on the
CPU, once built), else in Python (:class:`PythonLoops`); both compute the same, step for
step, and are tested against each other.

Equations and gate order are torch's (``nn.GRU``: r, z, n; ``nn.LSTM``: i, f,
g, o), with the same weight tensors, so values and gradients equal
``nn.GRU``/``nn.LSTM`` (tests/test_recurrent.py).
"""

from __future__ import annotations

import torch
from torch import Tensor

from memworld.memory import native


def _input_gates(x: Tensor, w_ih: Tensor, bias: Tensor) -> Tensor:
    """All steps' input projections in one matrix product: ``(T, B, I) -> (T, B, G)``."""
    steps, batch, _ = x.shape
    return torch.addmm(bias, x.reshape(steps * batch, -1), w_ih.t()).view(steps, batch, -1)


def _keep_rows(keep: Tensor) -> Tensor:
    """``keep (T, B, 1)`` as the step loops read it: ``(T, B)`` float32, contiguous."""
    return keep.reshape(keep.shape[0], keep.shape[1]).to(torch.float32).contiguous()


def _reset_steps(keep: Tensor) -> list[bool]:
    """Per step, whether some row's state is zeroed there (one host sync; masks skip the rest)."""
    return (keep[:, :, 0] < 1).any(dim=1).tolist()


def _carried(h0: Tensor, out: Tensor, keep: Tensor, resets: list[bool]) -> Tensor:
    """``h'_t = keep_t * h_{t-1}`` for every step at once: ``(T, B, H)`` (no mask op without resets)."""
    carried = torch.cat([h0.unsqueeze(0), out[:-1]])
    return carried.mul_(keep) if any(resets) else carried


def _weight_grads(
    d_gates_in: Tensor, d_gates_h: Tensor, x: Tensor, h_prev: Tensor, w_ih: Tensor
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """``dx, dW_ih, dW_hh, db_ih, db_hh`` from every step's gate gradients, in four products."""
    steps, batch, _ = x.shape
    gi = d_gates_in.reshape(steps * batch, -1)
    gh = d_gates_h.reshape(steps * batch, -1)
    dx = (gi @ w_ih).view_as(x)
    return (
        dx,
        gi.t() @ x.reshape(steps * batch, -1),
        gh.t() @ h_prev.reshape(steps * batch, -1),
        gi.sum(0),
        gh.sum(0),
    )


class PythonLoops:
    """The kernels' step loops in Python, with the signatures of their C++ versions
    (memory/csrc/rnn_loops.cpp): each writes its outputs into the buffers it is given.
    ``keep`` is ``(T, B)`` float32; ``resets[t]`` says whether some row starts at step t."""

    @staticmethod
    def gru_forward(pre, gi_n2, keep, resets, w_hh_t, h0, out, rz, n) -> None:
        """``pre`` (T, B, 3H) ``[gi_r, gi_z, 2 b_hn]`` becomes ``[pre r, pre z, 2 hn]``."""
        hidden = h0.shape[1]
        two = 2 * hidden
        minus_one = pre.new_tensor(-1.0)
        # Every step's views, made once (indexing in the loop costs as much as an op).
        per_step = (keep[..., None], pre, pre[..., :two], pre[..., two:], rz, gi_n2, n, out)
        per_step += (rz[..., :hidden], rz[..., hidden:])
        h = h0
        for keep_t, pre_t, pre_rz, hn2_t, rz_t, gi_n2_t, n_t, out_t, r_t, z_t, reset in zip(
            *(a.unbind(0) for a in per_step), resets
        ):
            hp = h * keep_t if reset else h
            pre_t.addmm_(hp, w_hh_t)
            torch.sigmoid(pre_rz, out=rz_t)
            torch.sigmoid(torch.addcmul(gi_n2_t, r_t, hn2_t), out=n_t)
            torch.add(minus_one, n_t, alpha=2.0, out=n_t)  # tanh(a) = 2 sigmoid(2a) - 1
            h = torch.lerp(n_t, hp, z_t, out=out_t)

    @staticmethod
    def gru_backward(to_n, to_r, to_z, rz, keep, resets, d_out, w_hh_nrz, d_gates) -> Tensor:
        """Writes ``d_gates`` (T, B, 4H) ``[d hn, d r, d z, d n]``; returns h0's gradient."""
        hidden = d_out.shape[-1]
        r, z = rz[..., :hidden], rz[..., hidden:]
        d_gh = d_gates[..., : 3 * hidden]
        views = zip(
            *(a.unbind(0) for a in (to_n, to_r, to_z, d_gh, z, r, keep[..., None])),
            (torch.zeros_like(d_out[0]), *d_out[:-1].unbind(0)),  # d_out[t - 1]
            *(d_gates[..., i * hidden : (i + 1) * hidden].unbind(0) for i in range(4)),
            resets,
        )
        dh = d_out[-1]
        for to_n_t, to_r_t, to_z_t, d_gh_t, z_t, r_t, keep_t, step_grad, d_hn, d_r, d_z, d_n, reset in reversed(
            list(views)
        ):  # fmt: skip
            torch.mul(dh, to_n_t, out=d_n)
            torch.mul(d_n, to_r_t, out=d_r)
            torch.mul(dh, to_z_t, out=d_z)
            torch.mul(d_n, r_t, out=d_hn)
            if reset:  # only the carried part is masked
                dh = torch.addcmul(step_grad, torch.addmm(dh * z_t, d_gh_t, w_hh_nrz), keep_t)
            else:  # the previous step's own gradient rides in the product's addend
                dh = torch.addmm(torch.addcmul(step_grad, dh, z_t), d_gh_t, w_hh_nrz)
        return dh

    @staticmethod
    def lstm_forward(gi, keep, resets, w_hh_t, h0, c0, gates, cells, out) -> None:
        """``gi`` (T, B, 4H), the input gates with g's rows doubled, becomes the
        pre-activations; writes ``gates`` (sigmoid i, f, tanh g, sigmoid o), ``cells``, ``out``."""
        hidden = h0.shape[1]
        minus_one = gi.new_tensor(-1.0)
        views = zip(
            *(a.unbind(0) for a in (keep[..., None], gi, gates, cells, out)),
            *(gates[..., k * hidden : (k + 1) * hidden].unbind(0) for k in range(4)),
            resets,
        )
        h, c = h0, c0
        for keep_t, gi_t, g, c_t, out_t, i, f, gg, o, reset in views:
            if reset:
                h, c = h * keep_t, c * keep_t
            torch.sigmoid(gi_t.addmm_(h, w_hh_t), out=g)  # in place: no copy of gi_t
            torch.add(minus_one, gg, alpha=2.0, out=gg)  # tanh(a) = 2 sigmoid(2a) - 1
            c = torch.addcmul(f * c, i, gg, out=c_t)
            h = torch.mul(o, torch.tanh(c), out=out_t)

    @staticmethod
    def lstm_backward(
        dh_to_dc, dc_to_pre, dh_to_pre_o, gates, keep, resets, d_out, w_hh, dc, d_pre
    ) -> list[Tensor]:
        """Writes ``d_pre`` (T, B, 4H); returns the gradients of h0 and c0."""
        hidden = d_out.shape[-1]
        f = gates[..., hidden : 2 * hidden]
        f_keep = f * keep[..., None] if any(resets) else f  # dc_t -> dc_{t-1}
        three = 3 * hidden
        views = zip(
            *(
                a.unbind(0)
                for a in (
                    dh_to_dc,
                    dc_to_pre,
                    d_pre[..., :three].unflatten(-1, (3, hidden)),
                    dh_to_pre_o,
                    d_pre[..., three:],
                    d_pre,
                    keep[..., None],
                    f_keep,
                )
            ),
            (torch.zeros_like(d_out[0]), *d_out[:-1].unbind(0)),  # d_out[t - 1]
            resets,
        )
        dh = d_out[-1]
        for to_dc, to_pre, d_ifg, to_o, d_o, d_pre_t, keep_t, f_keep_t, step_grad, reset in reversed(
            list(views)
        ):  # fmt: skip
            dc = torch.addcmul(dc, dh, to_dc)
            torch.mul(dc.unsqueeze(1), to_pre, out=d_ifg)
            torch.mul(dh, to_o, out=d_o)
            if reset:  # only the carried part is masked
                dh = torch.addcmul(step_grad, d_pre_t @ w_hh, keep_t)
            else:  # the previous step's own gradient rides in the product's addend
                dh = torch.addmm(step_grad, d_pre_t, w_hh)
            dc = dc * f_keep_t
        return [dh, dc]


def step_loops(x: Tensor):
    """The C++ loops where they apply (float32 on the CPU, built), else :class:`PythonLoops`."""
    if x.dtype == torch.float32 and x.device.type == "cpu":
        compiled = native.loops()
        if compiled is not None:
            return compiled
    return PythonLoops


class GRUSequence(torch.autograd.Function):
    """One GRU layer over ``x (T, B, I)`` from ``h0 (B, H)``, resetting where ``keep`` is 0.

    ``h'_t = keep_t * h_{t-1}``; ``r, z = sigmoid(W_i{r,z} x_t + b_i + W_h{r,z} h' + b_h)``;
    ``n = tanh(W_in x_t + b_in + r * (W_hn h' + b_hn))``; ``h_t = n + z * (h' - n)``.
    Returns ``h (T, B, H)``.

    In Python a forward step is six ops (one product gives ``r, z``'s and ``n``'s hidden
    parts; tanh is a sigmoid and an add; ``lerp`` mixes ``n`` and ``h'``) and a backward
    step six (the step's own gradient is added inside the product's addend), seven at a
    reset; in C++ each is one product and one pass.
    """

    @staticmethod
    def forward(ctx, x, h0, keep, w_ih, w_hh, b_ih, b_hh):  # noqa: D102
        steps, batch, hidden = x.shape[0], h0.shape[0], h0.shape[1]
        two = 2 * hidden
        # b_hh's r and z parts are added to the input gates once; its n part stays inside r * (.).
        # The product's addend is [input r, z gates, 2 b_hn] so one addmm gives [pre r, z, 2 hn].
        # n = tanh(a) runs as 2 sigmoid(2a) - 1 (a sigmoid and an add cost half a tanh on the
        # CPU), so n's parts are kept doubled: 2 gi_n, and 2 (W_hn h' + b_hn) from the product.
        # Each step's product is added into the addend in place (an out= product would copy
        # the addend first): it becomes [W_h{r,z} h' + gi_{r,z}, 2 hn].
        pre = _input_gates(x, w_ih, b_ih + torch.cat([b_hh[:two], b_hh.new_zeros(hidden)]))
        gi_n2 = pre[..., two:] * 2.0
        pre[..., two:] = 2.0 * b_hh[two:]
        resets = _reset_steps(keep)
        out = x.new_empty(steps, batch, hidden)
        rz = x.new_empty(steps, batch, two)
        n = x.new_empty(steps, batch, hidden)
        w_hh_t = torch.cat([w_hh[:two], 2.0 * w_hh[two:]]).t()
        step_loops(x).gru_forward(
            pre, gi_n2, _keep_rows(keep), resets, w_hh_t, h0.contiguous(), out, rz, n
        )
        ctx.save_for_backward(x, h0, keep, w_ih, w_hh, out, rz, n, pre[..., two:])
        ctx.resets = resets
        return out

    @staticmethod
    def backward(ctx, d_out):  # noqa: D102
        x, h0, keep, w_ih, w_hh, out, rz, n, hn2 = ctx.saved_tensors
        steps, batch, hidden = out.shape
        h_prev = _carried(h0, out, keep, ctx.resets)
        r, z = rz[..., :hidden], rz[..., hidden:]
        # Every factor that does not depend on the incoming gradient, for all steps at once
        # (in place on fresh tensors: ten ops over the chunk instead of thirteen).
        one_minus_z = 1 - z
        to_pre_n = (1 - n * n).mul_(one_minus_z)  # dh -> d(pre-tanh n)
        # d(pre-tanh n) -> d(pre-sigmoid r): hn * r (1 - r), with hn2 = 2 hn
        to_pre_r = torch.addcmul(r, r, r, value=-1.0).mul_(hn2).mul_(0.5)
        to_pre_z = (h_prev - n).mul_(z).mul_(one_minus_z)  # dh -> d(pre-sigmoid z)
        # One buffer [d hn, d r, d z, d pre-n] a step: its first three blocks are the gradient
        # of W_hh h' + b_hh with W_hh's rows taken in the order (n, r, z), its last three that
        # of W_ih x + b_ih in W_ih's order (r, z, n), so no gradient is copied out of it.
        d_gates = n.new_empty(steps, batch, 4 * hidden)
        d_gh, d_gi = d_gates[..., : 3 * hidden], d_gates[..., hidden:]
        w_hh_nrz = torch.cat([w_hh[2 * hidden :], w_hh[: 2 * hidden]])
        dh = step_loops(x).gru_backward(
            to_pre_n, to_pre_r, to_pre_z, rz, _keep_rows(keep), ctx.resets,
            d_out.contiguous(), w_hh_nrz, d_gates,
        )  # fmt: skip
        dx, dw_ih, dw_nrz, db_ih, db_nrz = _weight_grads(d_gi, d_gh, x, h_prev, w_ih)
        dw_hh = torch.cat([dw_nrz[hidden:], dw_nrz[:hidden]])  # back to (r, z, n)
        db_hh = torch.cat([db_nrz[hidden:], db_nrz[:hidden]])
        return dx, dh, None, dw_ih, dw_hh, db_ih, db_hh


class LSTMSequence(torch.autograd.Function):
    """One LSTM layer over ``x (T, B, I)`` from ``(h0, c0)``, resetting where ``keep`` is 0.

    ``h', c' = keep_t * (h_{t-1}, c_{t-1})``; ``i, f, g, o`` from
    ``W_ih x_t + b_ih + W_hh h' + b_hh``; ``c_t = f c' + i g``; ``h_t = o tanh(c_t)``.
    Returns ``h (T, B, H)`` and the last cell state ``c_T (B, H)``.
    """

    @staticmethod
    def forward(ctx, x, h0, c0, keep, w_ih, w_hh, b_ih, b_hh):  # noqa: D102
        steps, batch, hidden = x.shape[0], h0.shape[0], h0.shape[1]
        # g = tanh(a) runs as 2 sigmoid(2a) - 1 (half a tanh's cost on the CPU): g's rows of
        # the weights and bias are doubled, so one sigmoid covers all four gates.
        double_g = x.new_ones(4 * hidden, 1)
        double_g[2 * hidden : 3 * hidden] = 2.0
        gi = _input_gates(x, w_ih * double_g, (b_ih + b_hh) * double_g[:, 0])
        resets = _reset_steps(keep)
        out = x.new_empty(steps, batch, hidden)
        cells = x.new_empty(steps, batch, hidden)
        gates = x.new_empty(steps, batch, 4 * hidden)  # sigmoid(i, f), tanh(g), sigmoid(o)
        step_loops(x).lstm_forward(
            gi, _keep_rows(keep), resets, (w_hh * double_g).t(), h0.contiguous(),
            c0.contiguous(), gates, cells, out,
        )  # fmt: skip
        ctx.save_for_backward(x, h0, c0, keep, w_ih, w_hh, out, cells, gates)
        ctx.resets = resets
        return out, cells[-1].clone()

    @staticmethod
    def backward(ctx, d_out, d_c_last):  # noqa: D102
        x, h0, c0, keep, w_ih, w_hh, out, cells, gates = ctx.saved_tensors
        h_prev = _carried(h0, out, keep, ctx.resets)
        c_prev = _carried(c0, cells, keep, ctx.resets)
        i, f, gg, o = gates.chunk(4, dim=-1)
        tanh_c = torch.tanh(cells)
        # Factors that do not depend on the incoming gradients, for all steps at once, in
        # place on fresh tensors (x (1 - x) as one addcmul) and written where they are used.
        dh_to_dc = (1 - tanh_c * tanh_c).mul_(o)
        dc_to_pre = gates.new_empty(*gates.shape[:2], 3, h0.shape[-1])  # d(pre i, pre f, g)
        torch.addcmul(i, i, i, value=-1.0, out=dc_to_pre[:, :, 0]).mul_(gg)
        torch.addcmul(f, f, f, value=-1.0, out=dc_to_pre[:, :, 1]).mul_(c_prev)
        torch.addcmul(i, i * gg, gg, value=-1.0, out=dc_to_pre[:, :, 2])  # i (1 - g^2)
        dh_to_pre_o = torch.addcmul(o, o, o, value=-1.0).mul_(tanh_c)
        d_pre = torch.empty_like(gates)
        dc = d_c_last.contiguous() if d_c_last is not None else torch.zeros_like(h0)
        dh, dc = step_loops(x).lstm_backward(
            dh_to_dc, dc_to_pre, dh_to_pre_o, gates, _keep_rows(keep), ctx.resets,
            d_out.contiguous(), w_hh, dc, d_pre,
        )  # fmt: skip
        dx, dw_ih, dw_hh, db_ih, db_hh = _weight_grads(d_pre, d_pre, x, h_prev, w_ih)
        return dx, dh, dc, None, dw_ih, dw_hh, db_ih, db_hh


def gru_layer(
    x: Tensor, hx: tuple[Tensor, ...], keep: Tensor, weights: list[Tensor]
) -> tuple[Tensor, tuple[Tensor, ...]]:
    """``GRUSequence`` with the state as a tuple: returns ``h (T, B, H)`` and ``(h_T,)``."""
    out = GRUSequence.apply(x, hx[0], keep, *weights)
    return out, (out[-1],)


def lstm_layer(
    x: Tensor, hx: tuple[Tensor, ...], keep: Tensor, weights: list[Tensor]
) -> tuple[Tensor, tuple[Tensor, ...]]:
    """``LSTMSequence`` with the state as a tuple: returns ``h (T, B, H)`` and ``(h_T, c_T)``."""
    out, c = LSTMSequence.apply(x, hx[0], hx[1], keep, *weights)
    return out, (out[-1], c)
