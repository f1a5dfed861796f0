"""``memworld sweep`` (Ray Tune) and ``memworld table``."""

from __future__ import annotations

import argparse
from pathlib import Path


def cmd_sweep(args: argparse.Namespace) -> None:
    from memworld.sweep.config import SweepConfig, load_sweep_dir
    from memworld.sweep.driver import RayMissingError, default_sweep_dir, require_ray, run_sweep
    from memworld.sweep.table import write_table

    if bool(args.config) == bool(args.resume):
        raise ValueError("pass either a sweep CONFIG.yaml or --resume DIR (not both)")
    try:
        require_ray()
    except RayMissingError as err:
        raise SystemExit(f"memworld sweep: {err}") from None
    if args.resume:
        if args.smoke or args.out:
            raise ValueError("--smoke and --out apply to a new sweep; --resume reuses DIR's")
        sweep_dir = Path(args.resume)
        config = load_sweep_dir(sweep_dir)
    else:
        config = SweepConfig.from_file(sweep_config_path(args.config), smoke=args.smoke)
        sweep_dir = Path(args.out) if args.out else default_sweep_dir(config, args.root)
        if (sweep_dir / "sweep.yaml").exists():
            raise ValueError(
                f"{sweep_dir} already holds a sweep; continue it with "
                f"`memworld sweep --resume {sweep_dir}` or pick another --out"
            )
    print(f"sweep folder: {sweep_dir}")
    summary = run_sweep(
        config,
        sweep_dir,
        address=args.address,
        max_concurrent=args.max_concurrent,
        verbose=0 if args.quiet else 1,
    )
    print(
        f"{len(summary['finished'])}/{summary['trials']} trials finished "
        f"({summary['skipped']} already done), {len(summary['failures'])} failed, "
        f"{len(summary['pending'])} not run, in {summary['wall_s']:.0f} s"
    )
    for failure in summary["failures"]:
        print(
            f"  FAILED {failure['trial']} after {failure['attempts']} attempt(s): "
            f"{failure['error']}  (traceback: {failure['traceback']})"
        )
    if summary["finished"]:
        for path in write_table(sweep_dir).values():
            print(f"wrote {path}")
    if summary["failures"] or summary["pending"]:
        raise SystemExit(
            f"memworld sweep: unfinished trials; fix the cause (the trials' config is "
            f"{sweep_dir / 'sweep.yaml'}) and run `memworld sweep --resume {sweep_dir}`"
        )


def sweep_config_path(config: str) -> Path:
    """``config`` when it is a file; else the shipped sweep config of that name
    (``memory_table`` or ``sweeps/memory_table.yaml`` from an installed package)."""
    from memworld.args import shipped_file, shipped_names

    path = Path(config)
    if path.is_file():
        return path
    name = path.name if path.suffix in (".yaml", ".yml") else f"{path.name}.yaml"
    try:
        found = shipped_file("sweeps", name)
    except FileNotFoundError:
        raise ValueError(
            f"sweep config {config!r} does not exist; give a YAML file or one of the shipped "
            f"configs by name: {shipped_names('sweeps', '.yaml')}"
        ) from None
    print(f"using the shipped sweep config {found}")
    return found


def cmd_table(args: argparse.Namespace) -> None:
    from memworld.sweep.table import write_table

    paths = write_table(args.dir, out=args.out)
    print(paths["md"].read_text(), end="")
    for path in paths.values():
        print(f"wrote {path}")


def add_subparser(sub) -> None:
    p = sub.add_parser("sweep", help="modules x tasks x seeds on Ray Tune (local by default)")
    p.add_argument(
        "config", nargs="?", help="sweep YAML file, or a shipped config's name (memory_table)"
    )
    p.add_argument("--resume", metavar="DIR", help="finish an interrupted sweep folder")
    p.add_argument("--smoke", action="store_true", help="the config's few-minute `smoke:` size")
    p.add_argument(
        "--address",
        help="join a running Ray cluster: `auto` or ray://host:port "
        "(default: start a local Ray with this machine's cores)",
    )
    p.add_argument(
        "--max-concurrent",
        type=int,
        dest="max_concurrent",
        help="most trials at a time (default: one per CPU)",
    )
    p.add_argument("--out", help="sweep folder (default: <root>/<name>-<date-time>)")
    p.add_argument("--root", default="runs/sweeps", help="parent of new sweep folders")
    p.add_argument("--quiet", action="store_true", help="no Ray Tune status output")
    p.set_defaults(func=cmd_sweep)

    p = sub.add_parser("table", help="a sweep's MMER table: Markdown, CSV and heatmap PNG")
    p.add_argument("dir", help="sweep folder written by `memworld sweep`")
    p.add_argument("--out", help="where to write table.* (default: DIR)")
    p.set_defaults(func=cmd_table)
