"""A test engine whose "Kontext edits" are crops, flips and light changes of one real photo.

The browser tests use it so a character sheet takes seconds and its faces are real (dlib measures a
distance and flags for each), where tiny Flux takes minutes on a loaded CPU and draws no face.
"""
from __future__ import annotations

import random
from pathlib import Path

from PIL import Image, ImageEnhance, ImageOps

from lora_studio.engines.base import EditRequest, EngineError, GenerateRequest


class PhotoEngine:
    name = "photo"
    makes_noise = False
    manager = None

    def __init__(self, photo: Path, side: int = 512) -> None:
        self.photo = Image.open(photo).convert("RGB")
        self.side = side

    def describe(self) -> str:
        return "Test engine: crops of the sample photo"

    def edit(self, request: EditRequest) -> Image.Image:
        rng = random.Random(request.seed)
        w, h = self.photo.size
        zoom = rng.uniform(0.45, 0.95)  # share of the photo kept, around the face in the upper half
        cw, ch = int(w * zoom), int(h * zoom)
        left, top = int((w - cw) * rng.uniform(0.2, 0.8)), int((h - ch) * rng.uniform(0.0, 0.4))
        image = self.photo.crop((left, top, left + cw, top + ch)).rotate(rng.uniform(-12, 12), expand=False)
        if rng.random() < 0.5:
            image = ImageOps.mirror(image)
        image = ImageEnhance.Brightness(image).enhance(rng.uniform(0.7, 1.3))
        image = ImageEnhance.Color(image).enhance(rng.uniform(0.0, 1.6))
        return image.resize((self.side, self.side))

    edit_batch = 1

    def edit_many(self, requests: list[EditRequest]) -> list[Image.Image]:
        return [self.edit(request) for request in requests]

    def generate(self, request: GenerateRequest) -> Image.Image:
        raise EngineError("The photo test engine only makes sheets.")

    def check_lora(self, path: Path) -> dict:
        raise EngineError("The photo test engine holds no LoRAs.")

    def unload(self) -> None:
        pass
