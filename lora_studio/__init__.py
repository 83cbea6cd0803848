"""LoRA Studio: from one reference image of a character to a FLUX.1 LoRA that keeps the face."""
from __future__ import annotations

__version__ = "0.1.0"


def __getattr__(name):  # keep `import lora_studio` light: no torch, no gradio
    if name == "Studio":
        from .studio import Studio

        return Studio
    if name == "Settings":
        from .config import Settings

        return Settings
    raise AttributeError(name)
