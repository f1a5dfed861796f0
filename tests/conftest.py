import os

import pytest
import torch

# Two cores on CI: keep torch from oversubscribing them.
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(autouse=True, scope="session")
def _sb3_logdir(tmp_path_factory):
    """SB3's PPO and RecurrentPPO without a tensorboard_log make an empty folder in the
    system temp dir at every learn(); the tests' go under pytest's own temp dir."""
    os.environ["SB3_LOGDIR"] = str(tmp_path_factory.mktemp("sb3"))
