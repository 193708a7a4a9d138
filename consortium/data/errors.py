"""The one error type of the data layer, so callers (the CLI) can turn bad input into a one-line message."""

from __future__ import annotations


class DataError(ValueError):
    """Bad or unusable data: the message names the file (and line) or the domain, and what is wrong."""
