"""Errors of the data layer. The CLI prints ``str(error)`` without a traceback, so
every message says which files were expected, where, and how to get them."""


class DataError(RuntimeError):
    """Missing, unreadable or corrupt data files."""
