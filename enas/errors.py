"""The errors a user can cause, and what the command line does with them.

Every ``UserError`` is a mistake or a condition the user can fix (a bad config value,
missing data, an architecture file that does not fit its space, an unreadable
checkpoint, an existing run folder, a full disk). The command line prints its message,
one paragraph that names the file, key or value and says how to fix it, and exits
with code 2: never a traceback. Anything else is a bug and keeps its traceback.
"""
from __future__ import annotations


class UserError(Exception):
    """Base of the errors a user can fix; ``str()`` is the whole message."""


class ConfigError(UserError, ValueError):
    """A config file or override; the message says how to fix it."""


class DataError(UserError, RuntimeError):
    """Missing, unreadable or corrupt data files; the message names them and where to get them."""


class ArchError(UserError, ValueError):
    """An architecture that does not fit its space; the message names the decision."""


class ArchFileError(ArchError):
    """An architecture file that cannot be read; the message names the file."""


class CheckpointError(UserError, RuntimeError):
    """A checkpoint that cannot be written or read; the message says what to do."""


class RunDirError(UserError, RuntimeError):
    """A run folder that is not what the command needs (missing, not a run, not empty)."""


class RegistryError(UserError, KeyError):
    """An unknown or duplicate name (space, op, task)."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])
