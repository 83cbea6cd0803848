"""Who may change the owner's settings (engine and models, tokens, prices, caps, shared presets).

On a private launch (loopback, no --share, no Space) the person at the page is the owner. Elsewhere
anyone holding the link reaches every event by its index, hidden or not, so the check runs on the
server, in one place: a handler marked `@owner_only` is refused to anyone else before it runs. A
logged-in user (`--auth`) owns the app, and on a Space only the Space's author logged in with Hugging
Face does. Handlers that serve visitors too (read-only views, a visitor's own presets) ask `is_owner`.

Jobs follow the same rule (lora_studio/job_access.py): `requester` says who a request is, the
generic job handlers pass it as `seen_by`, and `install` lets the queue stamp each new job with
whoever's event created it.
"""
from __future__ import annotations

import functools
import inspect
import typing
from typing import Callable, Optional

import gradio as gr

from ..jobs import ANONYMOUS, OWNER, Requester
from ..services import UserError
from ..studio import Studio

NOT_OWNER = ("Only the owner of this app changes its settings. On a shared link they are set where it is "
             "started (flags or LORA_STUDIO_* variables; on a Space, its variables and secrets), or after "
             "logging in.")
_REQUEST_HINTS = (gr.Request, Optional[gr.Request])


def is_owner(studio: Studio, request: gr.Request | None) -> bool:
    settings = studio.settings
    if settings.private_launch:
        return True
    user = getattr(request, "username", None) if request is not None else None
    if not user:
        return False
    if settings.space_id and settings.auth is None:
        return bool(settings.space_author) and user == settings.space_author
    return True


def require_owner(studio: Studio, request: gr.Request | None) -> None:
    """Raise the sentence a visitor sees."""
    if not is_owner(studio, request):
        raise UserError(NOT_OWNER)


def owner_only(handler: Callable) -> Callable:
    """Mark a handler (studio first, as every handler takes it) as the owner's: the caller is checked
    before it runs. Its signature gains a `request: gr.Request` unless it asks for one itself, so
    Gradio hands the request over whichever way the event is reached (page, API or index)."""
    signature = inspect.signature(handler)
    params = list(signature.parameters.values())
    hints = typing.get_type_hints(handler)
    asked = next((p.name for p in params if hints.get(p.name) in _REQUEST_HINTS), None)
    if asked is None:
        params.append(inspect.Parameter("request", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None,
                                        annotation=gr.Request))
    checked_signature = signature.replace(parameters=params)

    @functools.wraps(handler)
    def checked(studio: Studio, *args, **kwargs):
        call = checked_signature.bind(studio, *args, **kwargs)
        require_owner(studio, call.arguments.get(asked or "request"))
        if asked is None:
            call.arguments.pop("request", None)
        return handler(*call.args, **call.kwargs)

    checked.__signature__ = checked_signature
    if asked is None:
        checked.__annotations__ = {**handler.__annotations__, "request": gr.Request}
    checked.owner_only = True
    return checked
def requester(studio: Studio, request: gr.Request | None) -> Requester:
    """Who a request is, for the jobs it may see and control."""
    if is_owner(studio, request):
        return OWNER
    return Requester(False, getattr(request, "username", None) or None)


def page_view(studio: Studio) -> Requester:
    """Who a page built once for everyone (its first values are in /config) is shown to."""
    return OWNER if studio.settings.private_launch else ANONYMOUS


def install(studio: Studio) -> None:
    """The queue stamps a job with the requester of the event that creates it (the request Gradio
    holds for the running handler); outside any event (a restart, a script) it is the owner."""
    from gradio.context import LocalContext

    def asking() -> Requester:
        request = LocalContext.request.get(None)
        return OWNER if request is None else requester(studio, request)

    studio.jobs.asking = asking
