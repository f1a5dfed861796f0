"""MemoryMonitor: record any memory module's diagnostics over time and plot them.

The LMCODE document's MemoryMonitor, for every module of the protocol: call
:meth:`record` with ``module.diagnostics(state)`` (or any dict of floats) each
step or update; :meth:`history` gives arrays, :meth:`plot` a PNG with one
panel per diagnostic, :meth:`to_json` the raw series.
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path

import numpy as np

from memworld.runs import write_json


class MemoryMonitor:
    """Time series of named scalar diagnostics.

    Args:
        name: label used in plot titles (e.g. the module name).
        max_points: keep at most this many points per series; older points are
            thinned by two (every other point kept) so long runs stay bounded
            without losing the start of the run.
    """

    def __init__(self, name: str = "memory", max_points: int = 100_000) -> None:
        if max_points < 2:
            raise ValueError(f"max_points must be >= 2, got {max_points}")
        self.name = name
        self.max_points = max_points
        self._steps: dict[str, list[int]] = defaultdict(list)
        self._values: dict[str, list[float]] = defaultdict(list)

    def record(self, step: int, diagnostics: dict[str, float]) -> None:
        """Add one point per diagnostic at ``step``; non-finite values are kept as NaN."""
        for key, value in diagnostics.items():
            value = float(value)
            self._steps[key].append(int(step))
            self._values[key].append(value if math.isfinite(value) else float("nan"))
            if len(self._steps[key]) > self.max_points:
                self._steps[key] = self._steps[key][::2]
                self._values[key] = self._values[key][::2]

    def keys(self) -> list[str]:
        return sorted(self._values)

    def history(self, key: str) -> tuple[np.ndarray, np.ndarray]:
        """(steps, values) of one diagnostic."""
        if key not in self._values:
            raise KeyError(f"no diagnostic {key!r} recorded; recorded: {self.keys()}")
        return np.asarray(self._steps[key]), np.asarray(self._values[key])

    def summary(self) -> dict[str, dict[str, float]]:
        """First, last, mean, min and max of every series."""
        out = {}
        for key in self.keys():
            _, v = self.history(key)
            out[key] = {
                "first": float(v[0]),
                "last": float(v[-1]),
                "mean": float(np.nanmean(v)),
                "min": float(np.nanmin(v)),
                "max": float(np.nanmax(v)),
            }
        return out

    def to_json(self, path: str | Path) -> Path:
        data = {k: {"steps": self._steps[k], "values": self._values[k]} for k in self.keys()}
        return write_json(path, {"name": self.name, "series": data})

    def plot(self, path: str | Path, title: str | None = None) -> Path:
        """One panel per diagnostic, against step; writes a PNG."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        keys = self.keys()
        if not keys:
            raise ValueError("nothing recorded yet; call record() before plot()")
        cols = min(3, len(keys))
        rows = math.ceil(len(keys) / cols)
        fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 2.6 * rows), squeeze=False)
        for ax, key in zip(axes.flat, keys):
            steps, values = self.history(key)
            ax.plot(steps, values, lw=1)
            ax.set_title(key, fontsize=9)
            ax.set_xlabel("step", fontsize=8)
            ax.tick_params(labelsize=7)
        for ax in list(axes.flat)[len(keys) :]:
            ax.axis("off")
        fig.suptitle(title or f"{self.name} diagnostics", fontsize=10)
        fig.tight_layout()
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=90)
        plt.close(fig)
        return path
