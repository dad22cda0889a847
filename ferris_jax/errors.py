"""Exceptions ferris-jax raises for bad checkpoints, names and inputs."""


class ModelNotFoundError(FileNotFoundError):
    """A model name, hub id or directory could not be resolved to a checkpoint on this machine."""


class CheckpointError(ValueError):
    """A checkpoint is incomplete, corrupt or inconsistent; the message names the file."""


class BackendFallbackWarning(UserWarning):
    """An accelerator or dtype cannot run the model; the CPU (or float32) is used instead."""
