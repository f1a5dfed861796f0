import os

import pytest
import torch

# One torch thread: the tests' models are small, and on CI's busy 2 cores a second thread
# mostly waits (2 threads made small models 8-15x slower than 1 on this machine, and kept the
# slow MemorySAC test from finishing). OMP_NUM_THREADS in the environment is overridden too.
torch.set_num_threads(1)


@pytest.fixture(autouse=True, scope="session")
def _sb3_logdir(tmp_path_factory):
    """SB3's PPO and RecurrentPPO without a tensorboard_log make an empty folder in the
    system temp dir at every learn(); the tests' go under pytest's own temp dir."""
    os.environ["SB3_LOGDIR"] = str(tmp_path_factory.mktemp("sb3"))
