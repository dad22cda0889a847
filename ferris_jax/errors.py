"""Exceptions ferris-jax raises for bad checkpoints, names and inputs, and the checks of
integer and real-number arguments and of on/off environment variables."""

import math
import numbers
import os
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


_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def env_flag(name: str, default: bool) -> bool:
    """The on/off environment variable `name`: 1/true/yes/on or 0/false/no/off (any case,
    spaces around ignored); `default` where unset or empty. ValueError naming the variable and
    its value otherwise (a typo must not silently mean "on")."""
    value = os.environ.get(name, "")
    word = value.strip().lower()
    if not word:
        return default
    if word in _TRUE or word in _FALSE:
        return word in _TRUE
    raise ValueError(
        f"${name}={value!r}: expected {'/'.join(_TRUE)} to turn it on or {'/'.join(_FALSE)} "
        "to turn it off (or unset it)"
    )
