"""bench/off_policy_report.py merges seeds run apart and normalises each task by its range."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "bench"


def run(task: str, algo: str, seed: int, final: float) -> dict:
    return dict(
        task=task, algo=algo, seed=seed, curve=[[100, 0.0], [200, final]], final_return=final
    )


def test_merges_seeds_of_several_files_and_normalises_by_each_range(tmp_path):
    first = dict(steps=200, results=[run("TMazeEasy", "memorydqn_gru", 0, 1.0)])
    # a later file repeats seed 0 (the last one wins) and adds seed 1; Pendulum's stored range
    second = dict(
        steps=200,
        ranges={"PendulumPosition": [-1200.0, -200.0]},
        results=[
            run("TMazeEasy", "memorydqn_gru", 0, 0.5),
            run("TMazeEasy", "memorydqn_gru", 1, 0.0),
            run("PendulumPosition", "sac", 0, -700.0),
        ],
    )
    files = []
    for name, data in (("a.json", first), ("b.json", second)):
        (tmp_path / name).write_text(json.dumps(data))
        files.append(str(tmp_path / name))
    done = subprocess.run(
        [sys.executable, str(BENCH / "off_policy_report.py"), *files],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    rows = {line.split("|")[1].strip(): line for line in done.stdout.splitlines()[2:]}
    # TMazeEasy: chance 0, max 1 -> seeds 0.50 and 0.00, mean 0.25
    assert "| 0.500 / 0.000 | 0.250 | 0.50 / 0.00 | **0.25** |" in rows["TMazeEasy"]
    # Pendulum: (-700 + 1200) / (-200 + 1200) = 0.5 for seed 0; no seed 1
    assert "| -700 / - | -700 | 0.50 / - | **0.50** |" in rows["PendulumPosition"]
