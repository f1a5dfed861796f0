"""LeWorld throughput on CPU (or ``--device cuda``): training samples/s of the small and full presets, and the
memory's write / hard read / soft read time per step, and how much of one system step's
forward pass depends on the observation alone (the write, the SLMs' observation and
pointer inputs, the BLM's observation input: what a pass over the whole sequence could
compute for every step at once), against a GRU world model of
the same parameter count (the named peer) on the same batches. Also the no-memory
baseline's update, batched (:func:`no_memory_loss`, as ``leworld train`` runs it) and
stepped through the sequence with every read masked out (what it computes).

    python bench/leworld.py [--updates 3] [--num-envs 8] [--seq-len 32] [--env ID] [--device cpu|cuda]

Prints a table and writes runs/bench/leworld.json.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from timing import count_torch_calls, interleaved_medians, mean_seconds, process_clock

from memworld.runs import write_results
from memworld.world_models.leworld import LeWorldSystem, TrainingConfig, preset
from memworld.world_models.leworld.baselines import GRUWorldModel, no_memory_loss
from memworld.world_models.leworld.data import RolloutSource
from memworld.world_models.leworld.rollout import masked_mean, run_sequence
from memworld.world_models.leworld.slm import pointer_features
from memworld.world_models.leworld.training import LeWorldTrainer

ENV = "memworld/OccludedDynamicsEasy-v0"


def time_updates(trainer: LeWorldTrainer, phase: int, updates: int) -> float:
    trainer.phase = phase
    trainer.optimizer = trainer._make_optimizer()
    return mean_seconds(trainer.update, trainer.device, updates)


def time_loss(loss_fn, model: torch.nn.Module, updates: int, device) -> float:
    """Seconds per Adam update of ``model`` on ``loss_fn()`` (after one warm-up update)."""
    opt = torch.optim.Adam(model.parameters())

    def update() -> None:
        loss = loss_fn()
        opt.zero_grad()
        loss.backward()
        opt.step()

    return mean_seconds(update, device, updates)


def peer_rows(name: str, params: int, source: RolloutSource, updates: int, device) -> dict:
    """Samples/s of the GRU world model of ``params`` parameters and of the no-memory
    baseline (batched, and stepped with every read masked out), on one batch."""
    batch = source.batch().to(device)
    samples = batch.valid.numel()
    gru = GRUWorldModel.matching(source.obs_dim, source.state_dim, params).to(device)
    blind = LeWorldSystem(preset(name), source.obs_dim, source.state_dim).to(device)
    off = torch.zeros(batch.valid.shape[1], blind.num_slms, device=device)
    runs = {
        "gru": (gru, lambda: masked_mean(gru.step_loss(batch), batch.valid)),
        "no_memory": (blind, lambda: masked_mean(no_memory_loss(blind, batch), batch.valid)),
        "no_memory_stepped": (
            blind,
            lambda: run_sequence(blind, batch, "soft", mask_override=off).mean_loss(),
        ),
    }
    return {
        f"{label}_samples_per_s": samples / time_loss(loss_fn, model, updates, device)
        for label, (model, loss_fn) in runs.items()
    }


def memory_ops(system: LeWorldSystem, batch_size: int, repeats: int = 50) -> dict[str, float]:
    mem = system.memory
    device = next(system.parameters()).device
    state = mem.initial_state(batch_size, device)
    obs = torch.rand(batch_size, system.obs_dim, device=device)
    high, low = torch.randn(2, batch_size, 256, device=device)
    address = lambda: torch.randint(0, 65536, (batch_size,), device=device)  # noqa: E731
    out = {}
    with torch.no_grad():
        for name, fn in {
            "write_ms": lambda: mem.write(state, mem.encode(obs), address()),
            "hard_read_ms": lambda: mem.read_hard(state, address()),
            "soft_read_ms": lambda: mem.read_soft(state, high, low),
        }.items():
            out[name] = 1000 * mean_seconds(fn, device, repeats)
    return out


def step_split(system: LeWorldSystem, batch_size: int, repeats: int = 31) -> dict[str, float]:
    """Forward time (no grad) of one system step, of its write (encode, store, decode the
    word) and of its other inputs that depend on the observation alone (the SLMs' inputs
    of the current and past observation and of the pointer, the BLM's observation input);
    medians of interleaved rounds, process CPU time with one torch thread; and the torch
    calls (top-level aten operations) one step issues."""
    device = next(system.parameters()).device
    slms, blm, config = system.slms, system.blm, system.config
    obs = torch.rand(batch_size, system.obs_dim, device=device)
    with torch.no_grad():
        _, state = system.step(system.initial_state(batch_size, device), obs)

        def fresh() -> dict:  # a write replaces the decoded table: keep the timed state's
            return {**state, "memory": dict(state["memory"])}

        fns = {
            "step": lambda: system.step(fresh(), obs),
            "write": lambda: system.write(fresh(), obs),
            "obs_inputs": lambda: (
                slms.state_in(state["past_obs"]),
                slms.state_in(obs),
                pointer_features(state["pointer"], config.memory, config.slm.pointer_freqs),
                blm.obs_in(obs),
            ),
        }
        med = interleaved_medians(fns, device, repeats, process_clock(device))
        calls = count_torch_calls(lambda: system.step(fresh(), obs))
    return {"forward_step_calls": calls} | {
        f"forward_{name}_ms": 1000 * seconds for name, seconds in med.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--updates", type=int, default=3)
    parser.add_argument("--num-envs", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=32)
    parser.add_argument("--env", default=ENV, help="a world-state task id or short name")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--out", default="runs/bench/leworld.json")
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    source = RolloutSource(args.env, args.num_envs, args.seq_len, seed=0)
    samples = args.num_envs * args.seq_len
    rows = []
    for name in ("small", "full"):
        system = LeWorldSystem(preset(name), source.obs_dim, source.state_dim)
        params = sum(p.numel() for p in system.parameters())
        trainer = LeWorldTrainer(
            system,
            TrainingConfig(env_id=source.env_id, num_envs=args.num_envs, seq_len=args.seq_len),
            source,
            device=device,
        )
        row = {"preset": name, "params": params}
        for phase, label in enumerate(("pretrain", "joint", "refine")):
            row[f"{label}_samples_per_s"] = samples / time_updates(trainer, phase, args.updates)
        row.update(peer_rows(name, params, source, args.updates, device))
        row.update(memory_ops(system, args.num_envs))
        row.update(step_split(system, args.num_envs))
        rows.append(row)
    keys = list(rows[0])
    print(" ".join(f"{k:>22s}" for k in keys))
    for row in rows:
        print(
            " ".join(
                f"{row[k]:>22}" if isinstance(row[k], str | int) else f"{row[k]:22.2f}"
                for k in keys
            )
        )
    for row in rows:
        gru = row["gru_samples_per_s"]
        ratios = ", ".join(
            f"{label} {row[f'{label}_samples_per_s'] / gru:.2f}x"
            for label in ("pretrain", "joint", "refine", "no_memory")
        )
        speedup = row["no_memory_samples_per_s"] / row["no_memory_stepped_samples_per_s"]
        print(
            f"{row['preset']}: samples/s over the GRU's: {ratios}; no-memory baseline batched "
            f"over stepped: {speedup:.1f}x"
        )
        step, write, inputs = (row[f"forward_{k}_ms"] for k in ("step", "write", "obs_inputs"))
        print(
            f"{row['preset']}: one step's forward {step:.2f} ms "
            f"({row['forward_step_calls']} torch calls), of which the write "
            f"{write:.2f} ms ({write / step:.0%}) and the other observation-only inputs "
            f"{inputs:.2f} ms ({inputs / step:.0%}); the rest depends on the previous step"
        )
    out = Path(args.out)
    write_results(
        out,
        {
            "env": source.env_id,
            "num_envs": args.num_envs,
            "seq_len": args.seq_len,
            "threads": torch.get_num_threads(),
            "device": str(device),
            "rows": rows,
        },
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
