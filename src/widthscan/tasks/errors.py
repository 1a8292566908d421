"""Errors raised by tasks, and the checks that raise them with the field name in the message."""

from __future__ import annotations

import math
import operator
from collections.abc import Iterable
from typing import Any


class TaskConfigError(ValueError):
    """A task was asked for something invalid; the message names the field and what is allowed."""


class PoolExhaustedError(TaskConfigError):
    """An online task over a finite pool was asked for more examples than the pool holds."""


class TaskDataError(ValueError):
    """A data file is missing, unreadable or not in the expected format; the message names it."""


class DatasetNotFoundError(TaskDataError, FileNotFoundError):
    """A data directory or file does not exist or lacks the expected files."""


def check_int(field: str, value: Any, low: int | None = None, high: int | None = None) -> int:
    """Return `value` as an int in [low, high] (either bound may be None), else raise."""
    if isinstance(value, bool) or not hasattr(value, "__index__"):
        raise TaskConfigError(f"{field} must be an integer{_range(low, high)}, got {value!r}")
    value = operator.index(value)
    if (low is not None and value < low) or (high is not None and value > high):
        raise TaskConfigError(f"{field} must be an integer{_range(low, high)}, got {value}")
    return int(value)


def check_float(field: str, value: Any, low: float, high: float) -> float:
    """Return `value` as a finite float in [low, high], else raise."""
    if isinstance(value, bool):
        raise TaskConfigError(f"{field} must be a number in [{low}, {high}], got {value!r}")
    try:
        out = float(value)
    except (TypeError, ValueError):
        out = math.nan
    if not math.isfinite(out) or not low <= out <= high:
        raise TaskConfigError(f"{field} must be a number in [{low}, {high}], got {value!r}")
    return out


def check_choice(field: str, value: Any, allowed: Iterable[Any]) -> Any:
    """Return `value` if it is one of `allowed`, else raise listing them."""
    allowed = tuple(allowed)
    if value not in allowed:
        options = ", ".join(repr(a) for a in allowed)
        raise TaskConfigError(f"{field} must be one of {options}; got {value!r}")
    return value


def check_bool(field: str, value: Any) -> bool:
    """Return `value` if it is a bool, else raise."""
    if not isinstance(value, bool):
        raise TaskConfigError(f"{field} must be True or False, got {value!r}")
    return value


def _range(low: int | None, high: int | None) -> str:
    if low is not None and high is not None:
        return f" in [{low}, {high}]"
    if low is not None:
        return f" >= {low}"
    if high is not None:
        return f" <= {high}"
    return ""
