"""SB3 loggers that write nothing to disk unless asked."""

from __future__ import annotations

import sys

from stable_baselines3.common.logger import HumanOutputFormat, Logger


def stdout_logger(verbose: int) -> Logger:
    """An SB3 logger that prints its table to stdout (``verbose >= 1``) or nothing, and has
    no folder. SB3's default logger (``configure(None, ...)``, what ``learn()`` builds
    without ``tensorboard_log``) makes an empty ``$TMPDIR/SB3-<date-time>`` folder at every
    ``learn()`` call even when it only prints."""
    return Logger(folder=None, output_formats=[HumanOutputFormat(sys.stdout)] if verbose else [])
