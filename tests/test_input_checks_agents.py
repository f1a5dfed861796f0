"""Bad MemoryPPO hyperparameters, sweep files and experiment options fail with clear errors."""

from __future__ import annotations

import pytest

from memworld.agents import MemoryPPO
from memworld.agents.ppo_checks import check_hyperparams
from memworld.cli import main
from memworld.sweep.config import SweepConfig
from tests.test_memory_ppo import cue_env


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(max_grad_norm=-1), "max_grad_norm"),  # would run gradient ascent
        (dict(max_grad_norm=0), "max_grad_norm"),
        (dict(n_epochs=0), "n_epochs"),
        (dict(n_epochs=2.5), "n_epochs"),
        (dict(gamma=1.5), "gamma"),
        (dict(gae_lambda=2), "gae_lambda"),
        (dict(ent_coef=-0.1), "ent_coef"),
        (dict(vf_coef=-1), "vf_coef"),
        (dict(aux_coef=-1), "aux_coef"),
        (dict(target_kl=-0.01), "target_kl"),
        (dict(learning_rate=0), "learning_rate"),
        (dict(learning_rate=-1e-3), "learning_rate"),
        (dict(clip_range=-0.2), "clip_range"),
        (dict(clip_range_vf=0), "clip_range_vf"),
        (dict(n_steps=0), "n_steps"),
        (dict(n_steps=8.5), "n_steps"),
        (dict(batch_size=0), "batch_size"),
        (dict(n_steps=16, bptt_len=4.5), "bptt_len"),  # was int()'d to 4
        (dict(n_steps=16, bptt_len=0), "bptt_len"),
    ],
)
def test_memory_ppo_refuses_out_of_range_hyperparameters(kwargs, name):
    with pytest.raises(ValueError, match=f"MemoryPPO {name} must be "):
        MemoryPPO("MlpPolicy", cue_env(), device="cpu", **kwargs)


def test_memory_ppo_refuses_a_batch_larger_than_the_rollout():
    # 16 steps x 3 envs = 48 env-steps; a larger batch was silently cut to the rollout.
    with pytest.raises(ValueError, match=r"batch_size=64 .*16 \* 3 = 48.*batch_size <= 48"):
        MemoryPPO("MlpPolicy", cue_env(), n_steps=16, batch_size=64, device="cpu")
    model = MemoryPPO("MlpPolicy", cue_env(), n_steps=16, batch_size=48, device="cpu")
    assert model._check_batch_size() == 3


def test_a_loaded_model_on_fewer_envs_predicts_but_refuses_to_train_on_a_small_rollout(tmp_path):
    model = MemoryPPO("MlpPolicy", cue_env(), n_steps=16, batch_size=48, device="cpu")
    model.save(tmp_path / "m.zip")
    loaded = MemoryPPO.load(tmp_path / "m.zip", env=cue_env(n_envs=1), device="cpu")
    loaded.predict(loaded.env.reset(), deterministic=True)  # evaluation works
    with pytest.raises(ValueError, match="batch_size=48 is larger than the rollout"):
        loaded.learn(16)


def test_memory_ppo_keeps_schedules_none_and_infinite_clipping():
    model = MemoryPPO(
        "MlpPolicy",
        cue_env(),
        n_steps=8,
        learning_rate=lambda progress: 1e-3 * progress,
        clip_range=lambda progress: 0.1,
        clip_range_vf=None,
        target_kl=None,
        max_grad_norm=float("inf"),
        n_epochs=1,
        device="cpu",
    )
    model.learn(24)
    assert model.clip_range(1.0) == 0.1


def test_check_hyperparams_skips_unknown_keys_and_uses_the_prefix():
    check_hyperparams({"policy_kwargs": {}, "gamma": 0.99, "batch_size": None})
    with pytest.raises(ValueError, match=r"hyperparams\.gamma must be a number in \[0, 1\]"):
        check_hyperparams({"gamma": 5}, prefix="hyperparams.")


SWEEP = {
    "envs": ["memworld/RepeatPreviousEasy-v0"],
    "algos": ["memoryppo"],
    "memory": ["gru"],
    "seeds": [0],
    "train": {"steps": 64, "n_envs": 2, "hyperparams": {"n_steps": 16}},
}


@pytest.mark.parametrize(
    "changes, name",
    [
        (dict(seeds=[1.7, 2.9]), "seeds"),  # were int()'d to (1, 2)
        (dict(seeds=[-1]), "seeds"),
        (dict(eval={"every": 2.5}), "eval.every"),
        (dict(eval={"episodes": 0}), "eval.episodes"),
        (dict(tune={"max_failures": 1.9}), "tune.max_failures"),
        (dict(tune={"max_failures": -5}), "tune.max_failures"),
        (dict(tune={"cpus_per_trial": 0}), "tune.cpus_per_trial"),
        (dict(tune={"cpus_per_trial": -1}), "tune.cpus_per_trial"),
        (dict(tune={"max_concurrent": 0}), "tune.max_concurrent"),
        (dict(tune={"max_concurrent": -3}), "tune.max_concurrent"),
        (dict(tune={"max_concurrent": "lots"}), "tune.max_concurrent"),
        (dict(train={"steps": 64, "hyperparams": {"n_epochs": 0}}), "hyperparams.n_epochs"),
        (dict(grid={"hyperparams.gamma": [0.9, 5]}), "hyperparams.gamma"),
        (dict(algos=["ppo"], train={"hyperparams": {"gamma": 5}}), "hyperparams.gamma"),
        (dict(search={"space": {"hyperparams.gamma": {"uniform": [0.5, 3]}}}), "hyperparams.gamma"),
        (
            dict(train={"n_envs": 2, "hyperparams": {"n_steps": 16, "batch_size": 64}}),
            "batch_size=64",
        ),
    ],
)
def test_sweep_check_refuses_bad_values_before_training(changes, name):
    with pytest.raises(ValueError, match=f"{name}.*in sweep"):
        SweepConfig.from_dict({**SWEEP, **changes})


def test_sweep_max_concurrent_zero_is_refused_not_replaced():
    from memworld.sweep.driver import run_sweep

    config = SweepConfig.from_dict({**SWEEP, "tune": {"max_concurrent": None}})
    assert config.max_concurrent is None  # null: as many as the CPUs allow
    with pytest.raises(ValueError, match="--max-concurrent must be an integer in"):
        run_sweep(config, "/nonexistent/never-made", max_concurrent=0)


@pytest.mark.parametrize("flag, values", [("--modules", ["slot", "gru"]), ("--seeds", ["1", "2"])])
def test_forgetting_experiment_refuses_several_modules_or_seeds(flag, values, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["experiment", "forgetting", "--tiny", flag, *values])
    assert exit_info.value.code == 2
    assert f"takes one value of {flag}" in capsys.readouterr().err
