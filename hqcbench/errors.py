"""Errors the CLI turns into one clear line and exit code 2 (bad input, missing data)."""
from __future__ import annotations


class UserInputError(ValueError):
    """Bad user input: names the parameter and what it accepts.

    The CLI prints ``str(error)`` as one line and exits with code 2; no traceback, since the
    fix is on the user's side and a stack trace would bury the one line that matters.
    """

    def __init__(self, parameter: str, message: str, allowed: str | None = None):
        self.parameter = parameter
        self.allowed = allowed
        text = f"{parameter}: {message}"
        if allowed:
            text += f" (allowed: {allowed})"
        super().__init__(text)


class DataUnavailableError(RuntimeError):
    """A dataset's files are missing and cannot be downloaded (offline, or data_dir without them)."""
