"""LeWorld's command line: run folders, the table over seeds, resumed runs, choices."""

from __future__ import annotations

import dataclasses
import io
import json
import shutil
import sys

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from memworld.leworld.cli import main, progress, trained_with
from memworld.world_models.leworld import TrainingConfig

TINY = ["--steps", "8", "--num-envs", "2", "--seq-len", "6", "--codec-steps", "5"]


def test_cli_trains_two_seeds_and_evaluates_them_in_one_table(tmp_path, capsys):
    tiny = ["--steps", "4", "--num-envs", "2", "--seq-len", "6", "--codec-steps", "5"]
    tiny += ["--load-balance-coef", "0.05"]
    for seed in (0, 1):
        main(
            [
                "leworld",
                "train",
                *tiny,
                "--seed",
                str(seed),
                "--run-dir",
                str(tmp_path / f"s{seed}"),
            ]
        )
    err = capsys.readouterr().err  # not a terminal: one progress line per log, no "\r"
    assert "\r" not in err
    lines = err.splitlines()
    assert sum(line.startswith("[refine   ]     4/4 updates") for line in lines) == 2
    assert sum(line.startswith("[baselines]     4/4 updates") for line in lines) == 2
    main(["leworld", "eval", str(tmp_path / "s0"), str(tmp_path / "s1")])
    out = capsys.readouterr().out
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line.split()}
    assert {"0", "1", "mean"} <= set(rows)
    per_seed = [float(rows[s][1]) for s in ("0", "1")]  # the LeWorld MSE column
    assert float(rows["mean"][1]) == pytest.approx(sum(per_seed) / 2, abs=1e-4)
    assert "beats no_memory:" in out and "/2" in out
    assert "LeWorld's lead over each method, last quarter minus second, per episode" in out
    head = f"2 runs (trained with torch threads {torch.get_num_threads()}; commit "
    assert head in out
    assert trained_with([{}, {"versions": {"torch_threads": 1, "memworld_commit": "a" * 40}}]) == (
        "trained with torch threads 1, ?; commit ?, aaaaaaa"
    )
    assert "commit 0123456+dirty" in trained_with(
        [{"versions": {"memworld_commit": "0123456789" * 4 + "+dirty"}}]
    )
    result = json.loads((tmp_path / "s0" / "eval.json").read_text())["seeds"]["0"]
    counts = result["distance_counts"]  # the bins hold every valid step, once
    for method, mse in result["mse"].items():
        by_distance = result["mse_by_distance"][method]
        weighted = sum(c * v for c, v in zip(counts, by_distance) if v is not None)
        assert weighted / sum(counts) == pytest.approx(mse, rel=1e-5), method
    assert json.loads((tmp_path / "s0" / "eval.json").read_text())["episodes"] == 16  # 8 x 2
    main(["leworld", "eval", str(tmp_path / "s0"), "--episodes", "20"])
    assert json.loads((tmp_path / "s0" / "eval.json").read_text())["episodes"] == 20
    assert "s0: 20 held-out episodes" in capsys.readouterr().err
    with pytest.raises(
        SystemExit, match=r"--episodes must be a positive multiple .*\(2\), got 7; use 6 or 8"
    ):
        main(["leworld", "eval", str(tmp_path / "s0"), "--episodes", "7"])
    with pytest.raises(SystemExit, match="got 0; use 2 or 4"):
        main(["leworld", "eval", str(tmp_path / "s0"), "--episodes", "0"])
    fall, lead = result["per_step_fall"], result["lead_growth"]  # paired over the same episodes
    for method in ("no_memory", "gru", "random_addresses"):
        assert lead[method][0] == pytest.approx(fall["leworld"][0] - fall[method][0], abs=1e-7)
    config = json.loads((tmp_path / "s0" / "config.json").read_text())
    assert config["training"]["codec_steps"] == 5
    assert config["training"]["load_balance_coef"] == 0.05


def _scalar_steps(run, tag):
    steps = set()
    for events in (run / "tensorboard").glob("events.out.tfevents.*"):
        acc = EventAccumulator(str(events))
        acc.Reload()
        if tag in acc.Tags()["scalars"]:
            steps |= {event.step for event in acc.Scalars(tag)}
    return steps


def test_a_resumed_run_logs_at_the_uninterrupted_runs_update_numbers(tmp_path):
    whole = tmp_path / "whole"
    main(["leworld", "train", *TINY, "--no-baselines", "--run-dir", str(whole)])
    # Stop it after phase 2: only the phase checkpoints up to there, a fresh event file.
    resumed = tmp_path / "resumed"
    shutil.copytree(whole, resumed)
    for name in ("checkpoints/phase3-refine.pt", "checkpoints/final.pt", "metrics.json"):
        (resumed / name).unlink()
    shutil.rmtree(resumed / "tensorboard")
    main(["leworld", "train", "--resume", str(resumed), "--no-baselines"])
    # 8 updates = 2 pretrain + 4 joint + 2 refine: refine logs updates 7 and 8.
    assert _scalar_steps(whole, "refine/mse") == {7, 8}
    assert _scalar_steps(resumed, "refine/mse") == {7, 8}
    assert _scalar_steps(resumed, "joint/mse") == set()  # phase 2 was not run again
    metrics = json.loads((resumed / "metrics.json").read_text())
    whole_metrics = json.loads((whole / "metrics.json").read_text())
    # log_every = max(1, 8 // 40) = 1: every update is in the history, steps count per phase.
    expected = [("pretrain", 0), ("pretrain", 1), *[("joint", i) for i in range(4)]]
    expected += [("refine", 0), ("refine", 1)]
    assert [(m["phase"], m["step"]) for m in metrics["history"]] == expected
    # The checkpoint restores weights, optimizer, generator and data source: the resumed
    # run's refine phase repeats the uninterrupted run's losses exactly.
    assert metrics["history"] == whole_metrics["history"]
    # Throughput is wall-clock (not asserted); it is None only when nothing was left to do.
    assert metrics["train_samples_per_s"] is not None


def test_cli_offers_every_choice_of_the_phase_3_settings():
    from memworld.cli import build_parser
    from memworld.world_models.leworld.config import (
        REFINE_PREDICTIONS,
        REQUEST_ADDRESSES,
        REQUEST_ESTIMATORS,
        training_from_dict,
    )

    parser = build_parser()
    for flag, choices in (
        ("refine_prediction", REFINE_PREDICTIONS),
        ("request_addresses", REQUEST_ADDRESSES),
        ("request_estimator", REQUEST_ESTIMATORS),
    ):
        for choice in choices:
            args = parser.parse_args(["leworld", "train", f"--{flag.replace('_', '-')}", choice])
            assert getattr(args, flag) == choice
    # A run folder from before request_estimator scored its requests against the batch mean,
    # one from before request_pg_coef gave the request's policy gradient weight 1, and one
    # from before refine_prediction trained the prediction on the sampled pass.
    old = dataclasses.asdict(TrainingConfig())
    del old["request_estimator"], old["request_pg_coef"], old["refine_prediction"]
    new = TrainingConfig()
    assert (new.request_estimator, new.request_pg_coef, new.refine_prediction) == (
        "antithetic",
        0.01,
        "straight",
    )
    loaded = training_from_dict(old)
    assert (loaded.request_estimator, loaded.request_pg_coef, loaded.refine_prediction) == (
        "batch",
        1.0,
        "sample",
    )


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_rewrites_its_line_on_a_terminal_and_prints_lines_elsewhere(monkeypatch):
    for stream, expected in ((_Terminal(), "\ra\rb\n"), (io.StringIO(), "a\nb\n")):
        monkeypatch.setattr(sys, "stderr", stream)
        progress("a")
        progress("b")
        progress(None)
        assert stream.getvalue() == expected


def test_more_held_out_episodes_extend_the_default_ones():
    from memworld.leworld.runs import held_out_batches

    training = TrainingConfig(num_envs=2, seq_len=6)
    few, more = held_out_batches(training, 2), held_out_batches(training, 3)
    assert len(more) == 3
    for a, b in zip(few, more):
        assert torch.equal(a.obs, b.obs) and torch.equal(a.target, b.target)
    assert not torch.equal(more[2].obs, more[1].obs)
