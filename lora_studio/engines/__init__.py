"""Engines do the model work: `local`/`tiny` (diffusers here) and `replicate` (remote API).

`make_engine` imports torch only when a local engine is asked for, so the app starts fast and the
Replicate engine works on a machine without torch.
"""
from __future__ import annotations

from ..config import Settings
from .base import Engine


def make_engine(settings: Settings) -> Engine:
    if settings.engine == "replicate":
        from .replicate import TokenFile
        from .replicate import ReplicateEngine

        return ReplicateEngine(settings.replicate, work_dir=settings.workspace / "replicate",
                               token_file=TokenFile(settings.workspace))
    from . import flux_stack

    flux_stack.load()  # before local.py imports diffusers: a warm-up thread may be importing it too
    from .local import make_local_engine

    model = None if settings.engine == "tiny" else settings.local_model
    return make_local_engine(model, settings.kontext_model, settings.device, settings.memory_mode,
                             speed=settings.speed)
