"""``memworld leworld params|train|eval``: the LeWorld system from the command line.

The lead's ``memworld/cli.py`` calls :func:`add_subparser` on its subparsers.
A train run folder holds ``config.json``, TensorBoard events, ``checkpoints/``
(one per phase, resumable), ``baselines.pt``, ``metrics.json``, ``eval.json``
and PNG plots.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from memworld.leworld.runs import LEWORLD_TRAIN, build, eval_batches, evaluate_run

# --steps is split 1/4 pretrain, 1/2 joint, the rest refine: 4 is the least that gives
# every phase an update (1 + 2 + 1).
MIN_STEPS = 4
# `leworld train` options a resumed run takes from its config.json instead.
RESUME_FIXED = (
    "env",
    "preset",
    "steps",
    "seed",
    "codec_steps",
    "load_balance_coef",
    "refine_prediction",
    "entropy_coef",
    "request_addresses",
    "request_estimator",
    "request_pg_coef",
    "num_envs",
    "seq_len",
    "run_dir",
)


def steps_arg(text: str) -> int:
    """``--steps``: an integer >= MIN_STEPS (argparse reports the message under --steps)."""
    try:
        steps = int(text)
    except ValueError:
        steps = None
    if steps is None or steps < MIN_STEPS:
        raise argparse.ArgumentTypeError(
            f"must be an integer >= {MIN_STEPS}, got {text!r}; the updates are split 1/4 "
            f"pretrain, 1/2 joint, 1/4 refine, and {MIN_STEPS} gives each phase one (1 + 2 + 1)"
        )
    return steps


def cmd_params(args: argparse.Namespace) -> None:
    from memworld.world_models.leworld import LeWorldSystem, preset

    for name in args.preset:
        print(
            f"LeWorld parameters, preset {name!r} (reference task: 12 obs floats, 22 world-state floats)"
        )
        print(f"  {'component':34s} {'parameters':>12s}")
        for component, count in LeWorldSystem(preset(name)).parameter_table():
            print(f"  {component:34s} {count:12,d}")


def cmd_train(args: argparse.Namespace) -> None:
    import torch
    from torch.utils.tensorboard import SummaryWriter

    from memworld.args import resolve_device
    from memworld.runs import package_versions, read_run_config, run_dir, write_json
    from memworld.world_models.leworld.baselines import train_baselines
    from memworld.world_models.leworld.config import TrainingConfig, preset, to_dict
    from memworld.world_models.leworld.training import PHASES, LeWorldTrainer, latest_checkpoint

    device = resolve_device(args.device)  # before the run folder: a refused device makes none
    if args.resume:
        changed = [
            "--" + dest.replace("_", "-")
            for dest in RESUME_FIXED
            if getattr(args, dest) != args.train_parser.get_default(dest)
        ]
        if changed:
            raise ValueError(
                f"--resume continues {args.resume} with its own config.json, so "
                f"{', '.join(changed)} cannot change it: drop {'them' if len(changed) > 1 else 'it'}"
                " (--device and --no-baselines still apply), or start a new run"
            )
        path = Path(args.resume)
        config = read_run_config(path, "training", LEWORLD_TRAIN)
    else:
        steps = args.steps
        optional = {
            "codec_steps": args.codec_steps,
            "load_balance_coef": args.load_balance_coef,
            "refine_prediction": args.refine_prediction,
            "entropy_coef": args.entropy_coef,
            "request_addresses": args.request_addresses,
            "request_estimator": args.request_estimator,
            "request_pg_coef": args.request_pg_coef,
        }
        given = {k: v for k, v in optional.items() if v is not None}  # else the config default
        training = TrainingConfig(
            env_id=args.env,
            seed=args.seed,
            num_envs=args.num_envs,
            seq_len=args.seq_len,
            **given,
            phase1_steps=steps // 4,  # each >= 1 as steps >= MIN_STEPS
            phase2_steps=steps // 2,
            phase3_steps=steps - steps // 4 - steps // 2,
            log_every=max(1, steps // 40),
        )
        config = {
            "preset": args.preset,
            "system": to_dict(preset(args.preset)),
            "training": to_dict(training),
            "versions": package_versions(),
        }
        path = None  # made once the task is known to fit
    torch.manual_seed(config["training"]["seed"])
    training, source, factory = build(config)
    if path is None:
        path = (
            Path(args.run_dir)
            if args.run_dir
            else run_dir(args.env, "leworld", args.preset, args.seed, args.root)
        )
        path.mkdir(parents=True, exist_ok=True)
        write_json(path / "config.json", config)
    system = factory()
    writer = SummaryWriter(str(path / "tensorboard"))
    total = training.phase1_steps + training.phase2_steps + training.phase3_steps
    start, first = time.time(), {"done": 0}  # first: updates already done (a resumed run)
    offsets = {  # updates done before each phase's first, for the progress line
        "codec": 0,
        "pretrain": 0,
        "joint": training.phase1_steps,
        "refine": training.phase1_steps + training.phase2_steps,
    }

    def log(metrics: dict) -> None:
        done = (
            offsets[metrics["phase"]] + metrics["step"] + 1
            if metrics["phase"] in offsets
            else total
        )
        for key, value in metrics.items():  # x axis: updates done, the same after a resume
            if isinstance(value, int | float) and key != "step":
                writer.add_scalar(f"{metrics['phase']}/{key}", value, done)
        samples = (done - first["done"]) * training.num_envs * training.seq_len
        rate = samples / max(time.time() - start, 1e-9)
        mse = metrics.get("mse", metrics.get("no_memory_mse", 0.0))
        progress(
            f"[{metrics['phase']:9s}] {done:5d}/{total} updates  mse {mse:.4f}  {rate:7.0f} samples/s"
        )

    def baseline_progress(metrics: dict) -> None:
        """The no-memory and GRU world models train after LeWorld, as many updates."""
        done = metrics["step"] + 1
        for key in ("no_memory_mse", "gru_mse"):
            writer.add_scalar(f"baselines/{key}", metrics[key], done)
        if done % training.log_every == 0 or done == total:
            progress(
                f"[baselines] {done:5d}/{total} updates  no memory mse "
                f"{metrics['no_memory_mse']:.4f}  gru mse {metrics['gru_mse']:.4f}"
            )

    trainer = LeWorldTrainer(system, training, source, path, log, device)
    checkpoint = latest_checkpoint(path)
    if checkpoint is not None:
        trainer.load(checkpoint)
        print(f"resuming from {checkpoint}", file=sys.stderr)
        phase = PHASES[trainer.phase] if trainer.phase < len(PHASES) else None
        first["done"] = offsets[phase] + trainer.step if phase else total
    trainer.train()
    samples = (total - first["done"]) * training.num_envs * training.seq_len
    throughput = samples / (time.time() - start) if samples else None  # None: nothing left
    progress(None)
    baselines_path = path / "baselines.pt"
    if not baselines_path.exists() and not args.no_baselines:
        baselines = train_baselines(
            factory, source, total, training.lr, log=baseline_progress, device=device
        )
        progress(None)
        torch.save({k: m.state_dict() for k, m in baselines.items()}, baselines_path)
    write_json(
        path / "metrics.json", {"history": trainer.history, "train_samples_per_s": throughput}
    )
    plot_history(trainer.history, path / "training.png")
    writer.close()
    evaluate_run(path)
    print(f"run folder: {path}")


def progress(line: str | None) -> None:
    """Show a progress ``line`` on stderr: rewritten in place on a terminal, one line each
    when stderr is a file or a pipe (a log keeps every line, not one ``\\r``-joined line).
    ``None`` ends the in-place line."""
    tty = sys.stderr.isatty()
    if line is None:
        if tty:
            print(file=sys.stderr, flush=True)
    elif tty:
        print(f"\r{line}", end="", file=sys.stderr, flush=True)
    else:
        print(line, file=sys.stderr, flush=True)


def plot_history(history: list[dict], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    ax1.plot([m["mse"] for m in history])
    ax1.set(
        xlabel="log point",
        ylabel="next-state MSE",
        yscale="log",
        title="training (pretrain | joint | refine)",
    )
    for i in range(3):
        ax2.plot([m.get(f"usage_{i}", 0.0) for m in history], label=f"SLM-{i} usage")
    ax2.plot([m["routing_entropy"] for m in history], label="routing entropy")
    ax2.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    plt.close(fig)


def cmd_eval(args: argparse.Namespace) -> None:
    """Evaluate one or more runs (e.g. one per seed) and print one table over all of them."""
    from memworld.runs import read_run_config
    from memworld.world_models.leworld.evaluation import table

    paths = [Path(run) for run in args.run]
    configs = [read_run_config(p, "training", LEWORLD_TRAIN) for p in paths]
    envs = {config["training"]["env_id"] for config in configs}
    if len(envs) > 1:
        raise SystemExit(f"runs are on different tasks {sorted(envs)}; evaluate one task at a time")
    for config in configs:  # before any run is evaluated
        eval_batches(args.episodes, config["training"]["num_envs"])
    results: dict = {}
    for path, config in zip(paths, configs):
        for seed, result in evaluate_run(path, len(paths) == 1, config, args.episodes).items():
            results[seed if seed not in results else f"{seed}:{path.name}"] = result
    if len(paths) > 1:
        print(f"{envs.pop()}, {len(paths)} runs ({trained_with(configs)})")
        print(table(results))


def trained_with(configs: list[dict]) -> str:
    """The torch thread counts and memworld commits the runs were trained with (floats, and
    with them a thin-margin seed's pass or fail, depend on both); "?" where a run predates
    their recording."""

    def values(key: str) -> str:
        found = {str(c.get("versions", {}).get(key) or "?") for c in configs}
        if key == "memworld_commit":  # short hashes, keeping "+dirty"
            found = {v[:7] + v[40:] if len(v) >= 40 else v for v in found}
        return ", ".join(sorted(found))

    return (
        f"trained with torch threads {values('torch_threads')}; commit {values('memworld_commit')}"
    )


def add_subparser(subparsers) -> argparse.ArgumentParser:
    """Register ``leworld params|train|eval`` on an argparse subparsers object."""
    parser = subparsers.add_parser(
        "leworld", help="LeWorld: SLMs, BLM and bit memory (world model)"
    )
    sub = parser.add_subparsers(dest="leworld_command", required=True)
    params = sub.add_parser("params", help="print the parameter table")
    params.add_argument("--preset", nargs="+", default=["full", "small"], choices=["full", "small"])
    params.set_defaults(func=cmd_params)
    train = sub.add_parser(
        "train", help="train the three phases and the baselines; writes a run folder"
    )
    from memworld.args import env_arg

    train.add_argument(
        "--env",
        type=env_arg,
        default="memworld/OccludedDynamicsEasy-v0",
        help="a task with info['world_state'], e.g. OccludedDynamicsEasy or KeyDoorMedium",
    )
    train.add_argument("--preset", default="small", choices=["small", "full"])
    train.add_argument(
        "--steps",
        type=steps_arg,
        default=400,
        help=f"updates over the three phases (1/4, 1/2, 1/4; at least {MIN_STEPS})",
    )
    train.add_argument("--seed", type=int, default=0)
    train.add_argument(
        "--codec-steps",
        type=int,
        default=None,
        help="reconstruction-only updates of the bit codec before phase 1 (default 2000)",
    )
    train.add_argument(
        "--load-balance-coef",
        type=float,
        default=None,
        help="weight of the Switch load-balance loss on the routing (default 0.01)",
    )
    train.add_argument(
        "--refine-prediction",
        default=None,
        choices=["soft", "straight", "hard", "sample"],
        help="the pass phase 3 trains the prediction on (default straight: a second pass "
        "with argmax reads and the soft read's gradient; soft: soft reads; hard: argmax "
        "reads; sample: the sampled decisions' pass, one pass fewer)",
    )
    train.add_argument(
        "--entropy-coef",
        type=float,
        default=None,
        help="entropy bonus of phase 3's address policy (default 0.01)",
    )
    train.add_argument(
        "--request-addresses",
        default=None,
        choices=["hard", "sample"],
        help="addresses phase 3 judges the info request under (default hard: argmax, "
        "as at inference)",
    )
    train.add_argument(
        "--request-estimator",
        default=None,
        choices=["antithetic", "batch"],
        help="how phase 3 scores a sampled info request (default antithetic: against its "
        "mirrored sample at the same step; batch: against the batch mean)",
    )
    train.add_argument(
        "--request-pg-coef",
        type=float,
        default=None,
        help="weight of the info request's policy gradient in phase 3 (default 0.01; the "
        "request head also learns from the prediction loss through the reads)",
    )
    train.add_argument("--num-envs", type=int, default=16)
    train.add_argument("--seq-len", type=int, default=48)
    train.add_argument("--run-dir", default=None)
    train.add_argument("--root", default="runs")
    train.add_argument(
        "--resume", default=None, help="a run folder to continue from its last checkpoint"
    )
    train.add_argument("--no-baselines", action="store_true")
    train.add_argument(
        "--device", default="cpu", help="cpu, cuda, cuda:N or auto (evaluation runs on CPU)"
    )
    train.set_defaults(func=cmd_train, train_parser=train)  # its defaults: see RESUME_FIXED
    ev = sub.add_parser("eval", help="evaluate runs against the baselines and print the table")
    ev.add_argument("run", nargs="+", help="run folders (several: one table with the mean)")
    ev.add_argument(
        "--episodes",
        type=int,
        default=None,
        help="held-out episodes per run, a multiple of its num_envs (default 128); more "
        "narrow the standard errors of the request's gain and of the per-step fall",
    )
    ev.set_defaults(func=cmd_eval)
    return parser


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="memworld")
    add_subparser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
