"""Sweeps: config expansion, trials, resume, failures, MMER table, and a smoke sweep on Ray."""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import sys

import pytest

from memworld.runs import write_json
from memworld.sweep import cli as sweep_cli
from memworld.sweep.config import SweepConfig
from memworld.sweep.folder import EVALS_FILE, pending_trials, trial_status
from memworld.sweep.table import aggregate, read_runs, t_quantile, write_table
from memworld.sweep.trial import run_trial
from memworld.train import TrainConfig

ENV = "memworld/RepeatPreviousEasy-v0"
TINY = {
    "name": "tiny",
    "envs": [ENV],
    "algos": ["memoryppo"],
    "memory": ["gru", "framestack"],
    "seeds": [0, 1],
    "train": {"steps": 128, "n_envs": 4, "checkpoint_every": 128, "hyperparams": {"n_steps": 16}},
    "eval": {"every": 64, "episodes": 4},
    "tune": {"max_concurrent": 2, "max_failures": 1},
}


def _config(**changes) -> SweepConfig:
    return SweepConfig.from_dict({**TINY, **changes})


def test_config_expands_agents_seeds_and_grid_into_named_trials():
    config = _config(
        algos=["ppo", "memoryppo"],
        algo_hyperparams={"ppo": {"batch_size": 32}},
        grid={"hyperparams.learning_rate": [0.001, 0.01]},
    )
    trials = config.grid_trials()
    assert len(trials) == 3 * 2 * 2  # (ppo, gru, framestack) x 2 seeds x 2 learning rates
    by_name = {t.name: t for t in trials}
    ppo = by_name["RepeatPreviousEasy-v0/ppo-mlp/learning_rate=0.01-s1"]
    assert ppo.train["hyperparams"] == {"n_steps": 16, "batch_size": 32, "learning_rate": 0.01}
    assert ppo.train["memory"] is None and ppo.train["seed"] == 1
    gru = by_name["RepeatPreviousEasy-v0/memoryppo-gru/learning_rate=0.001-s0"]
    assert gru.train["hyperparams"] == {"n_steps": 16, "learning_rate": 0.001}
    assert gru.overrides == {"hyperparams.learning_rate": 0.001}


def test_config_memory_all_smoke_and_errors(tmp_path):
    from memworld import memory

    assert _config(memory="all").memory == tuple(memory.names())
    smoke = SweepConfig.from_dict(
        {**TINY, "smoke": {"seeds": [5], "train": {"steps": 64}}}, smoke=True
    )
    assert smoke.name == "tiny-smoke" and smoke.seeds == (5,)
    assert smoke.train["steps"] == 64 and smoke.train["n_envs"] == 4  # merged, not replaced
    with pytest.raises(ValueError, match="not_an_arg"):
        _config(train={**TINY["train"], "hyperparams": {"not_an_arg": 1}})
    with pytest.raises(ValueError, match="unknown memory modules"):
        _config(memory=["no_such_module"])
    with pytest.raises(ValueError, match="unknown keys"):
        SweepConfig.from_dict({**TINY, "seed": 0})
    with pytest.raises(ValueError, match="smoke"):
        SweepConfig.from_dict(TINY, smoke=True)


def test_random_search_is_seeded_and_runs_the_best_on_every_seed():
    space = {
        "hyperparams.learning_rate": {"loguniform": [1e-4, 1e-2]},
        "hyperparams.n_epochs": {"choice": [2, 4]},
    }
    config = _config(search={"method": "random", "num_samples": 3, "seed": 7, "space": space})
    first, again = config.search_trials(), config.search_trials()
    assert [t.name for t in first] == [t.name for t in again]
    assert len(first) == 2 * 3 and all(t.name.startswith("search/") and t.seed == 0 for t in first)
    lr = first[0].train["hyperparams"]["learning_rate"]
    assert 1e-4 <= lr <= 1e-2 and first[0].train["hyperparams"]["n_epochs"] in (2, 4)
    chosen = {"RepeatPreviousEasy-v0/memoryppo-gru": first[0].overrides}
    final = config.grid_trials(chosen)
    assert [t.seed for t in final] == [0, 1]
    assert all(t.train["hyperparams"]["learning_rate"] == lr for t in final)


def test_trial_evaluates_periodically_and_resume_skips_it(tmp_path):
    (trial,) = [t for t in _config(memory=["gru"], seeds=[3]).grid_trials()]
    reports = []
    summary = run_trial(trial, tmp_path, report=reports.append)
    # 4 envs x 16 steps = 64 env steps a rollout: evaluations after each of the two.
    assert [e["step"] for e in summary["evals"]] == [64, 128]
    assert summary["mmer"] == max(e["mean_return"] for e in summary["evals"])
    assert [r["env_steps"] for r in reports] == [64, 128] and reports[-1]["mmer"] == summary["mmer"]
    run = tmp_path / trial.name
    assert TrainConfig.from_file(run / "config.json") == TrainConfig(**trial.train)
    assert (
        json.loads((run / "eval.json").read_text())["mean_return"]
        == summary["evals"][-1]["mean_return"]
    )

    stamp = (run / EVALS_FILE).stat().st_mtime_ns
    assert pending_trials(tmp_path, [trial]) == []
    assert run_trial(trial, tmp_path) == summary  # finished: read back, not re-trained
    assert (run / EVALS_FILE).stat().st_mtime_ns == stamp


def test_trial_that_raises_records_error_per_attempt(tmp_path):
    (trial,) = _config(memory=["gru"], seeds=[0]).grid_trials()
    # The sweep's check refuses this up front; a trial folder edited by hand still fails here.
    trial = trial.override({"memory_kwargs.not_a_kwarg": 1}, variant="")
    for _ in range(2):
        with pytest.raises(ValueError, match="not_a_kwarg"):
            run_trial(trial, tmp_path)
    assert trial_status(tmp_path, trial) is None and pending_trials(tmp_path, [trial]) == [trial]
    from memworld.sweep.table import failures

    ((name, attempts, error),) = failures(tmp_path)
    assert name == trial.name and attempts == 2 and "not_a_kwarg" in error


def _fake_run(root, algo, memory, env, seed, returns, variant="", sps=100.0, prefix=""):
    cell = f"{env.split('/')[-1]}/{algo}-{memory}"
    name = f"{prefix}{cell}/{variant + '-' if variant else ''}s{seed}"
    evals = [{"step": 1000 * (i + 1), "mean_return": r} for i, r in enumerate(returns)]
    write_json(
        root / name / EVALS_FILE,
        {
            "name": name,
            "cell": cell,
            "env": env,
            "algo": algo,
            "memory": memory,
            "seed": seed,
            "variant": variant,
            "overrides": {},
            "complete": True,
            "mmer": max(returns),
            "env_steps_per_s": sps,
            "evals": evals,
        },
    )


def test_mmer_table_equals_hand_computation(tmp_path):
    tmaze = "memworld/TMazeEasy-v0"
    # MemoryPPO-gru on TMaze: best returns 0.5, 0.4, 0.6 -> mean 0.5, sd 0.1.
    for seed, returns in enumerate([[0.1, 0.5, 0.3], [0.2, 0.4], [0.6, 0.0, 0.1]]):
        _fake_run(tmp_path, "memoryppo", "gru", tmaze, seed, returns, sps=100.0 * (seed + 1))
    # PPO-MLP on TMaze: a worse variant (lr=1) and a better one (lr=2) the table must pick.
    for seed, returns in enumerate([[-1.0, -0.2], [-0.4]]):
        _fake_run(tmp_path, "ppo", "mlp", tmaze, seed, returns, variant="lr=1")
    for seed, returns in enumerate([[0.0, 0.3], [0.1]]):
        _fake_run(tmp_path, "ppo", "mlp", tmaze, seed, returns, variant="lr=2")
    # Left out of the table: a search trial, an unfinished trial; listed: a failed one.
    _fake_run(tmp_path, "memoryppo", "gru", tmaze, 0, [9.0], prefix="search/")
    write_json(
        tmp_path / "TMazeEasy-v0/memoryppo-gru/s9" / EVALS_FILE,
        {"complete": False, "evals": [{"step": 1, "mean_return": 9.0}]},
    )
    (tmp_path / "TMazeEasy-v0/memoryppo-gru/s8").mkdir(parents=True)
    (tmp_path / "TMazeEasy-v0/memoryppo-gru/s8/error.txt").write_text(
        "--- attempt 1\nTraceback...\nRuntimeError: boom\n"
    )

    assert len(read_runs(tmp_path)) == 3 + 4
    gru = next(c for c in aggregate(read_runs(tmp_path)) if c.module == "MemoryPPO-gru")
    half_width = 4.302653 * 0.1 / math.sqrt(3)  # t_{0.975, 2} * s / sqrt(n)
    assert gru.mmers == pytest.approx([0.5, 0.4, 0.6]) and gru.mean == pytest.approx(0.5)
    assert gru.ci95 == pytest.approx(half_width, rel=1e-5)
    assert gru.env_steps_per_s == pytest.approx(200.0)

    parser = argparse.ArgumentParser()
    sweep_cli.add_subparser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["table", str(tmp_path)])
    args.func(args)  # `memworld table DIR`
    paths = {ext: tmp_path / f"table.{ext}" for ext in ("md", "csv", "png")}
    rows = list(csv.DictReader(paths["csv"].open()))
    ppo = {r["variant"]: r for r in rows if r["module"] == "PPO-MLP"}
    assert ppo["lr=2"]["selected"] == "1" and ppo["lr=1"]["selected"] == "0"
    assert float(ppo["lr=2"]["mmer_mean"]) == pytest.approx(0.2)  # (0.3 + 0.1) / 2
    ci = 12.706205 * math.sqrt(0.02) / math.sqrt(2)  # sd of (0.3, 0.1) = sqrt(0.02)
    assert float(ppo["lr=2"]["ci95_high"]) == pytest.approx(0.2 + ci, rel=1e-5)
    md = paths["md"].read_text()
    assert md.index("| PPO-MLP |") < md.index("| MemoryPPO-gru |")  # baselines first
    assert f"0.500 ± {half_width:.3f}" in md and "0.200 ± " in md
    assert "TMazeEasy-v0/memoryppo-gru/s8" in md and "RuntimeError: boom" in md
    assert paths["png"].stat().st_size > 1000


def test_t_quantile_matches_tables():
    for df, expected in [(1, 12.7062), (2, 4.3027), (4, 2.7764), (10, 2.2281), (1000, 1.9623)]:
        assert t_quantile(0.975, df) == pytest.approx(expected, abs=2e-4)


def test_sweep_without_ray_says_what_to_install(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    parser = argparse.ArgumentParser()
    sweep_cli.add_subparser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["sweep", "config.yaml"])
    with pytest.raises(SystemExit, match=r'pip install -e "\.\[sweep\]"'):
        args.func(args)


@pytest.fixture(scope="module")
def local_ray():
    ray = pytest.importorskip("ray")
    pytest.importorskip("ray.tune")
    from memworld.sweep.driver import local_ray_options

    ray.init(**local_ray_options(num_cpus=2), log_to_driver=False, logging_level="WARNING")
    yield ray
    ray.shutdown()


def test_smoke_sweep_on_local_ray_then_resume(local_ray, tmp_path):
    from memworld.sweep.driver import run_sweep

    config = _config()
    summary = run_sweep(config, tmp_path, verbose=0)
    assert summary["failures"] == [] and summary["pending"] == []
    assert len(summary["finished"]) == 4 and summary["skipped"] == 0
    md = write_table(tmp_path)["md"].read_text()
    assert "| MemoryPPO-framestack |" in md and "| MemoryPPO-gru |" in md
    # Trials run at this process's priority, not Ray's default of 15 nice levels lower.
    trial_config = json.loads(
        (tmp_path / "RepeatPreviousEasy-v0/memoryppo-gru/s0/config.json").read_text()
    )
    assert trial_config["versions"]["nice"] == os.nice(0)

    # Interrupt one trial; a resume re-runs it and leaves the finished ones alone.
    cut = tmp_path / "RepeatPreviousEasy-v0/memoryppo-gru/s1" / EVALS_FILE
    cut.unlink()
    kept = tmp_path / "RepeatPreviousEasy-v0/memoryppo-framestack/s0" / EVALS_FILE
    stamp = kept.stat().st_mtime_ns
    summary = run_sweep(SweepConfig.from_file(tmp_path / "sweep.yaml"), tmp_path, verbose=0)
    assert summary["skipped"] == 3 and len(summary["finished"]) == 4
    assert cut.exists() and kept.stat().st_mtime_ns == stamp


def test_failing_trial_is_retried_and_reported_on_ray(local_ray, tmp_path):
    from memworld.sweep.driver import run_sweep

    # A known key with a bad value passes the sweep's check and fails in the trial.
    config = _config(
        memory=["gru"], seeds=[0], train={**TINY["train"], "memory_kwargs": {"hidden_dim": -1}}
    )
    summary = run_sweep(config, tmp_path, verbose=0)
    (failure,) = summary["failures"]
    assert failure["trial"] == "RepeatPreviousEasy-v0/memoryppo-gru/s0"
    assert failure["attempts"] == 2 and "hidden_dim" in failure["error"]  # max_failures=1
    assert json.loads((tmp_path / "sweep.json").read_text())["failures"] == [failure]


@pytest.mark.slow  # ~15-30 s on 2 cores; the random search is tested without Ray above
def test_optuna_search_then_best_on_every_seed_on_ray(local_ray, tmp_path):
    pytest.importorskip("optuna")
    from memworld.sweep.driver import run_sweep

    space = {"hyperparams.learning_rate": {"loguniform": [1e-4, 1e-2]}}
    config = _config(
        memory=["framestack"], search={"method": "optuna", "num_samples": 2, "space": space}
    )
    summary = run_sweep(config, tmp_path, verbose=0)
    assert summary["failures"] == [] and summary["pending"] == []
    mmer = {f["trial"]: f["mmer"] for f in summary["finished"]}
    search = {
        n.split("/")[-1].removesuffix("-s0"): m for n, m in mmer.items() if n.startswith("search/")
    }
    final = [n for n in mmer if not n.startswith("search/")]
    assert len(search) == 2 and len(final) == 2
    (variant,) = {n.split("/")[-1].rsplit("-s", 1)[0] for n in final}  # one setting, two seeds
    assert search[variant] == max(search.values())  # the best searched one
