"""The short list of models the Settings page offers: FLUX.1, FLUX.2 [klein] and the captioners.

Each row says what it is for, the memory mode its weights imply, and its licence and access (a known
checkpoint's come from the model families' table, engines/family, so they are written once).
"""
from __future__ import annotations

from dataclasses import dataclass

from ...engines import family


@dataclass(frozen=True)
class CatalogueEntry:
    repo_id: str
    title: str
    memory_mode: str  # the memory mode whose planned need this model's weights imply
    note: str
    kontext: bool = False
    architecture: str = "flux1-dev"  # the full-size model the memory plan counts (engines/memory)
    licence: str = ""
    gated: bool | None = None  # the Hub asks for a token and the licence accepted; None: not known here
    kind: str = "flux"  # "flux": a pipeline in diffusers layout; "captioner": a transformers model (Qwen3-VL)
    gpu_gb: float | None = None  # a captioner's planned GPU memory (bf16 weights + a batch of images)

    @property
    def layout(self) -> str:
        return "transformers" if self.kind == "captioner" else "diffusers"


def _known(repo_id: str, memory_mode: str, note: str) -> CatalogueEntry:
    """A row for a checkpoint the model families know: title, licence, access and size come from there."""
    known = family.checkpoint(repo_id)
    return CatalogueEntry(repo_id, known.title, memory_mode, f"{note} {known.licence_text()}",
                          kontext=known.editor, architecture=known.architecture, licence=known.licence,
                          gated=known.gated)


CATALOGUE = (
    _known("black-forest-labs/FLUX.1-dev", "checkpointing", "Full bf16 weights: the best FLUX.1 pictures and LoRAs."),
    CatalogueEntry("diffusers/FLUX.1-dev-bnb-8bit", "FLUX.1-dev, 8-bit (bitsandbytes)", "8bit",
                   "FLUX.1-dev quantized by diffusers to 8 bits: about half the GPU memory, a smaller download; "
                   "NVIDIA GPUs only.", licence=family.FLUX1_DEV_NC),
    CatalogueEntry("diffusers/FLUX.1-dev-bnb-4bit", "FLUX.1-dev, 4-bit NF4 (bitsandbytes)", "nf4",
                   "FLUX.1-dev quantized by diffusers to 4 bits: for 12-16 GB GPUs; NVIDIA GPUs only.",
                   licence=family.FLUX1_DEV_NC),
    _known("black-forest-labs/FLUX.1-Kontext-dev", "checkpointing",
           "Draws the FLUX.1 character sheet (image editing). Only its transformer is fetched: it shares "
           "FLUX.1-dev's text encoders and VAE."),
    _known(family.KLEIN_4B, "checkpointing",
           "One 4 B checkpoint for text-to-image and the character sheet (reference edits), 4 steps a picture."),
    _known(family.KLEIN_BASE_4B, "checkpointing",
           "The undistilled 4 B: what Klein LoRAs are trained on (50 steps a picture on its own)."),
    _known(family.KLEIN_9B, "checkpointing", "The 9 B distilled checkpoint: better pictures, twice the memory."),
    _known(family.KLEIN_BASE_9B, "checkpointing", "The undistilled 9 B, for training 9 B LoRAs."),
    # Captioners: Qwen3-VL is a native transformers class (no remote code) under Apache-2.0. Florence-2
    # is native too (MIT) but takes no instruction, so it describes the face the trigger word must carry;
    # Qwen2.5-VL-3B's licence (Qwen Research) forbids commercial use. See services/captions.py.
    CatalogueEntry("Qwen/Qwen3-VL-2B-Instruct", "Qwen3-VL 2B Instruct (captioner, the default)", "",
                   "Writes training captions that follow the instruction: clothing, pose, framing, setting, light "
                   "and expression, never the face. Apache-2.0, about 4.3 GB.", kind="captioner", gpu_gb=6.0,
                   licence="apache-2.0", gated=False),
    CatalogueEntry("Qwen/Qwen3-VL-4B-Instruct", "Qwen3-VL 4B Instruct (captioner, better)", "",
                   "Better captions than the 2B, twice the download and memory. Apache-2.0, about 8.9 GB.",
                   kind="captioner", gpu_gb=11.0, licence="apache-2.0", gated=False),
)
CAPTIONERS = tuple(e for e in CATALOGUE if e.kind == "captioner")
