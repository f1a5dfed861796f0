"""``memworld experiment distance|continual|forgetting|worldmodel``."""

from __future__ import annotations

import argparse
import importlib

EXPERIMENTS = {
    "distance": ("memworld.experiments.distance", "DistanceConfig"),
    "continual": ("memworld.experiments.continual", "ContinualConfig"),
    "forgetting": ("memworld.experiments.forgetting", "ForgettingConfig"),
    "worldmodel": ("memworld.experiments.worldmodel", "WorldModelConfig"),
}
# A few-second configuration of each experiment (tests, smoke runs).
TINY = {
    "distance": dict(
        modules=("gru", "mlp"),
        distances=(1, 4),
        steps=256,
        n_envs=4,
        episodes=4,
        hyperparams={"n_steps": 32},
    ),
    "continual": dict(
        task="memworld/CountRecallEasy-v0",
        modules=("gru",),
        num_tasks=2,
        steps_per_task=128,
        n_envs=4,
        episodes=4,
        hyperparams={"n_steps": 32},
    ),
    "forgetting": dict(
        steps=128,
        n_envs=4,
        hyperparams={"n_steps": 32},
        probe_envs=2,
        probe_steps=40,
        memory_kwargs={"num_slots": 8, "controller": "mlp"},
    ),
    "worldmodel": dict(
        env="OccludedDynamicsEasy",
        modules=("none", "gru"),
        steps=3,
        num_envs=4,
        seq_len=12,
        eval_batches=1,
    ),
}


def cmd_experiment(args: argparse.Namespace) -> None:
    module_name, config_name = EXPERIMENTS[args.name]
    module = importlib.import_module(module_name)
    if args.merge:
        if args.name != "distance":
            raise SystemExit(f"--merge combines distance runs only, not {args.name!r}")
        _report(module.merge(args.merge, root=args.root))
        return
    for flag, value in (
        ("--distances", args.distances),
        ("--task", args.task),
        ("--train-max-distance", args.train_max_distance),
    ):
        if value and args.name != "distance":
            raise SystemExit(f"{flag} is an option of the distance experiment, not {args.name!r}")
    for flag, value in (("--env", args.env), ("--seq-len", args.seq_len)):
        if value is not None and args.name != "worldmodel":
            raise SystemExit(f"{flag} is an option of the worldmodel experiment, not {args.name!r}")
    kwargs = dict(TINY[args.name]) if args.tiny else {}
    if args.task:
        kwargs["task"] = args.task
    if args.train_max_distance is not None:
        kwargs["train_max_distance"] = args.train_max_distance
    if args.steps is not None:
        key = "steps_per_task" if args.name == "continual" else "steps"
        kwargs["updates" if args.task == "Recall" else key] = args.steps
    if args.name == "forgetting":  # one slot-bank module at one seed per run
        for flag, values in (("--modules", args.modules), ("--seeds", args.seeds)):
            if values and len(values) > 1:
                raise ValueError(
                    f"the forgetting experiment takes one value of {flag}, got {values}; "
                    f"run it once per value (e.g. {flag} {values[0]})"
                )
        if args.modules:
            kwargs["memory"] = args.modules[0]
        if args.seeds:
            kwargs["seed"] = args.seeds[0]
    else:
        if args.modules:
            kwargs["modules"] = tuple(args.modules)
        if args.seeds:
            kwargs["seeds"] = tuple(args.seeds)
    if args.distances:
        kwargs["distances"] = tuple(args.distances)
    if args.env:
        kwargs["env"] = args.env
    if args.seq_len is not None:
        kwargs["seq_len"] = args.seq_len
    _report(module.run(getattr(module, config_name)(**kwargs), root=args.root))


def _report(out) -> None:
    print(f"experiment folder: {out}")
    for path in sorted(out.glob("*.png")) + sorted(out.glob("*.json")):
        print(f"  {path.name}")


def add_subparser(sub) -> None:
    p = sub.add_parser("experiment", help="the memory experiments (PNG plots + JSON table)")
    p.add_argument("name", choices=sorted(EXPERIMENTS))
    p.add_argument(
        "--steps",
        type=int,
        help="env steps per run (per task for continual; updates for worldmodel)",
    )
    p.add_argument(
        "--modules",
        nargs="+",
        help="memory modules ('mlp' = no memory; distance: 'all' = every registered one; "
        "worldmodel: 'none')",
    )
    p.add_argument("--seeds", nargs="+", type=int)
    p.add_argument("--distances", nargs="+", type=int, help="recall distances (distance only)")
    p.add_argument(
        "--task",
        choices=["Recall", "RepeatPrevious", "MemoryLength"],
        help="distance only: Recall (supervised; --steps = updates) or an RL task (default "
        "RepeatPrevious)",
    )
    p.add_argument(
        "--train-max-distance",
        type=int,
        dest="train_max_distance",
        help="distance --task Recall only: train on the distances up to this, evaluate at all",
    )
    p.add_argument(
        "--env", help="worldmodel only: a task with a world state (default OccludedDynamicsMedium)"
    )
    p.add_argument(
        "--seq-len", type=int, dest="seq_len", help="worldmodel only: steps per episode (64)"
    )
    p.add_argument(
        "--merge",
        nargs="+",
        metavar="DIR",
        help="distance only: one table and plot from these experiment folders, no training",
    )
    p.add_argument("--tiny", action="store_true", help="a few-second configuration")
    p.add_argument("--root", default="runs/experiments")
    p.set_defaults(func=cmd_experiment)
