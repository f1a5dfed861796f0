"""Each experiment runs in a tiny configuration and writes its PNG and JSON."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from memworld.cli import main
from memworld.experiments import forgetting as forgetting_experiment
from memworld.experiments.forgetting import kaplan_meier, write_events


def test_kaplan_meier_matches_hand_computation():
    # durations 1,2,2,3,4 with the 2nd "2" and the 4 censored:
    # S(1)=4/5, S(2)=4/5*3/4, S(3)=0.6*(1-1/2)
    times, survival = kaplan_meier([1, 2, 2, 3, 4], [1, 1, 0, 1, 0])
    np.testing.assert_allclose(times, [0, 1, 2, 3])
    np.testing.assert_allclose(survival, [1.0, 0.8, 0.6, 0.3])
    # Nothing censored, durations 1,2,2,3: S(1)=3/4, S(2)=3/4*(1-2/3)=1/4, S(3)=1/4*(1-1/1)=0
    times, survival = kaplan_meier([1, 2, 2, 3], [1, 1, 1, 1])
    np.testing.assert_allclose(times, [0, 1, 2, 3])
    np.testing.assert_allclose(survival, [1.0, 0.75, 0.25, 0.0])


def test_write_events_tracks_overwrite_and_censoring():
    memories = np.zeros((6, 1, 2, 2))
    memories[1:, 0, 0] = [1.0, 0.0]  # slot 0 written at t=1 ...
    memories[4:, 0, 0] = [0.0, 1.0]  # ... overwritten at t=4 (lived 3 steps)
    memories[2:, 0, 1] = [0.0, 2.0]  # slot 1 written at t=2, never lost (censored at t=5)
    starts = np.zeros((6, 1), dtype=bool)
    durations, observed, writes = write_events(memories, starts, 0.2, 0.5)
    # events in time order: (t=1 slot 0, lost at 4), (t=2 slot 1, censored), (t=4 slot 0, censored)
    assert writes == 3
    np.testing.assert_array_equal(durations, [3, 3, 1])
    np.testing.assert_array_equal(observed, [True, False, False])


@pytest.mark.parametrize(
    "name, pngs",
    [
        ("distance", ["accuracy_vs_distance.png"]),
        ("continual", ["forgetting.png"]),
        (
            "forgetting",
            ["diagnostics_over_training.png", "memory_heatmap.png", "slot_survival.png"],
        ),
    ],
)
def test_experiment_tiny_writes_png_and_json(name, pngs, tmp_path, capsys, monkeypatch):
    real_events = []  # what write_events found in the forgetting run's probe rollout
    original_write_events = forgetting_experiment.write_events

    def hand_made_events(*args, **kwargs):
        real_events.append(original_write_events(*args, **kwargs))
        # The rest of the run gets these: durations 1,2,2,3,4, the 2nd "2" and the 4 censored.
        return np.array([1, 2, 2, 3, 4]), np.array([1, 1, 0, 1, 0], dtype=bool), 5

    monkeypatch.setattr(forgetting_experiment, "write_events", hand_made_events)
    main(["experiment", name, "--tiny", "--root", str(tmp_path)])
    (out,) = list((tmp_path / name).iterdir())
    for png in pngs:
        assert (out / png).read_bytes()[:4] == b"\x89PNG"
    result = json.loads((out / "results.json").read_text())
    assert result["versions"]["torch_threads"] == torch.get_num_threads()
    if name == "distance":
        assert set(result["table"]) == {"gru", "mlp"}
        assert set(result["table"]["gru"]) == {"1", "4"}
        for row in result["runs"]:
            assert row["accuracy"] == pytest.approx((row["return"] + 1) / 2)
    elif name == "continual":
        returns = np.asarray(result["table"]["gru"]["returns_stage_by_task"])
        assert returns.shape == (2, 2) and np.all(np.abs(returns) <= 1.0 + 1e-6)
        forgetting = result["table"]["gru"]["forgetting"]
        assert forgetting[0] == pytest.approx(returns[:, 0].max() - returns[1, 0])
    else:
        ((durations, observed, writes),) = real_events
        assert writes == len(durations) == len(observed) > 0  # the tiny run does write
        assert np.all(durations >= 0)
        # From the hand-made events: 5 writes over probe_steps x probe_envs steps;
        # S(1)=4/5, S(2)=4/5*3/4=0.6, S(3)=0.6*(1-1/2)=0.3; the median is the first
        # t with S <= 0.5 (3); lost contents lived 1, 2 and 3 steps (mean 2).
        config = result["config"]
        assert result["writes"] == 5
        assert result["write_frequency_per_step_per_env"] == pytest.approx(
            5 / (config["probe_steps"] * config["probe_envs"])
        )
        assert result["survival"]["t"] == [0.0, 1.0, 2.0, 3.0]
        np.testing.assert_allclose(result["survival"]["S"], [1.0, 0.8, 0.6, 0.3])
        assert result["median_survival_steps"] == 3.0
        assert result["mean_observed_lifetime"] == pytest.approx(2.0)
        assert "write_rate" in result["diagnostics_summary"]
    assert "experiment folder" in capsys.readouterr().out


def _distance_results(folder, rows, steps=1000):
    folder.mkdir(parents=True)
    config = {"task": "RepeatPrevious", "steps": steps, "extra_env_kwargs": {}}
    runs = [
        {"module": m, "distance": d, "seed": s, "return": 2 * a - 1, "accuracy": a}
        for m, d, s, a in rows
    ]
    (folder / "results.json").write_text(json.dumps({"config": config, "runs": runs}))
    return folder


def test_distance_merge_pools_runs_into_one_table_and_plot(tmp_path, capsys):
    a = _distance_results(tmp_path / "a", [("gru", 2, 0, 1.0), ("gru", 8, 0, 0.5)])
    b = _distance_results(
        tmp_path / "b", [("slot", 8, 0, 0.9), ("gru", 8, 1, 0.7), ("slot", 2, 0, 0.8)]
    )
    main(["experiment", "distance", "--merge", str(a), str(b), "--root", str(tmp_path / "out")])
    (out,) = list((tmp_path / "out" / "distance").iterdir())
    result = json.loads((out / "results.json").read_text())
    assert result["table"] == {
        "gru": {"2": 1.0, "8": pytest.approx(0.6)},
        "slot": {"2": 0.8, "8": 0.9},
    }
    assert result["merged_from"] == [str(a), str(b)]
    assert (out / "accuracy_vs_distance.png").read_bytes()[:4] == b"\x89PNG"
    c = _distance_results(tmp_path / "c", [("lstm", 2, 0, 1.0)], steps=5000)
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main(["experiment", "distance", "--merge", str(a), str(c), "--root", str(tmp_path)])
    err = capsys.readouterr().err
    assert "differs from" in err and "in ['steps']" in err
    with pytest.raises(SystemExit, match="--merge combines distance runs only"):
        main(["experiment", "continual", "--merge", str(a)])


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["distance", "--modules", "nope"], "memory must be one of"),
        (["distance", "--distances", "0"], "delay must be an integer in [1"),
        (["continual", "--modules", "nope"], "memory must be one of"),
        (["forgetting", "--modules", "nope"], "memory must be one of"),
    ],
)
def test_a_refused_experiment_leaves_no_empty_folder(argv, expected, tmp_path, capsys):
    """The experiment folder is made before the first run checks its module or task
    parameters; a run refused there takes the (still empty) folder away again."""
    with pytest.raises(SystemExit):
        main(["experiment", *argv, "--tiny", "--root", str(tmp_path)])
    assert expected in capsys.readouterr().err
    assert [p for p in tmp_path.rglob("*") if p.is_dir() and p.parent != tmp_path] == []
