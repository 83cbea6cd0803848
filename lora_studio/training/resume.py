"""Resuming a training: which checkpoints belong to this run, and loading one back.

A checkpoint is resumed only when everything that shapes the weights matches (the fingerprint:
data, rank, alpha, learning rate, resolution, batch, seed, target layers, base model, recipe
version), so a resumed run ends on the same weights as an uninterrupted one.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from peft.utils import set_peft_model_state_dict

from ..engines.base import EngineError, TrainRequest
from . import checkpoints as ckpt
from .checkpoints import LoopState
from .flow_matching import ADAPTER_NAME
from .layouts import WEIGHTING_SCHEME

FORMAT_VERSION = 1  # bump when a change makes old checkpoints unfit to resume


def fingerprint(request: TrainRequest, rank: int, alpha: float, targets: list[str], data_hash: str, base: str,
                recipe: str = "flux1") -> str:
    identity = {
        "version": FORMAT_VERSION,
        "dataset": data_hash,
        "rank": rank,
        "alpha": alpha,
        "learning_rate": request.learning_rate,
        "resolution": request.resolution,
        "batch_size": request.batch_size,
        "seed": request.seed,
        "targets": hashlib.sha256("\n".join(targets).encode()).hexdigest()[:16],
        "base": base,
        "weighting": WEIGHTING_SCHEME,
    }
    if recipe != "flux1":  # another family's recipe (layouts.py); FLUX.1 runs keep the identity they had
        identity["recipe"] = recipe
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]


def resume_from(path: Path, transformer, optimizer, generator, loop: LoopState) -> None:
    loaded = ckpt.load_checkpoint(path)
    lora = {k.removeprefix("transformer."): v for k, v in loaded.lora.items()}
    result = set_peft_model_state_dict(transformer, lora, adapter_name=ADAPTER_NAME)
    unexpected = getattr(result, "unexpected_keys", None) or []
    if unexpected:
        raise EngineError(f"Checkpoint {path.name} does not fit this adapter ({len(unexpected)} unknown weights).")
    optimizer.load_state_dict(loaded.optimizer_state)
    state = loaded.state
    ckpt.restore_rng(loaded.rng, state.python_random, state.numpy_random, generator)
    loop.step = state.step
    loop.loss_ema, loop.last_loss = state.loss_ema, state.last_loss
    loop.best_step, loop.best_score = state.best_step, state.best_score
    loop.saved_steps.add(state.step)

