"""The local engine: diffusers on this machine's GPU (or CPU), through the one ModelManager.

The tiny engine is this same class on the built-in tiny Flux: same code paths, noise images. It draws
with the family of the model it holds: FLUX.1 (Kontext edits for the sheet) or FLUX.2 [klein] (the
same pipeline with the reference image in `image=`).
"""
from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image

from ...config import SpeedRequest
from ...errors import is_out_of_memory
from ..base import EditRequest, EngineError, GenerateRequest, OutOfMemory
from ..flux_stack import quiet
from ..lora import inspect_lora
from ..family import KLEIN, Defaults, Family
from ..flight import at_once
from .model_choice import sheet_sentence
from .model_kind import RANDOM_WEIGHTS, TINY_IDS, model_label
from .model_manager import ModelManager
from .steps import draw
from ..speed import SpeedSettings

TINY_STEPS = 4
TINY_SEQUENCE = 128


class LocalEngine:
    def __init__(self, manager: ModelManager, tiny: bool = False, max_sequence_length: int | None = None) -> None:
        self.manager = manager
        self.tiny = tiny
        # T5 tokens per prompt: the pipeline's 512 unless set (tiny: 128; CPU smoke runs of the wide model: fewer)
        self.max_sequence_length = max_sequence_length or (TINY_SEQUENCE if tiny else None)
        self.name = "tiny" if tiny else "local"
        self.makes_noise = tiny or manager.model_id in RANDOM_WEIGHTS

    @property
    def family(self) -> Family:
        return self.manager.family

    def defaults(self, checkpoint: str = "") -> Defaults:
        """Steps and guidance for the checkpoint a picture runs on (Klein distilled: 4 steps, no CFG)."""
        return self.manager.defaults(checkpoint or None)

    def checkpoints(self) -> tuple[str, ...]:
        """The Klein checkpoints here ("distilled", "base"), pictures first; () for FLUX.1."""
        return self.manager.checkpoints()

    @property
    def edit_batch(self) -> int:
        """How many edits one call takes (the speed setting; the sheet batches by it)."""
        return self.manager.speed.batch_edits

    def describe(self) -> str:
        manager = self.manager
        if self.tiny and manager.family is not KLEIN:
            return ("Tiny built-in Flux (random weights): every step runs for real, but the images are "
                    "noise. Start with --model PATH_OR_HUB_ID (FLUX.1-dev) for real pictures.")
        if self.tiny:
            return (f"Tiny built-in {manager.family.title} ({manager.model_id}, random weights): every step runs for "
                    f"real, but the images are noise. {sheet_sentence(manager.choice())}")
        notes = " ".join(n for n in (manager.memory_note, manager.speed.reason, manager.transformers.note) if n)
        return (f"Local {manager.family.title} from {model_label(manager.model_id)} on {manager.device.type}. "
                f"{sheet_sentence(manager.choice())} {at_once(1, self.edit_batch)} {notes}").strip()

    def _steps(self, steps: int) -> int:
        return min(steps, TINY_STEPS) if self.tiny else steps

    def _auto_resize(self, request: EditRequest) -> bool:
        """Kontext snaps the reference to its ~1 MP training sizes; below 512² (tiny model, smoke runs) that
        would only make the small edit slower, so the reference is used as given."""
        return not self.tiny and request.width * request.height >= 512 * 512

    def _kwargs(self) -> dict:
        return {"max_sequence_length": self.max_sequence_length} if self.max_sequence_length else {}

    def edit(self, request: EditRequest) -> Image.Image:
        return self.edit_many([request])[0]

    def edit_many(self, requests: list[EditRequest]) -> list[Image.Image]:
        """Edits of the reference (Kontext, or Klein's reference edits), `edit_batch` per pipeline call; each
        keeps its own seed (one generator per image), so a batch gives the images one-by-one calls would."""
        images: list[Image.Image] = []
        for group in _batches(requests, self.edit_batch):
            images += self._edit_together(group)
        return images

    def _edit_together(self, requests: list[EditRequest]) -> list[Image.Image]:
        first = requests[0]
        with self.manager.lock, _oom_as_error(), quiet():
            pipe = self.manager.sheet()  # Kontext's transformer, or Klein's own pipeline; no LoRA
            image = first.image
            if self.tiny:  # no auto-resize on tiny sizes: give it the target size directly
                image = image.resize((first.width, first.height))
            prompts = [r.prompt for r in requests]
            generators = [torch.Generator("cpu").manual_seed(r.seed) for r in requests]
            kwargs = self._kwargs()
            if self.manager.family.sheet == "kontext-transformer":  # Kontext snaps the reference to its sizes
                kwargs.update(max_area=first.width * first.height, _auto_resize=self._auto_resize(first))
            return draw(
                pipe, len(requests),
                image=image, prompt=prompts if len(prompts) > 1 else prompts[0], width=first.width,
                height=first.height, num_inference_steps=self._steps(first.steps), guidance_scale=first.guidance,
                generator=generators if len(generators) > 1 else generators[0], **kwargs,
            ).images

    def generate(self, request: GenerateRequest) -> Image.Image:
        with self.manager.lock, _oom_as_error(), quiet():
            checkpoint = request.checkpoint or None
            self.manager.apply_loras(request.loras, checkpoint)
            pipe = self.manager.text_to_image(checkpoint)
            return draw(
                pipe, prompt=request.prompt, width=request.width, height=request.height,
                num_inference_steps=self._steps(request.steps), guidance_scale=request.guidance,
                generator=torch.Generator("cpu").manual_seed(request.seed), **self._kwargs(),
            ).images[0]

    def check_lora(self, path: Path) -> dict:
        """Format and shapes against the configured model's skeleton: no lock, no model loaded, so an
        import never waits for a training that holds the model for hours."""
        from ..lora import skeleton_for

        return inspect_lora(path, skeleton_for(self.manager.model_id), model=self.manager.model_id).to_dict()

    def unload(self) -> None:
        self.manager.unload()


def _batches(requests: list[EditRequest], size: int) -> list[list[EditRequest]]:
    """Consecutive requests that can share one call (same reference, size, steps and guidance), `size` at most."""
    groups: list[list[EditRequest]] = []
    for request in requests:
        last = groups[-1] if groups else None
        if last and len(last) < size and _same_call(last[0], request):
            last.append(request)
        else:
            groups.append([request])
    return groups


def _same_call(a: EditRequest, b: EditRequest) -> bool:
    return (a.image is b.image and (a.width, a.height, a.steps, a.guidance) == (b.width, b.height, b.steps, b.guidance))


class _oom_as_error:
    """Turn CUDA out-of-memory into a message that says what to change."""

    def __enter__(self):
        return self

    def __exit__(self, kind, exc, tb):
        if exc is not None and is_out_of_memory(exc):
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            raise OutOfMemory(
                "The GPU ran out of memory while generating. Use a smaller size, or start with "
                "--memory-mode offload (CPU offload) or a quantized base (8bit/nf4)."
            ) from None
        return False


def make_local_engine(model: str | None, kontext_model: str | None, device: str, memory_mode: str,
                      speed: SpeedRequest | SpeedSettings | None = None) -> LocalEngine:
    manager = ModelManager(model=model, kontext_model=kontext_model, device=device, memory_mode=memory_mode,
                           speed=speed)
    return LocalEngine(manager, tiny=manager.model_id in TINY_IDS)


__all__ = ["LocalEngine", "make_local_engine", "EngineError"]
