"""Small pieces every tab uses: the shared context, error translation and job rendering."""
from __future__ import annotations

import functools
import html
from dataclasses import dataclass
from typing import Callable

import gradio as gr

from ..jobs import JobView, describe_error
from ..services import StudioError
from ..services.generate import parse_lora_weights as parse_weights  # noqa: F401 (re-export)
from ..studio import Studio


@dataclass
class UIContext:
    """What every tab needs: the studio and the shared character picker."""

    studio: Studio
    character: gr.Dropdown


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


def progress_html(job: JobView | None) -> str:
    if job is None:
        return "<div class='ls-job'>No job yet.</div>"
    pct = int(round(100 * job.progress))
    colour = {"failed": "#c0392b", "canceled": "#7f8c8d", "interrupted": "#d35400"}.get(job.status, "#2e86de")
    text = html.escape(job.error or job.message or job.status)
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
    return [(f"{j.title} · {j.status}", j.id) for j in jobs]


def upload_paths(files) -> list[str]:
    """Local paths of Gradio uploads (plain strings or tempfile wrappers, depending on the caller)."""
    if files is None:
        return []
    items = files if isinstance(files, list) else [files]
    return [f if isinstance(f, str) else f.name for f in items]
