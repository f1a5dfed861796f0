"""Tables and curves of bench/off_policy.py's learning runs, merged over its JSON files.

    python bench/off_policy_report.py runs/bench/a/off_policy_dqn.json runs/bench/b/off_policy_dqn.json
    python bench/off_policy_report.py FILES... --plot runs/bench/off_policy.png

Prints one markdown table per part: each (task, algorithm) with its seeds' final
returns, their mean, and the same normalised (0 = the task's chance return, 1 =
its maximum; for Pendulum the range the sac part stored: a random policy's
return and full-state SAC's mean final return).  Runs written by several
invocations (seeds run apart, a task added later) are merged; a (task,
algorithm, seed) given twice keeps the last file's run.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from off_policy import return_range  # run as a script: bench/ is on sys.path


def load(files: list[Path]) -> list[dict]:
    """Every run of ``files``, each with ``normalised`` where its task's range is known."""
    runs: dict[tuple, dict] = {}
    known: dict[str, tuple[float, float] | None] = {}
    for file in files:
        data = json.loads(file.read_text())
        ranges = {task: tuple(r) for task, r in data.get("ranges", {}).items()}
        for run in data["results"]:
            task = run["task"]
            if task not in ranges and task not in known:
                known[task] = return_range(task)
            low_high = ranges.get(task) or known.get(task)
            run = dict(run, steps=data.get("steps"))
            if low_high is not None:
                low, high = low_high
                run["normalised"] = (run["final_return"] - low) / (high - low)
            runs[(task, run["algo"], run["seed"])] = run
    return list(runs.values())


def markdown(runs: list[dict]) -> str:
    seeds = sorted({r["seed"] for r in runs})
    head = " / ".join(f"s{s}" for s in seeds)
    lines = [
        f"| task | algorithm | env steps | return ({head}) | mean | normalised ({head}) | mean |",
        "|---|---|---|---|---|---|---|",
    ]
    for task, algo in sorted({(r["task"], r["algo"]) for r in runs}):
        rows = {r["seed"]: r for r in runs if r["task"] == task and r["algo"] == algo}
        ret = [rows[s]["final_return"] if s in rows else np.nan for s in seeds]
        norm = [rows[s].get("normalised", np.nan) if s in rows else np.nan for s in seeds]
        steps = sorted({r["curve"][-1][0] for r in rows.values()})
        lines.append(
            f"| {task} | {algo} | {'/'.join(str(s) for s in steps)} | "
            f"{' / '.join(fmt(x) for x in ret)} | {fmt(mean(ret))} | "
            f"{' / '.join(fmt(x, 2) for x in norm)} | **{fmt(mean(norm), 2)}** |"
        )
    return "\n".join(lines)


def mean(values: list[float]) -> float:
    """Mean of the seeds that have a value (NaN if none)."""
    finite = [v for v in values if np.isfinite(v)]
    return float(np.mean(finite)) if finite else float("nan")


def fmt(x: float, digits: int | None = None) -> str:
    if not np.isfinite(x):
        return "-"
    if digits is None:
        digits = 0 if abs(x) >= 100 else 3
    return f"{x:.{digits}f}"


def plot(runs: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = sorted({r["task"] for r in runs})
    fig, axes = plt.subplots(1, max(1, len(tasks)), figsize=(4 * max(1, len(tasks)), 3.2))
    for ax, task in zip(np.atleast_1d(axes), tasks):
        for algo in sorted({r["algo"] for r in runs if r["task"] == task}):
            curves = [r["curve"] for r in runs if r["task"] == task and r["algo"] == algo]
            x = [p[0] for p in curves[0]]
            same = [[p[1] for p in c] for c in curves if len(c) == len(x)]
            ax.plot(x, np.mean(same, axis=0), marker="o", label=f"{algo} ({len(same)} seeds)")
        ax.set_title(task)
        ax.set_xlabel("env steps")
        ax.legend(fontsize=7)
    np.atleast_1d(axes)[0].set_ylabel("evaluation return (mean of seeds)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    print(f"wrote {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", type=Path, nargs="+", help="off_policy_<part>.json files")
    parser.add_argument("--plot", type=Path, default=None, help="also draw the curves here")
    args = parser.parse_args()
    runs = load(args.files)
    print(markdown(runs))
    if args.plot is not None:
        plot(runs, args.plot)


if __name__ == "__main__":
    main()
