"""Characters and their reference images (the Reference tab's workflow)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..images import ImageError, open_image, save_png
from ..jobs import UserError
from ..store import Store, new_id
from . import limits

MAX_UPLOADS = 20  # images per call
MAX_REFERENCES = 50  # uploaded images per character
MAX_CHARACTERS = 500
STORED_SIDE = 2048  # references are kept at most this large: Kontext and face checks need no more


@dataclass
class ImageItem:
    """An image record as the UI shows it."""

    id: str
    path: Path
    kind: str
    caption: str
    category: str | None = None
    score: dict | None = None


@dataclass
class UploadReport:
    added: list[str]
    rejected: list[str]  # "name: reason" lines for the user


class Characters:
    def __init__(self, store: Store) -> None:
        self.store = store

    def create(self, name: str) -> dict:
        name = limits.name(name, "The character's name") or "Unnamed character"
        if len(self.store.find("characters")) >= MAX_CHARACTERS:
            raise UserError(f"The workspace already holds {MAX_CHARACTERS} characters; reuse one of them.")
        return self.store.insert("characters", dict(name=name, reference_image_id=None, selected=[],
                                                    sheet_job_id=None))

    def list(self) -> list[dict]:
        return self.store.find("characters")

    def get(self, character_id: str) -> dict:
        if not character_id:
            raise UserError("Create or pick a character first.")
        try:
            return self.store.require("characters", limits.record_id(character_id, "character id"))
        except KeyError:
            raise UserError("That character no longer exists.") from None

    def add_images(self, character_id: str, sources: list, names: list[str] | None = None) -> UploadReport:
        """Validate each upload; keep the good ones, explain the bad ones, change nothing for them."""
        self.get(character_id)
        if not sources:
            raise UserError("Choose at least one image to upload.")
        if len(sources) > MAX_UPLOADS:
            raise UserError(f"{len(sources)} images sent; upload at most {MAX_UPLOADS} at a time.")
        have = len(self.store.find("images", character_id=character_id, kind="reference"))
        if have + len(sources) > MAX_REFERENCES:
            raise UserError(f"This character has {have} images; at most {MAX_REFERENCES} are kept. Upload "
                            f"{max(0, MAX_REFERENCES - have)} or fewer, or make a new character.")
        names = names or [Path(str(s)).name if isinstance(s, (str, Path)) else f"image {i + 1}"
                          for i, s in enumerate(sources)]
        names = [str(n)[:120] for n in names]
        added, rejected = [], []
        for source, name in zip(sources, names):
            try:
                image = open_image(source, label=name, max_side=STORED_SIDE)
            except ImageError as exc:
                rejected.append(str(exc))
                continue
            image_id = new_id("img_")
            path = save_png(image, self.store.character_dir(character_id, "reference") / f"{image_id}.png")
            self.store.insert("images", dict(id=image_id, character_id=character_id, kind="reference",
                                             path=self.rel(path), width=image.width, height=image.height,
                                             original_name=name[:120]))
            added.append(image_id)
        character = self.get(character_id)
        if added and not character.get("reference_image_id"):
            self.store.update("characters", character_id, reference_image_id=added[0])
        if not added:
            raise UserError("No image was added. " + " ".join(rejected))
        return UploadReport(added, rejected)

    def choose_reference(self, character_id: str, image_id: str) -> dict:
        self.get(character_id)
        image = self.store.get("images", limits.record_id(image_id, "image id"))
        if not image or image["character_id"] != character_id or image["kind"] != "reference":
            raise UserError("Pick one of this character's uploaded images as the reference.")
        return self.store.update("characters", character_id, reference_image_id=image_id)

    def reference_face(self, character_id: str) -> str:
        """One line on the reference's face: the identity checks depend on finding exactly one."""
        from .. import identity

        try:
            image = open_image(self.reference_path(character_id), "The reference image", max_side=STORED_SIDE)
            faces = identity.detect_faces(image)
        except identity.IdentityUnavailableError as exc:
            return f"Face checks are unavailable: {exc}"
        if not faces:
            return ("⚠ No face found in the reference image: the sheet's identity gate and the face scores "
                    "will be off. Pick an image where the face is clear and at least ~100 px wide.")
        if len(faces) > 1:
            return f"⚠ {len(faces)} faces in the reference: the largest one is used as the character."
        return "✓ One face found in the reference: identity checks are on."

    def reference_path(self, character_id: str) -> Path:
        character = self.get(character_id)
        if not character.get("reference_image_id"):
            raise UserError("This character has no reference image yet: upload one first.")
        return self.abs(self.store.require("images", character["reference_image_id"])["path"])

    def images(self, character_id: str, kind: str) -> list[ImageItem]:
        if kind not in ("reference", "sheet"):
            raise UserError(f"Image kind must be 'reference' or 'sheet', not {str(kind)[:20]!r}.")
        rows = self.store.find("images", character_id=character_id, kind=kind)
        rows.sort(key=lambda r: (r.get("slot", 0), r.get("created", 0)))
        return [ImageItem(r["id"], self.abs(r["path"]), kind, r.get("label") or r.get("original_name", ""),
                          r.get("category"), r.get("score")) for r in rows]

    def rel(self, path: Path) -> str:
        return str(Path(path).resolve().relative_to(self.store.root))

    def abs(self, rel: str) -> Path:
        return self.store.path(rel)
