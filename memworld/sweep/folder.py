"""What a sweep folder holds: which trials finished, failed, or were cut short.

Each trial folder (an ordinary run folder) gets ``trial.json`` (the Trial) when it
starts, ``evals.json`` after every evaluation (``"complete": true`` once training
ended) and, for every failed attempt, a traceback appended to ``error.txt``.  These
files, not Ray Tune's experiment state, decide what a resumed sweep runs again.
"""

from __future__ import annotations

from pathlib import Path

from memworld.runs import read_json
from memworld.sweep.config import SEARCH_PREFIX, Trial

EVALS_FILE = "evals.json"  # the evaluation curve; ``"complete": true`` marks a finished trial
ERROR_FILE = "error.txt"  # tracebacks of failed attempts
TRIAL_FILE = "trial.json"  # the Trial, written when it starts (re-runs an interrupted search)


def trial_status(sweep_dir: str | Path, trial: Trial | str) -> dict | None:
    """The trial's evals.json if it finished (``"complete": true``), else None."""
    name = trial if isinstance(trial, str) else trial.name
    path = Path(sweep_dir) / name / EVALS_FILE
    if not path.exists():
        return None
    data = read_json(path)
    return data if data.get("complete") else None


def pending_trials(sweep_dir: str | Path, trials: list[Trial]) -> list[Trial]:
    """``trials`` less those already finished in ``sweep_dir`` (what a resume runs)."""
    return [t for t in trials if trial_status(sweep_dir, t) is None]


def finished_trials(folder: str | Path) -> list[dict]:
    """The evals.json of every finished trial under ``folder``."""
    found = [read_json(path) for path in sorted(Path(folder).rglob(EVALS_FILE))]
    return [data for data in found if data.get("complete")]


def unfinished_trials(folder: str | Path) -> list[Trial]:
    """The trials under ``folder`` that started (trial.json) but did not finish."""
    trials = []
    for path in sorted(Path(folder).rglob(TRIAL_FILE)):
        evals = path.parent / EVALS_FILE
        if not (evals.exists() and read_json(evals).get("complete")):
            trials.append(Trial(**read_json(path)))
    return trials


def trial_folders(sweep_dir: str | Path, under: str = "") -> list[str]:
    """Names (relative paths) of the trial folders a sweep has written under ``under``."""
    root = Path(sweep_dir)
    names = {
        p.parent.relative_to(root).as_posix()
        for marker in (EVALS_FILE, "config.json", ERROR_FILE)
        for p in (root / under).rglob(marker)
        if ".tune" not in p.parts
    }
    return sorted(names)


def best_overrides(sweep_dir: str | Path) -> dict[str, dict]:
    """Per cell, the overrides of the finished search trial with the highest MMER."""
    best: dict[str, dict] = {}
    for data in finished_trials(Path(sweep_dir) / SEARCH_PREFIX):
        if data["cell"] not in best or data["mmer"] > best[data["cell"]]["mmer"]:
            best[data["cell"]] = data
    return {cell: data["overrides"] for cell, data in best.items()}


def last_error(folder: Path) -> tuple[str | None, int]:
    """The last line of a trial's last traceback and its number of failed attempts."""
    path = folder / ERROR_FILE
    if not path.exists():
        return None, 0
    text = path.read_text()
    lines = [line for line in text.splitlines() if line.strip()]
    return (lines[-1] if lines else "unknown error"), text.count("--- attempt ")
