"""Training checkpoints: everything needed to continue a run exactly where it stopped.

Layout, one folder per checkpoint, written into a hidden temporary folder and renamed into place:

    work_dir/checkpoints/step_000250/
        lora.safetensors     the adapter in diffusers format, with its peft config as metadata: it
                             loads directly with `pipe.load_lora_weights(folder, weight_name=...)`
        optimizer.pt         optimizer.state_dict() (tensors and numbers only; read with weights_only)
        rng.safetensors      torch CPU / CUDA and the trainer's noise-generator states
        state.json           step, loss EMA, best identity so far, data position, python/numpy RNG
                             states and the run fingerprint (settings that must match to resume)

The last `keep_last` checkpoints are kept, plus the best one (lowest identity distance).
"""
from __future__ import annotations

import json
import os
import random
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from ..typed_json import from_json_or_none, to_json

LORA_FILE = "lora.safetensors"
_STEP_DIR = re.compile(r"^step_(\d{6,})$")


@dataclass
class TrainingState:
    step: int
    fingerprint: str
    loss_ema: float | None = None
    last_loss: float | None = None
    best_step: int | None = None
    best_score: float | None = None
    data_position: tuple[int, int] = (0, 0)  # (epoch, batch index) of the last step trained
    python_random: list = field(default_factory=list)
    numpy_random: dict = field(default_factory=dict)


@dataclass
class LoopState:
    """What changes while training: the position, the loss curve and the best sample so far."""

    step: int = 0
    loss_ema: float | None = None
    last_loss: float | None = None
    best_step: int | None = None
    best_score: float | None = None
    saved_steps: set[int] = field(default_factory=set)
    step_seconds: list[float] = field(default_factory=list)
    peak_bytes: int = 0
    samples: list[str] = field(default_factory=list)



def checkpoint_dir(root: Path, step: int) -> Path:
    return Path(root) / f"step_{step:06d}"


def list_checkpoints(root: Path) -> list[tuple[int, Path]]:
    """(step, folder) of complete checkpoints, oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = []
    for path in root.iterdir():
        match = _STEP_DIR.match(path.name)
        if match and path.is_dir() and (path / "state.json").exists():
            found.append((int(match.group(1)), path))
    return sorted(found)


# --- random number generator states ---------------------------------------------------------------


def capture_rng(generator: torch.Generator) -> tuple[dict[str, torch.Tensor], list, dict]:
    tensors = {"torch_cpu": torch.get_rng_state(), "generator": generator.get_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for index, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"torch_cuda_{index}"] = state
    version, internal, gauss = random.getstate()
    python_state = [version, list(internal), gauss]
    name, keys, pos, has_gauss, cached = np.random.get_state()
    numpy_state = {"name": name, "keys": keys.tolist(), "pos": int(pos), "has_gauss": int(has_gauss), "cached": float(cached)}
    return tensors, python_state, numpy_state


def restore_rng(tensors: dict[str, torch.Tensor], python_state: list, numpy_state: dict, generator: torch.Generator) -> None:
    torch.set_rng_state(tensors["torch_cpu"])
    generator.set_state(tensors["generator"])
    cuda_states = [tensors[k] for k in sorted(k for k in tensors if k.startswith("torch_cuda_"))]
    if cuda_states and torch.cuda.is_available() and len(cuda_states) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda_states)
    if python_state:
        random.setstate((python_state[0], tuple(python_state[1]), python_state[2]))
    if numpy_state:
        np.random.set_state(
            (
                numpy_state["name"],
                np.asarray(numpy_state["keys"], dtype=np.uint32),
                numpy_state["pos"],
                numpy_state["has_gauss"],
                numpy_state["cached"],
            )
        )


# --- save / load ----------------------------------------------------------------------------------


def save_checkpoint(
    root: Path,
    state: TrainingState,
    write_lora: Callable[[Path], None],
    optimizer_state: dict,
    generator: torch.Generator,
) -> Path:
    """Write a checkpoint for `state.step` atomically; returns its folder."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    final = checkpoint_dir(root, state.step)
    tmp = root / f".tmp_{final.name}_{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        write_lora(tmp)
        torch.save(optimizer_state, tmp / "optimizer.pt")
        tensors, state.python_random, state.numpy_random = capture_rng(generator)
        save_file(tensors, str(tmp / "rng.safetensors"))
        (tmp / "state.json").write_text(json.dumps(to_json(state), indent=1), encoding="utf-8")
        if final.exists():  # the same step saved again (e.g. best after a periodic save)
            old = root / f".old_{final.name}_{os.getpid()}"
            os.replace(final, old)
            shutil.rmtree(old, ignore_errors=True)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


@dataclass
class LoadedCheckpoint:
    path: Path
    state: TrainingState
    lora: dict[str, torch.Tensor]  # diffusers keys ("transformer.…lora_A.weight")
    optimizer_state: dict
    rng: dict[str, torch.Tensor]


def read_state(path: Path) -> TrainingState | None:
    """A checkpoint's state, or None when it cannot be read (cut by a crash, or from another version)."""
    try:
        data = json.loads((Path(path) / "state.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return from_json_or_none(TrainingState, data)


def latest_checkpoint(root: Path, fingerprint: str, max_step: int | None = None) -> Path | None:
    """The newest complete checkpoint (at most `max_step`) whose run fingerprint matches, or None."""
    for step, path in reversed(list_checkpoints(root)):
        if max_step is not None and step > max_step:
            continue
        state = read_state(path)
        if state is not None and state.fingerprint == fingerprint:
            return path
    return None


def load_checkpoint(path: Path) -> LoadedCheckpoint:
    path = Path(path)
    state = read_state(path)
    if state is None:
        raise ValueError(f"Unreadable checkpoint state in {path}.")
    return LoadedCheckpoint(
        path=path,
        state=state,
        lora=load_file(str(path / LORA_FILE)),
        optimizer_state=torch.load(path / "optimizer.pt", map_location="cpu", weights_only=True),
        rng=load_file(str(path / "rng.safetensors")),
    )


def prune_checkpoints(root: Path, keep_last: int = 2, keep_steps: set[int] | frozenset[int] = frozenset()) -> None:
    """Delete all but the newest `keep_last` checkpoints and those at `keep_steps` (the best)."""
    checkpoints = list_checkpoints(root)
    newest = {step for step, _ in checkpoints[-keep_last:]} if keep_last > 0 else set()
    for step, path in checkpoints:
        if step not in newest and step not in keep_steps:
            shutil.rmtree(path, ignore_errors=True)
    for leftover in Path(root).glob(".tmp_step_*"):
        shutil.rmtree(leftover, ignore_errors=True)
