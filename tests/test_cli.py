"""The memworld command line: run folders, TensorBoard tags, eval, record, resume, errors."""

from __future__ import annotations

import json
import subprocess
import sys

import imageio.v3 as iio
import pytest
import torch
from stable_baselines3.common.save_util import load_from_zip_file
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from memworld import envs
from memworld.cli import main

ENV = "memworld/RepeatPreviousEasy-v0"


def _tags(run):
    tags = set()
    for events in run.glob("events.out.tfevents.*"):
        acc = EventAccumulator(str(events))
        acc.Reload()
        tags |= set(acc.Tags()["scalars"])
    return tags


def _run_folder(root):
    (run,) = [p for p in root.glob("*/*/*") if p.is_dir()]
    return run


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    main(
        [
            "train",
            "--env",
            ENV,
            "--algo",
            "memoryppo",
            "--memory",
            "gru",
            "--steps",
            "512",
            "--n-envs",
            "4",
            "--seed",
            "1",
            "--root",
            str(root),
            "--quiet",
        ]
    )
    return _run_folder(root)


def test_list_shows_every_registered_id():
    out = subprocess.run(
        [sys.executable, "-m", "memworld.cli", "list"], capture_output=True, text=True, check=True
    ).stdout
    for env_id in envs.env_ids():
        assert env_id in out


def test_train_writes_run_folder_with_tags(trained):
    assert trained.parts[-3:-1] == ("RepeatPreviousEasy-v0", "memoryppo-gru")
    config = json.loads((trained / "config.json").read_text())
    assert config["train"]["steps"] == 512 and config["versions"]["torch"]
    assert (trained / "checkpoints" / "latest.zip").exists()
    tags = _tags(trained)
    for tag in (
        "charts/episodic_return",
        "charts/episode_length",
        "charts/sps",
        "losses/policy_gradient_loss",
        "losses/value_loss",
        "memory/hidden_norm",
    ):
        assert tag in tags, tag


def test_eval_writes_eval_json(trained):
    main(["eval", str(trained), "--episodes", "3"])
    result = json.loads((trained / "eval.json").read_text())
    assert result["episodes"] == 3 and len(result["returns"]) == 3
    assert -1.0 <= result["mean_return"] <= 1.0
    returns = result["returns"]
    mean = sum(returns) / 3
    assert result["mean_return"] == pytest.approx(mean, abs=1e-6)  # np.mean ran in float32
    std = (sum((r - mean) ** 2 for r in returns) / 3) ** 0.5  # population std, as np.std
    assert result["std_return"] == pytest.approx(std, abs=1e-6)


def test_record_writes_mp4_with_memory_panel(trained):
    main(["record", str(trained), "--episodes", "1"])
    frames = iio.imread(trained / "videos" / "episode0.mp4")
    # RepeatPreviousEasy: 52 steps -> 52 frames before each action plus the final one.
    assert frames.shape[0] == 53
    assert frames.shape[1:] == (128, 320 + 200, 3)
    panel = frames[:, :, 320:].astype(float)
    assert panel.std() > 5, "the memory panel should show the hidden state"


def test_record_warns_when_max_frames_cuts_the_episode(trained):
    with pytest.warns(UserWarning, match=r"max_frames=5.*--max-frames"):
        main(["record", str(trained), "--format", "gif", "--max-frames", "5"])
    assert iio.imread(trained / "videos" / "episode0.gif").shape[0] == 5


def test_resume_continues_step_counter(tmp_path):
    main(
        [
            "train",
            "--env",
            ENV,
            "--memory",
            "gru",
            "--steps",
            "512",
            "--n-envs",
            "4",
            "--root",
            str(tmp_path),
            "--quiet",
        ]
    )
    run = _run_folder(tmp_path)
    main(["train", "--resume", str(run), "--steps", "512", "--quiet"])
    data, _, _ = load_from_zip_file(run / "checkpoints" / "latest.zip")
    assert data["num_timesteps"] == 1024


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["train", "--env", "memworld/Nope-v0", "--steps", "10"], "memworld list"),
        (["train", "--env", "KeyDoorMedum"], "did you mean memworld/KeyDoorMedium-v0"),
        (["leworld", "train", "--env", "KeyDoorMedum"], "did you mean memworld/KeyDoorMedium-v0"),
        (["train", "--memory", "nope", "--steps", "10"], "gru"),
        (["train", "--algo", "nope"], "memoryppo"),
        (["eval", "/nonexistent/run"], "not a run folder"),
        (["record", "/nonexistent/run", "--format", "avi"], "mp4"),
        (["eval", "/nonexistent/run", "--episodes", "0"], "--episodes must be an integer in [1"),
        (["record", "/nonexistent/run", "--episodes", "0"], "--episodes must be an integer"),
        (["record", "/nonexistent/run", "--max-frames", "0"], "--max-frames must be"),
        (["train", "--seed", "-1"], "--seed must be an integer in [0"),
        (["train", "--steps", "0"], "--steps must be an integer in [1"),
        (["train", "--device", "gpu"], "--device must be cpu, cuda, cuda:N"),
        (["train", "--resume", "/r", "--algo", "ppo"], "so --algo cannot change it: drop it"),
        (["leworld", "train", "--resume", "/r", "--preset", "full"], "so --preset cannot"),
        (["leworld", "train", "--resume", "/r", "--steps", "8", "--seed", "3"], "--steps, --seed"),
        (["train", "--resume", "/r", "--env", "TMazeEasy", "--seed", "1"], "--env, --seed cannot"),
    ],
)
def test_bad_arguments_exit_nonzero_with_choices(argv, expected, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code != 0
    assert expected in capsys.readouterr().err


def test_a_folder_of_the_other_command_is_refused_by_name(tmp_path, capsys):
    """A LeWorld run folder given to `memworld eval`, and a `memworld train` one given to
    `memworld leworld eval`, name the command that wrote what each expects."""
    leworld, train = tmp_path / "leworld", tmp_path / "train"
    for folder, key in ((leworld, "training"), (train, "train")):
        folder.mkdir()
        (folder / "config.json").write_text(json.dumps({key: {}}))
    for argv, command in (
        (["eval", str(leworld)], "`memworld train`"),
        (["record", str(leworld)], "`memworld train`"),
        (["train", "--resume", str(leworld)], "`memworld train`"),
        (["leworld", "eval", str(train)], "`memworld leworld train`"),
        (["leworld", "train", "--resume", str(train)], "`memworld leworld train`"),
        (["leworld", "eval", str(tmp_path / "missing")], "not a run folder"),
    ):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code != 0
        err = capsys.readouterr().err
        assert command in err and "Traceback" not in err, (argv, err)


@pytest.mark.skipif(torch.cuda.device_count() > 8, reason="needs a cuda:9 this machine lacks")
@pytest.mark.parametrize("command", [["train"], ["leworld", "train"]])
def test_a_device_this_machine_lacks_is_refused_before_any_run_folder(command, tmp_path, capsys):
    """SB3 would quietly train on the CPU; LeWorld used to write config.json first."""
    missing = "cuda:9" if torch.cuda.is_available() else "cuda"
    argv = [*command, "--env", "RepeatPreviousEasy", "--steps", "8", "--seed", "0"]
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--device", missing, "--root", str(tmp_path)])
    assert exit_info.value.code != 0
    err = capsys.readouterr().err
    assert f"--device {missing!r}: this" in err and "cpu or auto instead" in err, err
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize(
    "name, env_id",
    [
        ("KeyDoorMedium", "memworld/KeyDoorMedium-v0"),
        ("KeyDoorMedium-v0", "memworld/KeyDoorMedium-v0"),
        ("memworld/KeyDoorMedium-v0", "memworld/KeyDoorMedium-v0"),
        ("CartPole-v1", "CartPole-v1"),
    ],
)
def test_env_short_names_resolve_to_registered_ids(name, env_id):
    assert envs.resolve_id(name) == env_id


def test_a_config_files_short_env_name_resolves_and_a_typo_is_refused(tmp_path):
    from memworld.train import TrainConfig

    cfg = tmp_path / "c.yaml"
    cfg.write_text("env: KeyDoorEasy\nsteps: 10\n")
    assert TrainConfig.from_file(cfg).env == "memworld/KeyDoorEasy-v0"
    with pytest.raises(ValueError, match="did you mean memworld/KeyDoorEasy-v0"):
        TrainConfig(env="KeyDoorEasyy")


def test_an_algorithm_that_cannot_act_in_the_task_is_refused_before_any_run_folder(
    tmp_path, capsys
):
    argv = ["train", "--env", "OccludedDynamicsEasy", "--algo", "dqn", "--steps", "8"]
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--root", str(tmp_path)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "algo dqn cannot train on memworld/OccludedDynamicsEasy-v0: The algorithm only" in err
    assert not any(tmp_path.iterdir())  # run_dir used to make the folder before the check


def test_memory_belongs_to_memoryppo_alone(capsys):
    """An explicit --memory with another algorithm is refused; its config records none."""
    from memworld.train import TrainConfig

    for algo, label in (("recurrentppo", "lstm"), ("ppo", "mlp"), ("a2c", "mlp")):
        with pytest.raises(SystemExit) as exit_info:
            main(["train", "--algo", algo, "--memory", "slot", "--steps", "8"])
        assert exit_info.value.code == 2
        assert f"{algo} has its own policy ({label})" in capsys.readouterr().err
        assert TrainConfig(algo=algo).memory is None  # not the memoryppo default, "gru"
        assert TrainConfig(algo=algo, memory="gru").memory_label == label
    assert TrainConfig(algo="memoryppo").memory == "gru"


def test_config_file_with_unknown_key_is_refused(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("steps: 10\nlearning_rat: 0.1\n")
    with pytest.raises(SystemExit):
        main(["train", "--config", str(cfg)])


@pytest.mark.parametrize(
    "text, expected",
    [
        ("hyperparams: {n_stepz: 16}\n", "unknown hyperparams of memoryppo: ['n_stepz'] (did you"),
        ("memory_kwargs: {hiden_dim: 8}\n", "'hidden_dim' for 'hiden_dim'"),
        ("- steps: 64\n", "must be a mapping of TrainConfig fields"),
        ("checkpoint_every: true\n", "checkpoint_every must be an integer"),
        ("device: gpu\n", "device must be cpu, cuda, cuda:N"),
        ("seed: -1\n", "seed must be an integer in [0"),
        ("hyperparams: {gamma: 1.5}\n", "hyperparams.gamma must be a number in [0, 1]"),
        ("n_envs: 2\nhyperparams: {n_steps: 8, batch_size: 64}\n", "larger than the rollout"),
        ("steps: [1\n", "not valid YAML"),
        ("algo: ppo\nmemory_kwargs: {hidden_dim: 8}\n", "ppo has its own policy (mlp)"),
        ("device: cuda:9\n", "device 'cuda:9': this"),
    ],
)
def test_config_file_problems_are_one_line_errors_naming_the_key(tmp_path, text, expected, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(text)
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--config", str(cfg), "--run-dir", str(tmp_path / "run"), "--quiet"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert expected in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()  # refused before the run folder is made


# ---- checkpoints and threads


def test_eval_and_record_name_the_checkpoint_they_use(trained, capsys):
    main(["eval", str(trained), "--episodes", "1", "--checkpoint", "latest"])
    out = capsys.readouterr().out
    latest = trained / "checkpoints" / "latest.zip"
    assert f"checkpoint: {latest}" in out
    assert json.loads((trained / "eval.json").read_text())["checkpoint"] == str(latest)
    argv = ["record", str(trained), "--format", "gif", "--max-frames", "3"]
    with pytest.warns(UserWarning, match="max_frames=3"):  # 3 frames cut the episode
        main([*argv, "--checkpoint", str(latest)])
    assert f"checkpoint: {latest}" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["eval", str(trained), "--checkpoint", "nope"])
    assert "neither 'best', 'latest' nor a checkpoint file" in capsys.readouterr().err


def test_threads_are_recorded_and_the_bar_counts_the_steps_trained(tmp_path, monkeypatch):
    from memworld import tb

    bars = []
    start = tb.TrainCallback._on_training_start

    def keep(self):
        start(self)
        bars.append(self)

    monkeypatch.setattr(tb.TrainCallback, "_on_training_start", keep)
    argv = ["train", "--steps", "600", "--n-envs", "4", "--threads", "2", "--root", str(tmp_path)]
    main([*argv, "--memory", "gru"])
    run = _run_folder(tmp_path)
    config = json.loads((run / "config.json").read_text())
    assert config["train"]["torch_threads"] == 2
    (task,) = bars[0]._bar.tasks  # 600 asked, whole rollouts of 4 x 128 trained: 1,024
    assert task.completed == task.total == 1024
