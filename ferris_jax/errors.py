"""Exceptions ferris-jax raises for bad checkpoints, names and inputs, and the one check of
integer arguments."""

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
