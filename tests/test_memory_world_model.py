"""MemoryWorldModel: any memory module as a next-world-state predictor, its evaluation by
step and by recall distance, and `memworld experiment worldmodel`."""

from __future__ import annotations

import json

import pytest
import torch

from memworld import memory
from memworld.cli import main
from memworld.world_models.leworld.data import Batch, RolloutSource
from memworld.world_models.memory_world_model import (
    MemoryWorldModel,
    bin_labels,
    distance_bins,
    evaluate_world_model,
    train_world_model,
)

MODULES = ["none", *memory.names()]


def test_recall_distances_fall_in_power_of_two_bins():
    distance = torch.tensor([0, 1, 2, 3, 4, 7, 8, 15, 16, 63, 64, 1000])
    assert distance_bins(distance).tolist() == [0, 1, 2, 2, 3, 3, 4, 4, 5, 6, 7, 7]
    assert bin_labels() == ["0", "1", "2-3", "4-7", "8-15", "16-31", "32-63", "64+"]


def test_evaluation_by_step_and_by_recall_distance_on_a_hand_made_batch():
    """The head predicts a constant (zero weights, bias 1), so each step's MSE is known."""
    model = MemoryWorldModel(obs_dim=2, state_dim=1, memory="none", hidden=4)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        model.head[2].bias.fill_(1.0)
    target = torch.tensor([[[1.0], [3.0]], [[0.0], [1.0]], [[2.0], [5.0]]])  # (T=3, B=2, 1)
    valid = torch.tensor([[True, True], [True, True], [True, False]])  # row 1 ended at step 2
    oracle = torch.tensor([[0, 0], [0, 1], [0, 0]])  # distances t - oracle: [[0,0],[1,0],[2,-]]
    batch = Batch(torch.zeros(3, 2, 2), target, valid, oracle)
    # squared errors: t0: 0, 4; t1: 1, 0; t2: 1 (row 1 invalid)
    result = evaluate_world_model(model, [batch])
    assert result["per_step"] == pytest.approx([2.0, 0.5, 1.0])
    assert result["mse"] == pytest.approx(6.0 / 5)
    assert result["by_distance"][:3] == pytest.approx([(0 + 4 + 0) / 3, 1.0, 1.0])
    assert result["by_distance"][3:] == [None] * 5
    assert result["distance_counts"] == [3, 1, 1, 0, 0, 0, 0, 0]


@pytest.mark.parametrize("name", MODULES)
def test_every_module_predicts_causally_and_trains(name):
    source = RolloutSource("OccludedDynamicsEasy", num_envs=3, seq_len=8, seed=0)
    torch.manual_seed(0)
    model = MemoryWorldModel(source.obs_dim, source.state_dim, name)
    batch = source.batch()
    prediction = model(batch.obs)
    assert prediction.shape == (8, 3, source.state_dim)
    later = batch.obs.clone()
    later[5:] += 1.0  # change the future: the predictions before step 5 must not move
    assert torch.allclose(model(later)[:5], prediction[:5], atol=1e-6)
    if name != "none":
        assert not torch.allclose(model(later)[5:], prediction[5:])
    history = train_world_model(model, source, updates=2)
    assert len(history) == 2 and all(h > 0 for h in history)


def test_a_gru_world_model_beats_the_one_without_memory_on_keydoor():
    """The key's colour is seen at the start and needed at the door: memory pays."""
    held = RolloutSource("KeyDoorEasy", num_envs=16, seq_len=48, seed=10_000)
    batches = [held.batch() for _ in range(4)]
    mse = {}
    for name in ("none", "gru"):
        torch.manual_seed(0)
        source = RolloutSource("KeyDoorEasy", num_envs=16, seq_len=48, seed=0)
        model = MemoryWorldModel(source.obs_dim, source.state_dim, name)
        train_world_model(model, source, updates=150)
        mse[name] = evaluate_world_model(model, batches)["mse"]
    assert mse["gru"] < 0.9 * mse["none"], mse  # measured: 0.084 against 0.109


@pytest.mark.parametrize(
    "kwargs, expected",
    [
        (dict(memory="nope"), "memory must be one of ['none', 'bit'"),
        (dict(memory="none", memory_kwargs={"hidden_dim": 8}), "memory='none' has none"),
        (dict(memory=memory.make("gru", input_dim=5)), "build it with input_dim=3"),
    ],
)
def test_bad_memory_arguments_are_refused_by_name(kwargs, expected):
    with pytest.raises(ValueError, match=expected.replace("[", r"\[")):
        MemoryWorldModel(obs_dim=3, state_dim=2, **kwargs)


def test_experiment_writes_a_table_and_plots_for_every_module(tmp_path, capsys):
    main(
        ["experiment", "worldmodel", "--tiny", "--modules", "none", "slot", "--seq-len", "10"]
        + ["--root", str(tmp_path)]
    )
    (out,) = (tmp_path / "worldmodel").iterdir()
    results = json.loads((out / "results.json").read_text())
    assert [r["module"] for r in results["runs"]] == ["none", "slot"]
    assert results["config"]["seq_len"] == 10 and len(results["runs"][0]["per_step"]) == 10
    assert results["env"] == "memworld/OccludedDynamicsEasy-v0"
    assert results["versions"]["torch_threads"] == torch.get_num_threads()
    assert set(results["table"]) == {"none", "slot"}
    for png in ("per_step_mse.png", "mse_vs_distance.png"):
        assert (out / png).stat().st_size > 0
    assert "| slot |" in capsys.readouterr().out


@pytest.mark.parametrize("flag, value", [("--env", "KeyDoorEasy"), ("--seq-len", "48")])
def test_env_and_seq_len_are_options_of_the_worldmodel_experiment_only(flag, value):
    with pytest.raises(SystemExit, match=f"{flag} is an option of the worldmodel experiment"):
        main(["experiment", "distance", "--tiny", flag, value])


@pytest.mark.parametrize(
    "argv",
    [["experiment", "worldmodel", "--tiny"], ["leworld", "train", "--steps", "4"]],
)
def test_a_task_without_a_world_state_is_refused_before_any_folder(argv, tmp_path, capsys):
    with pytest.raises(SystemExit):
        main([*argv, "--env", "CartPole-v1", "--root", str(tmp_path)])
    assert "CartPole-v1 gives no info['world_state']" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())  # leworld train wrote config.json first
