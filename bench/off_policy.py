"""Off-policy memory: MemoryDQN and MemorySAC against their peers, in one run.

    python bench/off_policy.py --part dqn|sac|speed [--quick] [--seeds 0 1 2] [--steps N]
    python bench/off_policy_report.py FILES... [--plot PNG]   # tables and curves, seeds merged

``dqn``: MemoryDQN(gru) against SB3's DQN (an MLP, no memory) and MemoryPPO(gru)
on memworld's RepeatPreviousEasy, TMazeEasy and MemoryLengthEasy, 8 envs, the
same env steps.  ``sac``: MemorySAC(gru) against SB3's SAC on Pendulum-v1 with
the angular velocity removed (position only) and SB3's SAC on the full state,
and on OccludedDynamicsEasy (Box actions), 1 env.  Every run is evaluated at 4
points of its budget (deterministic episodes); returns are also given
normalised: 0 = the task's chance return (a random policy's for Pendulum), 1 =
its maximum (full-state SAC's final return for Pendulum).

``speed``: gradient steps/s of MemoryDQN(gru) (32 windows of 16 loss rows) and
SB3's DQN (batches of 512 transitions, the same number of rows), and env-steps/s
of both (rollouts only), in 8 alternating rounds on the same machine; the ratios
are what to read on a shared machine.  Each round also times MemoryDQN's memory
passes alone (target, burn-in, online and its backward): the most any change
outside the memory module could give; and MemoryDQN(gru) with plain Adam
(``optimizer_kwargs={}``) instead of its fused default.

Writes runs/bench/off_policy_<part>.json.  ``--quick`` checks that everything runs.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3 import DQN, SAC
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.env_util import make_vec_env as sb3_make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.vec_env import VecNormalize

from memworld.agents import MemoryDQN, MemoryPPO, MemorySAC, make_vec_env
from memworld.runs import write_results

OUT_DIR = Path("runs/bench")
DQN_TASKS = ("RepeatPreviousEasy", "TMazeEasy", "MemoryLengthEasy")
SAC_TASKS = ("PendulumPosition", "Pendulum", "OccludedDynamicsEasy")
GAMMA = 0.9  # memory tasks reward soon after the recall (see MemoryPPO's defaults)
DQN_ARGS = dict(
    learning_rate=1e-3,
    gamma=GAMMA,
    learning_starts=1000,
    train_freq=1,
    gradient_steps=1,
    target_update_interval=1000,
    exploration_fraction=0.3,
    exploration_final_eps=0.05,
)
SAC_ARGS = dict(learning_rate=1e-3, learning_starts=1000, train_freq=1, gradient_steps=1)


class PositionOnly(gym.ObservationWrapper):
    """Pendulum without its angular velocity: the (cos, sin) of the angle only."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self.observation_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)

    def observation(self, observation: np.ndarray) -> np.ndarray:
        return observation[:2].astype(np.float32)


def make_env(task: str, n_envs: int, seed: int):
    if task == "PendulumPosition":
        return sb3_make_vec_env("Pendulum-v1", n_envs=n_envs, seed=seed, wrapper_class=PositionOnly)
    if task == "Pendulum":
        return sb3_make_vec_env("Pendulum-v1", n_envs=n_envs, seed=seed)
    return make_vec_env(f"memworld/{task}-v0", n_envs=n_envs, seed=seed)


def return_range(task: str) -> tuple[float, float] | None:
    """(chance, max) return of a memworld task (None for Pendulum: measured in the run)."""
    if task.startswith("Pendulum"):
        return None
    env = gym.make(f"memworld/{task}-v0").unwrapped
    low, high = float(env.chance_return), float(env.max_return)
    env.close()
    return low, high


def build(algo: str, env, seed: int, quick: bool) -> BaseAlgorithm:
    small = dict(learning_starts=200) if quick else {}
    if algo == "memorydqn_gru":
        args = {**DQN_ARGS, **small, "batch_size": 32}
        return MemoryDQN(
            "MlpPolicy",
            env,
            seed=seed,
            device="cpu",
            seq_len=16,
            burn_in=8,
            policy_kwargs=dict(memory="gru"),
            **args,
        )
    if algo == "dqn":
        args = {**DQN_ARGS, **small, "batch_size": 512}
        return DQN("MlpPolicy", env, seed=seed, device="cpu", **args)
    if algo == "memoryppo_gru":
        return MemoryPPO(
            "MlpPolicy", env, n_steps=128, seed=seed, device="cpu", policy_kwargs=dict(memory="gru")
        )
    if algo == "memorysac_gru":
        return MemorySAC(
            "MlpPolicy",
            env,
            seed=seed,
            device="cpu",
            batch_size=32,
            seq_len=16,
            burn_in=8,
            policy_kwargs=dict(memory="gru"),
            **{**SAC_ARGS, **small},
        )
    if algo == "sac":
        return SAC(
            "MlpPolicy", env, seed=seed, device="cpu", batch_size=256, **{**SAC_ARGS, **small}
        )
    raise ValueError(
        f"algo must be one of memorydqn_gru, dqn, memoryppo_gru, memorysac_gru, sac; got {algo!r}"
    )


SINK: dict = {}  # where each finished run is written at once (a long run keeps what it did)


def save_partial(results: list[dict]) -> None:
    if SINK:
        write_results(SINK["path"], {**SINK["meta"], "results": results, "partial": True})


def run_one(
    task: str,
    algo: str,
    seed: int,
    steps: int,
    n_envs: int,
    episodes: int,
    quick: bool,
    normalize_reward: bool = False,
) -> dict:
    env = make_env(task, n_envs, seed)
    if normalize_reward:  # training rewards only (running return std); evaluation is raw
        env = VecNormalize(env, norm_obs=False, norm_reward=True, gamma=0.99)
    eval_env = make_env(task, min(episodes, 8), seed + 10_000)
    model = build(algo, env, seed, quick)
    curve, seconds = [], 0.0
    points = 2 if quick else 4
    for i in range(1, points + 1):
        start = time.perf_counter()
        model.learn(steps * i // points - model.num_timesteps, reset_num_timesteps=i == 1)
        seconds += time.perf_counter() - start
        mean, _ = evaluate_policy(model, eval_env, n_eval_episodes=episodes, deterministic=True)
        curve.append((int(model.num_timesteps), float(mean)))
    env.close()
    eval_env.close()
    print(
        f"{task:22s} {algo:15s} seed {seed}: return {curve[-1][1]:8.3f} ({seconds:.0f} s training)",
        flush=True,
    )
    return dict(
        task=task,
        algo=algo,
        seed=seed,
        n_envs=n_envs,
        curve=curve,
        final_return=curve[-1][1],
        train_seconds=seconds,
    )


def random_return(task: str, episodes: int, seed: int) -> float:
    env = make_env(task, 1, seed)
    returns, total, done = [], 0.0, 0
    env.seed(seed)
    env.reset()
    env.action_space.seed(seed)
    while done < episodes:
        _, reward, dones, _ = env.step(np.array([env.action_space.sample()]))
        total += float(reward[0])
        if dones[0]:
            returns.append(total)
            total, done = 0.0, done + 1
    return float(np.mean(returns))


def normalise(results: list[dict], ranges: dict[str, tuple[float, float]]) -> None:
    for r in results:
        low, high = ranges.get(r["task"], (None, None))
        if low is not None:
            r["normalised"] = (r["final_return"] - low) / (high - low)


def table(results: list[dict]) -> None:
    print(f"\n{'task':22s} {'algo':15s} {'seeds':>5s} {'return':>16s} {'normalised':>16s}")
    keys = sorted({(r["task"], r["algo"]) for r in results}, key=str)
    for task, algo in keys:
        rows = [r for r in results if r["task"] == task and r["algo"] == algo]
        ret = np.array([r["final_return"] for r in rows])
        norm = np.array([r.get("normalised", np.nan) for r in rows])
        print(
            f"{task:22s} {algo:15s} {len(rows):5d} {ret.mean():8.3f} ± {ret.std():5.3f} "
            f"{norm.mean():8.3f} ± {norm.std():5.3f}"
        )


def part_dqn(args) -> dict:
    results = []
    for seed in args.seeds:
        for task in args.tasks or DQN_TASKS:
            order = ["memorydqn_gru", "dqn", "memoryppo_gru"]
            for algo in order[seed % 3 :] + order[: seed % 3]:
                results.append(
                    run_one(task, algo, seed, args.steps or 20_000, 8, args.episodes, args.quick)
                )
                save_partial(results)
    normalise(results, {t: return_range(t) for t in {r["task"] for r in results}})
    table(results)
    return dict(part="dqn", results=results)


def part_sac(args) -> dict:
    results, ranges = [], {}
    tasks = args.tasks or SAC_TASKS
    for seed in args.seeds:
        for task in tasks:
            algos = ["sac"] if task == "Pendulum" else ["memorysac_gru", "sac"]
            for algo in algos if seed % 2 == 0 else algos[::-1]:
                results.append(
                    run_one(
                        task,
                        algo,
                        seed,
                        args.steps or 10_000,
                        1,
                        args.episodes,
                        args.quick,
                        args.normalize_reward,
                    )
                )
                save_partial(results)
    for task in {r["task"] for r in results}:
        found = return_range(task)
        if found is not None:
            ranges[task] = found
    if (
        "Pendulum" in tasks and "PendulumPosition" in tasks
    ):  # 0 = a random policy, 1 = full-state SAC's mean final return
        low = random_return("Pendulum", 10, 0)
        full = np.mean([r["final_return"] for r in results if r["task"] == "Pendulum"])
        ranges["Pendulum"] = ranges["PendulumPosition"] = (low, float(full))
    normalise(results, ranges)
    table(results)
    return dict(part="sac", results=results, ranges=ranges)


def memory_alone(model: MemoryDQN, steps: int) -> float:
    """Steps/s of a MemoryDQN step's memory passes alone on one batch: the target's over the
    window and the online's over the burn-in (no gradients), the online's over the rest and
    its backward.  What no change outside the memory module can make faster."""
    policy, data, b = model.policy, model.replay_buffer.sample(model.batch_size), model.burn_in
    obs, starts = data.observations, data.episode_starts
    start = time.perf_counter()
    for _ in range(steps):
        with torch.no_grad():
            policy.q_net_target.encoder(obs, data.states, starts)
            _, state = policy.q_net.encoder(obs[:b], data.states, starts[:b])
        out, _ = policy.q_net.encoder(obs[b:], state, starts[b:])
        out.sum().backward()
    policy.q_net.zero_grad(set_to_none=True)
    return steps / (time.perf_counter() - start)


def part_speed(args) -> dict:
    env_a, env_b = make_env("RepeatPreviousEasy", 8, 0), make_env("RepeatPreviousEasy", 8, 0)
    fill = 400 if args.quick else 4_000

    def memory_dqn(env, **policy_kwargs) -> MemoryDQN:
        return MemoryDQN(
            "MlpPolicy",
            env,
            seed=0,
            device="cpu",
            seq_len=16,
            burn_in=8,
            batch_size=32,
            learning_starts=10**9,
            policy_kwargs=dict(memory="gru", **policy_kwargs),
        )

    ours = memory_dqn(env_a)
    # The same with plain Adam (the optimizer before its fused default).
    plain = memory_dqn(make_env("RepeatPreviousEasy", 8, 0), optimizer_kwargs={})
    peer = DQN("MlpPolicy", env_b, seed=0, device="cpu", batch_size=512, learning_starts=10**9)
    rounds, grads, steps = (2, 5, 80) if args.quick else (8, 40, 400)
    timings = {"ours_grad": [], "peer_grad": [], "ours_env": [], "peer_env": []}
    alone, plain_adam = [], []
    for model in (ours, plain, peer):
        model.learn(fill)
    for i in range(rounds):
        for name, model in (
            (("ours", ours), ("peer", peer)) if i % 2 == 0 else (("peer", peer), ("ours", ours))
        ):
            start = time.perf_counter()
            model.train(gradient_steps=grads, batch_size=model.batch_size)
            timings[f"{name}_grad"].append(grads / (time.perf_counter() - start))
            start = time.perf_counter()
            model.learn(steps, reset_num_timesteps=False)
            timings[f"{name}_env"].append(steps / (time.perf_counter() - start))
        alone.append(memory_alone(ours, grads))
        start = time.perf_counter()
        plain.train(gradient_steps=grads, batch_size=plain.batch_size)
        plain_adam.append(grads / (time.perf_counter() - start))
    med = {k: float(np.median(v)) for k, v in timings.items()}
    ratio_grad = med["ours_grad"] / med["peer_grad"]
    ratio_env = med["ours_env"] / med["peer_env"]
    # each round's own ratio (the two ran back to back): the spread says how loaded the machine was
    paired = np.array(timings["ours_grad"]) / np.array(timings["peer_grad"])
    print(
        f"\ngradient steps/s: MemoryDQN(gru) {med['ours_grad']:.1f}, DQN {med['peer_grad']:.1f}"
        f" -> ratio {ratio_grad:.2f} (per round {paired.min():.2f}-{paired.max():.2f})"
    )
    print(
        f"MemoryDQN(gru) with plain Adam: {np.median(plain_adam):.1f} -> ratio "
        f"{np.median(plain_adam) / med['peer_grad']:.2f}"
    )
    print(
        f"the memory passes alone: {np.median(alone):.1f} steps/s -> ratio "
        f"{np.median(alone) / med['peer_grad']:.2f} (the ceiling without faster memory kernels)"
    )
    print(
        f"env steps/s (rollouts): MemoryDQN(gru) {med['ours_env']:.0f}, DQN "
        f"{med['peer_env']:.0f} -> ratio {ratio_env:.2f}"
    )
    return dict(
        part="speed",
        medians=med,
        timings=timings,
        ratio_grad=ratio_grad,
        ratio_env=ratio_env,
        ratio_grad_per_round=paired.tolist(),
        memory_alone=alone,
        plain_adam=plain_adam,
        ratio_plain_adam=float(np.median(plain_adam)) / med["peer_grad"],
        ratio_memory_alone=float(np.median(alone)) / med["peer_grad"],
        rounds=rounds,
        gradient_steps=grads,
        env_steps=steps,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("dqn", "sac", "speed"))
    parser.add_argument("--quick", action="store_true", help="a few-minute check that it runs")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=None, help="env steps per run")
    parser.add_argument("--tasks", nargs="+", default=None)
    parser.add_argument("--episodes", type=int, default=32, help="evaluation episodes")
    parser.add_argument("--out", type=Path, default=OUT_DIR, help="folder of the JSON files")
    parser.add_argument(
        "--normalize-reward",
        action="store_true",
        help="sac part: train on rewards scaled by SB3's VecNormalize (evaluation stays raw)",
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    out = args.out
    if args.part is None:
        parser.error("give --part dqn, sac or speed")
    if args.quick:
        args.seeds, args.steps, args.episodes = args.seeds[:1], args.steps or 1_200, 2
        args.tasks = args.tasks or (
            ["RepeatPreviousEasy"] if args.part == "dqn" else ["PendulumPosition"]
        )
    meta = dict(
        quick=args.quick,
        seeds=args.seeds,
        steps=args.steps,
        torch_threads=1,
        normalize_reward=args.normalize_reward,
    )
    name = f"off_policy_{args.part}{'_quick' if args.quick else ''}.json"
    SINK.update(path=out / name, meta=dict(part=args.part, **meta))
    data = {"dqn": part_dqn, "sac": part_sac, "speed": part_speed}[args.part](args)
    data.update(meta)
    print(f"wrote {write_results(out / name, data)}")


if __name__ == "__main__":
    main()
