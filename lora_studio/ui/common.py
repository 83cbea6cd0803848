"""Small pieces every tab uses: the shared context, error translation and job rendering."""
from __future__ import annotations

import functools
import html
import json
import logging
from dataclasses import dataclass, field
from typing import Any, Callable

import gradio as gr

from ..jobs import JobView, describe_error
from ..services import StudioError
from ..services.costs import Estimate, spending_text
from ..services.generate import parse_lora_weights as parse_weights  # noqa: F401 (re-export)
from ..studio import Studio


@dataclass
class UIContext:
    """What every tab needs: the studio, the shared character picker and the tab strip.

    Tabs also leave things here for the app to wire once every tab exists: choices to remember
    across restarts (`remember`), components other tabs reach (`share`) and late wiring (`later`).
    """

    studio: Studio
    character: gr.Dropdown
    tabs: gr.Tabs | None = None
    remembered: list[tuple[str, Any, Callable[[], list] | None]] = field(default_factory=list)
    shared: dict[str, Any] = field(default_factory=dict)
    wiring: list[Callable[[], None]] = field(default_factory=list)

    def remember(self, key: str, component, choices: Callable[[], list] | None = None) -> None:
        """Save this component's value on change and restore it on page load (see services.preferences)."""
        self.remembered.append((key, component, choices))

    def share(self, name: str, component) -> None:
        self.shared[name] = component

    def later(self, wire: Callable[[], None]) -> None:
        self.wiring.append(wire)

    @property
    def paid(self) -> bool:
        """True on Replicate: costs, caps and go_fast are shown only where calls are paid for."""
        return self.studio.costs.paid


def friendly(fn: Callable) -> Callable:
    """Show errors as a plain message in the UI instead of a stack trace.

    A StudioError carries a message for the user; anything else is described in one line by the
    same rule the job queue uses, so a stranger never sees a traceback.
    """

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except StudioError as exc:
            raise gr.Error(str(exc) or type(exc).__name__, print_exception=False) from None
        except Exception as exc:  # noqa: BLE001 - a full disk, a bug: one plain line, never a trace
            expected = isinstance(exc, (ValueError, KeyError, TypeError, OSError))
            raise gr.Error(describe_error(exc), print_exception=not expected) from None

    return wrapper


def error_text(exc: BaseException) -> str:
    """The one line a user sees for an error raised by a handler."""
    if isinstance(exc, gr.Error):
        return str(exc.message)
    if isinstance(exc, StudioError):
        return str(exc) or type(exc).__name__
    return describe_error(exc)


def notice(text: str) -> str:
    return f"<div class='ls-notice' role='alert'>⚠ {html.escape(text)}</div>" if text else ""


def beside(count: int, message_at: int) -> Callable[[Callable], Callable]:
    """Like `friendly`, for handlers that update a gallery: on an error every output keeps what it
    showed (no "Error" placeholder) and the message goes to output `message_at`, shown beside it."""

    def wrap(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except Exception as exc:  # noqa: BLE001 - whatever failed, the gallery stays as it was
                if not isinstance(exc, (gr.Error, StudioError, ValueError, KeyError, TypeError)):
                    logging.getLogger(__name__).exception("%s failed", getattr(fn, "__name__", "handler"))
                out: list[Any] = [gr.skip()] * count
                out[message_at] = notice(error_text(exc))
                return tuple(out)

        return wrapper

    return wrap


def estimate_text(estimate: Estimate | None) -> str:
    return estimate.text() if estimate else ""


def progress_html(job: JobView | None) -> str:
    if job is None:
        return "<div class='ls-job'>No job yet.</div>"
    pct = int(round(100 * job.progress))
    colour = {"failed": "#c0392b", "canceled": "#7f8c8d", "interrupted": "#d35400"}.get(job.status, "#2e86de")
    text = html.escape(job.error or job.message or job.status)
    cost = spending_text(job.outputs.get("spending")) if job.done else ""
    if not cost and not job.done and job.params.get("estimate"):
        est = job.params["estimate"]
        cost = f"Expected ≈ ${est['usd']:.2f}" + (f" (up to ${est['usd_max']:.2f})" if est["usd_max"] > est["usd"] else "")
    if cost:
        text += f"<div class='ls-cost'>{html.escape(cost)}</div>"
    return (
        f"<div class='ls-job' data-status='{job.status}'>"
        f"<div style='display:flex;justify-content:space-between'><b>{html.escape(job.title)}</b>"
        f"<span>{job.status} · {pct}%</span></div>"
        f"<div style='background:#e5e7eb;border-radius:6px;height:12px;margin:4px 0'>"
        f"<div style='background:{colour};width:{pct}%;height:12px;border-radius:6px'></div></div>"
        f"<div>{text}</div></div>"
    )


def job_logs(job: JobView | None) -> str:
    return "\n".join(job.logs) if job else ""


def character_choices(studio: Studio) -> list[tuple[str, str]]:
    return [(c["name"], c["id"]) for c in studio.characters.list()]


def lora_choices(studio: Studio) -> list[tuple[str, str]]:
    return [(r["name"], r["id"]) for r in studio.library.list()]


def job_choices(jobs: list[JobView]) -> list[tuple[str, str]]:
    """Each job labelled with its status as the store has it now (read again on every refresh)."""
    return [(f"{j.title} · {j.status}", j.id) for j in jobs]


def fresh_choices(choices: list[tuple[str, str]], current, shown: str | None, pick_latest: bool = True):
    """(update, signature) for a dropdown refreshed on a timer: nothing is sent while the list is
    unchanged (an open dropdown stays open), and the user's pick is kept while it still exists."""
    signature = json.dumps(choices)
    if signature == shown:
        return gr.skip(), shown
    ids = [value for _, value in choices]
    value = current if current in ids else (ids[-1] if ids and pick_latest else None)
    return gr.update(choices=choices, value=value), signature


def or_preset(value):
    """A form or API number left at 0, "" or nothing means "use the preset's value"."""
    return None if value in (None, "", 0, "0") else value


def upload_paths(files) -> list[str]:
    """Local paths of Gradio uploads (plain strings or tempfile wrappers, depending on the caller)."""
    if files is None:
        return []
    items = files if isinstance(files, list) else [files]
    return [f if isinstance(f, str) else f.name for f in items]
