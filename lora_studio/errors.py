"""The one family of errors a user sees as a plain message.

Every layer raises its own kind (the store `NotFound`, images `ImageError`, engines `EngineError`,
workflows `UserError`), all `StudioError`s, so the UI and the job queue catch one type and show its
text as it is. This module imports nothing, so the lowest layer can use it.
"""
from __future__ import annotations


class StudioError(Exception):
    """A refusal or failure whose message says what happened and what to give instead."""


class UserError(StudioError):
    """Raised by work for a reason the user can fix; its message is shown as is."""


class InvalidInput(UserError, ValueError):
    """A value refused at the door (a strength, a seed, a size...)."""


class NotFound(StudioError, KeyError):
    """A record that does not exist (or no longer does)."""

    def __str__(self) -> str:  # KeyError would show the message in quotes
        return str(self.args[0]) if self.args else "Not found."


class WorkspaceError(StudioError):
    """The workspace folder cannot be used (read-only, no permission, damaged database)."""


# errno values, spelled out so this module still imports nothing.
_DISK_FULL = {28, 122}  # ENOSPC, EDQUOT
_READ_ONLY = {30}  # EROFS
_NO_PERMISSION = {1, 13}  # EPERM, EACCES


def describe_os_error(exc: OSError) -> str:
    """A file-system failure in words, without the server's paths (the user cannot see them)."""
    code = getattr(exc, "errno", None)
    if code in _DISK_FULL:
        return ("The disk is full: the app could not save its files. Free some space (delete old jobs, "
                "LoRAs or exports), then try again or resume the job.")
    if code in _READ_ONLY:
        return ("The workspace is on a read-only disk: nothing can be saved. Start the app with a "
                "writable --workspace folder.")
    if code in _NO_PERMISSION:
        return ("The app may not write to its workspace (permission denied). Give the app's user write "
                "access to the workspace folder, or start it with another --workspace.")
    name = getattr(exc, "filename", None)
    what = f" ({str(name).replace(chr(92), '/').rsplit('/', 1)[-1]})" if name else ""
    reason = getattr(exc, "strerror", None) or type(exc).__name__
    return f"A file could not be read or written{what}: {reason}."


def is_out_of_memory(error: BaseException) -> bool:
    """A device that ran out of memory: torch's OutOfMemoryError (CUDA), or any error saying "out of
    memory" (other devices and libraries raise a RuntimeError with those words). Recognised without
    importing torch, so the job queue can tell it apart too."""
    return (any(kind.__name__ == "OutOfMemoryError" for kind in type(error).__mro__)
            or "out of memory" in str(error).lower())
