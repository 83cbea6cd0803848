"""A test double: the local engine on tiny Flux whose transformer takes a while per call, so a stop
lands in the middle of an image (or a training step) and a test can count how far it went.

Every transformer forward is one denoising step of an image (or the forward of a training step):
`forwards` counts them and each waits `pace` seconds first. A test reads `forwards` when it asks for a
stop and again when the job has ended: at most one more step (the one under way, or one that began
just before the stop arrived) may have run.
"""
from __future__ import annotations

import threading
import time

from lora_studio.engines.builtin.tiny import build_tiny_flux
from lora_studio.engines.local.engine import LocalEngine
from lora_studio.engines.local.model_manager import ModelManager


class SlowSteps:
    def __init__(self, pace: float) -> None:
        self.pace = pace
        self.forwards = 0
        self._lock = threading.Lock()

    def __call__(self, module, args, kwargs) -> None:
        with self._lock:
            self.forwards += 1
        time.sleep(self.pace)


def slow_tiny_engine(pace: float = 0.3, makes_noise: bool = True) -> tuple[LocalEngine, SlowSteps]:
    """The tiny engine (4 steps an image) with a transformer taking `pace` s a call. `makes_noise=False`
    turns the identity gate on: tiny's noise never holds a face, so every variation is drawn again."""
    pipe = build_tiny_flux()
    steps = SlowSteps(pace)
    pipe.transformer.register_forward_pre_hook(steps, with_kwargs=True)
    engine = LocalEngine(ModelManager(loader=lambda *_: pipe, device="cpu"), tiny=True)
    engine.makes_noise = makes_noise
    return engine, steps
