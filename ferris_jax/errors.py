"""Exceptions ferris-jax raises for bad checkpoints, names and inputs, and the checks of
integer and real-number arguments."""

import math
import numbers
from typing import Any


class ModelNotFoundError(FileNotFoundError):
    """A model name, hub id or directory could not be resolved to a checkpoint on this machine."""


class CheckpointError(ValueError):
    """A checkpoint is incomplete, corrupt or inconsistent; the message names the file."""


class BackendFallbackWarning(UserWarning):
    """An accelerator or dtype cannot run the model; the CPU (or float32) is used instead."""


def require_int(name: str, value: Any, minimum: int = 1) -> int:
    """`value` as an int if it is an integer >= `minimum` (numpy integers included, bools not);
    ValueError naming the argument otherwise."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def require_number(name: str, value: Any, *, positive: bool = False) -> float:
    """`value` as a float if it is a finite real number (numpy's and 0-d arrays included, bools
    and strings not), > 0 if `positive` else >= 0; ValueError naming the argument otherwise."""
    bound = "> 0" if positive else ">= 0"
    real = isinstance(value, numbers.Real) or (
        getattr(value, "shape", None) == () and getattr(value, "dtype", None) is not None
    )
    try:
        number = float(value) if real and not isinstance(value, bool) else math.nan
    except (TypeError, ValueError):
        number = math.nan
    if not math.isfinite(number) or (number <= 0 if positive else number < 0):
        raise ValueError(f"{name} must be a finite number {bound}, got {value!r}")
    return number
