"""The ``memworld`` command line: list, train, eval, record, demo, bench, and more."""

from __future__ import annotations

import argparse
import math
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

from memworld.args import check_flags, shipped_file

BENCHES = {
    "envs": "env_throughput.py",
    "memory": "memory_ops.py",
    "learning": "learning.py",
    "pmll": "pmll.py",
}


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Every option's help ends with its default (left out where there is none)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if (
            "%(default)" not in text
            and "default:" not in text
            and action.default not in (None, False, argparse.SUPPRESS)
            and action.option_strings
        ):
            text += " (default: %(default)s)"
        return text


def print_table(header: list[str], rows: list[list[str]], wrap: int, width: int | None = None):
    """Rows as aligned columns; column ``wrap`` takes the room the terminal has left and
    wraps its text at word boundaries (continuation lines leave the other columns blank).
    Where that room is under 24 characters, each row becomes a block instead: its first
    column, then its ``wrap`` text and its other columns, indented and wrapped."""
    width = width or shutil.get_terminal_size((120, 24)).columns
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    room = width - (sum(widths) - widths[wrap]) - 2 * (len(header) - 1)
    if room < 24:
        rest = [i for i in range(1, len(header)) if i != wrap]
        for row in rows:
            details = ", ".join(f"{header[i]} {row[i]}" for i in rest)
            print(row[0])
            for text in (row[wrap], details):
                for line in textwrap.wrap(text, width - 4, break_long_words=False):
                    print("    " + line)
        return
    widths[wrap] = min(widths[wrap], room)
    for row in [header, *rows]:
        lines = textwrap.wrap(row[wrap], widths[wrap], break_long_words=False) or [""]
        for n, line in enumerate(lines):
            cells = [line if i == wrap else (c if n == 0 else "") for i, c in enumerate(row)]
            print("  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip())


def space_label(space) -> str:
    """``Box(4,) float32``, ``Box(48, 48, 3) uint8`` or ``Discrete(4)``: short, one line."""
    if type(space).__name__ == "Box":
        return f"Box{space.shape} {space.dtype}"
    return str(space)


def plain(doc: str) -> str:
    """A docstring line without reStructuredText or Markdown markup (``x``, :class:`X`)."""
    doc = re.sub(r":\w+:`~?([^`]+)`", r"\1", doc)
    return doc.replace("`", "")


def env_rows() -> list[list[str]]:
    """One row per registered id (DistributionShift included), with its preset."""
    import gymnasium as gym

    from memworld import envs

    rows = []
    for env_id in [i for i in gym.registry if i.startswith("memworld/")]:
        env = gym.make(env_id).unwrapped
        info = envs.REGISTERED.get(env_id)
        if info is None:  # registered outside the task table (DistributionShift)
            from gymnasium.envs.registration import load_env_creator

            spec = gym.registry[env_id]
            cls = load_env_creator(spec.vector_entry_point or spec.entry_point)
            desc, preset = plain((cls.__doc__ or env_id).strip().splitlines()[0]), "-"
        else:
            desc, preset = info.description, info.preset or _bare_preset(info)
        chance = getattr(env, "chance_return", None)
        best = getattr(env, "max_return", None)
        rows.append(
            [
                env_id,
                preset,
                plain(desc),
                space_label(env.observation_space),
                space_label(env.action_space),
                "-" if chance is None else f"{chance:+.3f}",
                "-" if best is None else f"{best:+.3f}",
            ]
        )
        env.close()
    return rows


def _bare_preset(info) -> str:
    """What a bare ``<Task>-v0`` id is: the task's defaults, and the preset they equal."""
    import gymnasium as gym

    from memworld import envs

    params = gym.make(info.env_id).unwrapped.params
    for other in envs.REGISTERED.values():
        if other.task == info.task and other.preset:
            if gym.make(other.env_id).unwrapped.params == params:
                return f"defaults (= {other.preset})"
    return "defaults"


def cmd_list(args: argparse.Namespace) -> None:
    if args.what == "memory":
        from memworld import memory

        rows = []
        for name in memory.names():
            cls = memory.get(name)
            doc = (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""
            rows.append([name, cls.__name__, plain(doc)])
        print_table(["name", "class", "what it is"], rows, wrap=2, width=args.width)
        note = "Use one with `memworld train --memory NAME` or memworld.memory.make(NAME, ...)."
        print("\n" + textwrap.fill(note, args.width or shutil.get_terminal_size((120, 24)).columns))
        return
    header = ["id", "preset", "what it tests", "observation", "action", "chance", "max"]
    print_table(header, env_rows(), wrap=2, width=args.width)
    note = (
        "chance: the best return without memory; max: the best return. A bare <Task>-v0 id "
        "uses the task's defaults."
    )
    print("\n" + textwrap.fill(note, args.width or shutil.get_terminal_size((120, 24)).columns))


def cmd_train(args: argparse.Namespace) -> None:
    from memworld.args import check_seed, resolve_device
    from memworld.train import TrainConfig, resume, train

    check_flags(args, steps=(1, math.inf), n_envs=(1, math.inf), threads=(1, 1024))
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
        torch_threads=args.threads,
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
    from memworld.train import checkpoint, evaluate, load_config

    check_flags(args, episodes=(1, math.inf))
    load_config(args.run)  # a folder that is no run is refused as such first
    ckpt = checkpoint(args.run, args.checkpoint)
    print(f"checkpoint: {ckpt}")
    result = evaluate(args.run, episodes=args.episodes, checkpoint=ckpt)
    print(
        f"{'env':36s} {'algo':12s} {'memory':10s} {'episodes':>8s} {'mean return':>12s} {'std':>8s}"
    )
    print(
        f"{result['env']:36s} {result['algo']:12s} {result['memory']:10s} {result['episodes']:8d} "
        f"{result['mean_return']:+12.3f} {result['std_return']:8.3f}"
    )
    print(f"wrote {Path(args.run) / 'eval.json'}")


def cmd_record(args: argparse.Namespace) -> None:
    from memworld.train import checkpoint, load_config
    from memworld.video.record import record

    check_flags(args, episodes=(1, math.inf), max_frames=(1, math.inf))
    load_config(args.run)
    ckpt = checkpoint(args.run, args.checkpoint)
    print(f"checkpoint: {ckpt}")
    paths = record(
        args.run,
        episodes=args.episodes,
        fmt=args.format,
        max_frames=args.max_frames,
        checkpoint=ckpt,
    )
    for path in paths:
        print(f"wrote {path}")


def cmd_bench(args: argparse.Namespace) -> None:
    script = shipped_file("bench", BENCHES[args.which])
    raise SystemExit(subprocess.call([sys.executable, str(script), *args.extra]))


def cmd_demo(args: argparse.Namespace) -> None:
    from memworld import demo

    demo.run(args)


def build_parser() -> argparse.ArgumentParser:
    from memworld import __version__

    parser = argparse.ArgumentParser(
        prog="memworld",
        description="memory for reinforcement learning",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"memworld {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("list", help="list every env id (or `list memory`: every memory module)")
    p.add_argument("what", nargs="?", default="envs", choices=["envs", "memory"])
    p.add_argument("--width", type=int, help="table width (default: the terminal's)")
    p.set_defaults(func=cmd_list)

    add_train_parser(sub)

    p = sub.add_parser("eval", help="evaluate a run, writes eval.json")
    p.add_argument("run", help="a run folder of `memworld train`")
    p.add_argument("--episodes", type=int, default=20, help="evaluation episodes")
    add_checkpoint_flag(p)
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("record", help="videos of a run's agent with its memory panel")
    p.add_argument("run", help="a run folder of `memworld train`")
    p.add_argument("--episodes", type=int, default=1, help="videos, one episode each")
    p.add_argument("--format", choices=["mp4", "gif"], default="mp4", help="video format")
    p.add_argument("--max-frames", type=int, default=400, help="cut each video at this many frames")
    add_checkpoint_flag(p)
    p.set_defaults(func=cmd_record)

    from memworld import demo

    p = sub.add_parser(
        "demo", help="every task's oracle and random returns, then a memory agent trained (videos)"
    )
    demo.add_arguments(p)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("bench", help="run a benchmark (extra arguments go to the script)")
    p.add_argument("which", choices=sorted(BENCHES), help="which benchmark script")
    p.add_argument("extra", nargs=argparse.REMAINDER, help="the script's own options")
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
    _format_all(parser)
    return parser


def add_train_parser(sub) -> None:
    """``memworld train``: flags left out take TrainConfig's defaults (shown in --help)."""
    import dataclasses

    from memworld.train import ALGOS, TrainConfig

    d = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    p = sub.add_parser(
        "train",
        help="train an agent into a run folder",
        description="Train an agent into a run folder (runs/<env>/<algo>-<memory>/<time>-s<seed>).\n"
        "Flags override --config's fields, which override TrainConfig's defaults\n"
        "(docs/cli.md lists every field; examples/train_config.yaml is such a file).",
    )
    p.add_argument(  # TrainConfig resolves it (a short name too) and names a typo's closest ids
        "--env", help=f"env id or short name, e.g. RepeatPreviousEasy (default: {d['env']})"
    )
    p.add_argument("--algo", choices=ALGOS, help=f"algorithm (default: {d['algo']})")
    p.add_argument(
        "--memory",
        help=f"memoryppo's memory module, see `memworld list memory` (default: {d['memory']})",
    )
    p.add_argument(
        "--steps", type=int, help=f"env steps; with --resume, steps to add (default: {d['steps']})"
    )
    p.add_argument(
        "--n-envs", type=int, dest="n_envs", help=f"envs in the batch (default: {d['n_envs']})"
    )
    p.add_argument(
        "--seed", type=int, help=f"seed of the envs and the algorithm (default: {d['seed']})"
    )
    p.add_argument("--device", help=f"cpu, cuda, cuda:N or auto (default: {d['device']})")
    p.add_argument(
        "--threads",
        type=int,
        help=f"torch CPU threads while training (default: {d['torch_threads']}; "
        "recorded as torch_threads in config.json)",
    )
    p.add_argument("--config", help="YAML or JSON file of TrainConfig fields (docs/cli.md)")
    p.add_argument("--run-dir", dest="run_dir", help="write the run here (default: runs/...)")
    p.add_argument("--root", default="runs", help="root of the run folders")
    p.add_argument("--resume", metavar="RUN", help="continue a run from its latest checkpoint")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_train)


def add_checkpoint_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--checkpoint",
        default="best",
        metavar="best|latest|PATH",
        help="which checkpoint: the run's best (by mean training return; latest if none), "
        "its latest, or a .zip file",
    )


def _format_all(parser: argparse.ArgumentParser) -> None:
    """Give every (sub)parser, the parts' included, the formatter that shows defaults."""
    parser.formatter_class = HelpFormatter
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                _format_all(child)


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.func(args)
    except (ValueError, FileNotFoundError) as err:
        parser.exit(2, f"memworld {args.command}: error: {err}\n")


if __name__ == "__main__":
    main()
