"""How a handler becomes an event: a top-level function, a typed reply, one rule for failures.

A handler is a module-level function whose first parameter is the Studio (more leading values can be
bound with `bound=`). `on()` wires it to a trigger and `expose()` makes it a named JSON endpoint. The
event is named after the function: that name (its `api_name`) and its place in the app's list are how
a stranger on a shared link reaches it, hidden or not, so both stay as they are.

An event with several outputs is answered by a `Reply`, a dataclass whose fields are named after the
tab's components and default to KEEP (send nothing: the component keeps what it shows). The event
names the fields it updates, in Gradio's order (`Reply.to(parts, "gallery", "message")`), and the
reply becomes that tuple. So the error path is named, not counted: on a failure every output is kept
and the sentence goes to the reply's MESSAGE field when the event shows it, else it pops up as a
gr.Error.

Refusals (StudioError, gr.Error) are expected and logged nowhere. Anything else is a bug or a failure
of the machine: it reaches the log with its traceback, and the user still reads a sentence.
"""
from __future__ import annotations

import html
import inspect
import logging
import typing
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, fields
from typing import Any, Callable, ClassVar, NamedTuple

import gradio as gr

from ..jobs import describe_error
from ..services import StudioError
from . import wording

log = logging.getLogger(__name__)


class _Keep:
    __slots__ = ()

    def __repr__(self) -> str:
        return "KEEP"


KEEP: Any = _Keep()  # a reply field left as it is: Gradio sends nothing for that component

# Errors whose own words mean nothing to a user: a bug in our code, shown as one.
_BUGS = (LookupError, TypeError, AttributeError, NameError, AssertionError)


def notice(text: str) -> str:
    return f"<div class='ls-notice' role='alert'>⚠ {html.escape(text)}</div>" if text else ""


def failure_text(exc: BaseException, where: str = "a handler") -> str:
    """The sentence a user reads for a failed handler. Refusals are shown as they are; anything else is
    logged with its traceback first, and worded by the job queue's rule (a bug says it is one)."""
    if isinstance(exc, gr.Error):
        return str(exc.message)
    if isinstance(exc, StudioError):
        return str(exc) or type(exc).__name__
    log.error("%s failed", where, exc_info=exc)
    text = describe_error(exc)
    if isinstance(exc, _BUGS):
        return wording.INTERNAL_ERROR.format(error=f"{type(exc).__name__}: {text}")
    return text


@dataclass
class Reply:
    """A handler's answer, one field per component it may update (every field defaults to KEEP).

    MESSAGE names the field where a failure is shown beside the outputs (a gallery's notice), so an
    error never blanks them; without one a failure pops up as a gr.Error.
    """

    MESSAGE: ClassVar[str | None] = None

    @classmethod
    def to(cls, parts, *names: str) -> Outputs:
        """The event's outputs: these fields (all of them, in order, when none are named) and the
        components of the same names in `parts` (a tab's components, by attribute or key)."""
        declared = fields(cls)
        loose = [f.name for f in declared if f.default is MISSING or f.default is not KEEP]
        if loose:
            raise TypeError(f"{cls.__name__}: every field defaults to KEEP ({', '.join(loose)} does not)")
        names = names or tuple(f.name for f in declared)
        unknown = sorted(set(names) - {f.name for f in declared})
        if unknown:
            raise TypeError(f"{cls.__name__} has no field {', '.join(unknown)}")
        pick = parts.__getitem__ if isinstance(parts, Mapping) else lambda name: getattr(parts, name)
        return Outputs(cls, tuple(names), [pick(name) for name in names])


@dataclass(frozen=True)
class Outputs:
    """Which fields of a reply class an event updates, in Gradio's order, with their components."""

    reply: type[Reply]
    names: tuple[str, ...]
    components: list

    def values(self, reply: Reply):
        """The reply as Gradio takes it: a tuple in the event's order (one value for one output)."""
        if not isinstance(reply, self.reply):
            raise TypeError(f"expected a {self.reply.__name__}, got {type(reply).__name__}")
        stray = [f.name for f in fields(reply) if f.name not in self.names and getattr(reply, f.name) is not KEEP]
        if stray:
            raise ValueError(f"{type(reply).__name__} sets {', '.join(stray)}, which this event does not update")
        out = tuple(gr.skip() if (value := getattr(reply, name)) is KEEP else value for name in self.names)
        return out[0] if len(out) == 1 else out

    def failed(self, text: str):
        """Every output kept and the sentence in the MESSAGE field; None when this event does not show it."""
        field = self.reply.MESSAGE
        if field is None or field not in self.names:
            return None
        return self.values(self.reply(**{field: notice(text)}))


class OnOpen(NamedTuple):
    """What a tab refreshes when it is opened (the app wires it to the tab's select event)."""

    handler: Callable
    inputs: list
    outputs: Outputs | list


def handler_for(studio, handler: Callable, outputs: Outputs | list | None = None, bound: tuple = (),
                name: str | None = None) -> Callable:
    """`handler` with the studio (and `bound`) filled in, the failure rule around it and its reply
    turned into Gradio's tuple. Named and typed like the handler minus the bound parameters, since
    Gradio reads the signature to hand over the request and the event data and to build the API."""
    leading = (studio, *bound)
    signature = inspect.signature(handler)
    params = list(signature.parameters.values())
    if len(params) < len(leading) or any(p.kind not in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
                                         for p in params[:len(leading)]):
        raise TypeError(f"{handler.__name__} takes the studio{' and its bound values' if bound else ''} first")
    dropped = {p.name for p in params[:len(leading)]}
    title = name or handler.__name__
    shows = outputs if isinstance(outputs, Outputs) else None

    def run(*args, **kwargs):
        try:
            result = handler(*leading, *args, **kwargs)
            return shows.values(result) if shows else result
        except Exception as exc:  # noqa: BLE001 - whatever failed, the user reads one sentence
            text = failure_text(exc, title)
            kept = shows.failed(text) if shows else None
            if kept is not None:
                return kept
            if isinstance(exc, gr.Error):
                raise
            raise gr.Error(text, print_exception=False) from None

    run.__name__ = run.__qualname__ = title
    run.__module__, run.__doc__ = handler.__module__, handler.__doc__
    run.__wrapped__ = handler  # type hints resolve in the handler's module
    run.__signature__ = signature.replace(parameters=params[len(leading):])
    run.__annotations__ = {k: v for k, v in handler.__annotations__.items() if k not in dropped}
    run.owner_only = getattr(handler, "owner_only", False)
    typing.get_type_hints(run)  # an unreadable hint would make Gradio drop the request: fail here instead
    return run


def on(studio, trigger, handler: Callable, inputs=None, outputs: Outputs | list | None = None, *,
       bound: tuple = (), name: str | None = None, **options):
    """Wire `handler` to `trigger` (a listener such as `button.click`, or None / a list for `gr.on`).

    Events without an `api_name` are the page's own (`api_visibility="private"`); they are still
    reachable by their index, so every input is checked by the services and owner-only handlers say so
    (ui/owner.py)."""
    fn = handler_for(studio, handler, outputs, bound, name)
    components = outputs.components if isinstance(outputs, Outputs) else outputs
    options.setdefault("api_visibility", "public" if "api_name" in options else "private")
    if trigger is None or isinstance(trigger, list):
        return gr.on(trigger, fn, inputs, components, **options)
    return trigger(fn, inputs, components, **options)


def expose(studio, *handlers: Callable) -> None:
    """Each handler as a named JSON endpoint (`gr.api`), typed by its hints; call inside the Blocks."""
    for handler in handlers:
        gr.api(handler_for(studio, handler), api_name=handler.__name__)
