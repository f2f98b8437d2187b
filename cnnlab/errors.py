"""Errors caused by what the user asked for (bad name, bad input, missing file).

The CLI turns these into exit status 2 with a one-line reason; anything else is a bug (status 1).
Library errors carry their data as attributes and never name command-line flags: the CLI words
them in its own terms (`InvalidSetting.field` "batch_size" becomes `--batch-size`).
"""

from __future__ import annotations


class UsageError(ValueError):
    """The request cannot be carried out as given; the message says what to do instead."""


class InvalidSetting(UsageError):
    """A setting outside its allowed values: `field`, `value`, `allowed` (words such as
    "in [0, 1)"), and `source` (a config file) when the value came from one."""

    def __init__(self, field: str, value, allowed: str, source: str | None = None):
        self.field, self.value, self.allowed, self.source = field, value, allowed, source
        where = f"{source}: " if source else ""
        super().__init__(f"{where}{field} must be {allowed}, got {value!r}")


class InputTooSmallError(UsageError):
    """An input is too small for a network: some layer's output would shrink to nothing."""


class DatasetError(UsageError):
    """A dataset is missing, corrupt or malformed."""


class CheckpointError(UsageError):
    """A checkpoint or run folder that cannot be used as asked; `path` names the file."""

    def __init__(self, path, reason: str):
        self.path, self.reason = path, reason
        super().__init__(f"{path}: {reason}")


class OutputPathError(UsageError):
    """A path the program was asked to write that it cannot or must not write: `path`, `reason`."""

    def __init__(self, path, reason: str):
        self.path, self.reason = path, reason
        super().__init__(f"{path}: {reason}")


class WeightsError(UsageError):
    """Pretrained weights that cannot be had or are not the published file: `file` (its catalog
    name), `url` (official), `path` (where cnnlab keeps it)."""

    def __init__(self, file: str, url: str, path, message: str):
        self.file, self.url, self.path = file, url, path
        super().__init__(message)


class WeightsMismatch(UsageError):
    """A state dict that does not fit a model; `report` (a LoadReport) lists every key."""

    def __init__(self, report):
        self.report = report
        n = len(report.missing) + len(report.unexpected) + len(report.mismatched)
        super().__init__(f"the weights do not fit the model ({n} keys: {len(report.missing)} "
                         f"missing, {len(report.unexpected)} unexpected, "
                         f"{len(report.mismatched)} of another shape)\n{report.table()}")


class CnnlabWarning(UserWarning):
    """Something the user should know that does not stop the work (skipped files, class names
    that differ); the CLI prints it as one `warning:` line."""
