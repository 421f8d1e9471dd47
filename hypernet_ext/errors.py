"""Exception hierarchy of hypernet_ext.

Every error a user can cause derives from HypernetError; messages name the field or file, the bad value,
and what to do instead. Glue code (CLI, UI) shows ``str(error)`` as is.
"""


class HypernetError(Exception):
    """Base class of every error raised on purpose by hypernet_ext."""


class ConfigError(HypernetError, ValueError):
    """A setting has a value that cannot work (bad field, schedule string, optimizer name, ...)."""


class FormatError(HypernetError):
    """A file could not be read as a hypernetwork (not ours, truncated, corrupt, wrong shapes)."""

    def __init__(self, path, problem):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class UnsafeFileError(FormatError):
    """A file asks to run code while loading; it was refused and nothing from it ran."""


class AttachError(HypernetError):
    """A hypernetwork cannot be attached to (or removed from) a model."""


class DataError(HypernetError):
    """A training data set cannot be used (missing folder, no usable images, bad template)."""


class TrainingError(HypernetError):
    """Training cannot start or cannot go on (diverged, interrupted without a checkpoint, ...)."""
