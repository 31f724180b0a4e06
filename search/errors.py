"""Errors that mean "bad input": the CLI prints them as one line and exits with code 2."""

from __future__ import annotations

import re

_URL_PASSWORD = re.compile(
    r"(?P<head>[a-zA-Z][a-zA-Z0-9+.\-]*://[^:/@\s]*):(?P<password>[^@\s/]*)@"
)


class InputError(Exception):
    """Bad input from the user: a path, a value, a storage URL, a study name, ..."""


class ConfigError(InputError):
    """A study config that does not validate."""


class StorageError(InputError):
    """A storage URL that is malformed or a database that cannot be reached."""


class ExportFailed(Exception):
    """An exported format that did not match the Keras model (or could not be written):
    train-best has written and recorded everything else; the CLI prints one line, exit 1."""

    exit_code = 1


def mask_password(text: str) -> str:
    """Replace the password of every URL in `text` with ``***``."""
    return _URL_PASSWORD.sub(lambda m: f"{m.group('head')}:***@", text)


def one_line(message: str) -> str:
    """Collapse a message to one line with passwords masked."""
    return mask_password(" ".join(str(message).split()))
