"""Training captions: each selected image's caption read and edited, find/replace over the set, and a
captioner run as a job on the GPU queue (what a caption may say: services/caption_rules.py).

Sheet images train on the caption their own edit prompt gives ("photo of mila_v1, close-up portrait,
smiling warmly") until the user asks the captioner for theirs, or edits one; photos a user brings
without captions (`train FOLDER`) are offered to the captioner. A caption is kept on its image's
record (`training_caption`, with the `[trigger]` placeholder) and used by the dataset export, its zip
and so the Replicate training (whose own autocaption stays off).

The captioner is a model of its own (Qwen3-VL, downloaded under Settings → Models like the base
models). It is loaded for one job and released at its end; on a GPU too small for both, the Flux
model steps aside first (the next picture loads it again). The tiny engine captions with a tiny
random Qwen3-VL built in code, whose words are noise - the job and the page say so.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from ..images import ImageError, open_image
from ..jobs import JobQueue, JobReporter, JobView, UserError
from ..store import Store
from . import limits
from .caption_rules import (INSTRUCTION, MAX_CAPTION, TRIGGER_TOKEN, clean_caption, generated, identity_words,
                            record_caption, shown, stored)
from .characters import Characters
from .datasets import read_entries, rewrite_captions
from .job_params import CaptionParams
from .selection import MAX_IMAGES, validate_trigger
from .settings import CAPTIONERS

KIND = "caption"
BUILT_IN = "built in"  # the tiny random captioner
BATCH = 4
HEADROOM = 1.3  # a captioner needs its weights plus a batch of images
NOISE = ("The tiny engine's captioner has random weights: its words are noise, like the tiny engine's "
         "pictures. Download Qwen3-VL 2B under Settings → Models (with a real model) for real captions.")
SOURCES = {"prompt": "sheet prompt", "captioner": "captioner", "edited": "edited"}


@dataclass(frozen=True)
class CaptionRow:
    """One image's caption as the dataset will hold it, and where it came from."""

    image_id: str
    caption: str  # the trigger word in it (the [trigger] placeholder while none is chosen)
    source: str  # "sheet prompt" | "captioner" | "edited"
    model: str = ""  # the captioner that wrote it
    identity: tuple[str, ...] = field(default_factory=tuple)  # identity traits an edit names (a warning)

    def to_dict(self) -> dict:
        return {**asdict(self), "identity": list(self.identity)}


@dataclass(frozen=True)
class ReplaceReport:
    rows: list[CaptionRow]
    changed: int

    def text(self) -> str:
        return f"{self.changed} of {len(self.rows)} captions changed; the trigger word stays in each."


class CaptionService:
    def __init__(self, store: Store, jobs: JobQueue, characters: Characters, *, tiny: bool, device: str = "auto",
                 release_gpu: Callable[[], None] = lambda: None) -> None:
        """`release_gpu` frees the Flux model's GPU memory (the engine's `unload`) when a captioner needs it."""
        self.store, self.jobs, self.characters = store, jobs, characters
        self.tiny, self.device, self.release_gpu = tiny, device, release_gpu
        jobs.register(KIND, self._run, params=CaptionParams)

    # ---- reading and editing ------------------------------------------------------------------
    def rows(self, character_id: str, trigger: str = "") -> list[CaptionRow]:
        """The selected images' captions, in the selection's order."""
        trigger = _trigger(trigger)
        return [self._row(record, trigger) for record in self._selected(character_id)]

    def edit(self, character_id: str, image_id: str, text: str, trigger: str = "") -> CaptionRow:
        """The user's caption for one sheet image; the trigger word is put back first if the text lost it."""
        trigger = _trigger(trigger)
        record = self._sheet_image(character_id, image_id)
        text = limits.text(text, "The caption", MAX_CAPTION, required=True, example="mila_v1 in a red coat")
        updated = self.store.update("images", record["id"], training_caption=stored(text, trigger),
                                    caption_source="edited", caption_model="")
        return self._row(updated, trigger)

    def replace(self, character_id: str, find: str, replacement: str, trigger: str = "") -> ReplaceReport:
        """Replace a text in every selected caption (letter case ignored); the trigger word is never touched."""
        trigger = _trigger(trigger)
        find = limits.text(find, "The text to find", 200, required=True, example="red dress")
        replacement = limits.text(replacement, "The replacement", 200)
        if TRIGGER_TOKEN in find.lower() or (trigger and trigger.lower() in find.lower()):
            raise UserError("The trigger word stays in every caption: find/replace leaves it alone. Find the words "
                            "around it instead.")
        import re

        pattern = re.compile(re.escape(find), re.IGNORECASE)
        changed, rows = 0, []
        for record in self._selected(character_id):
            before = record_caption(record)
            after = TRIGGER_TOKEN.join(pattern.sub(lambda _: replacement, part) for part in before.split(TRIGGER_TOKEN))
            if after != before:
                after = stored(after, trigger)[:MAX_CAPTION]
                record = self.store.update("images", record["id"], training_caption=after, caption_source="edited")
                changed += 1
            rows.append(self._row(record, trigger))
        return ReplaceReport(rows, changed)

    def reset(self, character_id: str, image_ids: list[str] | None = None) -> list[CaptionRow]:
        """Back to each image's prompt caption (all selected images, or those given)."""
        records = self._records(character_id, image_ids)
        for record in records:
            self.store.update("images", record["id"], training_caption=None, caption_source=None, caption_model="")
        return self.rows(character_id)

    # ---- the captioner -------------------------------------------------------------------------
    def choose(self, model: str = "", allow_folder: bool = False) -> str:
        """The captioner a job will run: the one named (a catalogue captioner or a hub id in the cache; a
        folder only from the command line), else the tiny one on the tiny engine, else the first
        catalogue captioner on disk."""
        from ..engines import caption

        model = limits.text(model, "The captioner", 300)
        if model.lower() in (BUILT_IN, "tiny"):
            return BUILT_IN
        if not model:
            if self.tiny:
                return BUILT_IN
            for entry in CAPTIONERS:
                try:
                    caption.captioner_folder(entry.repo_id)
                    return entry.repo_id
                except caption.CaptionerError:
                    continue
            raise UserError(f"No captioner is downloaded yet: download {CAPTIONERS[0].title} under Settings → Models "
                            f"(or `python -m lora_studio models download {CAPTIONERS[0].repo_id}`), then caption "
                            "again.")
        if Path(model).expanduser().is_absolute() and not allow_folder:
            raise UserError("Name a captioner by its Hugging Face id (e.g. Qwen/Qwen3-VL-2B-Instruct); folders are "
                            "for the command line.")
        try:
            caption.captioner_folder(model)
        except caption.CaptionerError as exc:
            raise UserError(str(exc)) from None
        return model

    def start(self, character_id: str, image_ids: list[str] | None = None, model: str = "",
              keep_edited: bool = True) -> JobView:
        """Caption the selected images (or those given) with the captioner, as a GPU job. Captions the
        user edited stay unless `keep_edited` is off."""
        records = self._records(character_id, image_ids)
        if not records:
            raise UserError("Select the images to caption first (Selection tab).")
        choice = self.choose(model)
        params = CaptionParams(model=choice, character_id=character_id, image_ids=tuple(r["id"] for r in records),
                               keep_edited=limits.flag(keep_edited, "Keep edited captions"))
        return self.jobs.submit(KIND, params, title=f"Captions · {len(records)} images · {choice}")

    def start_for_dataset(self, dataset_id: str, model: str = "", allow_folder: bool = False) -> JobView:
        """Caption a dataset's photos that came without a caption (a folder given to `train`)."""
        dataset = self.store.get("datasets", limits.record_id(dataset_id, "dataset id") or "")
        if dataset is None:
            raise UserError("That dataset does not exist.")
        if not dataset.get("uncaptioned"):
            raise UserError("Every image of this dataset already has its own caption.")
        choice = self.choose(model, allow_folder=allow_folder)
        return self.jobs.submit(KIND, CaptionParams(model=choice, dataset_id=dataset["id"]),
                                title=f"Captions · {len(dataset['uncaptioned'])} photos · {choice}")

    def _run(self, params: CaptionParams, reporter: JobReporter) -> dict:
        targets, save = (self._dataset_targets(params) if params.dataset_id else self._image_targets(params))
        choice = params.model or BUILT_IN
        if not targets:
            return {"summary": "Nothing to caption: every image given has a caption you edited (they stay).",
                    "captioned": 0, "kept": 0, "model": choice, "noise": choice == BUILT_IN}
        captioner = self._load(choice, reporter)
        done, empty = 0, 0
        try:
            for start in range(0, len(targets), BATCH):
                reporter.check_cancel()
                reporter.progress(start / max(1, len(targets)), f"Captioning {start + 1}-"
                                  f"{min(len(targets), start + BATCH)} of {len(targets)}")
                group = targets[start:start + BATCH]
                pictures = [_picture(path) for _, path, _ in group]
                texts = captioner.caption(pictures, INSTRUCTION)
                for (key, _, trigger), raw in zip(group, texts):
                    body = clean_caption(raw, trigger)
                    if not body:
                        empty += 1
                        reporter.log(f"{key}: the captioner wrote nothing usable ({raw[:60]!r}); its caption stays.")
                        continue
                    save(key, generated(body), choice)
                    done += 1
        finally:
            captioner.release()
        note = f" {NOISE}" if choice == BUILT_IN else ""
        if params.dataset_id:
            save(None, None, choice)  # the zip and hash follow the new captions
        reporter.log(f"{done} captions written by {choice}." + note)
        return {"summary": f"{done} of {len(targets)} images captioned by {choice}." + note, "captioned": done,
                "kept": empty, "model": choice, "noise": choice == BUILT_IN}

    def _load(self, choice: str, reporter: JobReporter):
        from ..engines import caption

        if choice == BUILT_IN:
            reporter.log("Captioning with the built-in tiny captioner (random weights: noise).")
            return caption.build_tiny_captioner()
        folder = caption.captioner_folder(choice)
        free = caption.free_gpu_bytes(self.device)
        if free is not None and free < caption.weight_bytes_on_disk(folder) * HEADROOM:
            self.release_gpu()
            reporter.log("The Flux model left the GPU to make room for the captioner; the next picture loads it again.")
        reporter.log(f"Loading the captioner {choice}.")
        return caption.load_captioner(choice, self.device)

    def _image_targets(self, params: CaptionParams):
        records = self._records(str(params.character_id), list(params.image_ids))
        if params.keep_edited:
            records = [r for r in records if r.get("caption_source") != "edited"]
        targets = [(r["id"], self.store.path(r["path"]), "") for r in records]

        def save(image_id, text, model) -> None:
            self.store.update("images", image_id, training_caption=text, caption_source="captioner",
                              caption_model=model)

        return targets, save

    def _dataset_targets(self, params: CaptionParams):
        dataset = self.store.get("datasets", str(params.dataset_id))
        if dataset is None:
            raise UserError("The dataset to caption was deleted.")
        wanted = set(dataset.get("uncaptioned") or [])
        folder = self.store.path(dataset["dir"])
        targets = [(e.stem, folder / f"{e.stem}{e.suffix}", dataset["trigger"])
                   for e in read_entries(self.store, dataset) if e.stem in wanted]
        written: dict[str, str] = {}

        def save(stem, text, model) -> None:
            if stem is not None:
                written[stem] = shown(text, dataset["trigger"])
            elif written:
                rewrite_captions(self.store, dataset, written)

        return targets, save

    # ---- records ---------------------------------------------------------------------------
    def _selected(self, character_id: str) -> list[dict]:
        character = self.characters.get(character_id)
        return self._records(character_id, list(character.get("selected", [])))

    def _records(self, character_id: str, image_ids: list[str] | None) -> list[dict]:
        if image_ids is None:
            return self._selected(character_id)
        if not isinstance(image_ids, list) or len(image_ids) > MAX_IMAGES:
            raise UserError(f"Give at most {MAX_IMAGES} image ids.")
        return [self._sheet_image(character_id, image_id) for image_id in dict.fromkeys(image_ids)]

    def _sheet_image(self, character_id: str, image_id: str) -> dict:
        self.characters.get(character_id)
        record = self.store.get("images", limits.record_id(image_id, "image id") or "")
        if not record or record.get("character_id") != character_id or record.get("kind") != "sheet":
            raise UserError("That image is not part of this character's sheet.")
        return record

    def _row(self, record: dict, trigger: str) -> CaptionRow:
        source = SOURCES.get(record.get("caption_source") or "prompt", "sheet prompt")
        text = record_caption(record)
        flagged = tuple(identity_words(text.replace(TRIGGER_TOKEN, ""))) if source == "edited" else ()
        return CaptionRow(record["id"], shown(text, trigger), source, str(record.get("caption_model") or ""), flagged)


def _trigger(trigger: str) -> str:
    return validate_trigger(trigger) if limits.text(trigger, "The trigger word", 64) else ""


def _picture(path: Path):
    try:
        return open_image(path, path.name, max_side=1024)
    except ImageError as exc:
        raise UserError(str(exc)) from None
