"""Learning side by side: PPO, RecurrentPPO and MemoryPPO on memory tasks, in one run.

    python bench/learning.py [--quick] [--seeds 0 1 2] [--steps 50000] [--algos ...] [--tasks ...]
                             [--device cpu|cuda]

On POPGym's RepeatPreviousEasy and memworld's matching RepeatPreviousEasy, with
8 envs and ``n_steps=128`` and every algorithm's default hyper-parameters
otherwise: SB3 PPO (MLP), sb3-contrib RecurrentPPO (MlpLstmPolicy, LSTM 256),
and MemoryPPO with lstm (256, the same size as RecurrentPPO's), gru, slot and
dual memory.  For each seed it reports training env-steps/s (evaluation
excluded), by the wall clock and by the process's CPU time (one torch thread,
so the CPU-time rate leaves out time spent waiting for a core on a shared
machine), and the mean return of 50 deterministic evaluation episodes at half
and at all of the step budget.  Prints a table and writes
runs/bench/learning.json and runs/bench/learning.png.

``--quick`` checks that everything runs: 1 seed, 4,096 steps, 10 episodes.
``--device`` puts every algorithm's networks on the same device (default cpu).
"""

from __future__ import annotations

import argparse
import platform
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from stable_baselines3 import PPO
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.vec_env import VecEnv

from memworld import memory
from memworld.agents import MemoryPPO, make_vec_env
from memworld.runs import write_results

OUT_DIR = Path("runs/bench")
N_ENVS, N_STEPS = 8, 128
TASKS = {
    "popgym/RepeatPreviousEasy": "popgym-RepeatPreviousEasy-v0",
    "memworld/RepeatPreviousEasy": "memworld/RepeatPreviousEasy-v0",
}


Builder = Callable[[VecEnv, int, str], BaseAlgorithm]


def _memory_ppo(
    name: str, policy_extra: dict | None = None, algo_extra: dict | None = None, **memory_kwargs
) -> Builder:
    def build(env: VecEnv, seed: int, device: str) -> BaseAlgorithm:
        if name not in memory.names():
            raise LookupError(f"memory {name!r} is not registered (have {memory.names()})")
        policy_kwargs = dict(memory=name, memory_kwargs=memory_kwargs, **(policy_extra or {}))
        return MemoryPPO(
            "MlpPolicy",
            env,
            n_steps=N_STEPS,
            seed=seed,
            device=device,
            policy_kwargs=policy_kwargs,
            torch_threads=torch.get_num_threads(),  # --threads, as for the other algorithms
            **(algo_extra or {}),
        )

    return build


def _recurrent_ppo(env: VecEnv, seed: int, device: str) -> BaseAlgorithm:
    from sb3_contrib import RecurrentPPO

    return RecurrentPPO("MlpLstmPolicy", env, n_steps=N_STEPS, seed=seed, device=device)


def _ppo(env: VecEnv, seed: int, device: str) -> BaseAlgorithm:
    return PPO("MlpPolicy", env, n_steps=N_STEPS, seed=seed, device=device)


ALGOS: dict[str, Builder] = {
    "ppo_mlp": _ppo,
    "recurrent_ppo_lstm": _recurrent_ppo,
    "memory_ppo_lstm": _memory_ppo("lstm", hidden_dim=256),
    "memory_ppo_gru": _memory_ppo("gru"),
    "memory_ppo_slot": _memory_ppo("slot"),
    "memory_ppo_dual": _memory_ppo("dual"),
    # Raw value targets, MemoryPPO's default before value normalisation (docs/memoryppo.md).
    "memory_ppo_lstm_raw": _memory_ppo("lstm", dict(value_norm=None), hidden_dim=256),
    "memory_ppo_gru_raw": _memory_ppo("gru", dict(value_norm=None)),
    # A KL limit per update (tried as a default for docs/memoryppo.md, not kept).
    "memory_ppo_lstm_kl01": _memory_ppo("lstm", algo_extra=dict(target_kl=0.01), hidden_dim=256),
    "memory_ppo_gru_kl01": _memory_ppo("gru", algo_extra=dict(target_kl=0.01)),
}
PEER, OURS = "recurrent_ppo_lstm", "memory_ppo_lstm"


def make_env(env_id: str, n_envs: int, seed: int) -> VecEnv:
    if env_id.startswith("popgym-"):
        import popgym  # noqa: F401  (registers popgym-* ids with Gymnasium)
    return make_vec_env(env_id, n_envs=n_envs, seed=seed)


class CurveCallback(BaseCallback):
    """Records (env steps, mean return of the last 20 finished training episodes) per rollout."""

    def __init__(self) -> None:
        super().__init__()
        self.curve: list[tuple[int, float]] = []

    def _on_step(self) -> bool:
        return True

    def _on_rollout_end(self) -> None:
        episodes = list(self.model.ep_info_buffer)[-20:]
        if episodes:
            self.curve.append((self.num_timesteps, float(np.mean([e["r"] for e in episodes]))))


def run_one(
    task: str, algo: str, seed: int, steps: int, eval_episodes: int, device: str = "cpu"
) -> dict:
    env_id = TASKS[task]
    env = make_env(env_id, N_ENVS, seed)
    eval_env = make_env(env_id, 10, seed + 10_000)
    model = ALGOS[algo](env, seed, device)
    curve = CurveCallback()
    train_seconds, cpu_seconds, returns = 0.0, 0.0, {}
    for i, checkpoint in enumerate((steps // 2, steps)):
        start, cpu_start = time.perf_counter(), time.process_time()
        model.learn(checkpoint - model.num_timesteps, callback=curve, reset_num_timesteps=i == 0)
        train_seconds += time.perf_counter() - start
        cpu_seconds += time.process_time() - cpu_start
        mean, _ = evaluate_policy(
            model, eval_env, n_eval_episodes=eval_episodes, deterministic=True
        )
        returns[str(checkpoint)] = float(mean)
    env.close()
    eval_env.close()
    return {
        "task": task,
        "algo": algo,
        "seed": seed,
        "env_steps": int(model.num_timesteps),
        "train_seconds": train_seconds,
        "steps_per_second": model.num_timesteps / train_seconds,
        # Process CPU time: one torch thread, so on a shared machine this leaves out the
        # time the run waited for a core (the wall-clock rate above does not).
        "train_cpu_seconds": cpu_seconds,
        "cpu_steps_per_second": model.num_timesteps / cpu_seconds,
        "torch_threads": getattr(model, "torch_threads", torch.get_num_threads()),
        "eval_return": returns,
        "curve": curve.curve,
    }


def summarise(results: list[dict], steps: int) -> list[dict]:
    rows = []
    for task in dict.fromkeys(r["task"] for r in results):
        peer = [r["steps_per_second"] for r in results if r["task"] == task and r["algo"] == PEER]
        peer_cpu = [
            r.get("cpu_steps_per_second", np.nan)
            for r in results
            if r["task"] == task and r["algo"] == PEER
        ]
        for algo in dict.fromkeys(r["algo"] for r in results if r["task"] == task):
            runs = [r for r in results if r["task"] == task and r["algo"] == algo]
            sps = float(np.mean([r["steps_per_second"] for r in runs]))
            cpu_sps = float(np.mean([r.get("cpu_steps_per_second", np.nan) for r in runs]))
            half, full = ([r["eval_return"][str(k)] for r in runs] for k in (steps // 2, steps))
            rows.append(
                {
                    "task": task,
                    "algo": algo,
                    "seeds": len(runs),
                    "steps_per_second": sps,
                    "speedup_vs_recurrent_ppo": sps / float(np.mean(peer)) if peer else None,
                    "cpu_steps_per_second": cpu_sps,
                    "cpu_speedup_vs_recurrent_ppo": (
                        cpu_sps / float(np.mean(peer_cpu)) if peer_cpu else None
                    ),
                    "return_half": (float(np.mean(half)), float(np.std(half))),
                    "return_full": (float(np.mean(full)), float(np.std(full))),
                }
            )
    return rows


def print_table(rows: list[dict], steps: int) -> None:
    half, full = f"return@{steps // 2 // 1000}k", f"return@{steps // 1000}k"
    print(
        f"| task | algo | seeds | env-steps/s | x RecurrentPPO | env-steps per CPU s | "
        f"x RecurrentPPO (CPU) | {half} | {full} |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        speedup, cpu_speedup = (
            "-" if r[key] is None else f"{r[key]:.1f}"
            for key in ("speedup_vs_recurrent_ppo", "cpu_speedup_vs_recurrent_ppo")
        )
        print(
            f"| {r['task']} | {r['algo']} | {r['seeds']} | {r['steps_per_second']:.0f} | {speedup} | "
            f"{r['cpu_steps_per_second']:.0f} | {cpu_speedup} | "
            f"{r['return_half'][0]:.2f} ± {r['return_half'][1]:.2f} | "
            f"{r['return_full'][0]:.2f} ± {r['return_full'][1]:.2f} |"
        )


def plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(dict.fromkeys(r["task"] for r in results))
    fig, axes = plt.subplots(1, len(tasks), figsize=(6 * len(tasks), 4), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        for algo in dict.fromkeys(r["algo"] for r in results if r["task"] == task):
            curves = [r["curve"] for r in results if r["task"] == task and r["algo"] == algo]
            curves = [c for c in curves if c]
            if not curves:
                continue
            length = min(len(c) for c in curves)
            x = np.array([p[0] for p in curves[0][:length]])
            y = np.array([[p[1] for p in c[:length]] for c in curves])
            ax.plot(x, y.mean(axis=0), label=algo)
            ax.fill_between(x, y.min(axis=0), y.max(axis=0), alpha=0.15)
        ax.set_title(task)
        ax.set_xlabel("env steps")
        ax.set_ylabel("training episode return")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="1 seed, 4,096 steps, 10 eval episodes"
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=50_000)
    parser.add_argument("--eval-episodes", type=int, default=50)
    parser.add_argument(
        "--algos",
        nargs="+",
        default=[a for a in ALGOS if not a.endswith("_raw")],
        choices=list(ALGOS),
        help="default: all but the *_raw variants (MemoryPPO without value normalisation)",
    )
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    # One torch thread: these networks are small, and on a shared 2-core machine a second
    # thread mostly waits (measured: 2 threads ran MemoryPPO 10x slower under load).
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda, for every algorithm")
    parser.add_argument("--out", type=Path, default=OUT_DIR)
    args = parser.parse_args()
    if args.quick:
        args.seeds, args.steps, args.eval_episodes = args.seeds[:1], 4096, 10
    torch.set_num_threads(args.threads)
    print(f"torch threads: {torch.get_num_threads()} (every algorithm; MemoryPPO torch_threads)")
    args.out.mkdir(parents=True, exist_ok=True)

    results, skipped = [], []
    for task in args.tasks:
        for algo in args.algos:
            for seed in args.seeds:
                try:
                    result = run_one(task, algo, seed, args.steps, args.eval_episodes, args.device)
                except LookupError as err:  # a memory module not written yet
                    skipped.append(f"{algo}: {err}")
                    print(f"skip {task} {algo}: {err}")
                    break
                results.append(result)
                print(
                    f"{task:30s} {algo:20s} seed {seed}: {result['steps_per_second']:7.0f} steps/s, "
                    f"returns {result['eval_return']}",
                    flush=True,
                )
    rows = summarise(results, args.steps)
    print()
    print_table(rows, args.steps)
    report = {
        "config": {
            "n_envs": N_ENVS,
            "n_steps": N_STEPS,
            "steps": args.steps,
            "seeds": args.seeds,
            "eval_episodes": args.eval_episodes,
            "torch_threads": args.threads,
            "device": args.device,
            "quick": args.quick,
        },
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor(),
            "torch": torch.__version__,
        },
        "summary": rows,
        "runs": results,
        "skipped": skipped,
    }
    name = "learning_quick" if args.quick else "learning"
    write_results(args.out / f"{name}.json", report)
    plot(results, args.out / f"{name}.png")
    print(f"\nwrote {args.out / f'{name}.json'} and {args.out / f'{name}.png'}")


if __name__ == "__main__":
    main()
