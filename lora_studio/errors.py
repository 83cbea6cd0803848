"""The one family of errors a user sees as a plain message.

Every layer raises its own kind (the store `NotFound`, images `ImageError`, engines `EngineError`,
workflows `UserError`), all `StudioError`s, so the UI and the job queue catch one type and show its
text as it is. This module imports nothing, so the lowest layer can use it.
"""
from __future__ import annotations


class StudioError(Exception):
    """A refusal or failure whose message says what happened and what to give instead."""


class InvalidInput(StudioError, ValueError):
    """A value refused at the door (a strength, a seed, a size...)."""


class NotFound(StudioError, KeyError):
    """A record that does not exist (or no longer does)."""

    def __str__(self) -> str:  # KeyError would show the message in quotes
        return str(self.args[0]) if self.args else "Not found."
