"""Evaluate LeWorld against its baselines on the same held-out batches.

Per method: the next-state MSE (mean over valid steps), the per-step MSE over the episode,
how far it falls from the second quarter of the episode to the last (per episode, with its
standard error) and the MSE against recall distance (steps since the needed observation
was written, as :mod:`memworld.world_models.memory_world_model` bins it). For LeWorld itself: SLM
usage fractions, routing entropy (nats over the 2**N masks), the five most frequent routing
patterns, and the info-request gain: the paired-branch loss difference (zero request minus
the BLM's request), as the mean per step and summed over an episode with its standard error
over episodes (``z`` = per-episode gain / SE, so ``z > 2`` is a gain the held-out episodes
can tell from zero), and how often the request moves an SLM's address at all.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from memworld.world_models.leworld.baselines import (
    masked_mean,
    no_memory_loss,
    oracle_start,
    random_addresses,
)
from memworld.world_models.leworld.data import Batch
from memworld.world_models.leworld.rollout import run_sequence
from memworld.world_models.leworld.routing import routing_stats
from memworld.world_models.memory_world_model import bin_labels, distance_sums, ratios

METHODS = ("leworld", "no_memory", "gru", "random_addresses", "oracle_addresses")


def curve_length(valid: torch.Tensor) -> int:
    """Steps up to the last one any row of ``valid`` ``(T, B)`` reaches (0 if none)."""
    return int(valid.any(1).nonzero().max()) + 1 if bool(valid.any()) else 0


def quarters(steps: int) -> tuple[slice, slice]:
    """The second and the last quarter of a ``steps``-long curve (``max(steps // 4, 1)``
    steps each): the stretch the per-step checks compare, past the first steps, which
    show everything (reveal steps, key in view) and are easy for every method."""
    q = max(steps // 4, 1)
    return slice(q, 2 * q), slice(steps - q, steps)


def per_step(loss: torch.Tensor, valid: torch.Tensor) -> list[float]:
    """Mean loss at each step ``t`` over the rows still in their episode, up to the last
    step any row reaches (later steps have no data and are left out, not read as 0)."""
    w = valid.float()
    steps = curve_length(valid)
    return ((loss * w).sum(1) / w.sum(1).clamp_min(1.0))[:steps].tolist()


def mean_se(per_episode: torch.Tensor) -> tuple[float, float]:
    """Mean of one value per episode and its standard error (sample std / sqrt(episodes);
    NaN with fewer than two episodes, and the mean too with none)."""
    episodes = per_episode.numel()
    if episodes == 0:
        return float("nan"), float("nan")
    se = per_episode.std(unbiased=True).item() / episodes**0.5 if episodes > 1 else math.nan
    return per_episode.mean().item(), se


def episode_sums_mean_se(values: torch.Tensor, valid: torch.Tensor) -> tuple[float, float]:
    """Mean over episodes of each episode's sum of ``values`` ``(T, B)`` over its valid
    steps, and the standard error of that mean (:func:`mean_se`)."""
    return mean_se((values * valid.float()).sum(0))


def quarter_fall_mean_se(loss: torch.Tensor, valid: torch.Tensor) -> tuple[float, float]:
    """How far ``loss`` ``(T, B)`` falls from the second quarter of the episode to the last,
    per episode: the mean over episodes of (mean over its valid steps in the second quarter
    minus mean over its valid steps in the last), and the standard error of that mean.

    The quarters are :func:`quarters` of :func:`per_step`'s curve; an episode with no
    valid step in either quarter is left out. A positive fall with ``mean / se > 2`` is a
    fall the episodes can tell from a flat curve.
    """
    w = valid.float()

    def window_mean(window: slice) -> tuple[torch.Tensor, torch.Tensor]:
        n = w[window].sum(0)
        return (loss[window] * w[window]).sum(0) / n.clamp_min(1.0), n > 0

    (second, has_second), (last, has_last) = map(window_mean, quarters(curve_length(valid)))
    return mean_se((second - last)[has_second & has_last])


@torch.no_grad()
def evaluate(system, batches: list[Batch], baselines: dict | None = None, seed: int = 0) -> dict:
    """Metrics of every method on ``batches`` (concatenated along the batch axis)."""
    batch = Batch.cat(batches)
    system.eval()
    generator = torch.Generator().manual_seed(seed)
    n, range_len = system.num_slms, system.config.memory.range_len
    main = run_sequence(system, batch, "hard", with_request_reward=True)
    losses = {
        "leworld": main.loss,
        "random_addresses": run_sequence(
            system, batch, "hard", addresses=random_addresses(batch, n, generator)
        ).loss,
        "oracle_addresses": run_sequence(
            system, batch, "hard", addresses=oracle_start(batch, n, range_len)
        ).loss,
    }
    if baselines:
        losses["no_memory"] = no_memory_loss(baselines["no_memory"].eval(), batch)
        losses["gru"] = baselines["gru"].eval().step_loss(batch)
    valid = batch.valid
    by_distance = {k: distance_sums(v, valid, batch.oracle_address) for k, v in losses.items()}
    stats = routing_stats(main.masks, valid)
    gain = main.request_reward
    gain_per_episode, gain_se = episode_sums_mean_se(gain, valid)
    over_time = (main.masks * valid[..., None]).sum(1) / valid.float().sum(1).clamp_min(1.0)[
        :, None
    ]
    return {
        "mse": {k: masked_mean(v, valid).item() for k, v in losses.items()},
        "per_step_mse": {k: per_step(v, valid) for k, v in losses.items()},
        # Per episode, second quarter minus last (mean, standard error over episodes).
        "per_step_fall": {k: quarter_fall_mean_se(v, valid) for k, v in losses.items()},
        # The same for each baseline's MSE minus LeWorld's, paired by episode: > 0 where
        # LeWorld's lead grows over the episode (on a task that gets harder towards the end,
        # as OccludedDynamics does, every method's own curve can rise).
        "lead_growth": {
            k: quarter_fall_mean_se(losses["leworld"] - v, valid)
            for k, v in losses.items()
            if k != "leworld"
        },
        # Against recall distance: steps since the observation a step needs was written.
        "mse_by_distance": {k: ratios(*s) for k, s in by_distance.items()},
        "distance_bins": bin_labels(),
        "distance_counts": [int(c) for c in by_distance["leworld"][1]],  # the same for all
        "usage": stats["usage"],
        "routing_entropy": stats["entropy"],
        "top_patterns": stats["top_patterns"],
        "info_request_gain": masked_mean(gain, valid).item(),
        "info_request_gain_per_episode": gain_per_episode,
        "info_request_gain_se": gain_se,  # standard error of the per-episode gain
        # How often the request changes where an SLM reads (steps after the first).
        "request_moves_address": masked_mean(main.request_moved[1:], valid[1:]).item(),
        "routing_over_time": over_time.T.tolist(),  # (N, T)
        "address_hits": address_hit_rate(main.addresses, batch, range_len),
    }


def address_hit_rate(addresses: torch.Tensor, batch: Batch, range_len: int) -> float:
    """Fraction of valid steps at which some SLM's range covers the oracle address."""
    target = batch.oracle_address[..., None]
    covered = ((addresses <= target) & (target < addresses + range_len)).any(-1)
    return masked_mean(covered.float(), batch.valid).item()


def acceptance(results: dict) -> dict[str, str]:
    """Issue 6's acceptance checks over seeds ``{seed: evaluate(...)}``: each ``"k/n"``
    (seeds passing), or ``"n/a"`` for a baseline the runs were trained without."""
    rs = list(results.values())
    n = len(rs)

    def count(check) -> str:
        return f"{sum(bool(check(r)) for r in rs)}/{n}"

    def falls(curve: list[float]) -> bool:  # the last quarter below the second
        second, last = (curve[window] for window in quarters(len(curve)))
        return sum(last) / len(last) < sum(second) / len(second)

    def beats(method: str) -> str:
        if any(method not in r["mse"] for r in rs):
            return "n/a (trained without baselines)"
        return count(lambda r: r["mse"]["leworld"] < r["mse"][method])

    return {
        "beats no_memory": beats("no_memory"),
        "beats random_addresses": beats("random_addresses"),
        "beats gru": beats("gru"),
        "info-request gain > 0": count(lambda r: r["info_request_gain"] > 0),
        "info-request gain > 2 standard errors": count(lambda r: request_gain_z(r) > 2),
        "every SLM used >= 20%": count(lambda r: min(r["usage"]) >= 0.2),
        "routing entropy >= 0.5": count(lambda r: r["routing_entropy"] >= 0.5),
        "per-step MSE falls (last vs second quarter)": count(
            lambda r: falls(r["per_step_mse"]["leworld"])
        ),
        "per-step MSE falls by > 2 standard errors": count(lambda r: fall_z(r) > 2),
        # The fall with the task's own change over the episode taken out (OccludedDynamics
        # gets harder towards the end, for every method): LeWorld's lead over the same BLM
        # without memory grows from the second quarter to the last, per episode.
        "lead over no memory grows by > 2 standard errors": count(
            lambda r: fall_z(r, "no_memory", "lead_growth") > 2
        ),
    }


def z_score(mean: float, se: float) -> float:
    """``mean / se``; 0 when both are 0 (nothing changed), +-inf for a nonzero mean over 0."""
    if se == 0:
        return 0.0 if mean == 0 else math.copysign(math.inf, mean)
    return mean / se


def request_gain_z(result: dict) -> float:
    """Per-episode info-request gain over its standard error (NaN for results without one;
    0 for a request that never changed a loss, whose gain and standard error are both 0)."""
    nan = float("nan")
    return z_score(
        result.get("info_request_gain_per_episode", nan), result.get("info_request_gain_se", nan)
    )


def fall_z(result: dict, method: str = "leworld", key: str = "per_step_fall") -> float:
    """``method``'s per-episode fall of the per-step MSE (second quarter minus last) over its
    standard error, or with ``key="lead_growth"`` the growth of LeWorld's lead over
    ``method``; NaN for results evaluated before these were recorded."""
    return z_score(*result.get(key, {}).get(method, (float("nan"),) * 2))


def table(results: dict) -> str:
    """The evaluation table over seeds ``{seed: evaluate(...)}``, with the mean over seeds
    and the acceptance checks when there are several. ``z``: the per-episode info-request
    gain over its standard error; ``moves``: fraction of SLM-steps at which the info
    request changed the address read (against a zero request)."""

    def row(label, rs: list[dict]) -> str:  # one seed, or the mean over seeds
        mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
        cells = " ".join(
            f"{mean([r['mse'].get(m, float('nan')) for r in rs]):17.4f}" for m in METHODS
        )
        usage = ", ".join(f"{mean(u):.2f}" for u in zip(*(r["usage"] for r in rs)))
        gain = mean([r["info_request_gain"] for r in rs])
        z = mean([request_gain_z(r) for r in rs])
        moves = mean([r.get("request_moves_address", float("nan")) for r in rs])
        entropy = mean([r["routing_entropy"] for r in rs])
        return f"{label!s:>4s} {cells} {gain:+9.5f} {z:+6.1f} {moves:6.3f} {entropy:7.3f} [{usage}]"

    header = " ".join(f"{m:>17s}" for m in METHODS)
    lines = [
        f"{'seed':>4s} {header} {'req gain':>9s} {'z':>6s} {'moves':>6s} {'entropy':>7s} usage"
    ]
    lines += [row(seed, [r]) for seed, r in results.items()]
    if len(results) > 1:
        lines.append(row("mean", list(results.values())))
        lines += [f"{k}: {v}" for k, v in acceptance(results).items()]
        for key, what in (
            ("per_step_fall", "per-step MSE fall, second quarter minus last"),
            ("lead_growth", "LeWorld's lead over each method, last quarter minus second"),
        ):
            lines.append(
                f"{what}, per episode / SE (z): "
                + "; ".join(
                    f"{m} " + ", ".join(f"{fall_z(r, m, key):+.1f}" for r in results.values())
                    for m in METHODS
                    if all(m in r.get(key, {}) for r in results.values())
                )
            )
    for seed, r in results.items():
        pats = "  ".join(f"{p['pattern']}:{p['fraction']:.2f}" for p in r["top_patterns"])
        lines.append(f"seed {seed} top routing patterns: {pats}")
        steps = r["per_step_mse"]["leworld"]
        marks = [0, len(steps) // 4, len(steps) // 2, 3 * len(steps) // 4, len(steps) - 1]
        lines.append(
            f"seed {seed} LeWorld per-step MSE at t={marks}: "
            + ", ".join(f"{steps[i]:.4f}" for i in marks)
        )
    return "\n".join(lines)


def plot(results: dict, folder: str | Path) -> list[Path]:
    """Per-step MSE of every method, routing over time and MSE against recall distance,
    one PNG per seed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for seed, r in results.items():
        fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(15, 4))
        for method, curve in r["per_step_mse"].items():
            ax1.plot(curve, label=method)
        ax1.set(
            xlabel="step in episode", ylabel="next-state MSE", yscale="log", title="per-step MSE"
        )
        ax1.legend(fontsize=8)
        for i, curve in enumerate(r["routing_over_time"]):
            ax2.plot(curve, label=f"SLM-{i}")
        ax2.set(
            xlabel="step in episode",
            ylabel="fraction routed on",
            ylim=(-0.05, 1.05),
            title="routing",
        )
        ax2.legend(fontsize=8)
        labels = r["distance_bins"]
        for method, values in r["mse_by_distance"].items():
            points = [(i, v) for i, v in enumerate(values) if v is not None]
            ax3.plot([i for i, _ in points], [v for _, v in points], marker="o", label=method)
        ax3.set_xticks(range(len(labels)), labels)
        ax3.set(
            xlabel="recall distance (steps)", ylabel="next-state MSE", title="by recall distance"
        )
        ax3.legend(fontsize=8)
        fig.tight_layout()
        path = folder / f"eval-seed{seed}.png"
        fig.savefig(path, dpi=90)
        plt.close(fig)
        paths.append(path)
    return paths
