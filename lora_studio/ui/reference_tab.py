"""Tab 1 · Reference: upload or pick a character's images and choose the one reference."""
from __future__ import annotations

from pathlib import Path

import gradio as gr

from . import wording
from .common import UIContext, beside, character_choices, upload_paths
from .files import discard_uploads

SAMPLES = Path(__file__).resolve().parents[2] / "assets" / "samples"


def sample_images() -> list[Path]:
    return sorted(p for p in SAMPLES.glob("*") if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".webp"))


def render(ctx: UIContext) -> None:
    studio = ctx.studio
    gr.Markdown(wording.REFERENCE_HELP)
    with gr.Row():
        with gr.Column(scale=2):
            uploads = gr.File(label="Images of the character", file_count="multiple", file_types=["image"])
            with gr.Row():
                add = gr.Button("Add images", variant="primary")
                sample = gr.Button("Use the sample character")
            status = gr.Markdown()
        with gr.Column(scale=3):
            gallery = gr.Gallery(label="Uploaded images (click one to make it the reference)", columns=4,
                                 height=320, allow_preview=False)
            reference = gr.Image(label="Reference", type="filepath", interactive=False, height=240)
    ids = gr.State([])

    @beside(4, 3)
    def view(character_id):
        if not character_id:
            return [], [], None, wording.NO_CHARACTER
        items = studio.characters.images(character_id, "reference")
        character = studio.characters.get(character_id)
        ref = next((i for i in items if i.id == character.get("reference_image_id")), None)
        gallery_items = [(str(i.path), ("★ reference" if ref and i.id == ref.id else i.caption)) for i in items]
        return gallery_items, [i.id for i in items], str(ref.path) if ref else None, ""

    @beside(5, 4)
    def add_images(character_id, files):
        if not character_id:
            character_id = studio.characters.create("My character")["id"]
        paths = upload_paths(files)
        try:
            report = studio.characters.add_images(character_id, paths, [Path(p).name for p in paths])
        finally:
            discard_uploads(paths)  # copied into the workspace or refused: either way no longer needed
        gallery_items, image_ids, ref, _ = view(character_id)
        message = f"Added {len(report.added)} image(s). {studio.characters.reference_face(character_id)}"
        if report.rejected:
            message += "\n\nNot added: " + " ".join(report.rejected)
        return gr.update(choices=character_choices(studio), value=character_id), gallery_items, image_ids, ref, message

    @beside(5, 4)
    def use_sample(character_id):
        samples = sample_images()
        if not samples:
            raise gr.Error("No sample images are installed in assets/samples.")
        character_id = studio.characters.create("Sample astronaut")["id"]
        return add_images(character_id, [str(p) for p in samples])

    @beside(3, 2)
    def choose(character_id, image_ids, evt: gr.SelectData):
        studio.characters.choose_reference(character_id, image_ids[evt.index])
        gallery_items, image_ids, ref, _ = view(character_id)
        return gallery_items, ref, "Reference chosen. " + studio.characters.reference_face(character_id)

    outputs = [ctx.character, gallery, ids, reference, status]
    add.click(add_images, [ctx.character, uploads], outputs, api_visibility="private")
    sample.click(use_sample, [ctx.character], outputs, api_visibility="private")
    gallery.select(choose, [ctx.character, ids], [gallery, reference, status], api_visibility="private")
    ctx.character.change(view, [ctx.character], [gallery, ids, reference, status], api_visibility="private")

