"""LeWorld refuses bad input with an error naming the argument, its range and the fix."""

from __future__ import annotations

import math

import numpy as np
import pytest

from memworld.world_models.leworld.config import (
    BLMConfig,
    LeWorldConfig,
    MemoryConfig,
    SLMConfig,
    TrainingConfig,
    preset,
)

ENV = "memworld/OccludedDynamicsEasy-v0"


@pytest.mark.parametrize(
    "field, value, allowed",
    [
        ("num_envs", 0, r"\[1, inf\)"),
        ("seq_len", 0, r"\[1, inf\)"),
        ("seq_len", -3, r"\[1, inf\)"),
        ("lr", 0.0, r"\(0, inf\)"),
        ("lr", math.inf, r"\(0, inf\)"),
        ("phase3_lr", -1e-4, r"\(0, inf\)"),
        ("grad_clip", -1.0, r"\(0, inf\).*inf turns clipping off"),
        ("request_noise", 0.0, r"\(0, inf\)"),
        ("log_every", 0, r"\[1, inf\)"),
        ("phase1_steps", 1.5, "integer"),
        ("phase3_steps", -1, r"\[0, inf\)"),
        ("codec_steps", 2.0, "integer"),
        ("oracle_prob", 2.0, r"\[0, 1\]"),
        ("oracle_prob", math.nan, r"\[0, 1\]"),
        ("seed", -1, r"\[0, inf\)"),
        ("entropy_coef", math.nan, r"\[0, inf\)"),
    ],
)
def test_training_config_refuses_out_of_range_fields(field, value, allowed):
    with pytest.raises(ValueError, match=rf"TrainingConfig\.{field} must be .*{allowed}"):
        TrainingConfig(**{field: value})


def test_training_config_accepts_no_clipping_and_zero_length_phases():
    TrainingConfig(grad_clip=math.inf, codec_steps=0, phase1_steps=0, oracle_prob=0.0)


@pytest.mark.parametrize(
    "lags, message",
    [
        ((1, -2, 3), r"pretrain_lags\[1\] must be an integer"),
        ((), "pretrain_lags must be a non-empty tuple"),
    ],
)
def test_training_config_refuses_bad_pretrain_lags(lags, message):
    with pytest.raises(ValueError, match=rf"TrainingConfig\.{message}"):
        TrainingConfig(pretrain_lags=lags)


@pytest.mark.parametrize("lags", [(1,), (1, 4, 16, 64)])
def test_trainer_wants_one_pretrain_lag_per_slm(lags):
    from memworld.world_models.leworld import LeWorldSystem
    from memworld.world_models.leworld.training import LeWorldTrainer

    system = LeWorldSystem(preset("small"))  # 3 SLMs
    with pytest.raises(ValueError, match=r"pretrain_lags must hold one lag per SLM: 3 .*num_slms"):
        LeWorldTrainer(system, TrainingConfig(pretrain_lags=lags))


@pytest.mark.parametrize(
    "config, field",
    [
        (lambda: SLMConfig(num_slms=0), "SLMConfig.num_slms"),
        (lambda: SLMConfig(num_slms=-1), "SLMConfig.num_slms"),
        (lambda: SLMConfig(layers=-1), "SLMConfig.layers"),
        (lambda: SLMConfig(layers=0), "SLMConfig.layers"),
        (lambda: SLMConfig(hidden=0), "SLMConfig.hidden"),
        (lambda: SLMConfig(read_dim=0), "SLMConfig.read_dim"),
        (lambda: SLMConfig(pointer_freqs=-2), "SLMConfig.pointer_freqs"),
        (lambda: SLMConfig(range_choices=(0, 2)), r"SLMConfig.range_choices\[0\]"),
        (lambda: BLMConfig(d_model=0), "BLMConfig.d_model"),
        (lambda: BLMConfig(blocks=-1), "BLMConfig.blocks"),
        (lambda: BLMConfig(request_dim=0), "BLMConfig.request_dim"),
        (lambda: BLMConfig(gate_bias=math.nan), "BLMConfig.gate_bias"),
        (lambda: MemoryConfig(num_high=0, num_low=0), "MemoryConfig.num_high"),
        (lambda: MemoryConfig(num_high=1, num_low=1), r"MemoryConfig.num_high .*\[2, 4096\]"),
        (lambda: MemoryConfig(num_high=16.0, num_low=16.0), "MemoryConfig.num_high .*integer"),
        (lambda: MemoryConfig(num_high=12, num_low=12), "MemoryConfig.num_high .*power of two"),
        (lambda: MemoryConfig(num_high=16, num_low=8), r"MemoryConfig.num_high \(16\) and num_low"),
        (lambda: MemoryConfig(word_bits=33), r"MemoryConfig.word_bits .*\[1, 32\]"),
        (lambda: MemoryConfig(top_k=0), "MemoryConfig.top_k"),
        (lambda: MemoryConfig(num_high=2, num_low=2, range_len=5), r"range_len .*\[1, 4\]"),
        (
            lambda: LeWorldConfig(slm=SLMConfig(range_choices=(1, 16))),
            r"SLMConfig.range_choices .*MemoryConfig.range_len",
        ),
    ],
)
def test_system_configs_refuse_out_of_range_fields(config, field):
    with pytest.raises(ValueError, match=field):
        config()


def test_system_configs_accept_the_smallest_legitimate_sizes():
    LeWorldConfig(
        memory=MemoryConfig(num_high=2, num_low=2, range_len=4, top_k=2),
        slm=SLMConfig(num_slms=1, char_dim=0, layers=1, pointer_freqs=0, range_choices=()),
        blm=BLMConfig(blocks=0),
    )


@pytest.fixture(scope="module")
def slm_env():
    from memworld.agents.leworld import SLMEnv

    env = SLMEnv(env_id=ENV, seq_len=4)
    env.reset(seed=0)
    return env


@pytest.mark.parametrize(
    "action, entry",
    [
        ([300, 0, 0], r"entry 0 \(address high byte\) must be an integer in \[0, 255\], got 300"),
        ([0, 300, 0], r"entry 1 \(address low byte\)"),
        ([-1, 0, 0], "entry 0"),
        ([1.7, 2.2, 0], r"entry 0 .*got 1.7"),
        ([0, 0, -1], r"entry 2 \(range choice\) must be an integer in \[0, 3\]"),
        ([0, 0, 4], "entry 2"),
    ],
)
def test_slm_env_refuses_actions_outside_its_space(slm_env, action, entry):
    with pytest.raises(ValueError, match=rf"SLMEnv action .* is outside MultiDiscrete.*{entry}"):
        slm_env.step(action)


def test_slm_env_refuses_a_wrongly_shaped_action_and_takes_whole_floats(slm_env):
    with pytest.raises(ValueError, match="SLMEnv action must be 3 integers in MultiDiscrete"):
        slm_env.step([1, 2])
    slm_env.step(np.array([1.0, 2.0, 0.0]))  # whole numbers in the space are fine


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"seq_len": 0}, r"SLMEnv seq_len must be an integer in \[1, inf\)"),
        ({"oracle_prob": 2.0}, r"SLMEnv oracle_prob must be a number in \[0, 1\]"),
    ],
)
def test_slm_env_refuses_bad_arguments(kwargs, message):
    from memworld.agents.leworld import SLMEnv

    with pytest.raises(ValueError, match=message):
        SLMEnv(env_id=ENV, **kwargs)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"num_envs": 0}, "RolloutSource num_envs"),
        ({"seq_len": 0}, "RolloutSource seq_len"),
        ({"oracle_prob": -0.1}, r"RolloutSource oracle_prob must be a number in \[0, 1\]"),
    ],
)
def test_rollout_source_refuses_bad_arguments(kwargs, message):
    from memworld.world_models.leworld.data import RolloutSource

    with pytest.raises(ValueError, match=message):
        RolloutSource(ENV, **{"num_envs": 2, "seq_len": 4, **kwargs})


@pytest.mark.parametrize("steps", ["-100", "0", "2", "3"])
def test_cli_refuses_too_few_steps_naming_the_minimum(steps, capsys):
    from memworld.leworld.cli import main

    with pytest.raises(SystemExit):
        main(["leworld", "train", f"--steps={steps}"])
    assert "argument --steps: must be an integer >= 4" in capsys.readouterr().err
