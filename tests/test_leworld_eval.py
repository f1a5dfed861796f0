"""LeWorld's evaluation on hand-made numbers: per-step curves, the info request's gain and
its standard error, and the acceptance checks counted over seeds."""

from __future__ import annotations

import pytest
import torch

from memworld.world_models.leworld.evaluation import (
    acceptance,
    episode_sums_mean_se,
    fall_z,
    per_step,
    quarter_fall_mean_se,
    request_gain_z,
)


def test_per_step_mse_stops_at_the_last_step_any_episode_reaches():
    loss = torch.tensor([[1.0, 3.0], [2.0, 9.0], [7.0, 7.0]])  # (T=3, B=2)
    valid = torch.tensor([[True, True], [True, False], [False, False]])
    assert per_step(loss, valid) == [2.0, 2.0]  # step 2 has no row: left out, not 0


def test_per_episode_gain_and_its_standard_error_on_a_hand_made_case():
    gain = torch.tensor([[1.0, 2.0, 0.5], [3.0, 5.0, 0.5], [4.0, 9.0, 99.0]])  # (T=3, B=3)
    valid = torch.tensor([[True, True, True], [True, True, True], [True, False, False]])
    mean, se = episode_sums_mean_se(gain, valid)  # episode sums 8, 7, 1: 99 is past the end
    assert mean == pytest.approx(16 / 3)
    std = ((8 - 16 / 3) ** 2 + (7 - 16 / 3) ** 2 + (1 - 16 / 3) ** 2) ** 0.5 / 2**0.5
    assert se == pytest.approx(std / 3**0.5)


def test_per_episode_fall_from_the_second_quarter_to_the_last_on_a_hand_made_case():
    loss = torch.zeros(8, 3)  # (T=8, B=3): quarters of 2 steps, second [2, 4), last [6, 8)
    valid = torch.ones(8, 3, dtype=torch.bool)
    loss[2:4, 0], loss[6:8, 0] = torch.tensor([4.0, 6.0]), torch.tensor([1.0, 3.0])  # 5 -> 2
    loss[2:4, 1], loss[6, 1] = 2.0, 1.0  # 2 -> 1: its step 7 is past the end
    valid[7, 1] = False
    loss[2:4, 2] = 9.0  # ends at step 5, with no step in the last quarter: left out
    valid[5:, 2] = False
    loss[7, 1] = loss[5:, 2] = 99.0  # past the ends, never read
    mean, se = quarter_fall_mean_se(loss, valid)  # falls 3 and 1
    assert mean == pytest.approx(2.0)
    assert se == pytest.approx(1.0)  # sample std sqrt(2) over sqrt(2 episodes)
    assert fall_z({"per_step_fall": {"leworld": (mean, se)}}) == pytest.approx(2.0)
    assert fall_z({}) != fall_z({})  # NaN: evaluated before the fall was recorded
    lead = {"lead_growth": {"no_memory": (-1.0, 0.25)}}
    assert fall_z(lead, "no_memory", "lead_growth") == -4.0


def test_acceptance_counts_the_seeds_that_pass_each_check():
    def result(leworld, gain, usage, curve, se=1.0, fall=(0.0, 1.0), lead=(0.0, 1.0)):
        return {
            "per_step_fall": {"leworld": fall},
            "lead_growth": {"no_memory": lead},
            "mse": {"leworld": leworld, "no_memory": 0.5, "gru": 0.2, "random_addresses": 0.4},
            "info_request_gain": gain,
            "info_request_gain_per_episode": 10 * gain,
            "info_request_gain_se": se,
            "usage": usage,
            "routing_entropy": 0.7,
            "per_step_mse": {"leworld": curve},
        }

    checks = acceptance(
        {
            0: result(0.3, +0.01, [0.5, 0.3, 0.25], [0.1, 0.9, 0.8, 0.5], se=0.04, fall=(3, 1)),
            1: result(0.45, -0.01, [0.5, 0.1, 0.9], [0.1, 0.5, 0.6, 0.7], lead=(0.5, 0.1)),
            2: result(0.45, +0.01, [0.5, 0.1, 0.9], [0.1, 0.5, 0.6, 0.7], se=0.06),
        }
    )
    assert checks["beats no_memory"] == "3/3"
    assert checks["beats random_addresses"] == "1/3"
    assert checks["beats gru"] == "0/3"
    assert checks["info-request gain > 0"] == "2/3"
    assert checks["info-request gain > 2 standard errors"] == "1/3"  # z = 2.5, -0.1, 1.7
    unused = result(0.3, 0.0, [0.5, 0.5, 0.5], [0.1, 0.2], se=0.0)  # never moved an address
    assert request_gain_z(unused) == 0.0
    assert checks["every SLM used >= 20%"] == "1/3"
    assert checks["routing entropy >= 0.5"] == "3/3"
    assert checks["per-step MSE falls (last vs second quarter)"] == "1/3"
    assert checks["per-step MSE falls by > 2 standard errors"] == "1/3"  # z = 3, 0, 0
    assert checks["lead over no memory grows by > 2 standard errors"] == "1/3"  # z = 0, 5, 0
    no_baselines = result(0.3, 0.0, [0.5, 0.5, 0.5], [0.1, 0.2])
    del no_baselines["mse"]["no_memory"], no_baselines["mse"]["gru"]
    assert acceptance({0: no_baselines})["beats no_memory"].startswith("n/a")
