"""The three training phases of LeWorld, with a checkpoint after every phase (resumable).

1. **Pre-train**: the bit autoencoder, first alone (``codec_steps`` updates)
   then alongside the rest (reconstruction through the bits), each
   SLM's address head towards its own lag behind the write pointer (range
   ending ``lag_i`` words back: diverse starting characteristics), and the BLM
   on next-state MSE with every SLM routed on.
2. **Joint**: end to end through soft product-key reads and the
   straight-through routing mask; next-state MSE + Switch load balance.
3. **Info-request refinement**: addresses and ranges are sampled (Gumbel-max)
   and info requests drawn from ``N(r, noise^2)``; each decision gets its
   paired-branch reward (:mod:`memworld.world_models.leworld.rollout`) and is trained by
   REINFORCE (the addresses with a batch-mean baseline, the request against its mirrored
   sample, ``request_estimator``, weighted by ``request_pg_coef``), alongside the
   prediction loss (by default on a second pass with straight-through reads: the argmax
   read forward, phase 2's soft read's gradient backward; ``refine_prediction``). The
   request's policy gradient reaches only the BLM's request head (not the trunk that
   predicts) and is scaled by ``noise^2`` (natural gradient): unscaled through the trunk
   it was ~50x the prediction's gradient on KeyDoorEasy and phase 3 undid phase 2
   (held-out MSE 0.069 after phase 2, 0.096 after 3).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from memworld.world_models.leworld.config import TrainingConfig
from memworld.world_models.leworld.data import Batch, RolloutSource
from memworld.world_models.leworld.rollout import SequenceResult, masked_mean, run_sequence
from memworld.world_models.leworld.routing import load_balance_loss, routing_stats
from memworld.world_models.leworld.system import LeWorldSystem

PHASES = ("pretrain", "joint", "refine")


def address_targets(
    t_len: int,
    batch_size: int,
    lags: tuple[int, ...],
    range_len: int,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Phase-1 start addresses ``(T, B, N)``: the range of SLM i ends ``lags[i]`` words back."""
    steps = torch.arange(t_len, device=device)[:, None, None]
    lag = torch.tensor(lags, device=device)[None, None, :]
    return (steps - lag - range_len + 1).clamp_min(0).expand(t_len, batch_size, len(lags))


def advantage(reward: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """REINFORCE advantage: reward minus its mean over valid steps, over its std.

    ``reward`` ``(T, B, ...)``, ``valid`` ``(T, B)``; trailing axes (one per
    SLM) get their own baseline. Padded steps get 0.
    """
    extra = reward.dim() - valid.dim()
    w = valid.float().reshape(*valid.shape, *[1] * extra).expand_as(reward)
    dims = tuple(range(valid.dim()))
    count = w.sum(dims).clamp_min(1.0)
    mean = (reward * w).sum(dims) / count
    var = ((reward - mean) ** 2 * w).sum(dims) / count
    return (reward - mean) / (var.sqrt() + 1e-6) * w


class LeWorldTrainer:
    """Runs the phases on batches from one task and keeps the optimiser and position.

    Args:
        system: the LeWorld system to train.
        config: phase lengths, learning rates, loss weights, data.
        source: where batches come from (default: a :class:`RolloutSource` on ``config.env_id``).
        run_dir: where ``checkpoints/`` go (``None``: no checkpoints).
        log: called with each metrics dict (TensorBoard, progress bar, ...).
        device: where the system, batches and sampling run (``None``: where the
            system's parameters are). Checkpoints load onto it.
    """

    def __init__(
        self,
        system: LeWorldSystem,
        config: TrainingConfig,
        source: RolloutSource | None = None,
        run_dir: str | Path | None = None,
        log: Callable[[dict], None] | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        lags, n = config.pretrain_lags, system.num_slms
        if len(lags) != n:
            raise ValueError(
                f"TrainingConfig.pretrain_lags must hold one lag per SLM: {n} "
                f"(SLMConfig.num_slms), got {len(lags)} in {tuple(lags)}; pass e.g. "
                f"pretrain_lags={tuple(4**i for i in range(n))}"
            )
        self.device = torch.device(device) if device else next(system.parameters()).device
        self.system, self.config = system.to(self.device), config
        self.source = source or RolloutSource(
            config.env_id, config.num_envs, config.seq_len, config.seed, config.oracle_prob
        )
        self.run_dir = None if run_dir is None else Path(run_dir)
        self.log = log or (lambda metrics: None)
        self.generator = torch.Generator(device=self.device).manual_seed(config.seed)
        self.phase, self.step = 0, 0
        self.history: list[dict] = []
        self.optimizer = self._make_optimizer()

    def _make_optimizer(self) -> torch.optim.Optimizer:
        lr = self.config.phase3_lr if self.phase == 2 else self.config.lr
        return torch.optim.Adam(self.system.parameters(), lr=lr)

    def phase_steps(self, phase: int) -> int:
        c = self.config
        return (c.phase1_steps, c.phase2_steps, c.phase3_steps)[phase]

    # ----------------------------------------------------------- losses
    def pretrain_loss(self, batch: Batch) -> tuple[torch.Tensor, SequenceResult, dict]:
        c, mem = self.config, self.system.config.memory
        t_len, b = batch.valid.shape
        on = torch.ones(b, self.system.num_slms, device=self.device)
        result = run_sequence(self.system, batch, "soft", mask_override=on, keep_logits=True)
        target = address_targets(t_len, b, c.pretrain_lags, mem.range_len, self.device)
        ce = F.cross_entropy(
            result.logits["high"].flatten(0, 2), (target // mem.num_low).flatten(), reduction="none"
        )
        ce = ce + F.cross_entropy(
            result.logits["low"].flatten(0, 2), (target % mem.num_low).flatten(), reduction="none"
        )
        slm_loss = masked_mean(ce.view(t_len, b, -1), batch.valid)
        recon = self.system.memory.reconstruction_loss(batch.obs[batch.valid])
        mse = result.mean_loss()
        loss = mse + c.recon_coef * recon + c.address_coef * slm_loss
        return loss, result, {"slm_address_ce": slm_loss.item(), "recon": recon.item()}

    def joint_loss(
        self, batch: Batch, mode: str = "soft"
    ) -> tuple[torch.Tensor, SequenceResult, dict]:
        c = self.config
        result = run_sequence(self.system, batch, mode)
        balance = load_balance_loss(result.masks, result.probs, batch.valid)
        recon = self.system.memory.reconstruction_loss(batch.obs[batch.valid])
        loss = result.mean_loss() + c.load_balance_coef * balance + c.recon_coef * recon
        return loss, result, {"load_balance": balance.item(), "recon": recon.item()}

    def refine_loss(self, batch: Batch) -> tuple[torch.Tensor, SequenceResult, dict]:
        """Phase 3: REINFORCE on sampled decisions, with the prediction trained alongside.

        With ``refine_prediction="sample"`` the prediction loss and load balance
        are those of the sampled pass; with ``"straight"``/``"soft"``/``"hard"`` they are
        :meth:`joint_loss` on a second pass with straight-through, soft or argmax reads and the
        sampled pass trains only the decisions.
        """
        c = self.config
        judge_request_here = c.request_addresses == "sample"
        antithetic = c.request_estimator == "antithetic"
        sampled = run_sequence(
            self.system,
            batch,
            "sample",
            with_slm_rewards=True,
            with_request_reward=judge_request_here,
            request_noise=c.request_noise,
            generator=self.generator,
            antithetic=antithetic and judge_request_here,
        )
        requested = sampled
        if not judge_request_here:  # the request under argmax addresses, as at inference
            requested = run_sequence(
                self.system,
                batch,
                "hard",
                with_request_reward=True,
                request_noise=c.request_noise,
                generator=self.generator,
                track_graph=False,  # only the request's log-probability is trained on it
                antithetic=antithetic,
            )
        valid = batch.valid
        slm_adv = advantage(sampled.slm_reward, valid)
        score = requested.request_antithetic if antithetic else requested.request_reward
        req_adv = advantage(score, valid)
        pg_slm = -masked_mean(slm_adv * sampled.address_logprob, valid)
        # Natural gradient of the Gaussian request policy: its Fisher information for the
        # mean is 1 / noise^2, so the score is scaled by noise^2 (a step of ~noise per unit).
        pg_request = (
            -c.request_pg_coef
            * (c.request_noise**2)
            * masked_mean(req_adv * requested.request_logprob, valid)
        )
        entropy = masked_mean(sampled.address_entropy, valid)
        if c.refine_prediction == "sample":
            result, extra = sampled, {}
            balance = load_balance_loss(sampled.masks, sampled.probs, valid)
            loss = sampled.mean_loss() + c.load_balance_coef * balance
        else:
            loss, result, extra = self.joint_loss(batch, c.refine_prediction)
            extra["sampled_mse"] = sampled.mean_loss().item()
        loss = loss + pg_slm + pg_request - c.entropy_coef * entropy
        return (
            loss,
            result,
            {
                **extra,
                "slm_reward": masked_mean(sampled.slm_reward, valid).item(),
                "request_reward": masked_mean(requested.request_reward, valid).item(),
                "pg_slm": pg_slm.item(),
                "pg_request": pg_request.item(),
                "address_entropy": entropy.item(),
            },
        )

    # ----------------------------------------------------------- loop
    def pretrain_codec(self) -> float:
        """``codec_steps`` reconstruction-only updates of the bit codec; returns the last loss.

        Observations come from four rollout batches (valid steps only);
        minibatches are drawn with the trainer's generator.
        """
        c, memory = self.config, self.system.memory
        if c.codec_steps == 0:
            return float("nan")
        batches = [self.source.batch() for _ in range(4)]
        obs = torch.cat([b.obs[b.valid] for b in batches]).to(self.device)
        optimizer = torch.optim.Adam(memory.parameters(), lr=c.lr)
        memory.train()
        for _ in range(c.codec_steps):
            pick = torch.randint(
                len(obs), (c.codec_batch,), generator=self.generator, device=self.device
            )
            loss = memory.reconstruction_loss(obs[pick])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        return loss.item()

    def update(self) -> dict:
        phase = self.phase
        batch = self.source.batch().to(self.device)
        loss_fn = (self.pretrain_loss, self.joint_loss, self.refine_loss)[phase]
        self.system.train()
        loss, result, extra = loss_fn(batch)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.system.parameters(), self.config.grad_clip)
        self.optimizer.step()
        stats = routing_stats(result.masks, batch.valid)
        metrics = {
            "phase": PHASES[phase],
            "step": self.step,
            "loss": loss.item(),
            "mse": result.mean_loss().item(),
            "routing_entropy": stats["entropy"],
            **{f"usage_{i}": u for i, u in enumerate(stats["usage"])},
            **extra,
        }
        return metrics

    def train(self, stop_after: str | None = None) -> list[dict]:
        """Run (or continue) the phases to the end, or to the end of phase ``stop_after``
        (a name in ``PHASES``); checkpoints after each phase."""
        if stop_after is not None and stop_after not in PHASES:
            raise ValueError(f"stop_after must be None or one of {PHASES}, got {stop_after!r}")
        if self.phase == 0 and self.step == 0:  # a fresh run, not a resumed one
            self.log({"phase": "codec", "step": 0, "recon": self.pretrain_codec()})
        while self.phase < len(PHASES):
            while self.step < self.phase_steps(self.phase):
                metrics = self.update()
                self.step += 1
                if self.step % self.config.log_every == 0 or self.step == self.phase_steps(
                    self.phase
                ):
                    self.history.append(metrics)
                    self.log(metrics)
            done = PHASES[self.phase]
            self.save(f"phase{self.phase + 1}-{done}.pt")
            self.phase, self.step = self.phase + 1, 0
            self.optimizer = self._make_optimizer()
            if done == stop_after and self.phase < len(PHASES):
                return self.history
        self.save("final.pt")
        return self.history

    # ----------------------------------------------------------- checkpoints
    def state_dict(self) -> dict:
        return {
            "system": self.system.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "phase": self.phase,
            "step": self.step,
            "history": self.history,
            "generator": self.generator.get_state(),
            "source": self.source.state_dict(),
            "training": dataclasses.asdict(self.config),
        }

    def save(self, name: str) -> Path | None:
        if self.run_dir is None:
            return None
        path = self.run_dir / "checkpoints" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        state = self.state_dict()
        if name.startswith("phase"):  # a phase checkpoint resumes at the next phase's start
            state["phase"], state["step"] = self.phase + 1, 0
        torch.save(state, path)
        return path

    def load(self, path: str | Path) -> None:
        """Continue from a checkpoint (a phase's end or ``final.pt``)."""
        state = torch.load(path, map_location=self.device, weights_only=False)
        self.system.load_state_dict(state["system"])
        self.phase, self.step, self.history = state["phase"], state["step"], state["history"]
        generator = state["generator"].cpu()
        if generator.numel() == self.generator.get_state().numel():
            self.generator.set_state(generator)
        else:  # saved on another kind of device: a CPU and a CUDA generator's states differ
            self.generator.manual_seed(self.config.seed + 1_000_003 * self.phase + self.step)
        if "source" in state:  # checkpoints before 2026-11-29 restart the batch stream
            self.source.load_state_dict(state["source"])
        self.optimizer = self._make_optimizer()
        if state["phase"] < len(PHASES) and state["step"] > 0:
            self.optimizer.load_state_dict(state["optimizer"])


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The furthest checkpoint of a run folder, or ``None``."""
    folder = Path(run_dir) / "checkpoints"
    if (folder / "final.pt").exists():
        return folder / "final.pt"
    phases = sorted(folder.glob("phase*.pt"))
    return phases[-1] if phases else None
