import json
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from memworld.monitor import MemoryMonitor
from memworld.runs import package_versions, run_dir, write_json


def test_monitor_records_history_and_summary(tmp_path):
    mon = MemoryMonitor("slot", max_points=4)
    for step in range(6):
        mon.record(step, {"usage_entropy": step * 0.5, "write_rate": 1.0})
    steps, values = mon.history("usage_entropy")
    # 5 points exceed max_points=4 once: thinned to every other point, then the 6th appended.
    np.testing.assert_array_equal(steps, [0, 2, 4, 5])
    np.testing.assert_allclose(values, [0.0, 1.0, 2.0, 2.5])
    assert mon.summary()["usage_entropy"] == {
        "first": 0.0,
        "last": 2.5,
        "mean": 1.375,
        "min": 0.0,
        "max": 2.5,
    }
    png = mon.plot(tmp_path / "diag.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    data = json.loads(mon.to_json(tmp_path / "diag.json").read_text())
    assert data["series"]["write_rate"]["values"] == [1.0, 1.0, 1.0, 1.0]
    with pytest.raises(KeyError, match="usage_entropy"):
        mon.history("nope")


def test_run_dir_layout_and_versions(tmp_path):
    a = run_dir("memworld/RepeatPreviousEasy-v0", "memoryppo", "gru", 3, root=tmp_path)
    b = run_dir("memworld/RepeatPreviousEasy-v0", "memoryppo", "gru", 3, root=tmp_path)
    assert a != b and a.parent == b.parent
    assert a.relative_to(tmp_path).parts[:2] == ("RepeatPreviousEasy-v0", "memoryppo-gru")
    assert a.name.endswith("-s3")
    versions = package_versions()
    assert versions["torch"] and versions["gymnasium"]
    assert versions["torch_threads"] == torch.get_num_threads()
    commit = versions["memworld_commit"]
    root = Path(__file__).resolve().parent.parent
    if (root / ".git").exists():  # a checkout (CI's fresh clone): its HEAD
        head = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True
        ).stdout.strip()
        assert re.fullmatch(r"[0-9a-f]{40}(\+dirty)?", commit) and commit.startswith(head)
    else:
        assert commit is None
    write_json(a / "config.json", {"versions": versions, "x": np.float32(1.5)})
    assert json.loads((a / "config.json").read_text())["x"] == 1.5
