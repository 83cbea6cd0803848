"""What every engine offers the services, as typed requests and results.

Services speak only these dataclasses; the local (torch) and Replicate engines translate them.
No torch import here, so the UI and services can import the types cheaply.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from PIL import Image

from ..errors import StudioError
from .family import FLUX1, Defaults, Family
from ..progress import Reporter


class EngineError(StudioError):
    """A failure with a message fit for the user (bad LoRA, out of memory, missing token...)."""


class OutOfMemory(EngineError):
    pass


@dataclass(frozen=True)
class LoraWeight:
    """A LoRA to apply at a strength. `path` is a local .safetensors; `remote` a URL for Replicate."""

    name: str
    weight: float
    path: Path | None = None
    remote: str | None = None


# replicate/cog-flux's FLUX LoRA predictor: with go_fast (its default) it runs fp8 and multiplies
# lora_scale and extra_lora_scale by 1.5, so a strength tuned there with go_fast on is 1.5x too strong here.
GO_FAST_LORA_FACTOR = 1.5


def replicate_lora_scale(scale: float, go_fast: bool) -> float:
    """The strength Replicate's FLUX LoRA predictor actually applies when sent `scale`."""
    return scale * GO_FAST_LORA_FACTOR if go_fast else scale


@dataclass(frozen=True)
class GenerateRequest:
    prompt: str
    seed: int = 0
    width: int = 1024
    height: int = 1024
    steps: int = 28
    guidance: float = 3.5
    loras: tuple[LoraWeight, ...] = ()
    # Replicate's go_fast: fp8 weights, and its LoRA predictor multiplies every LoRA scale by 1.5.
    # Off by default so a strength means the same on Replicate as here; local engines ignore it.
    go_fast: bool = False
    # FLUX.2 [klein]: "base" draws on the base checkpoint (the strength tester's second sweep); "" on
    # the engine's pictures checkpoint (the distilled one when it is there). Other engines have one.
    checkpoint: str = ""


@dataclass(frozen=True)
class EditRequest:
    """An edit of `image` following `prompt` (one character-sheet variation): FLUX.1 Kontext, or FLUX.2
    [klein] with the image as its reference."""

    image: Image.Image
    prompt: str
    seed: int = 0
    width: int = 1024
    height: int = 1024
    steps: int = 28
    guidance: float = 2.5


@dataclass(frozen=True)
class TrainRequest:
    dataset_dir: Path  # images + same-named .txt captions
    output_dir: Path  # where the LoRA files go
    work_dir: Path  # checkpoints, caches, samples
    trigger: str
    steps: int = 1000
    rank: int = 16
    alpha: float | None = None
    learning_rate: float = 1e-4
    resolution: int = 512
    batch_size: int = 1
    seed: int = 0
    train_mlp: bool = True
    memory_mode: str = "auto"
    checkpoint_every: int = 250
    sample_every: int = 250
    sample_prompt: str = ""
    reference_image: Path | None = None
    resume: bool = True
    zip_path: Path | None = None  # the dataset as one zip, for remote trainers
    max_seconds: float | None = None  # remote trainers stop a run billed past this (the spending cap)
    # Train at most this many steps in this call, then checkpoint and return (`stopped_at` set);
    # a call with resume=True continues. ZeroGPU's per-call time limit needs this (gpu_calls.py).
    stop_after: int | None = None
    samples_dir: Path | None = None  # where sample images go (a served folder); None: work_dir/samples


@dataclass
class TrainResult:
    lora_path: Path  # diffusers-format .safetensors
    steps: int
    final_loss: float | None = None
    best_checkpoint: str | None = None
    remote: str | None = None  # weights URL / version for remote engines
    extra_files: dict[str, Path] = field(default_factory=dict)
    metadata: dict = field(default_factory=dict)
    billed_s: float | None = None  # seconds a remote trainer was billed for (from leaving "starting" to the end)
    stopped_at: int | None = None  # set when the run paused at request.stop_after (lora_path: that checkpoint)


class Engine(Protocol):
    name: str
    makes_noise: bool  # True for the tiny engine: images carry no faces
    # The one Flux pipeline held in this process (engines.local.ModelManager), which the
    # trainer borrows; None for a remote engine, which trains where it runs (see RemoteTrainer).
    manager: Any
    edit_batch: int  # edits one call takes; the character sheet sends them in groups of this size
    # Optional: `family` (engines/family.Family, FLUX.1 when absent), `defaults` (its steps and guidance
    # for pictures and the sheet) and `checkpoints()` (Klein's, for a sweep on both); read through
    # `family_of` and `defaults_of` below.
    # Optional: `start_flight(charges, stop)` when the engine runs many requests at once (Replicate);
    # services reach it through engines.flight.open_flight, which takes the others in turn.

    def describe(self) -> str: ...

    def edit(self, request: EditRequest) -> Image.Image: ...

    def edit_many(self, requests: list[EditRequest]) -> list[Image.Image]: ...

    def generate(self, request: GenerateRequest) -> Image.Image: ...

    def check_lora(self, path: Path) -> dict: ...

    def unload(self) -> None: ...


def family_of(engine) -> Family:
    """The model family an engine runs (FLUX.1 for an engine that does not say)."""
    return getattr(engine, "family", None) or FLUX1


def defaults_of(engine, checkpoint: str = "") -> Defaults:
    """Steps and guidance an engine's pictures and sheet use unless asked otherwise."""
    defaults = getattr(engine, "defaults", None)
    if callable(defaults):
        return defaults(checkpoint)
    return family_of(engine).base_defaults


class RemoteTrainer(Protocol):
    """An engine whose trainer runs elsewhere (Replicate): it uploads the dataset and follows the run."""

    def train(self, request: TrainRequest, reporter: Reporter) -> TrainResult: ...
