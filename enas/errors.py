"""The errors a user can cause, and what the command line does with them.

Every ``UserError`` is a mistake or a condition the user can fix (a bad config value,
missing data, an architecture file that does not fit its space, an unreadable
checkpoint, an existing run folder, a full disk). The command line prints its message,
one paragraph that names the file, key or value and says how to fix it, and exits
with code 2: never a traceback. Anything else is a bug and keeps its traceback.
"""
from __future__ import annotations

import re


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


class RunBusyError(RunDirError):
    """Another process writes the run folder (enas/storage/runlock.py)."""


class UntrustedCodeError(RunDirError):
    """A run folder's files name code to import that the command line did not name."""


class FileRefused(UserError, OSError):
    """A file enas will not read or write as it is: not a regular file (a FIFO, a device),
    a symbolic link where a run's own file belongs, or larger than any such file may be.
    An ``OSError`` too, so a reader's ``except OSError`` names the file as for any other."""

    def __init__(self, path, why: str):
        super().__init__(f"{path}: {why}")
        self.strerror, self.filename = why, str(path)

    def __str__(self) -> str:
        return str(self.args[0])


# Every message quotes values from files that anyone may have written: a value is cut to
# this many characters, and control characters never reach the terminal (an escape
# sequence in a provenance string can retitle the terminal or clear the screen).
QUOTE_CHARS = 200


# Printable ASCII is always shown as it is; any other character is shown only if Python
# calls it printable (not a control character, a lone surrogate, a bidirectional override).
_SUSPECT = re.compile(r"[^\x20-\x7e\n\t]")
_SUSPECT_IN_LINE = re.compile(r"[^\x20-\x7e]")


def _escape(match: re.Match) -> str:
    c = match.group()
    return c if c.isprintable() else repr(c)[1:-1]


def printable(text: str) -> str:
    """``text`` with every control character but newline and tab shown as an escape."""
    return _SUSPECT.sub(_escape, str(text))


def one_line(text) -> str:
    """``text`` with every control character, newline and tab included, shown as an escape:
    a name or value from a file (a run folder's name, a metric's, a provenance string)
    printed within a line of enas's own, which it must not end early or forge a line after."""
    return _SUSPECT_IN_LINE.sub(_escape, str(text))


def brief(value, limit: int = QUOTE_CHARS) -> str:
    """``repr(value)`` for a message: control characters escaped (repr does that), and at
    most ``limit`` characters of it, saying how long the whole was."""
    try:
        text = repr(value)
    except ValueError:  # an int past Python's 4,300-digit limit for str()
        text = f"<an integer of about {int(value.bit_length() * 0.30103):,} digits>"
    except RecursionError:
        text = f"<a {type(value).__name__} nested too deeply to print>"
    if len(text) <= limit:
        return printable(text)
    return printable(text[:limit]) + f"... ({len(text):,} characters)"
