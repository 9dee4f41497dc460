"""maskrl's argument validators: one-line ``ValueError``s naming the argument, for envs, networks and algorithms."""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def check_int(name: str, value: Any, low: int, high: int | None = None) -> int:
    """Require an integer (not a bool) in ``[low, high]``; ``high=None`` means no upper bound. Returns it."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise ValueError(f"{name} must be an int, got {value!r}")
    if value < low:
        raise ValueError(f"{name} must be >= {low}, got {value}")
    if high is not None and value > high:
        raise ValueError(f"{name} must be <= {high}, got {value}")
    return int(value)


def check_bool(name: str, value: Any) -> bool:
    """Require a bool (Python's or numpy's; not an int or a string) and return it as Python's."""
    if not isinstance(value, bool | np.bool_):
        raise ValueError(f"{name} must be a bool, got {value!r}")
    return bool(value)


def check_number(name: str, value: Any) -> None:
    """Require a finite real number (not a bool)."""
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")


def check_positive(name: str, value: Any) -> float:
    """Require a finite real number > 0 (not a bool) and return it as a float."""
    check_number(name, value)
    if not value > 0:
        raise ValueError(f"{name} must be > 0, got {value!r}")
    return float(value)
