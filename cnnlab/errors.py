"""Errors caused by what the user asked for (bad name, bad input, missing file).

The CLI turns these into exit status 2 with a one-line reason; anything else is a bug (status 1).
"""


class UsageError(ValueError):
    """The request cannot be carried out as given; the message says what to do instead."""


class InputTooSmallError(UsageError):
    """An input is too small for a network: some layer's output would shrink to nothing."""


class DatasetError(UsageError):
    """A dataset is missing, corrupt or malformed."""
