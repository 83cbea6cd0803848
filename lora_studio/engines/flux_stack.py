"""diffusers and transformers, imported once, by one thread at a time.

Their lazy modules are not safe to import from two threads at once: when the launch's memory-plan
warm-up and the first job imported them together, the job failed with "cannot import name
'FluxKontextPipeline'". The app starts without torch, so whichever thread touches Flux first calls
`load()`, and the others wait for it instead of seeing a half-built module.
"""
from __future__ import annotations

import threading

_lock = threading.Lock()
_loaded = False


def load() -> None:
    global _loaded
    if _loaded:
        return
    with _lock:
        if _loaded:
            return
        # Every lazy name the engines and the trainer reach first, so each submodule is built here.
        from diffusers import (  # noqa: F401
            AutoencoderKL, AutoencoderKLFlux2, FlowMatchEulerDiscreteScheduler, Flux2KleinPipeline,
            Flux2Transformer2DModel, FluxKontextPipeline, FluxPipeline, FluxTransformer2DModel,
        )
        from transformers import (  # noqa: F401
            CLIPImageProcessor, CLIPTextModel, CLIPTokenizer, Qwen2Tokenizer, Qwen3ForCausalLM, T5EncoderModel,
            T5Tokenizer, T5TokenizerFast,
        )
        _loaded = True
