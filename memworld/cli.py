"""The ``memworld`` command line: list, train, eval, record, bench, and more."""

from __future__ import annotations

import argparse
import math
import subprocess
import sys
from pathlib import Path

from memworld.args import check_flags

BENCHES = {
    "envs": "bench/env_throughput.py",
    "memory": "bench/memory_ops.py",
    "learning": "bench/learning.py",
    "pmll": "bench/pmll.py",
}


def cmd_list(args: argparse.Namespace) -> None:
    if args.what == "memory":
        from memworld import memory

        for name in memory.names():
            cls = memory.base._REGISTRY[name]
            doc = (cls.__doc__ or "").strip().splitlines()[0]
            print(f"{name:18s} {cls.__name__:18s} {doc}")
        return
    import gymnasium as gym

    from memworld import envs

    print(f"{'id':42s} {'what it tests':58s} {'observation':28s} {'action':16s} chance   max")
    for env_id, info in envs.REGISTERED.items():
        env = gym.make(env_id).unwrapped
        obs = f"{type(env.observation_space).__name__}{env.observation_space.shape}"
        print(
            f"{env_id:42s} {info.description[:58]:58s} {obs:28s} {str(env.action_space):16s} "
            f"{env.chance_return:+.3f} {env.max_return:+.3f}"
        )


def cmd_train(args: argparse.Namespace) -> None:
    from memworld.train import TrainConfig, check_seed, resolve_device, resume, train

    check_flags(args, steps=(1, math.inf), n_envs=(1, math.inf))
    if args.seed is not None:
        check_seed("--seed", args.seed)
    if args.device is not None:
        resolve_device(args.device)
    if args.resume:
        fixed = ("env", "algo", "memory", "n_envs", "seed", "device", "config", "run_dir")
        given = [f"--{k.replace('_', '-')}" for k in fixed if getattr(args, k) is not None]
        if given:
            raise ValueError(
                f"--resume continues {args.resume} with its own config.json, so "
                f"{', '.join(given)} cannot change it: drop {'them' if len(given) > 1 else 'it'}"
                " (--steps adds steps), or start a new run"
            )
        path = resume(args.resume, steps=args.steps, progress=not args.quiet)
        print(f"resumed run: {path}")
        return
    overrides = dict(
        env=args.env,
        algo=args.algo,
        memory=args.memory,
        steps=args.steps,
        n_envs=args.n_envs,
        seed=args.seed,
        device=args.device,
    )
    if args.config:
        config = TrainConfig.from_file(args.config, **overrides)
    else:
        config = TrainConfig(**{k: v for k, v in overrides.items() if v is not None})
    if args.memory is not None and config.memory is None:
        raise ValueError(
            f"--memory {args.memory} chooses the memory module of memoryppo, memorydqn and "
            f"memorysac; {config.algo} has its own policy ({config.memory_label}): drop --memory "
            "or pass --algo memoryppo"
        )
    path = train(config, root=args.root, run=args.run_dir, progress=not args.quiet)
    print(f"run folder: {path}")


def cmd_eval(args: argparse.Namespace) -> None:
    from memworld.train import evaluate

    check_flags(args, episodes=(1, math.inf))
    result = evaluate(args.run, episodes=args.episodes)
    print(
        f"{'env':36s} {'algo':12s} {'memory':10s} {'episodes':>8s} {'mean return':>12s} {'std':>8s}"
    )
    print(
        f"{result['env']:36s} {result['algo']:12s} {result['memory']:10s} {result['episodes']:8d} "
        f"{result['mean_return']:+12.3f} {result['std_return']:8.3f}"
    )
    print(f"wrote {Path(args.run) / 'eval.json'}")


def cmd_record(args: argparse.Namespace) -> None:
    from memworld.video.record import record

    check_flags(args, episodes=(1, math.inf), max_frames=(1, math.inf))
    paths = record(args.run, episodes=args.episodes, fmt=args.format, max_frames=args.max_frames)
    for path in paths:
        print(f"wrote {path}")


def cmd_bench(args: argparse.Namespace) -> None:
    script = Path(__file__).resolve().parent.parent / BENCHES[args.which]
    if not script.exists():
        raise SystemExit(f"benchmark script {script} is missing from this checkout")
    raise SystemExit(subprocess.call([sys.executable, str(script), *args.extra]))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="memworld", description="memory for reinforcement learning"
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("list", help="list every env id (or `list memory`: every memory module)")
    p.add_argument("what", nargs="?", default="envs", choices=["envs", "memory"])
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("train", help="train an agent into a run folder")
    p.add_argument(  # TrainConfig resolves it (a short name too) and names a typo's closest ids
        "--env", help="env id, e.g. memworld/RepeatPreviousEasy-v0 or RepeatPreviousEasy"
    )
    p.add_argument("--algo", choices=["memoryppo", "ppo", "recurrentppo", "a2c", "dqn"])
    p.add_argument("--memory", help="memory module for memoryppo (see `memworld list memory`)")
    p.add_argument("--steps", type=int, help="env steps (with --resume: steps to add)")
    p.add_argument("--n-envs", type=int, dest="n_envs")
    p.add_argument("--seed", type=int)
    p.add_argument("--device", help="cpu, cuda, cuda:N or auto")
    p.add_argument("--config", help="YAML or JSON file with TrainConfig fields")
    p.add_argument("--run-dir", dest="run_dir", help="write the run here instead of runs/...")
    p.add_argument("--root", default="runs", help="root of the run folders")
    p.add_argument("--resume", metavar="RUN", help="continue a run from its latest checkpoint")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", help="evaluate a run, writes eval.json")
    p.add_argument("run")
    p.add_argument("--episodes", type=int, default=20)
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("record", help="videos of a run's agent with its memory panel")
    p.add_argument("run")
    p.add_argument("--episodes", type=int, default=1)
    p.add_argument("--format", choices=["mp4", "gif"], default="mp4")
    p.add_argument("--max-frames", type=int, default=400, help="cut each video at this many frames")
    p.set_defaults(func=cmd_record)

    p = sub.add_parser("bench", help="run a benchmark (extra arguments go to the script)")
    p.add_argument("which", choices=sorted(BENCHES))
    p.add_argument("extra", nargs=argparse.REMAINDER)
    p.set_defaults(func=cmd_bench)

    from memworld.experiments.cli import add_subparser as add_experiment

    add_experiment(sub)
    from memworld.leworld.cli import add_subparser as add_leworld

    add_leworld(sub)
    from memworld.sweep.cli import add_subparser as add_sweep

    add_sweep(sub)
    from memworld.memory.persistent import cli as pmll_cli

    p = sub.add_parser("pmll", help="inspect a PMLL store: stats, verify, seal, query")
    pmll_cli.add_arguments(p)
    p.set_defaults(func=lambda a: sys.exit(pmll_cli.run(a)))
    return parser


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.func(args)
    except (ValueError, FileNotFoundError) as err:
        parser.exit(2, f"memworld {args.command}: error: {err}\n")


if __name__ == "__main__":
    main()
