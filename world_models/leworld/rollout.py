"""Run a LeWorld system over a batch of sequences, with optional paired branches.

Paired-branch rewards (ProactAgent-style): the same step is evaluated with and
without a decision, and the decision earns the loss it removed.

- SLM ``i`` at step ``t``: ``loss(mask_i = 0) - loss(mask_i = 1)``, the other
  SLMs routed as the BLM chose, on the same reads;
- the info request ``r_t``: ``loss_{t+1}(zero request) - loss_{t+1}(r_t)``, the
  SLMs at ``t+1`` searching (with the same sampling noise) with and without it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from memworld.world_models.leworld.data import Batch
from memworld.world_models.leworld.system import READ_MODES, LeWorldSystem


def paired_branch_reward(loss_without: Tensor, loss_with: Tensor) -> Tensor:
    """The loss a decision removed: ``loss_without - loss_with`` (positive = it helped)."""
    return (loss_without - loss_with).detach()


def step_loss(prediction: Tensor, target: Tensor) -> Tensor:
    """Per-row next-state MSE: ``(B, state_dim) x2 -> (B,)``."""
    return (prediction - target).pow(2).mean(-1)


def slm_branch_losses(
    system: LeWorldSystem, obs: Tensor, out, target: Tensor
) -> tuple[Tensor, Tensor]:
    """Next-state losses ``(B, N)`` with SLM ``i``'s read routed on, and masked out, the
    other SLMs routed as the BLM chose, on the same reads: the ``2N`` branches in one BLM call."""
    n = system.num_slms
    eye = torch.eye(n, dtype=out.mask.dtype, device=out.mask.device)[:, None, :]  # (N, 1, N)
    without_read = out.mask[None] * (1 - eye)  # (N, B, N): branch i has SLM i off
    masks = torch.cat([without_read + eye, without_read])  # branches 0..N-1: SLM i on
    losses = step_loss(system.predict_with_mask(obs, out, masks), target)  # (2N, B)
    return losses[:n].T, losses[n:].T


def slm_rewards(system: LeWorldSystem, obs: Tensor, out, target: Tensor) -> Tensor:
    """Paired-branch reward of every SLM's read: ``(B, N)``."""
    loss_with, loss_without = slm_branch_losses(system, obs, out, target)
    return paired_branch_reward(loss_without, loss_with)


@dataclass
class SequenceResult:
    """Per-step tensors of one pass over a batch (``T`` steps, ``B`` rows, ``N`` SLMs)."""

    loss: Tensor  # (T, B) next-state MSE (with graph)
    valid: Tensor  # (T, B) bool
    masks: Tensor  # (T, B, N) hard masks
    probs: Tensor  # (T, B, N) gate probabilities (with graph)
    addresses: Tensor  # (T, B, N)
    address_logprob: Tensor | None = None  # (T, B, N) log pi(high, low, range) when sampled
    address_entropy: Tensor | None = None  # (T, B, N) entropy of pi(high) + pi(low) + pi(range)
    slm_reward: Tensor | None = None  # (T, B, N)
    request_logprob: Tensor | None = None  # (T, B) log pi(r_t) when sampled
    request_reward: Tensor | None = None  # (T, B) reward of r_t (measured at t + 1)
    request_moved: Tensor | None = None  # (T, B) fraction of SLMs whose address r_{t-1} changed
    request_antithetic: Tensor | None = None  # (T, B) (loss(mirrored r_t) - loss(r_t)) / 2 at t+1
    logits: dict = field(default_factory=dict)  # "high"/"low": (T, B, N, 256) when kept

    def mean_loss(self) -> Tensor:
        return masked_mean(self.loss, self.valid)


def masked_mean(x: Tensor, valid: Tensor) -> Tensor:
    """Mean of ``x`` ``(T, B, ...)`` over the steps where ``valid`` ``(T, B)`` is set."""
    w = valid.float()
    while w.dim() < x.dim():
        w = w[..., None]
    w = w.expand_as(x)
    return (x * w).sum() / w.sum().clamp_min(1.0)


def run_sequence(
    system: LeWorldSystem,
    batch: Batch,
    mode: str = "soft",
    addresses: Tensor | None = None,
    mask_override: Tensor | None = None,
    with_slm_rewards: bool = False,
    with_request_reward: bool = False,
    request_noise: float = 0.0,
    keep_logits: bool = False,
    generator: torch.Generator | None = None,
    track_graph: bool = True,
    antithetic: bool = False,
) -> SequenceResult:
    """Run ``system`` over ``batch`` from an empty memory.

    ``mode``: ``"soft"``, ``"hard"``, ``"straight"`` (argmax reads with the soft read's
    gradient) or ``"sample"`` (Gumbel-max sampling of
    every SLM's address and range, with log-probabilities for policy gradient).
    ``addresses`` ``(T, B, N)``: outside start addresses (``-1`` keeps the
    SLM's). ``mask_override`` ``(B, N)`` or ``(T, B, N)``: fixed routing
    (``-1`` keeps the BLM's). ``request_noise > 0`` samples the info request
    from ``N(mu, noise^2)`` (phase 3). ``with_request_reward`` runs the zero
    request branch every step. ``track_graph=False`` records no autograd graph but the
    request's log-probability (the request head on the detached trunk output): a pass that
    only judges the request, at a fraction of the memory and backward time.
    ``antithetic`` (with ``request_noise > 0`` and ``with_request_reward``) also runs each
    step under the mirrored request ``mu - noise * eps`` of the sampled ``mu + noise * eps``
    and records half the loss difference of the pair (``request_antithetic``).
    """
    if mode not in READ_MODES:
        raise ValueError(f"run_sequence mode must be one of {READ_MODES}, got {mode!r}")
    if not track_graph and mode == "sample":
        raise ValueError(
            "track_graph=False keeps no graph for the sampled addresses' log-probabilities; "
            "use it with mode='soft' or 'hard', or leave track_graph=True"
        )
    if antithetic and not (with_request_reward and request_noise > 0):
        raise ValueError(
            "antithetic=True scores a sampled info request against its mirror: it needs "
            f"with_request_reward=True and request_noise > 0 (got {with_request_reward} and "
            f"{request_noise}); pass both, or leave antithetic=False"
        )
    grad_on = torch.is_grad_enabled()
    t_len, batch_size = batch.valid.shape
    state = system.initial_state(batch_size, batch.obs.device)
    mem = system.config.memory
    choices = max(len(system.config.slm.range_choices), 1)
    cols: dict[str, list] = {
        k: []
        for k in (
            "loss",
            "masks",
            "probs",
            "addr",
            "alp",
            "ent",
            "rew",
            "rlp",
            "rloss",
            "zloss",
            "mloss",
            "moved",
            "high",
            "low",
        )
    }
    mirror = None  # the mirrored request r_{t-1} (antithetic)
    for t in range(t_len):
        obs, target = batch.obs[t], batch.target[t]
        gumbel = None
        if mode == "sample":
            shape = (batch_size, system.num_slms, mem.num_high + mem.num_low + choices)
            uniform = torch.rand(shape, generator=generator, device=obs.device).clamp(
                1e-9, 1 - 1e-9
            )
            gumbel = -torch.log(-torch.log(uniform))
        overrides = (
            None
            if mask_override is None
            else (mask_override[t] if mask_override.dim() == 3 else mask_override)
        )
        step_addr = None if addresses is None else addresses[t]
        with torch.set_grad_enabled(track_graph and grad_on):
            written, _ = system.write(state, obs)
            out = system.think(written, obs, mode, step_addr, overrides, None, gumbel)
            loss = step_loss(out.prediction, target)
        if with_request_reward:
            with torch.no_grad():
                zero = torch.zeros_like(state["request"])
                out_zero = system.think(written, obs, mode, step_addr, overrides, zero, gumbel)
                cols["zloss"].append(step_loss(out_zero.prediction, target))
                moved = (out_zero.addresses != out.addresses).float().mean(-1)
                cols["moved"].append(moved)
                cols["rloss"].append(loss.detach())
                if antithetic and mirror is not None:
                    out_mirror = system.think(
                        written, obs, mode, step_addr, overrides, mirror, gumbel
                    )
                    cols["mloss"].append(step_loss(out_mirror.prediction, target))
                elif antithetic:  # step 0 follows no request
                    cols["mloss"].append(loss.detach())
        if mode == "sample":
            picks = {
                "high": (out.high_logits, out.addresses // mem.num_low),
                "low": (out.low_logits, out.addresses % mem.num_low),
                "range": (out.range_logits, out.range_choice),
            }
            logp = entropy = 0
            for logits, pick in picks.values():
                lp = torch.log_softmax(logits, -1)
                logp = logp + lp.gather(-1, pick[..., None]).squeeze(-1)
                entropy = entropy - (lp.exp() * lp).sum(-1)
            cols["alp"].append(logp)
            cols["ent"].append(entropy)
        if with_slm_rewards:
            with torch.no_grad():
                cols["rew"].append(slm_rewards(system, obs, out, target))
        request = out.request
        if request_noise > 0:
            noise = request_noise * torch.randn(
                request.shape, generator=generator, device=obs.device
            )
            sampled = (request + noise).detach()
            mirror = (request - noise).detach()
            # The decision's log-probability trains the request head alone: through the
            # shared trunk its score (~1/noise per unit) would swamp the prediction's gradient.
            with torch.set_grad_enabled(grad_on):
                mean = system.blm.request_from(out.hidden.detach())
                cols["rlp"].append(-((sampled - mean) ** 2).sum(-1) / (2 * request_noise**2))
            request = sampled
        if keep_logits:
            cols["high"].append(out.high_logits)
            cols["low"].append(out.low_logits)
        cols["loss"].append(loss)
        cols["masks"].append(out.mask.detach().round())
        cols["probs"].append(out.probs)
        cols["addr"].append(out.addresses)
        state = {
            "memory": written["memory"],
            "past_obs": obs,
            "request": request,
            "pointer": state["pointer"] + 1,
        }
    result = SequenceResult(
        torch.stack(cols["loss"]),
        batch.valid,
        torch.stack(cols["masks"]),
        torch.stack(cols["probs"]),
        torch.stack(cols["addr"]),
    )
    if cols["alp"]:
        result.address_logprob = torch.stack(cols["alp"])
        result.address_entropy = torch.stack(cols["ent"])
    if cols["rew"]:
        result.slm_reward = torch.stack(cols["rew"])
    if cols["rlp"]:
        result.request_logprob = torch.stack(cols["rlp"])
    if cols["zloss"]:
        # r_t is judged at t + 1; the last request of the sequence has no next step (reward 0).
        def judged_at_next_step(x: Tensor) -> Tensor:
            return torch.cat([x[1:], torch.zeros_like(x[:1])])

        next_valid = judged_at_next_step(batch.valid).float()
        rloss = torch.stack(cols["rloss"])
        gain = paired_branch_reward(torch.stack(cols["zloss"]), rloss)
        result.request_reward = judged_at_next_step(gain) * next_valid
        result.request_moved = torch.stack(cols["moved"])
        if cols["mloss"]:
            half = 0.5 * paired_branch_reward(torch.stack(cols["mloss"]), rloss)
            result.request_antithetic = judged_at_next_step(half) * next_valid
    if keep_logits:
        result.logits = {"high": torch.stack(cols["high"]), "low": torch.stack(cols["low"])}
    return result
