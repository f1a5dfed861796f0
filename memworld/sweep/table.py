"""``memworld table DIR``: a sweep's results as a modules x tasks table of MMER.

MMER (POPGym's max-mean episodic reward): each run's score is its best evaluation
mean return; a table cell is the mean of that score over the cell's seeds, with a
95% confidence interval from the t-distribution (``t_{0.975, n-1} * s / sqrt(n)``).
Throughput is the training env-steps/s (evaluation time left out), averaged over
the runs of a row.  When a cell ran several hyper-parameter variants, the table
shows the variant with the best mean and the CSV lists them all.

Written next to each other: ``table.md``, ``table.csv`` and ``table.png`` (heatmap,
coloured by the score between the task's chance return (0) and its maximum (1)).
"""

from __future__ import annotations

import csv
import dataclasses
import math
from pathlib import Path

import numpy as np

from memworld.sweep.config import SEARCH_PREFIX
from memworld.sweep.folder import finished_trials, last_error, trial_folders, trial_status

ROW_NAMES = {
    "ppo": "PPO-MLP",
    "recurrentppo": "RecurrentPPO-LSTM",
    "a2c": "A2C-MLP",
    "dqn": "DQN-MLP",
}
BASELINES = ("PPO-MLP", "RecurrentPPO-LSTM")


@dataclasses.dataclass
class Cell:
    """One module x task x variant: the runs over seeds and their MMER statistics."""

    module: str
    task: str
    env: str
    variant: str
    overrides: dict
    seeds: list[int]
    mmers: list[float]
    env_steps_per_s: float
    selected: bool = False

    @property
    def n(self) -> int:
        return len(self.mmers)

    @property
    def mean(self) -> float:
        return float(np.mean(self.mmers))

    @property
    def ci95(self) -> float:
        """Half-width of the 95% t-interval of the mean (NaN with one seed)."""
        return confidence_half_width(self.mmers)


def row_label(algo: str, memory: str) -> str:
    """``PPO-MLP``, ``RecurrentPPO-LSTM``, or ``MemoryPPO-<module>``."""
    return ROW_NAMES.get(algo) or f"MemoryPPO-{memory}"


def task_label(env_id: str) -> str:
    return env_id.split("/")[-1].removesuffix("-v0")


def run_mmer(evals: list[dict]) -> float:
    """A run's MMER: the best mean return over its evaluations."""
    if not evals:
        raise ValueError("a run without evaluations has no MMER")
    return max(float(e["mean_return"]) for e in evals)


def t_quantile(q: float, df: int) -> float:
    """The ``q`` quantile of Student's t with ``df`` degrees of freedom (q in (0.5, 1)).

    Bisection on the CDF, integrated with Simpson's rule (no SciPy needed).
    """
    if df < 1 or not 0.5 < q < 1:
        raise ValueError(f"need df >= 1 and 0.5 < q < 1, got df={df}, q={q}")
    log_c = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)

    def cdf(t: float) -> float:
        x = np.linspace(0.0, t, 2001)
        pdf = np.exp(log_c - (df + 1) / 2 * np.log1p(x**2 / df))
        simpson = pdf[0] + pdf[-1] + 4 * pdf[1:-1:2].sum() + 2 * pdf[2:-1:2].sum()
        return 0.5 + simpson * (x[1] - x[0]) / 3

    low, high = 0.0, 1.0
    while cdf(high) < q:
        low, high = high, high * 2
    for _ in range(60):
        mid = (low + high) / 2
        low, high = (mid, high) if cdf(mid) < q else (low, mid)
    return (low + high) / 2


def confidence_half_width(values: list[float], confidence: float = 0.95) -> float:
    n = len(values)
    if n < 2:
        return float("nan")
    sem = float(np.std(values, ddof=1)) / math.sqrt(n)
    return t_quantile(0.5 + confidence / 2, n - 1) * sem


def aggregate(runs: list[dict]) -> list[Cell]:
    """Group finished trials (their evals.json) into cells; mark each module x task's best."""
    groups: dict[tuple[str, str, str], list[dict]] = {}
    for run in runs:
        key = (row_label(run["algo"], run["memory"]), run["env"], run.get("variant", ""))
        groups.setdefault(key, []).append(run)
    cells = [
        Cell(
            module=module,
            task=task_label(env),
            env=env,
            variant=variant,
            overrides=group[0].get("overrides", {}),
            seeds=[r["seed"] for r in group],
            mmers=[run_mmer(r["evals"]) for r in group],
            env_steps_per_s=float(np.mean([r["env_steps_per_s"] for r in group])),
        )
        for (module, env, variant), group in sorted(groups.items())
    ]
    best: dict[tuple[str, str], Cell] = {}
    for cell in cells:
        key = (cell.module, cell.task)
        if key not in best or cell.mean > best[key].mean:
            best[key] = cell
    for cell in best.values():
        cell.selected = True
    return cells


def read_runs(sweep_dir: str | Path) -> list[dict]:
    """The finished trials of a sweep's table (search trials left out)."""
    root = Path(sweep_dir)
    return [r for r in finished_trials(root) if not r.get("name", "").startswith(SEARCH_PREFIX)]


def failures(sweep_dir: str | Path) -> list[tuple[str, int, str]]:
    """(trial, failed attempts, last error line) of every unfinished trial that raised."""
    out = []
    for name in trial_folders(sweep_dir):
        if trial_status(sweep_dir, name) is None:
            error, attempts = last_error(Path(sweep_dir) / name)
            if error is not None:
                out.append((name, attempts, error))
    return out


def write_table(sweep_dir: str | Path, out: str | Path | None = None) -> dict[str, Path]:
    """Write table.md, table.csv and table.png for ``sweep_dir``; returns their paths."""
    runs = read_runs(sweep_dir)
    if not runs:
        raise ValueError(
            f'no finished trials (evals.json with "complete": true) under '
            f"{str(sweep_dir)!r}; run `memworld sweep` first"
        )
    out = Path(out or sweep_dir)
    out.mkdir(parents=True, exist_ok=True)
    cells = aggregate(runs)
    paths = {"md": out / "table.md", "csv": out / "table.csv", "png": out / "table.png"}
    paths["md"].write_text(markdown(cells, failures(sweep_dir)))
    write_csv(cells, paths["csv"])
    heatmap(cells, paths["png"])
    return paths


def _axes(cells: list[Cell]) -> tuple[list[str], list[str], dict[tuple[str, str], Cell]]:
    chosen = {(c.module, c.task): c for c in cells if c.selected}
    modules = sorted(
        {c.module for c in cells},
        key=lambda m: (BASELINES.index(m) if m in BASELINES else len(BASELINES), m),
    )
    tasks = sorted({c.task for c in cells})
    return modules, tasks, chosen


def _cell_text(cell: Cell | None, max_n: int) -> str:
    if cell is None:
        return "–"
    text = f"{cell.mean:.3f}" if cell.n < 2 else f"{cell.mean:.3f} ± {cell.ci95:.3f}"
    return text if cell.n == max_n else f"{text} (n={cell.n})"


def markdown(cells: list[Cell], failed: list[tuple[str, int, str]] = ()) -> str:
    modules, tasks, chosen = _axes(cells)
    max_n = max(c.n for c in cells)
    lines = [
        f"MMER (mean over {max_n} seeds of each run's best evaluation return; ± is the "
        "95% t-interval half-width) and training env-steps/s.",
        "",
        "| module | " + " | ".join(tasks) + " | env-steps/s |",
        "|---" * (len(tasks) + 2) + "|",
    ]
    for module in modules:
        row = [_cell_text(chosen.get((module, task)), max_n) for task in tasks]
        sps = np.mean([c.env_steps_per_s for c in cells if c.module == module and c.selected])
        lines.append(f"| {module} | " + " | ".join(row) + f" | {sps:,.0f} |")
    shown = sorted(
        (c.module, c.task, c.variant, _overrides_text(c.overrides))
        for c in chosen.values()
        if c.variant
    )
    if shown:
        lines += ["", "Hyper-parameters shown (the best mean of each cell's variants):", ""]
        lines += [
            f"- {module} / {task}: `{variant}` {text}" for module, task, variant, text in shown
        ]
    if failed:
        lines += ["", f"Failed trials ({len(failed)}), not in the table:", ""]
        lines += [f"- `{name}` ({n} attempts): {error}" for name, n, error in failed]
    return "\n".join(lines) + "\n"


def _overrides_text(overrides: dict) -> str:
    return ", ".join(
        f"{key}={value:.4g}" if isinstance(value, float) else f"{key}={value}"
        for key, value in sorted(overrides.items())
    )


def write_csv(cells: list[Cell], path: Path) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(
            [
                "module",
                "task",
                "env",
                "variant",
                "selected",
                "n",
                "mmer_mean",
                "ci95_low",
                "ci95_high",
                "env_steps_per_s",
                "seeds",
                "mmers",
            ]
        )
        for c in cells:
            writer.writerow(
                [
                    c.module,
                    c.task,
                    c.env,
                    c.variant,
                    int(c.selected),
                    c.n,
                    f"{c.mean:.6g}",
                    f"{c.mean - c.ci95:.6g}",
                    f"{c.mean + c.ci95:.6g}",
                    f"{c.env_steps_per_s:.1f}",
                    " ".join(map(str, c.seeds)),
                    " ".join(f"{m:.6g}" for m in c.mmers),
                ]
            )


def _return_range(env_id: str) -> tuple[float, float] | None:
    """(chance, max) return of a memworld task, or None when it does not say."""
    try:
        import gymnasium as gym

        from memworld import envs  # noqa: F401  (registers memworld ids)

        env = gym.make(env_id).unwrapped
        low, high = float(env.chance_return), float(env.max_return)
        env.close()
        return (low, high) if high > low else None
    except Exception:  # a table must not fail on an env it cannot rebuild
        return None


def heatmap(cells: list[Cell], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    modules, tasks, chosen = _axes(cells)
    score = np.full((len(modules), len(tasks)), np.nan)
    for j, task in enumerate(tasks):
        column = [chosen.get((m, task)) for m in modules]
        env = next(c.env for c in column if c is not None)
        low, high = _return_range(env) or (
            min(c.mean for c in column if c),
            max(c.mean for c in column if c) + 1e-9,
        )
        for i, cell in enumerate(column):
            if cell is not None:
                score[i, j] = (cell.mean - low) / (high - low)
    fig, ax = plt.subplots(figsize=(1.6 * len(tasks) + 2.5, 0.55 * len(modules) + 1.5))
    image = ax.imshow(score, cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto")
    ax.set_xticks(range(len(tasks)), tasks, rotation=30, ha="right")
    ax.set_yticks(range(len(modules)), modules)
    for i, module in enumerate(modules):
        for j, task in enumerate(tasks):
            cell = chosen.get((module, task))
            if cell is not None:
                ci = "" if cell.n < 2 else f"\n±{cell.ci95:.2f}"
                ax.text(
                    j,
                    i,
                    f"{cell.mean:.2f}{ci}",
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if score[i, j] < 0.6 else "black",
                )
    fig.colorbar(image, ax=ax, label="0 = chance, 1 = max return")
    ax.set_title("MMER over seeds")
    fig.tight_layout()
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
