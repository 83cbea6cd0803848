"""The local engine: diffusers on this machine's GPU (or CPU), through the one ModelManager.

The tiny engine is this same class on the built-in tiny Flux: same code paths, noise images.
"""
from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image

from .base import EditRequest, EngineError, GenerateRequest, OutOfMemory
from .lora_formats import inspect_lora
from .model_manager import TINY_ID, ModelManager

TINY_STEPS = 4
TINY_SEQUENCE = 128


class LocalEngine:
    def __init__(self, manager: ModelManager, tiny: bool = False) -> None:
        self.manager = manager
        self.tiny = tiny
        self.name = "tiny" if tiny else "local"
        self.makes_noise = tiny

    def describe(self) -> str:
        if self.tiny:
            return ("Tiny built-in Flux (random weights): every step runs for real, but the images are "
                    "noise. Start with --model PATH_OR_HUB_ID (FLUX.1-dev) for real pictures.")
        note = f" {self.manager.memory_note}" if self.manager.memory_note else ""
        return f"Local FLUX.1 from {self.manager.model_id} on {self.manager.device.type}.{note}"

    def _steps(self, steps: int) -> int:
        return min(steps, TINY_STEPS) if self.tiny else steps

    def _kwargs(self) -> dict:
        return {"max_sequence_length": TINY_SEQUENCE} if self.tiny else {}

    def edit(self, request: EditRequest) -> Image.Image:
        with self.manager.lock, _oom_as_error():
            self.manager.apply_loras(())
            pipe = self.manager.kontext()
            area = request.width * request.height
            image = request.image
            if self.tiny:  # no auto-resize on tiny sizes: give it the target size directly
                image = image.resize((request.width, request.height))
            return pipe(
                image=image, prompt=request.prompt, width=request.width,
                height=request.height, num_inference_steps=self._steps(request.steps),
                guidance_scale=request.guidance, max_area=area, _auto_resize=not self.tiny,
                generator=torch.Generator("cpu").manual_seed(request.seed), **self._kwargs(),
            ).images[0]

    def generate(self, request: GenerateRequest) -> Image.Image:
        with self.manager.lock, _oom_as_error():
            self.manager.apply_loras(request.loras)
            pipe = self.manager.text_to_image()
            return pipe(
                prompt=request.prompt, width=request.width, height=request.height,
                num_inference_steps=self._steps(request.steps), guidance_scale=request.guidance,
                generator=torch.Generator("cpu").manual_seed(request.seed), **self._kwargs(),
            ).images[0]

    def check_lora(self, path: Path) -> dict:
        """Format and shapes against the configured model's skeleton: no lock, no model loaded, so an
        import never waits for a training that holds the model for hours."""
        from .skeleton import skeleton_for

        return inspect_lora(path, skeleton_for(self.manager.model_id)).to_dict()

    def unload(self) -> None:
        self.manager.unload()


class _oom_as_error:
    """Turn CUDA out-of-memory into a message that says what to change."""

    def __enter__(self):
        return self

    def __exit__(self, kind, exc, tb):
        if exc is not None and (isinstance(exc, torch.cuda.OutOfMemoryError)
                                or "out of memory" in str(exc).lower()):
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            raise OutOfMemory(
                "The GPU ran out of memory while generating. Use a smaller size, or start with "
                "--memory-mode offload (CPU offload) or a quantized base (8bit/nf4)."
            ) from None
        return False


def make_local_engine(model: str | None, kontext_model: str | None, device: str, memory_mode: str,
                      compile: bool = False) -> LocalEngine:
    manager = ModelManager(model=model, kontext_model=kontext_model, device=device, memory_mode=memory_mode,
                           compile=compile)
    return LocalEngine(manager, tiny=manager.model_id == TINY_ID)


__all__ = ["LocalEngine", "make_local_engine", "EngineError"]
