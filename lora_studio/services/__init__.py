"""Workflows behind the tabs. No gradio here, and no torch: engines do the model work.

`StudioError` is the one error type callers catch: every refusal from a workflow, an engine, the
store or an image check is one, with a message fit to show as it is.
"""
from ..errors import StudioError, UserError

__all__ = ["StudioError", "UserError"]
