"""Named API endpoints for every step, so `gradio_client` (and any HTTP client) can drive the app.

Each is a top-level function, the studio first, exposed under its own name (ui/events.py). They
return plain JSON. Jobs return at once with their id; poll `/job_status` until `done`.
Anyone holding the link can call them with anything: every value is checked by the services
before work starts (see services/limits.py), replies carry workspace-relative paths only, and
files leave only through the two download endpoints (`/export_lora`, `/download_dataset`).
"""
from __future__ import annotations

import math
import os
from dataclasses import asdict
from pathlib import Path

import gradio as gr

from ..jobs import JobView
from ..services import limits
from ..services.generate import GenerateOptions
from ..services.sheet import SheetOptions
from ..services.strength_analysis import parse_strengths
from ..services.tester import SweepRequest
from ..services.training_jobs import TrainOptions
from ..studio import Studio
from .common import or_preset, parse_weights, upload_paths
from .events import expose, on
from .files import deliver, discard_uploads
from .owner import requester

JSON_INT = 2**53  # larger integers do not survive JavaScript (and past 2**64, not the JSON encoder)


def public(value):
    """JSON any client reads: no "path" key (gradio_client would fetch it as a file), no absolute
    paths, no NaN/infinity, no integers a JSON encoder refuses."""
    if isinstance(value, dict):
        return {("relative_path" if k == "path" else str(k)): public(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [public(v) for v in value]
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return value if -JSON_INT <= value <= JSON_INT else str(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, (str, Path)) and os.path.isabs(value):
        return Path(value).name  # a path outside the workspace: its name is all a caller needs
    return value if isinstance(value, str) else str(value)


def job_json(job: JobView, studio: Studio) -> dict:
    data = job.to_dict()
    data["done"] = job.done
    data["metrics"] = {k: v[-50:] for k, v in job.metrics.items()}
    return public(studio.store.relative(data))


def _below_zero(value) -> bool:
    """A negative spending cap means "the preset's" (text that is not a number is left to the cap's check)."""
    try:
        return float(value) < 0
    except (TypeError, ValueError):
        return False


def create_character(studio: Studio, name: str) -> dict:
    return public(studio.characters.create(name))


def list_characters(studio: Studio) -> list:
    return public(studio.characters.list())


def choose_reference(studio: Studio, character_id: str, image_id: str) -> dict:
    return public(studio.characters.choose_reference(character_id, image_id))


def character_images(studio: Studio, character_id: str, kind: str = "sheet") -> list:
    return public([{"id": i.id, "image_path": studio.store.relative(str(i.path)), "category": i.category,
                    "label": i.caption, "score": i.score}
                   for i in studio.characters.images(character_id, kind)])


def start_sheet(studio: Studio, character_id: str, gate: bool = True, max_tries: int = 3, max_usd: float = 0.0) -> dict:
    options = SheetOptions(gate=gate, max_tries=max_tries, max_usd=max_usd or None)
    return job_json(studio.sheet.start(character_id, options), studio)


# The owner's jobs (downloads, what the owner started) are the owner's: a visitor's view of the queue
# holds their own and other visitors' anonymous jobs only (lora_studio/job_access.py).
def job_status(studio: Studio, job_id: str, request: gr.Request = None) -> dict:
    return job_json(studio.jobs.get(limits.record_id(job_id, "job id"), with_metrics=True,
                                    seen_by=requester(studio, request)), studio)


def cancel_job(studio: Studio, job_id: str, request: gr.Request = None) -> dict:
    return job_json(studio.jobs.cancel(limits.record_id(job_id, "job id"), seen_by=requester(studio, request)),
                    studio)


def resume_job(studio: Studio, job_id: str, request: gr.Request = None) -> dict:
    return job_json(studio.jobs.resume(limits.record_id(job_id, "job id"), seen_by=requester(studio, request)),
                    studio)


def list_jobs(studio: Studio, kind: str = "", request: gr.Request = None) -> list:
    kind = limits.text(kind, "The job kind", 20) or None
    return [job_json(j, studio) for j in studio.jobs.list(kind, seen_by=requester(studio, request))]


def selection_json(state) -> dict:
    return public({"selected": state.selected, "count": state.count, "set_score": state.set_score,
                   "warnings": state.warnings, "summary": state.summary(),
                   "images": [{"id": i.id, "category": i.category, "label": i.caption, "score": i.score}
                              for i in state.items]})


def selection(studio: Studio, character_id: str) -> dict:
    return selection_json(studio.selection.state(character_id))


def toggle_image(studio: Studio, character_id: str, image_id: str) -> dict:
    return selection_json(studio.selection.toggle(character_id, image_id))


def quick_select(studio: Studio, character_id: str, n: int = 25) -> dict:
    return selection_json(studio.selection.quick_select(character_id, n))


def score_faces(studio: Studio, character_id: str) -> dict:
    return selection_json(studio.selection.score(character_id))


def export_dataset(studio: Studio, character_id: str, trigger: str) -> dict:
    return public(studio.selection.export_dataset(character_id, trigger))


def start_training(studio: Studio, dataset_id: str, name: str, trigger: str = "", preset: str = "Standard",
                   steps: int = 0, rank: int = 0, learning_rate: float = 0.0, resolution: int = 0,
                   memory_mode: str = "", max_usd: float = -1.0, alpha: float = 0.0) -> dict:
    # Blank memory mode and a negative cap mean "the preset's"; a cap of 0 means none; alpha 0 means
    # the rank times the preset's alpha/rank (alpha = rank for the built-ins).
    options = TrainOptions(name=name, trigger=trigger, preset=preset, steps=or_preset(steps),
                           rank=or_preset(rank), learning_rate=or_preset(learning_rate),
                           resolution=or_preset(resolution), memory_mode=memory_mode or None,
                           max_usd=None if _below_zero(max_usd) else max_usd, alpha=or_preset(alpha))
    return job_json(studio.training.start(dataset_id, options), studio)


def run_sweep(studio: Studio, lora: str, prompt: str, strengths: str = "0, 0.6, 0.8, 1.0, 1.2", seeds: str = "1, 2, 3",
              extra: str = "", max_usd: float = 0.0, both_checkpoints: bool = False) -> dict:
    """`both_checkpoints`: on FLUX.2 [klein], the same sweep on the distilled and the base checkpoint."""
    both = limits.flag(both_checkpoints, "both_checkpoints")
    request = SweepRequest(lora=lora, prompt=prompt,
                           strengths=tuple(parse_strengths(limits.text(strengths, "Strengths"))),
                           seeds=tuple(limits.parse_seeds(seeds)), extra=tuple(parse_weights(extra).items()),
                           max_usd=max_usd or None, checkpoints=studio.tester.both_checkpoints() if both else ())
    return job_json(studio.tester.start(request), studio)


def generate(studio: Studio, prompt: str, loras: str = "", seed: int = 0, task: str = "",
             go_fast: bool = False, width: int = 0, height: int = 0, steps: int = 0,
             guidance: float | None = None) -> dict:
    """Width, height and steps 0 and guidance null mean the model family's (see `/generate_form`)."""
    options = GenerateOptions(prompt=prompt, loras=parse_weights(loras), seed=limits.seed(seed),
                              task=limits.text(task, "The task", limits.MAX_NAME) or None,
                              go_fast=limits.flag(go_fast, "go_fast"), width=or_preset(width),
                              height=or_preset(height), steps=or_preset(steps), guidance=guidance)
    return job_json(studio.generator.start(options), studio)


def generate_form(studio: Studio) -> dict:
    """The sizes, steps and guidance `/generate` takes on this engine, with the family's defaults."""
    return public(asdict(studio.generator.form()))


def list_loras(studio: Studio) -> list:
    return public(studio.library.list())


def rename_lora(studio: Studio, lora_id: str, name: str) -> dict:
    return public(studio.library.rename(lora_id, name))


def delete_lora(studio: Studio, lora_id: str) -> dict:
    record = studio.library.get(lora_id)
    studio.library.delete(record["id"])
    return {"deleted": record["id"]}


# ---- file-carrying endpoints (a hidden component carries the upload or the download) ----
def add_reference(studio: Studio, character_id, files) -> dict:
    paths = upload_paths(files)
    try:
        report = studio.characters.add_images(character_id, paths, [Path(p).name for p in paths])
    finally:
        discard_uploads(paths)  # kept images were copied into the workspace; refused ones go too
    return {"added": report.added, "rejected": report.rejected}


def import_lora(studio: Studio, file, name, trigger) -> dict:
    paths = upload_paths(file)
    try:
        if not paths:
            raise gr.Error("Send a .safetensors file.")
        return public(studio.library.import_file(paths[0], name, trigger))
    finally:
        discard_uploads(paths)


def export_lora(studio: Studio, lora_id) -> str:
    record = studio.library.get(lora_id)
    return deliver(studio.library.export(record["id"]), f"{record['id']}.zip")


def download_dataset(studio: Studio, dataset_id) -> str:
    dataset = studio.store.get("datasets", limits.record_id(dataset_id, "dataset id"))
    if dataset is None or not dataset.get("zip"):
        raise gr.Error("No such dataset; export one from the Selection tab first.")
    return deliver(studio.store.path(dataset["zip"]), f"{dataset['id']}.zip")


def register(studio: Studio) -> None:
    """Call inside the Blocks context, first, so these keep their plain names and first indices."""
    expose(studio, create_character, list_characters, choose_reference, character_images, start_sheet, job_status,
           cancel_job, resume_job, list_jobs, selection, toggle_image, quick_select, score_faces, export_dataset,
           start_training, run_sweep, generate, list_loras, rename_lora, delete_lora, generate_form)
    # File-carrying endpoints need real components for the upload.
    with gr.Row(visible=False):
        files_in = gr.File(file_count="multiple")
        lora_in = gr.File()
        text_a, text_b, text_c = gr.Textbox(), gr.Textbox(), gr.Textbox()
        json_out = gr.JSON()
        file_out = gr.File()
        trigger_add, trigger_import, trigger_export, trigger_dataset = (gr.Button() for _ in range(4))
    on(studio, trigger_add.click, add_reference, [text_a, files_in], json_out, api_name="add_reference")
    on(studio, trigger_import.click, import_lora, [lora_in, text_b, text_c], json_out, api_name="import_lora")
    on(studio, trigger_export.click, export_lora, [text_a], file_out, api_name="export_lora")
    on(studio, trigger_dataset.click, download_dataset, [text_a], file_out, api_name="download_dataset")
