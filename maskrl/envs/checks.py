"""One-line ``ValueError``s for bad env constructor arguments, shared by maskrl's envs."""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def check_int(name: str, value: Any, low: int, high: int | None = None) -> None:
    """Require an integer (not a bool) in ``[low, high]``; ``high=None`` means no upper bound."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise ValueError(f"{name} must be an int, got {value!r}")
    if value < low:
        raise ValueError(f"{name} must be >= {low}, got {value}")
    if high is not None and value > high:
        raise ValueError(f"{name} must be <= {high}, got {value}")


def check_number(name: str, value: Any) -> None:
    """Require a finite real number (not a bool)."""
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
