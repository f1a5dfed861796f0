"""MemoryPPO with any registered memory modules on memworld's RepeatPreviousEasy.

    python bench/learning_modules.py --modules gtrxl lru fwp [--seeds 0 1 2] [--steps 50000]
                                     [--eval-episodes 50] [--memory-kwargs '{"num_layers": 2}']
                                     [--lr 1e-3]
                                     [--out runs/bench/learning_modules.json]

The same runs as bench/learning.py (8 envs, ``n_steps=128``, every other
hyper-parameter at MemoryPPO's defaults, each module's ``recommended_lr``, 50
deterministic evaluation episodes at half and at all of the budget), for modules
that bench/learning.py does not list.  Returns are +1/-1 per answer, divided by
the number of answers, so 1.0 is perfect and -0.5 is chance (4 symbols).
``--lr`` replaces the module's ``recommended_lr`` (to try another before changing it).
Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import learning  # bench/learning.py: run one (task, algorithm, seed)
import numpy as np
import torch

from memworld import memory
from memworld.agents import MemoryPPO
from memworld.runs import write_results

TASK = "memworld/RepeatPreviousEasy"


def _builder(name: str, lr: float | None, memory_kwargs: dict) -> learning.Builder:
    """bench/learning.py's MemoryPPO run; ``lr`` (None: ``recommended_lr``) as the rate."""

    def build(env, seed: int, device: str) -> MemoryPPO:
        return MemoryPPO(
            "MlpPolicy",
            env,
            learning_rate=lr,
            n_steps=learning.N_STEPS,
            seed=seed,
            device=device,
            policy_kwargs=dict(memory=name, memory_kwargs=memory_kwargs),
            torch_threads=torch.get_num_threads(),
        )

    return build


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modules", nargs="+", required=True, choices=memory.names())
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=50_000)
    parser.add_argument("--eval-episodes", type=int, default=50)
    parser.add_argument(
        "--memory-kwargs", type=json.loads, default={}, help="e.g. '{\"num_layers\": 2}'"
    )
    parser.add_argument("--lr", type=float, default=None, help="default: recommended_lr")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--out", type=Path, default=Path("runs/bench/learning_modules.json"))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    results = []
    for name in args.modules:
        algo = f"memory_ppo_{name}"
        learning.ALGOS[algo] = _builder(name, args.lr, args.memory_kwargs)
        for seed in args.seeds:
            row = learning.run_one(TASK, algo, seed, args.steps, args.eval_episodes)
            results.append(row)
            print(
                f"{name:>8s} seed {seed}: " + ", ".join(
                    f"{k} steps {v:+.3f}" for k, v in row["eval_return"].items()
                ) + f" ({row['steps_per_second']:.0f} steps/s)",
                flush=True,
            )  # fmt: skip
    final = str(args.steps)
    print(f"\n{'module':>8s} | mean at {final} | min | seeds >= 0.9")
    for name in args.modules:
        returns = [r["eval_return"][final] for r in results if r["algo"] == f"memory_ppo_{name}"]
        passed = sum(r >= 0.9 for r in returns)
        print(
            f"{name:>8s} | {np.mean(returns):+.3f} | {min(returns):+.3f} | {passed}/{len(returns)}"
        )
    report = {"task": TASK, "config": vars(args) | {"out": str(args.out)}, "runs": results}
    write_results(args.out, report)
    print(f"wrote {args.out}")
    return report


if __name__ == "__main__":
    main()
