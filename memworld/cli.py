"""The ``memworld`` command line."""

from __future__ import annotations

import argparse

import gymnasium as gym


def cmd_list(args: argparse.Namespace) -> None:
    import envs

    for env_id, info in envs.REGISTERED.items():
        env = gym.make(env_id).unwrapped
        print(
            f"{env_id:45s} {info.description:55s} obs={env.observation_space} "
            f"act={env.action_space} chance={env.chance_return:+.3f} max={env.max_return:+.3f}"
        )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="memworld", description="memory for reinforcement learning"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("list", help="list every env id")
    p.set_defaults(func=cmd_list)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
