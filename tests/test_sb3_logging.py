"""MemoryPPO's logging writes nothing to disk unless asked."""

from __future__ import annotations

import tempfile

from stable_baselines3.common.logger import configure

from memworld.agents import MemoryPPO
from tests.test_memory_ppo import cue_env


def test_learn_writes_no_folder_unless_asked(tmp_path, monkeypatch, capsys):
    """SB3's default logger makes an empty $TMPDIR/SB3-<date-time> folder at every learn();
    MemoryPPO prints the same table and writes nothing, and still logs to tensorboard_log."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    monkeypatch.delenv("SB3_LOGDIR", raising=False)
    (tmp_path / "tmp").mkdir()
    model = MemoryPPO("MlpPolicy", cue_env(), n_steps=8, n_epochs=1, seed=0, verbose=1)
    model.learn(16)
    model.learn(16)
    # (torch itself makes torchinductor_<user> there when an optimizer is built)
    assert list((tmp_path / "tmp").glob("SB3-*")) == []
    assert "total_timesteps" in capsys.readouterr().out and not model._custom_logger
    model.tensorboard_log = str(tmp_path / "tb")
    model.learn(16, tb_log_name="run")
    assert list((tmp_path / "tb" / "run_1").glob("events.out.tfevents.*"))
    model.set_logger(configure(str(tmp_path / "csv"), ["csv"]))  # a user's logger is kept
    model.learn(16)
    assert "memory/hidden_norm" in (tmp_path / "csv" / "progress.csv").read_text()
