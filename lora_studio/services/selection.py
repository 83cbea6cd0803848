"""Choosing the 20-30 sheet images a LoRA trains on, with the face measured, and exporting them.

The user's clicks are authoritative: quick-select keeps every manual pick, never re-adds an image
the user removed, and fills the rest with the set that is most consistent with the reference.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from ..errors import InvalidInput
from ..images import open_image
from ..jobs import UserError
from ..store import Store, atomic_write_json
from . import limits
from .characters import STORED_SIDE, Characters, ImageItem
from .datasets import DatasetEntry, write_dataset
from .caption_rules import record_caption, shown

MIN_IMAGES, MAX_IMAGES, SUGGESTED = 20, 30, 25
TRIGGER_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{2,31}$")
COMMON_WORDS = {"woman", "man", "person", "girl", "boy", "photo", "face", "portrait", "style"}


@dataclass
class SelectionState:
    items: list[ImageItem]
    selected: list[str]
    set_score: dict | None
    warnings: list[str] = field(default_factory=list)

    @property
    def count(self) -> int:
        return len(self.selected)

    def summary(self) -> str:
        text = f"{self.count} selected (choose {MIN_IMAGES}–{MAX_IMAGES}, {SUGGESTED} suggested)"
        if self.set_score and self.set_score.get("mean_pairwise") is not None:
            text += (f" · face consistency: mean distance {self.set_score['mean_pairwise']:.2f}, "
                     f"{100 * self.set_score['share_under_threshold']:.0f}% of pairs under 0.6")
        return text


def validate_trigger(trigger: str) -> str:
    trigger = limits.text(trigger, "The trigger word", 64)
    if not trigger:
        raise UserError("Write a trigger word first: a rare token the LoRA learns the character by, e.g. "
                        "'mila_v1' (3–32 letters, digits, '_' or '-', starting with a letter).")
    if not TRIGGER_RE.fullmatch(trigger):
        raise UserError("The trigger word must be 3–32 letters, digits, '_' or '-', starting with a "
                        "letter (e.g. 'mila_v1').")
    if trigger.lower() in COMMON_WORDS:
        raise UserError(f"'{trigger}' is an everyday word; pick a rare token such as '{trigger}_xyz'.")
    return trigger


class SelectionService:
    def __init__(self, store: Store, characters: Characters) -> None:
        self.store, self.characters = store, characters

    # ---- state ------------------------------------------------------------------------------
    def state(self, character_id: str) -> SelectionState:
        character = self.characters.get(character_id)
        items = self.characters.images(character_id, "sheet")
        ids = {i.id for i in items}
        selected = [i for i in character.get("selected", []) if i in ids]
        set_score, warnings = None, []
        scored = [i for i in items if i.score]
        if scored:
            set_score, warnings = self._set_measures(character_id, items, selected)
        elif items and selected:
            warnings = self._count_warnings(len(selected))
        return SelectionState(items, selected, set_score, warnings)

    def toggle(self, character_id: str, image_id: str) -> SelectionState:
        """Flip one image in or out, as one read-modify-write: parallel clicks never undo each other."""
        self.characters.get(character_id)
        image = self.store.get("images", limits.record_id(image_id, "image id"))
        if not image or image["character_id"] != character_id or image["kind"] != "sheet":
            raise UserError("That image is not part of this character's sheet.")

        def flip(character: dict) -> None:
            selected = list(character.get("selected", []))
            excluded = set(character.get("excluded", []))
            if image_id in selected:
                selected.remove(image_id)
                excluded.add(image_id)
            else:
                if len(selected) >= MAX_IMAGES:
                    raise UserError(f"At most {MAX_IMAGES} images can be selected; deselect one first.")
                selected.append(image_id)
                excluded.discard(image_id)
            character.update(selected=selected, excluded=sorted(excluded))

        self.store.mutate("characters", character_id, flip)
        return self.state(character_id)

    def set_selection(self, character_id: str, image_ids: list[str]) -> SelectionState:
        self.characters.get(character_id)
        sheet = {i.id for i in self.characters.images(character_id, "sheet")}
        unknown = [i for i in image_ids if i not in sheet]
        if unknown:
            raise UserError(f"{len(unknown)} of those images are not in this character's sheet.")
        if len(image_ids) > MAX_IMAGES:
            raise UserError(f"At most {MAX_IMAGES} images can be selected.")
        self.store.update("characters", character_id, selected=list(dict.fromkeys(image_ids)))
        return self.state(character_id)

    def quick_select(self, character_id: str, n: int = SUGGESTED) -> SelectionState:
        from .. import identity

        try:
            n = limits.whole_number(n, "The number of images", MIN_IMAGES, MAX_IMAGES)
        except InvalidInput:
            raise InvalidInput(f"Quick-select picks between {MIN_IMAGES} and {MAX_IMAGES} images; give a whole "
                               f"number such as {SUGGESTED}.") from None
        character = self.characters.get(character_id)
        items = self.characters.images(character_id, "sheet")
        if not items:
            raise UserError("Generate the character sheet first.")
        scores = self._scores(character_id, items)
        keys = identity.auto_select(
            scores, n=int(n), categories=[i.category for i in items],
            locked=character.get("selected", []), excluded=character.get("excluded", []))
        self.store.update("characters", character_id, selected=list(keys))
        state = self.state(character_id)
        if len(keys) < int(n):
            state.warnings.insert(0, f"Quick-select found only {len(keys)} usable images of the {int(n)} asked: "
                                     "the others are near-duplicates or ones you removed. Generate more "
                                     "variations or pick by hand.")
        return state

    def score(self, character_id: str) -> SelectionState:
        self.characters.get(character_id)
        items = self.characters.images(character_id, "sheet")
        self._scores(character_id, items, refresh=True)
        return self.state(character_id)

    # ---- identity ---------------------------------------------------------------------------
    def _scores(self, character_id: str, items: list[ImageItem], refresh: bool = False) -> list:
        """Identity scores for the sheet. Image records keep the light part (for captions); the
        arrays the set measures need (descriptors, face chips) go to one sidecar file."""
        from .. import identity

        reference = self._reference_descriptor(character_id)
        loaded = [(i.id, open_image(i.path, max_side=STORED_SIDE)) for i in items]
        scores = identity.score_images(loaded, reference)
        for item, score in zip(items, scores):
            light = score.to_dict()
            if refresh or item.score != light:
                self.store.update("images", item.id, score=light)
                item.score = light
        atomic_write_json(self._sidecar(character_id),
                          {s.key: s.to_dict(include_arrays=True) for s in scores})
        return scores

    def _sidecar(self, character_id: str):
        """Face arrays of the sheet: kept out of the served character folder (earlier versions put it
        there; it moves on first use)."""
        path = self.store.folder("scores") / f"{character_id}.json"
        old = self.store.root / "characters" / character_id / "sheet" / "scores.json"
        if old.is_file() and not path.exists():
            old.replace(path)
        return path

    def _reference_descriptor(self, character_id: str):
        from .. import identity

        try:
            return identity.reference_descriptor(
                open_image(self.characters.reference_path(character_id), max_side=STORED_SIDE))
        except identity.NoFaceError:
            return None

    def _set_measures(self, character_id, items, selected) -> tuple[dict | None, list[str]]:
        from .. import identity

        path = self._sidecar(character_id)
        if not path.exists():
            return None, self._count_warnings(len(selected))
        stored = json.loads(path.read_text(encoding="utf-8"))
        scores = [identity.ImageScore.from_dict(stored[i.id]) for i in items if i.id in stored]
        by_key = {s.key: s for s in scores}
        descriptors = [by_key[k].descriptor for k in selected if k in by_key and by_key[k].descriptor is not None]
        set_score = identity.set_consistency(descriptors).to_dict() if descriptors else None
        categories = {i.id: i.category for i in items}
        warnings = identity.dataset_warnings(scores, selected, categories)
        labels = {i.id: f"{i.category} · {i.caption}" for i in items}
        return set_score, [_with_labels(w, labels) for w in warnings]

    @staticmethod
    def _count_warnings(n: int) -> list[str]:
        if n < MIN_IMAGES:
            return [f"Only {n} images selected: a character LoRA needs at least {MIN_IMAGES}."]
        return []

    # ---- export -----------------------------------------------------------------------------
    def export_dataset(self, character_id: str, trigger: str) -> dict:
        """Images + captions + one zip, each written atomically; the record is the last write."""
        trigger = validate_trigger(trigger)
        state = self.state(character_id)
        if len(state.selected) < MIN_IMAGES:
            raise UserError(f"Select at least {MIN_IMAGES} images to train on ({len(state.selected)} "
                            "selected). Use Quick-select to pick the most consistent set.")
        if len(state.selected) > MAX_IMAGES:
            raise UserError(f"Select at most {MAX_IMAGES} images ({len(state.selected)} selected).")
        items = {i.id: i for i in state.items}
        entries = [  # each image's caption: written by the captioner, edited, or its prompt's (services/captions.py)
            DatasetEntry(f"{index:03d}_{image_id}", items[image_id].path.read_bytes(), ".png",
                         shown(record_caption(self.store.require("images", image_id)), trigger))
            for index, image_id in enumerate(state.selected)
        ]
        return write_dataset(self.store, entries, trigger, character_id, state.selected)



def _with_labels(text: str, labels: dict[str, str]) -> str:
    """Warnings name images by id; the user knows them by what they show."""
    for image_id, label in labels.items():
        text = text.replace(image_id, label)
    return text
