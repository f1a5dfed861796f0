"""Every script in bench/ starts: its imports resolve and ``--help`` exits 0.

The scripts run as ``python bench/NAME.py`` (bench/ on sys.path) and no test runs
them whole; a helper moved between them (``sync`` to bench/timing.py) once left
bench/profile_memory.py failing at import.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

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


def run_bench(*args: str) -> subprocess.CompletedProcess:
    """``python <args>`` (a bench script and its flags) from the repository root, one torch
    thread; it must exit 0."""
    done = subprocess.run(
        [sys.executable, *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=BENCH.parent,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done


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


def test_pomdp_zoo_quick_trains_recurrent_ppo_and_memory_ppo_side_by_side(tmp_path):
    done = run_bench(
        *["bench/pomdp_zoo.py", "--quick", "--presets", "CartPoleNoVel-user"],
        *["--algos", "recurrent_ppo", "memory_ppo_gru", "--out", str(tmp_path), "--progress"],
    )
    runs = {p.name: json.loads(p.read_text()) for p in tmp_path.glob("*.json")}
    # --progress: each run's per-update log, and how far its updates moved the policy.
    for name in ("memory_ppo_gru-default", "recurrent_ppo"):
        assert (tmp_path / f"CartPoleNoVel-user_{name}_s0" / "progress.csv").is_file()
    assert all(r["median_approx_kl"] > 0 for r in runs.values())
    assert sorted(runs) == [
        "CartPoleNoVel-user_memory_ppo_gru-default_s0.json",
        "CartPoleNoVel-user_recurrent_ppo_s0.json",
    ]
    # The wrapper removed the velocities: both trained on 512 steps of 2-entry observations.
    assert all(r["env_steps"] == 512 and r["obs_dim"] == 2 for r in runs.values())
    assert "| CartPoleNoVel-user | memory_ppo_gru/default | 0 |" in done.stdout


def test_pomdp_zoo_variants_reach_memory_ppo_and_its_policy(monkeypatch):
    """A variant of MemoryPPO's own arguments (``kl01``) sets them on the algorithm; a
    policy variant (``no_norm``) sets the policy's, and leaves the algorithm's alone."""
    monkeypatch.syspath_prepend(str(BENCH))
    import pomdp_zoo

    preset = pomdp_zoo.PRESETS["CartPoleNoVel-user"]
    env = pomdp_zoo.make_env(preset["task"], preset["n_envs"], seed=0)
    kl = pomdp_zoo.build("memory_ppo_gru", "kl01", preset, env, seed=0)
    raw = pomdp_zoo.build("memory_ppo_gru", "no_norm", preset, env, seed=0)
    assert (kl.target_kl, kl.policy.value_norm) == (0.01, "popart")
    assert (raw.target_kl, raw.policy.value_norm) == (None, None)
    # The preset's own settings still apply under both.
    assert kl.n_epochs == raw.n_epochs == 20 and kl.gamma == raw.gamma == 0.999
    with pytest.raises(ValueError, match="variant='kl1' is not a MemoryPPO variant"):
        pomdp_zoo.build("memory_ppo_gru", "kl1", preset, env, seed=0)


def test_off_policy_quick_speed_pairs_memory_dqn_with_dqn(tmp_path):
    done = run_bench("bench/off_policy.py", "--part", "speed", "--quick", "--out", str(tmp_path))
    result = json.loads((tmp_path / "off_policy_speed_quick.json").read_text())
    assert set(result["medians"]) == {"ours_grad", "peer_grad", "ours_env", "peer_env"}
    assert result["ratio_grad"] > 0 and result["ratio_env"] > 0
    assert "gradient steps/s: MemoryDQN(gru)" in done.stdout


def test_rollout_step_prints_the_floor_rows_of_slot_and_dual(tmp_path):
    out = tmp_path / "rollout.json"
    done = run_bench(
        "bench/rollout_step.py",
        *["--modules", "gru", "slot", "dual", "--repeats", "1"],
        *["--out", str(out)],
    )
    rows = {r["module"]: r for r in json.loads(out.read_text())["rows"]}
    assert "floors" not in rows["gru"]
    floors = {name: [f["what"] for f in rows[name]["floors"]] for name in ("slot", "dual")}
    assert floors == {
        "slot": ["controller+heads+output alone"],
        "dual": ["layers alone", "long-term fields' copy alone"],
    }
    assert all(f["step_s"] > 0 for name in floors for f in rows[name]["floors"])
    assert "long-term fields' copy alone" in done.stdout


def test_rnn_loops_bench_quick_run(tmp_path):
    """bench/rnn_loops.py on a tiny chunk: both parts run and the JSON holds every time."""
    from memworld.memory import native

    if not native.wanted():
        pytest.skip(f"{native.ENV_VAR} turns the C++ loops off")
    out = tmp_path / "rnn_loops.json"
    run_bench("bench/rnn_loops.py", "--sizes", "2x8", "--steps", "16", "--repeats", "1",
              "--out", str(out))  # fmt: skip
    result = json.loads(out.read_text())
    (row,) = result["loops"]
    assert {"lstm_python", "lstm_cpp", "gru_python", "gru_cpp"} <= set(row)
    assert all(row[k] > 0 for k in ("lstm_python", "lstm_cpp", "gru_python", "gru_cpp"))
    assert [r["pieces"] for r in result["crossover"]] == [1, 4, 8, 12, 16]


def test_module_variants_bench_quick_run(tmp_path):
    """bench/module_variants.py: two piece lengths of gtrxl, timed, with equal outputs."""
    out = tmp_path / "variants.json"
    run_bench("bench/module_variants.py", "--module", "gtrxl", "--variants",
              '{"max_block": 4}', '{"max_block": 8}', '{"mem_len": 2}', "--steps", "16",
              "--batch", "2", "--dim", "4", "--repeats", "1", "--out", str(out))  # fmt: skip
    rows = json.loads(out.read_text())["rows"]
    assert [r["variant"] for r in rows] == [
        '{"max_block": 4}',
        '{"max_block": 8}',
        '{"mem_len": 2}',
    ]
    assert rows[1]["max_output_difference"] < 1e-5  # the same computation in other pieces
    assert rows[2]["max_output_difference"] > 1e-3  # a shorter memory sees less
    assert all(r["ms"] > 0 and r["x_lstm"] > 0 for r in rows)
