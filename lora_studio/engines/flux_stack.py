"""diffusers and transformers, imported once, by one thread at a time, and quiet while we call them.

Their lazy modules are not safe to import from two threads at once: when the launch's memory-plan
warm-up and the first job imported them together, the job failed with "cannot import name
'FluxKontextPipeline'". The app starts without torch, so whichever thread touches Flux first calls
`load()`, and the others wait for it instead of seeing a half-built module.
"""
from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Iterator

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


_quiet_lock = threading.Lock()
_quiet_depth = 0
_quiet_before: tuple[int, int] | None = None


@contextmanager
def quiet() -> Iterator[None]:
    """diffusers' and transformers' warnings at error level while we call their models, and only then.

    A caption or prompt past CLIP's 77 tokens is cut on every call by design (T5 reads it whole), and
    the notice for it, with dtype hints, would fill the log of every image and training step. Real
    errors still raise; outside these calls the libraries log as they were set to. Nested and
    concurrent calls share one quiet period: the levels come back when the last one ends.
    """
    global _quiet_depth, _quiet_before
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    with _quiet_lock:
        if _quiet_depth == 0:
            _quiet_before = diffusers_logging.get_verbosity(), transformers_logging.get_verbosity()
            diffusers_logging.set_verbosity_error()
            transformers_logging.set_verbosity_error()
        _quiet_depth += 1
    try:
        yield
    finally:
        with _quiet_lock:
            _quiet_depth -= 1
            if _quiet_depth == 0 and _quiet_before is not None:
                diffusers_logging.set_verbosity(_quiet_before[0])
                transformers_logging.set_verbosity(_quiet_before[1])
