"""Exception hierarchy of hypernet_ext.

Every error a user can cause derives from HypernetError; messages name the field or file, the bad value,
and what to do instead. Glue code (CLI, UI) shows ``str(error)`` as is; values that come from files are quoted
through ``excerpt``, so a message never repeats more than a few dozen characters of a file's content.
"""
import re
import reprlib

_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxdict, _REPR.maxlist, _REPR.maxtuple, _REPR.maxset = 2, 4, 6, 6, 4
_REPR.maxstring, _REPR.maxother, _REPR.maxlong = 40, 40, 40


def excerpt(value, limit: int = 60, quote: bool = True) -> str:
    """A short repr of ``value`` for messages (``quote=False``: a string as it is): nested and long values are cut
    (reprlib never expands a structure fully, so even a huge or deeply nested value costs little)."""
    text = value if isinstance(value, str) and not quote else _REPR.repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def error_field(err: Exception):
    """The option an error is about: its ``field`` attribute, else the 'name:' its message starts with (our
    messages do), else None."""
    field = getattr(err, "field", None)
    if field:
        return field
    match = re.match(r"([a-z_][a-z0-9_]*):\s", str(err))
    return match.group(1) if match else None


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
