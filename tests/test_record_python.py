"""Recording from Python: ``memworld.record_video`` gives a model trained with
``.learn()`` (no run folder) the video ``memworld record`` writes, and training logs
the memory panel to TensorBoard."""

from __future__ import annotations

import imageio.v3 as iio
import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import memworld
from memworld.train import TrainConfig, train
from memworld.video.record import record

ENV = "memworld/RepeatPreviousEasy-v0"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    config = TrainConfig(env=ENV, memory="gru", steps=256, n_envs=2, checkpoint_every=128)
    return train(config, run=tmp_path_factory.mktemp("run"), progress=False)


def test_a_model_trained_in_python_records_with_its_memory_panel(tmp_path, monkeypatch):
    env = memworld.make_vec_env(ENV, n_envs=2, seed=0)
    model = memworld.MemoryPPO(
        "MlpPolicy", env, n_steps=64, n_epochs=1, policy_kwargs=dict(memory="gru")
    )
    model.learn(128)
    path = memworld.record_video(model, "RepeatPreviousEasy", tmp_path / "agent.mp4")
    frames = iio.imread(path)
    # 52 steps: a frame before each action and the last one; env frame 320 wide + panel 200.
    assert path == tmp_path / "agent.mp4" and frames.shape == (53, 128, 520, 3)
    assert frames[:, :, 320:].astype(float).std() > 5  # the GRU's hidden state, not blank
    written = _capture(monkeypatch)
    memworld.record_video(model, ENV, tmp_path / "two.gif", episodes=2, panel=False)
    assert np.shape(written[-1]) == (2 * 53, 128, 320, 3)


def _capture(monkeypatch) -> list:
    """Keep the frames record_video would write (no encoding: fast, exact)."""
    import memworld.video.record as rec

    written: list = []
    monkeypatch.setattr(
        rec, "write_video", lambda path, frames, fps: written.append(frames) or path
    )
    return written


def test_record_video_is_the_video_record_writes_for_a_run_folder(run, tmp_path, monkeypatch):
    written = _capture(monkeypatch)
    record(run, fmt="gif", seed=7)
    model = memworld.MemoryPPO.load(run / "checkpoints" / "best.zip")
    memworld.record_video(model, ENV, tmp_path / "same.gif", seed=7)
    from_run, from_python = written
    assert len(from_run) == 53
    np.testing.assert_array_equal(np.stack(from_run), np.stack(from_python))


def test_record_video_refuses_a_path_that_is_no_video(tmp_path):
    with pytest.raises(ValueError, match=r"\.mp4 or \.gif"):
        memworld.record_video(None, ENV, tmp_path / "agent.avi")


def test_training_logs_the_memory_panel_to_tensorboard_at_each_checkpoint(run):
    acc = EventAccumulator(str(run), size_guidance={"images": 0})
    acc.Reload()
    assert "memory/panel" in acc.Tags()["images"]
    images = acc.Images("memory/panel")
    assert len(images) >= 2  # at 128 and 256 steps (and at the end)
    assert images[-1].width == 520 and images[-1].height == 128
