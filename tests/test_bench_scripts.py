"""Every script in bench/ starts: its imports resolve and ``--help`` exits 0.

The scripts run as ``python bench/NAME.py`` (bench/ on sys.path) and no test runs
them whole; a helper moved between them (``sync`` to bench/timing.py) once left
bench/profile_memory.py failing at import.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "bench"
SCRIPTS = sorted(p.name for p in BENCH.glob("*.py") if p.name != "timing.py")  # timing: helpers

# One interpreter for all of them: each script's --help, as `python bench/NAME.py --help`.
PROBE = """
import runpy, sys
sys.path.insert(0, sys.argv[1])
for name in sys.argv[2:]:
    sys.argv = [name, "--help"]
    try:
        runpy.run_path(f"{sys.path[0]}/{name}", run_name="__main__")
        code = "no exit"
    except SystemExit as exit:
        code = exit.code
    print(f"RESULT {name} {code}", flush=True)
"""


def test_every_bench_script_imports_and_prints_its_help():
    assert len(SCRIPTS) >= 9, SCRIPTS
    done = subprocess.run(
        [sys.executable, "-c", PROBE, str(BENCH), *SCRIPTS],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=BENCH.parent,
    )
    results = dict(
        line.split()[1:] for line in done.stdout.splitlines() if line.startswith("RESULT ")
    )
    assert results == {name: "0" for name in SCRIPTS}, done.stderr[-3000:]
