"""Captioning training images with a vision-language model (Qwen3-VL, transformers' native class).

    model.py  Captioner: a model read from disk (a folder or the Hub cache), pictures in, texts out
    tiny.py   a tiny random Qwen3-VL built in code: the real generate path on a CPU, words of noise

What a caption may say (the trigger word first, never the face's identity traits) is the services'
rule (services/captions.py): this package only runs the model. Importing it loads nothing: each
name loads its module on first use (lora_studio.lazy).
"""
from __future__ import annotations

from ...lazy import lazy_exports

_EXPORTS = {
    **dict.fromkeys(("ARCHITECTURES", "Captioner", "CaptionerError", "architecture", "captioner_folder",
                     "free_gpu_bytes", "load_captioner", "weight_bytes_on_disk"), "model"),
    **dict.fromkeys(("TINY_CAPTIONER_SEED", "build_tiny_captioner", "save_tiny_captioner"), "tiny"),
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
