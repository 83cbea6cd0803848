"""Named API endpoints for every step, so `gradio_client` (and any HTTP client) can drive the app.

They return plain JSON. Jobs return at once with their id; poll `/job_status` until `done`.
"""
from __future__ import annotations

from pathlib import Path

import gradio as gr

from ..jobs import JobView
from ..services.generate import GenerateOptions
from ..services.sheet import SheetOptions
from ..services.strength_analysis import parse_strengths
from ..services.tester import SweepRequest
from ..services.training import TrainOptions
from ..studio import Studio
from .common import friendly, parse_weights, upload_paths


def public(value):
    """JSON for the client: a dict key named "path" would make gradio_client fetch it as a file."""
    if isinstance(value, dict):
        return {("relative_path" if k == "path" else k): public(v) for k, v in value.items()}
    if isinstance(value, list):
        return [public(v) for v in value]
    return value


def job_json(job: JobView) -> dict:
    data = job.to_dict()
    data["done"] = job.done
    data["metrics"] = {k: v[-50:] for k, v in job.metrics.items()}
    return data


def register(studio: Studio) -> None:
    """Call inside the Blocks context."""

    @friendly
    def create_character(name: str) -> dict:
        return studio.characters.create(name)

    @friendly
    def list_characters() -> list:
        return studio.characters.list()

    @friendly
    def choose_reference(character_id: str, image_id: str) -> dict:
        return studio.characters.choose_reference(character_id, image_id)

    @friendly
    def character_images(character_id: str, kind: str = "sheet") -> list:
        return [{"id": i.id, "image_path": str(i.path), "category": i.category, "label": i.caption, "score": i.score}
                for i in studio.characters.images(character_id, kind)]

    @friendly
    def start_sheet(character_id: str, gate: bool = True, max_tries: int = 3, max_usd: float = 0.0) -> dict:
        options = SheetOptions(gate=gate, max_tries=int(max_tries), max_usd=max_usd or None)
        return job_json(studio.sheet.start(character_id, options))

    @friendly
    def job_status(job_id: str) -> dict:
        return job_json(studio.jobs.get(job_id, with_metrics=True))

    @friendly
    def cancel_job(job_id: str) -> dict:
        return job_json(studio.jobs.cancel(job_id))

    @friendly
    def resume_job(job_id: str) -> dict:
        return job_json(studio.jobs.resume(job_id))

    @friendly
    def list_jobs(kind: str = "") -> list:
        return [job_json(j) for j in studio.jobs.list(kind or None)]

    def selection_json(state) -> dict:
        return {"selected": state.selected, "count": state.count, "set_score": state.set_score,
                "warnings": state.warnings, "summary": state.summary(),
                "images": [{"id": i.id, "category": i.category, "label": i.caption, "score": i.score}
                           for i in state.items]}

    @friendly
    def selection(character_id: str) -> dict:
        return selection_json(studio.selection.state(character_id))

    @friendly
    def toggle_image(character_id: str, image_id: str) -> dict:
        return selection_json(studio.selection.toggle(character_id, image_id))

    @friendly
    def quick_select(character_id: str, n: int = 25) -> dict:
        return selection_json(studio.selection.quick_select(character_id, int(n)))

    @friendly
    def score_faces(character_id: str) -> dict:
        return selection_json(studio.selection.score(character_id))

    @friendly
    def export_dataset(character_id: str, trigger: str) -> dict:
        return studio.selection.export_dataset(character_id, trigger)

    @friendly
    def start_training(dataset_id: str, name: str, trigger: str = "", preset: str = "Standard",
                       steps: int = 0, rank: int = 0, learning_rate: float = 0.0, resolution: int = 0,
                       memory_mode: str = "", max_usd: float = -1.0) -> dict:
        # Blank memory mode and a negative cap mean "the preset's"; a cap of 0 means none.
        options = TrainOptions(name=name, trigger=trigger, preset=preset, steps=steps or None,
                               rank=rank or None, learning_rate=learning_rate or None,
                               resolution=resolution or None, memory_mode=memory_mode or None,
                               max_usd=None if max_usd is None or max_usd < 0 else max_usd)
        return job_json(studio.training.start(dataset_id, options))

    @friendly
    def run_sweep(lora: str, prompt: str, strengths: str = "0, 0.6, 0.8, 1.0, 1.2", seeds: str = "1, 2, 3",
                  extra: str = "", max_usd: float = 0.0) -> dict:
        request = SweepRequest(lora=lora, prompt=prompt, strengths=tuple(parse_strengths(strengths)),
                               seeds=tuple(int(s) for s in seeds.split(",") if s.strip()),
                               extra=tuple(parse_weights(extra).items()), max_usd=max_usd or None)
        return job_json(studio.tester.start(request))

    @friendly
    def generate(prompt: str, loras: str = "", seed: int = 0, task: str = "", go_fast: bool = False) -> dict:
        options = GenerateOptions(prompt=prompt, loras=parse_weights(loras), seed=int(seed), task=task or None,
                                  go_fast=bool(go_fast))
        return job_json(studio.generator.start(options))

    @friendly
    def list_loras() -> list:
        return public(studio.library.list())

    @friendly
    def rename_lora(lora_id: str, name: str) -> dict:
        return public(studio.library.rename(lora_id, name))

    @friendly
    def delete_lora(lora_id: str) -> dict:
        studio.library.delete(lora_id)
        return {"deleted": lora_id}

    for fn in (create_character, list_characters, choose_reference, character_images, start_sheet,
               job_status, cancel_job, resume_job, list_jobs, selection, toggle_image, quick_select,
               score_faces, export_dataset, start_training, run_sweep, generate, list_loras, rename_lora,
               delete_lora):
        gr.api(fn, api_name=fn.__name__)

    # File-carrying endpoints need real components for the upload.
    with gr.Row(visible=False):
        files_in = gr.File(file_count="multiple")
        lora_in = gr.File()
        text_a, text_b, text_c = gr.Textbox(), gr.Textbox(), gr.Textbox()
        json_out = gr.JSON()
        file_out = gr.File()
        trigger_add, trigger_import, trigger_export = gr.Button(), gr.Button(), gr.Button()

    @friendly
    def add_reference(character_id, files):
        paths = upload_paths(files)
        report = studio.characters.add_images(character_id, paths, [Path(p).name for p in paths])
        return {"added": report.added, "rejected": report.rejected}

    @friendly
    def import_lora(file, name, trigger):
        if not file:
            raise gr.Error("Send a .safetensors file.")
        return public(studio.library.import_file(upload_paths(file)[0], name, trigger))

    @friendly
    def export_lora(lora_id):
        return str(studio.library.export(lora_id))

    trigger_add.click(add_reference, [text_a, files_in], json_out, api_name="add_reference")
    trigger_import.click(import_lora, [lora_in, text_b, text_c], json_out, api_name="import_lora")
    trigger_export.click(export_lora, [text_a], file_out, api_name="export_lora")
