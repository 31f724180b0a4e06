"""The error raised for bad datasets: the CLI turns it into one line and exit code 2."""

from __future__ import annotations


class DataError(Exception):
    """A dataset folder that cannot be used as it is (missing, empty, unreadable, ...)."""
