"""Typed exceptions of the library.

The library raises these; only ``cdiflow.cli`` and ``jobs/`` turn them into one-line
messages and exit codes. Every error that comes from bad user input subclasses
``InputError`` (exit code 2).
"""

from __future__ import annotations


class CdiflowError(Exception):
    """Base class of every error that cdiflow raises on purpose."""


class InputError(CdiflowError, ValueError):
    """Bad input from the user: a config, a file, an argument. The CLI exits with 2."""


class ConfigError(InputError):
    """A configuration is invalid: unknown keys, impossible values, wrong types."""


class OutputDirError(InputError):
    """An output folder holds files that cdiflow did not write, or cannot be used."""


class CorruptShard(InputError):
    """A Parquet shard is unreadable, foreign, or does not match its manifest."""

    def __init__(self, path: str, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


class DatasetError(InputError):
    """A dataset is missing, incomplete, or has wrong shapes / NaN / missing columns."""


class StorageError(InputError):
    """An object-storage location (``s3://...``) cannot be reached, listed, read or written."""


class ScheduleSyntaxError(InputError):
    """A phasing schedule string does not parse; the message points at the position."""

    def __init__(self, text: str, position: int, reason: str):
        pointer = " " * position + "^"
        super().__init__(f"{reason} at position {position}\n  {text}\n  {pointer}")
        self.text = text
        self.position = position
        self.reason = reason


class PhasingError(CdiflowError):
    """Iterative phase retrieval could not go on."""


class SupportCollapsed(PhasingError):
    """Shrink-wrap left an empty (or nearly empty) support."""


class ModelNotFound(InputError):
    """A model reference (registry alias, version or file) does not resolve."""


class ScanError(InputError):
    """A beamline scan cannot be read or preprocessed; the job records it as failed."""


class ClusterUnavailable(InputError):
    """A Ray cluster address or an MLflow server does not answer."""


class NonFiniteScore(InputError):
    """A validation score handed to the registry is NaN or infinite.

    Such a score cannot rank models (``x < nan`` is always false, so a NaN champion
    could never be replaced); the registry refuses it before registering anything.
    """


class NonFiniteLoss(CdiflowError):
    """The training loss became NaN or infinite: training stopped instead of running on.

    ``step`` is the 0-based index of the first bad batch within the epoch; ``value`` the
    loss there. Usual causes: a learning rate that is too high (lower it or set
    ``train.grad_clip``), or NaN / inf in the input data.
    """

    def __init__(self, step: int, value: float, message: str | None = None):
        super().__init__(
            message
            or (
                f"the training loss is non-finite ({value}) at step {step} of the epoch "
                "(0-based batch index); lower train.lr, set train.grad_clip, or check the "
                "data for NaN / inf"
            )
        )
        self.step = step
        self.value = value

    def __reduce__(self):  # picklable across Ray workers despite the custom __init__
        return type(self), (self.step, self.value, str(self))
