"""Tab 1 · Reference: upload or pick a character's images and choose the one reference."""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import gradio as gr

from ..studio import Studio
from . import wording
from .common import UIContext, character_choices, upload_paths
from .events import KEEP, Reply
from .files import discard_uploads

SAMPLES = Path(__file__).resolve().parents[2] / "assets" / "samples"


def sample_images() -> list[Path]:
    return sorted(p for p in SAMPLES.glob("*") if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".webp"))


class ReferenceParts:
    """The tab's components, by the names its replies use."""

    character: gr.Dropdown
    uploads: gr.File
    add: gr.Button
    sample: gr.Button
    status: gr.Markdown
    gallery: gr.Gallery
    reference: gr.Image
    ids: gr.State


@dataclass
class ReferenceView(Reply):
    """The images, their ids (gallery order), the reference and what happened; errors show in `status`."""

    MESSAGE = "status"
    character: Any = KEEP
    gallery: list = KEEP
    ids: list = KEEP
    reference: str | None = KEEP
    status: str = KEEP


def view(studio: Studio, character_id) -> ReferenceView:
    if not character_id:
        return ReferenceView(gallery=[], ids=[], reference=None, status=wording.NO_CHARACTER)
    items = studio.characters.images(character_id, "reference")
    character = studio.characters.get(character_id)
    ref = next((i for i in items if i.id == character.get("reference_image_id")), None)
    gallery_items = [(str(i.path), ("★ reference" if ref and i.id == ref.id else i.caption)) for i in items]
    return ReferenceView(gallery=gallery_items, ids=[i.id for i in items], reference=str(ref.path) if ref else None,
                         status="")


def add_images(studio: Studio, character_id, files) -> ReferenceView:
    if not character_id:
        character_id = studio.characters.create("My character")["id"]
    paths = upload_paths(files)
    try:
        report = studio.characters.add_images(character_id, paths, [Path(p).name for p in paths])
    finally:
        discard_uploads(paths)  # copied into the workspace or refused: either way no longer needed
    message = f"Added {len(report.added)} image(s). {studio.characters.reference_face(character_id)}"
    if report.rejected:
        message += "\n\nNot added: " + " ".join(report.rejected)
    picked = gr.update(choices=character_choices(studio), value=character_id)
    return replace(view(studio, character_id), character=picked, status=message)


def use_sample(studio: Studio, character_id) -> ReferenceView:
    """The sample images go into the picked character while it has none (the one just created);
    a character that has images of its own is left as it is, and the sample becomes a new one."""
    samples = sample_images()
    if not samples:
        raise gr.Error("No sample images are installed in assets/samples.")
    if not character_id or studio.characters.images(character_id, "reference"):
        character_id = studio.characters.create("Sample astronaut")["id"]
    return add_images(studio, character_id, [str(p) for p in samples])


def choose(studio: Studio, character_id, image_ids, evt: gr.SelectData) -> ReferenceView:
    studio.characters.choose_reference(character_id, image_ids[evt.index])
    return replace(view(studio, character_id), ids=KEEP,
                   status="Reference chosen. " + studio.characters.reference_face(character_id))


def render(ctx: UIContext) -> ReferenceParts:
    p = ReferenceParts()
    p.character = ctx.character
    gr.Markdown(wording.REFERENCE_HELP)
    with gr.Row():
        with gr.Column(scale=2):
            p.uploads = gr.File(label="Images of the character", file_count="multiple", file_types=["image"])
            with gr.Row():
                p.add = gr.Button("Add images", variant="primary")
                p.sample = gr.Button("Use the sample character")
            p.status = gr.Markdown()
        with gr.Column(scale=3):
            p.gallery = gr.Gallery(label="Uploaded images (click one to make it the reference)", columns=4,
                                   height=320, allow_preview=False)
            p.reference = gr.Image(label="Reference", type="filepath", interactive=False, height=240)
    p.ids = gr.State([])
    return p


def listen(ctx: UIContext, p: ReferenceParts) -> None:
    everything = ReferenceView.to(p)
    ctx.on(p.add.click, add_images, [p.character, p.uploads], everything)
    ctx.on(p.sample.click, use_sample, [p.character], everything)
    ctx.on(p.gallery.select, choose, [p.character, p.ids], ReferenceView.to(p, "gallery", "reference", "status"))
    ctx.on(p.character.change, view, [p.character], ReferenceView.to(p, "gallery", "ids", "reference", "status"))
