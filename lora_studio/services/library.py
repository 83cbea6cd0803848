"""The LoRA library: trained and imported LoRAs, their files, metadata and scores.

Each LoRA lives in `loras/<id>/` under a generated name; the user's name is only a label, so a
rename never moves files and no user text reaches a path.
"""
from __future__ import annotations

import io
import json
import shutil
import zipfile
from pathlib import Path
from typing import Callable

from ..engines.base import Engine, EngineError, LoraWeight
from ..jobs import UserError
from ..store import Store, atomic_write_bytes, atomic_write_json, new_id

MAX_IMPORT_BYTES = 2 * 1024**3


class LibraryService:
    def __init__(self, store: Store, engine: Callable[[], Engine]) -> None:
        self.store = store
        self._engine = engine

    # ---- queries ----------------------------------------------------------------------------
    def list(self) -> list[dict]:
        return self.store.find("loras")

    def get(self, lora_id: str) -> dict:
        record = self.store.get("loras", lora_id or "")
        if record is None:
            raise UserError("That LoRA is not in the library.")
        return record

    def find_by_name(self, name: str) -> dict | None:
        for record in self.list():
            if record["name"].lower() == (name or "").strip().lower():
                return record
        return None

    def resolve(self, name_or_id: str) -> dict:
        record = self.store.get("loras", name_or_id) or self.find_by_name(name_or_id)
        if record is None:
            known = ", ".join(r["name"] for r in self.list()) or "none yet"
            raise UserError(f"No LoRA named {name_or_id!r} (library: {known}).")
        return record

    def path(self, record: dict) -> Path:
        return self.store.root / record["path"]

    def weight(self, name_or_id: str, strength: float) -> LoraWeight:
        record = self.resolve(name_or_id)
        return LoraWeight(name=record["id"], weight=float(strength), path=self.path(record),
                          remote=record.get("remote"))

    # ---- adding -----------------------------------------------------------------------------
    def register_trained(self, *, name, trigger, result, job_id, character_id, dataset, params,
                         seconds) -> dict:
        lora_id = new_id("lora_")
        folder = self.store.lora_dir(lora_id)
        files = {"lora": result.lora_path, **result.extra_files}
        stored = {}
        for key, source in files.items():
            if source and Path(source).is_file():
                target = folder / (Path(source).name if key != "lora" else "lora.safetensors")
                atomic_write_bytes(target, Path(source).read_bytes())
                stored[key] = str(target.relative_to(self.store.root))
        samples_dir = Path(result.lora_path).parents[1] / "samples"
        sample_paths = sorted(samples_dir.glob("*.png"))[-4:] if samples_dir.is_dir() else []
        for source in sample_paths:  # the last few training samples travel with the LoRA
            target = folder / "samples" / source.name
            atomic_write_bytes(target, source.read_bytes())
        stored["samples"] = [str((folder / "samples" / p.name).relative_to(self.store.root)) for p in sample_paths]
        metadata = dict(result.metadata, trigger=trigger, steps=result.steps, rank=params.get("rank"),
                        learning_rate=params.get("learning_rate"), resolution=params.get("resolution"),
                        dataset_hash=dataset.get("hash"), final_loss=result.final_loss,
                        best_checkpoint=result.best_checkpoint, seconds=round(seconds, 1))
        atomic_write_json(folder / "metadata.json", metadata)
        return self.store.insert("loras", dict(
            id=lora_id, name=name, trigger=trigger, source="trained", path=stored["lora"],
            files=stored, job_id=job_id, character_id=character_id, dataset_id=dataset.get("id"),
            remote=result.remote, metadata=metadata, scores={}))

    def samples(self, lora_id: str) -> list[Path]:
        record = self.get(lora_id)
        return [self.store.root / p for p in record.get("files", {}).get("samples", [])]

    def import_file(self, source: str | Path, name: str, trigger: str = "") -> dict:
        """Check a user's .safetensors against the loaded Flux, then copy it in under a new id."""
        source = Path(source)
        name = (name or "").strip()[:60] or source.stem[:60]
        if self.find_by_name(name):
            raise UserError(f"A LoRA named {name!r} already exists.")
        if not source.is_file():
            raise UserError("Choose a .safetensors file to import.")
        if source.stat().st_size > MAX_IMPORT_BYTES:
            raise UserError("That file is larger than 2 GB; it is not a LoRA.")
        try:
            info = self._engine().check_lora(source)
        except EngineError as exc:
            raise UserError(str(exc)) from None
        lora_id = new_id("lora_")
        target = self.store.lora_dir(lora_id) / "lora.safetensors"
        atomic_write_bytes(target, source.read_bytes())
        rel = str(target.relative_to(self.store.root))
        return self.store.insert("loras", dict(
            id=lora_id, name=name, trigger=(trigger or "").strip()[:40], source="imported", path=rel,
            files={"lora": rel}, metadata={"format": info.get("format"), "rank": info.get("rank"),
                                            "original_file": source.name[:120]},
            scores={}, remote=None, character_id=None))

    # ---- changing ---------------------------------------------------------------------------
    def rename(self, lora_id: str, new_name: str) -> dict:
        record = self.get(lora_id)
        new_name = (new_name or "").strip()[:60]
        if not new_name:
            raise UserError("The new name is empty.")
        other = self.find_by_name(new_name)
        if other and other["id"] != record["id"]:
            raise UserError(f"A LoRA named {new_name!r} already exists.")
        return self.store.update("loras", record["id"], name=new_name)

    def delete(self, lora_id: str, unload: Callable[[str], None] | None = None) -> None:
        record = self.get(lora_id)
        if unload:
            unload(record["id"])
        self.store.delete("loras", [record["id"]])
        shutil.rmtree(self.store.root / "loras" / record["id"], ignore_errors=True)

    def set_scores(self, lora_id: str, scores: dict) -> dict:
        return self.store.mutate("loras", lora_id, lambda r: r.setdefault("scores", {}).update(scores))

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
