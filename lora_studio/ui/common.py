"""Small pieces every tab uses: the shared context, job rendering and choice lists."""
from __future__ import annotations

import html
import json
from dataclasses import dataclass, field
from typing import Any, Callable

import gradio as gr

from ..jobs import JobView
from ..services.costs import Estimate, spending_text
from ..services.generate import parse_lora_weights as parse_weights  # noqa: F401 (re-export)
from ..studio import Studio
from . import events


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

    def on(self, trigger, handler: Callable, inputs=None, outputs=None, **options):
        """Wire a top-level handler (the studio first) to a trigger; see ui/events.py."""
        return events.on(self.studio, trigger, handler, inputs, outputs, **options)

    @property
    def paid(self) -> bool:
        """True on Replicate: costs, caps and go_fast are shown only where calls are paid for."""
        return self.studio.costs.paid


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
    unchanged (an open dropdown stays open), and the user's pick is kept while it still exists. A kept
    pick is not sent back: `current` is what the page held when the tick left, and a pick made since
    (Start picks the new job) must not be undone by a tick that answers after it."""
    signature = json.dumps(choices)
    if signature == shown:
        return gr.skip(), shown
    ids = [value for _, value in choices]
    if current in ids:
        return gr.update(choices=choices), signature
    return gr.update(choices=choices, value=ids[-1] if ids and pick_latest else None), signature


def open_tab(studio: Studio, tab: str) -> gr.Tabs:
    """A "Next: …" button's handler (bound to the tab it opens)."""
    return gr.Tabs(selected=tab)


def or_preset(value):
    """A form or API number left at 0, "" or nothing means "use the preset's value"."""
    return None if value in (None, "", 0, "0") else value


def upload_paths(files) -> list[str]:
    """Local paths of Gradio uploads (plain strings or tempfile wrappers, depending on the caller)."""
    if files is None:
        return []
    items = files if isinstance(files, list) else [files]
    return [f if isinstance(f, str) else f.name for f in items]
