"""check_range: the one range check that names the argument, the range and the fix."""

import math

import numpy as np
import pytest

from memworld.memory.base import check_range


@pytest.mark.parametrize(
    "value, kwargs, message",
    [
        (
            1.5,
            {"low": 0, "high": 1, "fix": "0.99 is usual"},
            r"gamma must be a number in \[0, 1\], got 1.5; 0.99 is usual",
        ),
        (0, {"low": 1, "integer": True}, r"gamma must be an integer in \[1, inf\), got 0$"),
        (0.0, {"low": 0, "open_low": True}, r"gamma must be a number in \(0, inf\), got 0.0"),
        (1.0, {"low": 0, "high": 1, "open_high": True}, r"in \[0, 1\), got 1.0"),
        (math.nan, {"low": 0, "high": 1}, r"got nan"),
        (4.5, {"low": 1, "integer": True}, r"an integer in \[1, inf\), got 4.5"),
        (True, {"low": 0, "high": 1}, r"got True"),
        ("0.9", {"low": 0, "high": 1}, r"got '0.9'"),
        (-2, {"high": -3}, r"in \(-inf, -3\], got -2"),
    ],
)
def test_check_range_refuses_and_names_argument_range_and_fix(value, kwargs, message):
    with pytest.raises(ValueError, match=message):
        check_range("gamma", value, **kwargs)


@pytest.mark.parametrize(
    "value, kwargs",
    [
        (0.99, {"low": 0, "high": 1}),
        (0, {"low": 0, "high": 1}),
        (1, {"low": 0, "high": 1}),
        (np.int64(3), {"low": 1, "integer": True}),
        (np.float32(0.5), {"low": 0, "high": 1, "open_low": True, "open_high": True}),
        (-1e9, {}),
    ],
)
def test_check_range_accepts_values_in_range(value, kwargs):
    check_range("gamma", value, **kwargs)  # no error


def test_check_range_prints_whole_bounds_in_full():
    with pytest.raises(ValueError, match=r"seed must be an integer in \[0, 4294967295\], got -1"):
        check_range("seed", -1, 0, 2**32 - 1, integer=True)
