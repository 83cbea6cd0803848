"""The LoRA library: trained and imported LoRAs, their files, metadata and scores.

Each LoRA lives in `loras/<id>/` under a generated name; the user's name is only a label, so a
rename never moves files and no user text reaches a path. Its training samples, which the UI
shows, live in the served `public/loras/<id>/`.

Names are unique, case-insensitively, at the moment a LoRA is registered (one lock around
"is it free?" and the insert). A training reserves its name from the moment it is queued, so an
import or a second training with that name is refused at once; the first one queued keeps it. If a
name is taken anyway while a training runs (an older queued job, a rename), the finished LoRA is
saved as "name (2)" and the job says so: hours of training are never thrown away over a label.

Family: a LoRA works only on the model family it was trained for. A trained LoRA records it (its
metadata's `family`), an imported one is read from its file (engines/lora/kinds.py); every record made
before FLUX.2 [klein] is FLUX.1. Generation and the strength tester refuse a LoRA of another family
than the engine's in words naming both (`check_family`), before any image is made.

Strength: an imported file is stored with each layer's alpha/rank folded into its weights (diffusers
naming, alpha = rank; the file as given is kept beside it as `original.safetensors`), so it means
what its author meant in every tool it is exported to; the record keeps the scale it read
(`metadata.scale`), which the Library tab shows. A file that cannot be folded (text-encoder parts, DoRA,
LoRA biases) is kept as given, which diffusers still reads at its meant strength, and says so: the record
holds the reason (`metadata.scale.not_folded`), the scale text ends with it, and the log has the cause. A
trained LoRA's model card is rewritten with the
strength tester's recommendation when a test finishes, so an export names the tested strength.
"""
from __future__ import annotations

import io
import json
import logging
import shutil
import threading
import zipfile
from pathlib import Path
from typing import Callable

from ..engines.base import Engine, EngineError, LoraWeight
from ..jobs import QUEUED, RUNNING, UserError, describe_error
from ..store import Store, atomic_copy, atomic_write_bytes, atomic_write_json, atomic_write_text, new_id
from ..typed_json import from_json_or_none
from . import limits
from .job_params import TrainParams
from .text import name_key

MAX_IMPORT_BYTES = 1024**3  # a rank-64 bf16 Flux LoRA on every layer is ~0.7 GB; most are under 0.3 GB
MAX_LORAS = 500
TRAIN_KIND = "train"
log = logging.getLogger(__name__)


class LibraryService:
    def __init__(self, store: Store, engine: Callable[[], Engine]) -> None:
        self.store = store
        self._engine = engine
        self._names = threading.RLock()  # "is this name free?" and the insert happen as one step

    # ---- queries ----------------------------------------------------------------------------
    def list(self) -> list[dict]:
        return self.store.find("loras")

    def get(self, lora_id: str) -> dict:
        record = self.store.get("loras", limits.record_id(lora_id, "LoRA id") or "")
        if record is None:
            raise UserError("That LoRA is not in the library.")
        return record

    def find_by_name(self, name: str) -> dict | None:
        """The LoRA with this name (any case); two of them (made by an older version) is an error."""
        found = self._named(name)
        if len(found) > 1:
            ids = ", ".join(r["id"] for r in found)
            raise UserError(f"{len(found)} LoRAs are named {found[0]['name']!r} ({ids}); use an id, or rename one.")
        return found[0] if found else None

    def _named(self, name: str) -> list[dict]:
        """Records whose name reads as `name`: letter case and look-alike letters aside (services/text.py)."""
        key = name_key(name or "")
        return [r for r in self.list() if name_key(str(r.get("name", ""))) == key] if key else []

    def name_taken(self, name: str, ignore_id: str | None = None) -> str | None:
        """Why `name` cannot be given to a new LoRA (an existing one, or a queued training), or None."""
        key = name_key(name)
        for record in self._named(name):
            if record["id"] != ignore_id:
                return f"A LoRA named {record['name']!r} already exists; pick another name or delete it."
        for job in self.store.find("jobs", kind=TRAIN_KIND):
            params = from_json_or_none(TrainParams, job.get("params"))  # a damaged record holds no name
            if params and job.get("status") in (QUEUED, RUNNING) and name_key(params.name) == key \
                    and job.get("id") != ignore_id:
                return (f"A training in the queue will save a LoRA named {params.name!r}; pick another name, "
                        "or cancel that training first.")
        return None

    def names_lock(self) -> threading.RLock:
        """Held by the training service while it checks a name and queues its job."""
        return self._names

    def resolve(self, name_or_id: str) -> dict:
        key = limits.text(name_or_id, "The LoRA", limits.MAX_NAME + 20)
        record = (self.store.get("loras", key) if key.startswith("lora_") else None) or self.find_by_name(key)
        if record is None:
            known = ", ".join(r["name"] for r in self.list()[:20]) or "none yet"
            raise UserError(f"No LoRA named {key!r} (library: {known}).")
        return record

    def path(self, record: dict) -> Path:
        return self.store.path(record["path"])

    def check_family(self, record: dict, family) -> None:
        """Refuse, naming both, a LoRA made for another model family than `family` (engines/family.Family)."""
        made = lora_family_key(record)
        if made != family.key:
            from ..engines.lora import mismatch_text

            raise UserError(f"{record.get('name', 'This LoRA')!r}: {mismatch_text(made, family.key)}")

    def weight(self, name_or_id: str, strength: float) -> LoraWeight:
        record = self.resolve(name_or_id)
        return LoraWeight(name=record["id"], weight=float(strength), path=self.path(record),
                          remote=record.get("remote"))

    # ---- adding -----------------------------------------------------------------------------
    def register_trained(self, *, name, trigger, result, job_id, character_id, dataset, params: TrainParams,
                         seconds, samples_dir: Path | None = None) -> dict:
        lora_id = new_id("lora_")
        folder = self.store.lora_dir(lora_id)
        files = {"lora": result.lora_path, **result.extra_files}
        stored = {}
        for key, source in files.items():
            if source and Path(source).is_file():
                target = folder / (Path(source).name if key != "lora" else "lora.safetensors")
                atomic_copy(Path(source), target)
                stored[key] = str(target.relative_to(self.store.root))
        samples_dir = samples_dir or Path(result.lora_path).parents[1] / "samples"
        sample_paths = sorted(samples_dir.glob("*.png"))[-4:] if samples_dir.is_dir() else []
        shown = self.store.public_dir("loras", lora_id)
        for source in sample_paths:  # the last few training samples travel with the LoRA
            atomic_copy(source, shown / source.name)
        stored["samples"] = [str((shown / p.name).relative_to(self.store.root)) for p in sample_paths]
        metadata = dict(result.metadata, trigger=trigger, steps=result.steps, rank=params.rank,
                        alpha=result.metadata.get("alpha", params.alpha),
                        learning_rate=params.learning_rate, resolution=params.resolution,
                        dataset_hash=dataset.get("hash"), final_loss=result.final_loss,
                        best_checkpoint=result.best_checkpoint, seconds=round(seconds, 1))
        if "folded_scale" not in metadata and "lora" in stored:  # trained elsewhere (Replicate): read its scale
            metadata["scale"] = _read_scale(self.store.path(stored["lora"]))
        atomic_write_json(folder / "metadata.json", metadata)
        with self._names:
            free = self._free_name(name, job_id)
            return self.store.insert("loras", dict(
                id=lora_id, name=free, trigger=trigger, source="trained", path=stored["lora"],
                files=stored, job_id=job_id, character_id=character_id, dataset_id=dataset.get("id"),
                remote=result.remote, metadata=metadata, scores={}))

    def _free_name(self, name: str, job_id: str) -> str:
        candidate, n = name, 1
        while self.name_taken(candidate, ignore_id=job_id):
            n += 1
            candidate = f"{name[:limits.MAX_NAME - 6]} ({n})"
        return candidate

    def samples(self, lora_id: str) -> list[Path]:
        record = self.get(lora_id)
        return [self.store.path(p) for p in record.get("files", {}).get("samples", [])]

    def import_file(self, source: str | Path, name: str, trigger: str = "") -> dict:
        """Check a user's .safetensors (format, every tensor, every shape against the configured Flux;
        no model is loaded and no training is waited for), then copy it in under a new id.
        A refused or failed import leaves no folder and no record."""
        from .selection import validate_trigger

        source = Path(source)
        name = limits.name(name, "The LoRA's name", "film-style") or limits.name(
            "".join(ch for ch in source.stem if ch.isprintable())[:limits.MAX_NAME], "The file name")
        trigger = validate_trigger(trigger) if limits.text(trigger, "The trigger word", 64) else ""
        why = self.name_taken(name)
        if why:
            raise UserError(why)
        if len(self.list()) >= MAX_LORAS:
            raise UserError(f"The library already holds {MAX_LORAS} LoRAs; delete some before importing more.")
        if not source.is_file():
            raise UserError("Choose a .safetensors file to import.")
        if source.stat().st_size > MAX_IMPORT_BYTES:
            raise UserError(f"That file is larger than {MAX_IMPORT_BYTES // 1024**2} MB; a Flux LoRA is far "
                            "smaller (most are under 300 MB). Is it a full model?")
        from ..engines.lora import check_tensors

        try:
            checked = check_tensors(source)  # types, shapes, values, metadata: any engine
            info = {**checked, **self._engine().check_lora(source)}  # names and widths vs. the model
        except EngineError as exc:
            raise UserError(str(exc)) from None
        family = info.get("family") or "flux1"
        lora_id = new_id("lora_")
        folder = self.store.root / "loras" / lora_id
        try:
            target = self.store.lora_dir(lora_id) / "lora.safetensors"
            scale = _store_folded(source, target, family)
            rel = str(target.relative_to(self.store.root))
            with self._names:
                why = self.name_taken(name)
                if why:
                    raise UserError(why)
                return self.store.insert("loras", dict(
                    id=lora_id, name=name, trigger=trigger, source="imported", path=rel,
                    files={"lora": rel}, metadata={"format": info.get("format"), "rank": info.get("rank"),
                                                    "family": family, "original_file": source.name[:120],
                                                    "scale": scale},
                    scores={}, remote=None, character_id=None))
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise

    # ---- changing ---------------------------------------------------------------------------
    def rename(self, lora_id: str, new_name: str) -> dict:
        record = self.get(lora_id)
        new_name = limits.name(new_name, "The new name")
        if not new_name:
            raise UserError("The new name is empty.")
        with self._names:
            why = self.name_taken(new_name, ignore_id=record["id"])
            if why:
                raise UserError(why)
            return self.store.update("loras", record["id"], name=new_name)

    def delete(self, lora_id: str, unload: Callable[[str], None] | None = None) -> None:
        record = self.get(lora_id)
        if unload:
            unload(record["id"])
        self.store.delete("loras", [record["id"]])
        shutil.rmtree(self.store.root / "loras" / record["id"], ignore_errors=True)
        shutil.rmtree(self.store.root / "public" / "loras" / record["id"], ignore_errors=True)

    def set_scores(self, lora_id: str, scores: dict) -> dict:
        record = self.store.mutate("loras", lora_id, lambda r: r.setdefault("scores", {}).update(scores))
        card = record.get("files", {}).get("card")
        if card and "recommended_strength" in scores:  # the card names the tested strength per tool
            atomic_write_text(self.store.path(card), self.card(record))
        return record

    def card(self, record: dict) -> str:
        """A trained LoRA's model card at the strength its last test recommended (1.0 when untested)."""
        from ..training.model_card import model_card

        scores = record.get("scores") or {}
        return model_card(record.get("metadata", {}), scores.get("recommended_strength"), tested=bool(scores))

    def export(self, lora_id: str) -> Path:
        """One zip with every file of the LoRA (diffusers + kohya formats, metadata, card)."""
        record = self.get(lora_id)
        folder = self.store.root / "loras" / record["id"]
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            for path in sorted(folder.iterdir()):
                if path.is_file() and not path.name.startswith("."):
                    archive.write(path, path.name)
            archive.writestr("library.json", json.dumps(
                {k: record.get(k) for k in ("name", "trigger", "source", "metadata", "scores")},
                indent=2, default=str))
        target = self.store.folder("exports") / f"{record['id']}.zip"
        atomic_write_bytes(target, buffer.getvalue())
        return target


def scale_text(record: dict) -> str:
    """The alpha/rank a LoRA applies, in words, e.g. "alpha 16 / rank 32 → ×0.5 folded"."""
    meta = record.get("metadata") or {}
    if isinstance(meta.get("scale"), dict):
        return str(meta["scale"].get("text", ""))
    alpha, rank = meta.get("alpha"), meta.get("rank")
    if not isinstance(alpha, (int, float)) or not isinstance(rank, int) or rank <= 0:
        return ""
    text = f"alpha {alpha:g} / rank {rank} → ×{alpha / rank:g}"
    if alpha == rank:
        return text + ", nothing to fold"
    return text + (" folded" if "folded_scale" in meta else " (lora.safetensors from an older version: only "
                                                              "diffusers reads it so; use lora_kohya.safetensors)")


def _read_scale(path: Path) -> dict:
    from ..engines import lora

    try:
        return lora.read_scale(path).to_dict()
    except Exception:  # noqa: BLE001 - a file the engine accepted but this reader cannot: say so, keep it
        log.warning("The alpha/rank of %s could not be read; it is kept as is.", path.name, exc_info=True)
        return {"text": "alpha/rank not read: kept as is (diffusers applies it on load)", "folded": False}


def lora_family_key(record: dict) -> str:
    """The model family a library record's LoRA was made for (engines/family key; FLUX.1 for older records)."""
    family = (record.get("metadata") or {}).get("family")
    return family if isinstance(family, str) and family else "flux1"


def family_title(record: dict) -> str:
    """The model family of a record's LoRA, in words ("FLUX.1", "FLUX.2 [klein]")."""
    from ..engines.family import family_named

    return family_named(lora_family_key(record)).title


def _store_folded(source: Path, target: Path, family: str = "flux1") -> dict:
    """Copy an imported LoRA into the library with its alpha/rank folded into the weights (the file as
    given kept beside it); a file that cannot be folded is stored as given, and the scale returned for
    the record says why (`not_folded`, and at the end of its text)."""
    from ..engines import lora

    try:
        scale = lora.fold_lora(source, target, family)
    except Exception as exc:  # noqa: BLE001 - an odd but loadable file is kept as it is rather than refused
        why = describe_error(exc)
        expected = isinstance(exc, EngineError)  # a kind of file folding refuses; anything else is a bug: traceback
        log.warning("%s is kept unfolded: %s", source.name, why, exc_info=not expected)
        atomic_copy(source, target)
        kept = _read_scale(target)
        return dict(kept, not_folded=why, text=f"{kept['text']}. Not folded: {why.rstrip('.')}.")
    atomic_copy(source, target.with_name("original.safetensors"))
    return scale.to_dict()
