"""The supervised recall task of the distance experiment, and its tiny run end to end."""

from __future__ import annotations

import json

import pytest
import torch

from memworld.experiments import distance
from memworld.experiments.recall import recall_batch, train_recall


def test_recall_batch_shows_the_cue_then_distractors_then_the_query():
    x, cue = recall_batch(
        3, batch_size=5, num_symbols=4, generator=torch.Generator().manual_seed(0)
    )
    assert x.shape == (4, 5, 6)
    assert torch.equal(x[0, :, :4].argmax(-1), cue)  # the cue's one-hot ...
    assert torch.equal(x[:, :, 4], torch.tensor([1.0, 0, 0, 0])[:, None].expand(4, 5))  # its flag
    assert torch.equal(x[:, :, 5], torch.tensor([0, 0, 0, 1.0])[:, None].expand(4, 5))  # query
    assert torch.equal(x[1:3, :, :4].sum(-1), torch.ones(2, 5))  # one distractor a step
    assert torch.equal(x[3, :, :4], torch.zeros(5, 4))  # no symbol at the query


@pytest.mark.slow
def test_a_gru_learns_short_recall_and_the_memoryless_model_stays_at_chance():
    gru = train_recall("gru", (2,), seed=0, updates=150, batch_size=32, eval_sequences=64)
    mlp = train_recall("mlp", (2,), seed=0, updates=150, batch_size=32, eval_sequences=64)
    assert gru["accuracy"][2] >= 0.9, gru
    assert mlp["accuracy"][2] <= 0.45, mlp  # chance is 1/4


def test_recall_experiment_writes_one_row_per_module_distance_and_respects_caps(tmp_path):
    config = distance.DistanceConfig(
        task="Recall",
        modules=("framestack", "mlp"),
        distances=(2, 4, 8),
        updates=3,
        batch_size=4,
        max_distance={"framestack": 4},
    )
    out = distance.run(config, root=tmp_path)
    result = json.loads((out / "results.json").read_text())
    assert set(result["table"]) == {"framestack", "mlp"}
    assert set(result["table"]["framestack"]) == {"2", "4"}
    assert set(result["table"]["mlp"]) == {"2", "4", "8"}
    assert (out / "accuracy_vs_distance.png").read_bytes()[:4] == b"\x89PNG"
