"""``memworld pmll stats|verify|seal|query PATH``: inspect a store from the shell.

Also runnable as ``python -m memworld.memory.persistent.cli ...``.  Encrypted stores
read their key from an environment variable (``--key-env NAME``), never from
the command line: a passphrase, or ``hex:`` followed by a raw key in hex.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=["stats", "verify", "seal", "query"])
    parser.add_argument("path", help="folder of the store")
    parser.add_argument("--key-env", help="environment variable holding the encryption key")
    parser.add_argument(
        "--seal",
        dest="seal_file",
        help="verify against this seal.json (default: PATH/seal.json if present)",
    )
    parser.add_argument("--vector", help="query: comma-separated key")
    parser.add_argument("--line", type=int, help="query: use the key of this line")
    parser.add_argument("-k", type=int, default=5, help="query: lines to show (5)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def _secret(name: str | None):
    if name is None:
        return None
    if name not in os.environ:
        raise ValueError(f"--key-env {name}: the variable is not set")
    value = os.environ[name]
    return bytes.fromhex(value[4:]) if value.startswith("hex:") else value


def run(args: argparse.Namespace) -> int:
    """Run a parsed ``pmll`` command; return the exit status (0 ok, 1 verify failed, 2 error).

    Every error is one line on stderr (``error: ...``) and exit status 2, never a traceback.
    """
    from memworld.memory.persistent.line import PMLLError

    try:
        return _run(args)
    except SystemExit as err:
        if isinstance(err.code, str):
            print(f"error: {err.code}", file=sys.stderr)
            return 2
        raise
    except (PMLLError, OSError, ValueError, TypeError, IndexError, KeyError) as err:
        message = " ".join(str(err).split()) or type(err).__name__
        print(f"error: {message}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    from memworld.memory.persistent.store import PersistentStore

    with PersistentStore(args.path, read_only=True, encryption_key=_secret(args.key_env)) as store:
        if args.action == "stats":
            stats = store.stats()
            print(
                json.dumps(stats)
                if args.json
                else "\n".join(f"{k:10s} {v}" for k, v in stats.items())
            )
            return 0
        if args.action == "seal":  # verifies first: a damaged store is an error
            seal = store.seal(os.path.join(args.path, "seal.json"))
            print(json.dumps(seal, indent=1))
            return 0
        if args.action == "verify":
            seal_file = args.seal_file or os.path.join(args.path, "seal.json")
            if args.seal_file is not None and not os.path.exists(seal_file):
                raise FileNotFoundError(f"--seal {seal_file}: no such file")
            report = store.verify(seal_file if os.path.exists(seal_file) else None)
            if args.json:
                print(json.dumps(report.__dict__))
            else:
                print(f"{'ok' if report.ok else 'FAILED'}: {report.message} ({report.lines} lines)")
            return 0 if report.ok else 1
        if (args.vector is None) == (args.line is None):
            raise ValueError("query needs exactly one of --vector or --line")
        if args.vector is not None:
            try:
                q = np.array([float(x) for x in args.vector.split(",")], np.float32)
            except ValueError:
                raise ValueError(
                    f"--vector {args.vector!r}: give {store.dim} comma-separated numbers"
                ) from None
        else:
            if not -len(store) <= args.line < len(store):
                raise IndexError(
                    f"--line {args.line}: the store has {len(store)} lines; pass 0..{len(store) - 1}"
                )
            q = store.line(args.line).key
        lines = store.query(q, args.k)
        if args.json:
            print(
                json.dumps(
                    [
                        {
                            "n": x.n,
                            "anchor": x.anchor,
                            "similarity": x.similarity,
                            "recency": x.recency,
                            "novelty": x.novelty,
                            "weight": x.weight,
                            "status": x.status,
                            "context": x.context,
                        }
                        for x in lines
                    ]
                )
            )
            return 0
        print(
            f"{'n':>8s} {'anchor':16s} {'sim':>6s} {'recency':>7s} {'novelty':>7s} "
            f"{'weight':>6s}  context"
        )
        for x in lines:
            print(
                f"{x.n:8d} {x.anchor} {x.similarity:6.3f} {x.recency:7.3f} {x.novelty:7.3f} "
                f"{x.weight:6.3f}  {json.dumps(x.context)}"
            )
        return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="memworld pmll", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
