"""One Flux pipeline in memory, shared by text-to-image, Kontext and training.

FLUX.1 is 24 GB of transformer and 9.5 GB of T5 in bf16: a second copy does not fit. So the manager
loads one base (FLUX.1-dev: tokenizers, text encoders, VAE, transformer) and, for the character sheet,
only FLUX.1-Kontext-dev's transformer, swapped under the same encoders (kontext.py). LoRAs are named
peft adapters on FLUX.1-dev's transformer, weighted per call (loras.py); they stay on it while Kontext
runs. A strength sweep therefore never reloads anything.

The state is four small objects, each with one job:

    loader        BaseLoader: reads a base or a lone transformer as the memory mode says (base_loader.py)
    _base         Loaded: the pipeline in memory, which id, the speed settings it got, its Kontext view
    transformers  TransformerSlots: FLUX.1-dev's and Kontext's transformers, which one runs (kontext.py)
    _loras        LoraAdapters: named adapters and the hot-swap slot on FLUX.1-dev's transformer (loras.py)

Speed settings (engines/speed/) are applied when the base loads, in the order `_load` reads. With
compile on, LoRAs go through one hot-swap slot that exists from the start, so neither switching LoRAs
nor changing a strength recompiles.
"""
from __future__ import annotations

import gc
import threading
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Iterator

import torch
from diffusers import FluxKontextPipeline, FluxPipeline

from ...config import SpeedRequest
from ..base import LoraWeight
from ..speed import (SpeedSettings, accelerate, changes_model, check_supported, fp8_before_placing, fuse_qkv, gpu_info,
                     pick_device, place, prepare_transformer, quantize_fp8, resolve_speed)
from . import kontext as kontext_swap
from .base_loader import BaseLoader
from .loras import LoraAdapters
from .model_kind import RANDOM_WEIGHTS, TINY_ID


@dataclass
class Loaded:
    """The base in memory: its pipeline, the id it came from, the speed settings this load applied
    (plain ones for a training run) and whether QKV ended up fused; the Kontext pipeline made over it."""

    pipe: FluxPipeline
    model_id: str
    speed: SpeedSettings
    fused: bool
    kontext: FluxKontextPipeline | None = None


class ModelManager:
    def __init__(
        self,
        model: str | None = None,
        kontext_model: str | None = None,
        device: str = "auto",
        offload: bool = False,
        memory_mode: str = "auto",
        hotswap: bool = False,
        speed: SpeedSettings | SpeedRequest | None = None,
        hotswap_rank: int | None = None,
        adapter_budget_bytes: int = 2 * 1024**3,
        loader: Callable[[str, torch.dtype], FluxPipeline] | None = None,
        transformer_loader: Callable[[str, torch.dtype], torch.nn.Module] | None = None,
    ) -> None:
        self.model_id = model or TINY_ID
        self.kontext_id = kontext_model or None  # FLUX.1-Kontext-dev; only its transformer is loaded
        # Random weights (tiny, wide, a loader building in memory): one transformer may serve both jobs.
        self.random_weights = self.model_id in RANDOM_WEIGHTS or loader is not None
        self.memory_mode = memory_mode
        self.device = pick_device(device)
        self.loader = BaseLoader(self.device, memory_mode, offload)
        self.dtype = self.loader.dtype
        self.speed = self._resolve_speed(speed)
        # Hot-swap: one LoRA slot whose weights are replaced in place, so a compiled transformer is
        # never recompiled when the user switches LoRAs (diffusers' enable_lora_hotswap).
        self.hotswap = hotswap or self.speed.hotswap
        self.hotswap_rank = hotswap_rank or self.speed.hotswap_rank
        self.load_count = 0  # how many times a base was loaded (benchmarks and tests read it)
        self._read_pipeline = loader or (lambda model_id, _dtype: self.loader.pipeline(model_id, self._load_speed()))
        self._read_transformer = transformer_loader or (lambda model_id, _dtype: self.loader.transformer(model_id))
        self._choice: kontext_swap.KontextChoice | None = None
        self._training = False  # loaded plain, without the speed settings, for a training run
        self._lock = threading.RLock()
        self._base: Loaded | None = None
        self._loras = LoraAdapters(adapter_budget_bytes, self.hotswap_rank)
        self.transformers = kontext_swap.TransformerSlots(self._transformer_for, self._prepare_transformer,
                                                          self.device)

    def _resolve_speed(self, speed: SpeedSettings | SpeedRequest | None) -> SpeedSettings:
        """Flags (a SpeedRequest) resolve against this GPU and skip in words; SpeedSettings given directly
        are refused in words when this machine cannot run them."""
        gpu = gpu_info(self.device)
        if isinstance(speed, SpeedSettings):
            check_supported(speed, gpu)
            return speed
        return resolve_speed(speed or SpeedRequest(), gpu, tiny=self.model_id == TINY_ID, memory_mode=self.memory_mode)

    # ---- what callers read ----------------------------------------------------------------------
    @property
    def lock(self) -> threading.RLock:
        return self._lock

    @property
    def memory_note(self) -> str:
        """Which memory mode the base was loaded in, and why."""
        return self.loader.memory_note

    @property
    def fused(self) -> bool:
        """QKV projections fused in the loaded base: LoRAs load in the fused form."""
        return self._base is not None and self._base.fused

    def loaded(self) -> bool:
        return self._base is not None

    def running(self) -> str | None:
        """"dev" or "kontext": the transformer the pipeline runs now (None before the first load)."""
        return self.transformers.active if self._base is not None else None

    def choice(self) -> kontext_swap.KontextChoice:
        """Which transformer a sheet and a text image run on (read from the models' model_index.json once)."""
        if self._choice is None:
            self._choice = kontext_swap.choose(self.model_id, self.kontext_id, self.random_weights)
        return self._choice

    # ---- the pipelines a job asks for -----------------------------------------------------------
    def text_to_image(self) -> FluxPipeline:
        """The pipeline running FLUX.1-dev's transformer (text-to-image and training)."""
        with self._lock:
            kontext_swap.refuse(self.choice().refusal_text)
            pipe = self._ensure().pipe
            self._swap(pipe, "dev")
            return pipe

    def kontext(self) -> FluxKontextPipeline:
        """A Kontext pipeline over the same encoders and VAE, running FLUX.1-Kontext-dev's transformer."""
        with self._lock:
            choice = self.choice()
            kontext_swap.refuse(choice.refusal_sheet)
            base = self._ensure()
            transformer = self._swap(base.pipe, "dev" if choice.shared else "kontext")
            if choice.shared:  # one transformer for both: the sheet runs it without LoRAs
                self._loras.off(base.pipe)
            if base.kontext is None or base.kontext.transformer is not transformer:
                # The same module objects, never cast: from_pipe's dtype handling would touch fp8 weights.
                base.kontext = FluxKontextPipeline(**base.pipe.components)
                base.kontext.set_progress_bar_config(disable=True)
            return base.kontext

    @contextmanager
    def for_training(self) -> Iterator[FluxPipeline]:
        """The text-to-image pipeline as training needs it: no inference LoRAs active and, when speed settings
        changed the model (fused, fp8, compiled, offloaded, hot slot), the base reloaded without them for the
        run (fp8 matmuls have no backward; compiled blocks would recompile) and again with them afterwards."""
        with self._lock:
            plain = self.hotswap or changes_model(self.speed)
            if plain:
                self.unload()
                self._training = True
            else:
                self.apply_loras(())
            try:
                yield self.text_to_image()
            finally:
                self._loras.running = None  # the lease put adapters back as it found them: set them again
                if plain:
                    self.unload()
                    self._training = False

    def give_up(self, gpu_ids: tuple[int, ...]) -> str:
        """Free the GPUs training worker processes are about to use: unload the base when it sits on one
        of them (the next image reloads it), keep it when it does not. Returns what happened, in words."""
        if self.device.type != "cuda" or not gpu_ids:
            return ""
        index = self.device.index if self.device.index is not None else torch.cuda.current_device()
        if index not in gpu_ids:
            return (f"The app keeps its model loaded on GPU {index}, which the workers do not use (images still "
                    "wait in the one job queue until the training ends).")
        with self._lock:
            loaded = self._base is not None
            self.unload()
        return (f"The app's model left GPU {index} for the workers" if loaded else
                f"The app's model stays off GPU {index} while the workers use it") + "; the next image reloads it."

    def unload(self) -> None:
        with self._lock:
            self._base = None
            self.transformers.clear()
            self._loras.reset()
            self._loras.converted.clear()  # converted for this load's (fused or not) layers
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()

    # ---- loading, in the order the speed settings need ------------------------------------------
    def _ensure(self) -> Loaded:
        if self._base is None or self._base.model_id != self.model_id:
            self._base = self._load(self.model_id)
        return self._base

    def _load(self, model_id: str) -> Loaded:
        """Read the base, fuse QKV, place it (fp8 before or after, as memory allows), make the hot slot,
        then cache and compile: each step sees the modules the previous one left."""
        self.unload()  # free the old base before the new one arrives
        speed = self._load_speed()
        pipe = self._read_pipeline(model_id, self.dtype)
        note = fuse_qkv(pipe, speed)
        if note:
            self.speed = replace(self.speed, reason=f"{self.speed.reason} {note}")
        fp8_first = fp8_before_placing(pipe, self.device, speed)
        if fp8_first:
            quantize_fp8(pipe, speed)
        place(pipe, self.device, speed, self.loader.offload)
        if not fp8_first:
            quantize_fp8(pipe, speed)
        pipe.set_progress_bar_config(disable=True)
        fused = speed.fuse_qkv and not note
        self._loras.reset(pipe, with_slot=self._hot_swapping(), fused=fused)
        accelerate(pipe, speed)
        self.transformers.adopt("dev", pipe.transformer)
        self.load_count += 1
        return Loaded(pipe, model_id, speed, fused)

    def _load_speed(self) -> SpeedSettings:
        """The settings this load applies: all of them, or for training only what loading decides (8-bit)."""
        if not self._training:
            return self.speed
        return SpeedSettings(quantize="8bit" if self.speed.quantize == "8bit" else None)

    def _hot_swapping(self) -> bool:
        return self.hotswap and not self._training

    def _swap(self, pipe: FluxPipeline, role: str) -> torch.nn.Module:
        before, reads = self.transformers.active, self.transformers.loads["dev"]
        transformer = self.transformers.swap(pipe, role)
        if self.transformers.loads["dev"] != reads:  # dev's was dropped for lack of RAM: its adapters went too
            self._loras.reset(pipe, with_slot=self._hot_swapping(), fused=self.fused)
        if before != role and self.loader.offload and self._base.speed.group_offload is None:
            pipe.enable_model_cpu_offload(device=self.device)  # lay the hooks over the new transformer
        return transformer

    def _transformer_for(self, role: str) -> torch.nn.Module:
        model_id = self.choice().kontext if role == "kontext" else self.model_id
        return self._read_transformer(model_id, self.dtype)

    def _prepare_transformer(self, transformer: torch.nn.Module) -> None:
        """The speed settings and placement the base's transformer got, for a swapped-in one."""
        prepare_transformer(self._base.pipe, transformer, self.device, self._base.speed, self.loader.offload)

    # ---- LoRA adapters --------------------------------------------------------------------------
    def adapter_names(self) -> list[str]:
        return list(self._loras.named)

    def apply_loras(self, loras: tuple[LoraWeight, ...] | list[LoraWeight]) -> None:
        """Make exactly these LoRAs active at these weights; load any that are missing."""
        with self._lock:
            pipe = self.text_to_image()
            self._loras.apply(pipe, [lora for lora in loras if lora.path is not None])

    def hot_lora(self) -> Path | None:
        return self._loras.hot_file()

    def drop_lora(self, name: str) -> None:
        with self._lock:
            if self._base is not None:
                self._loras.drop(self._base.pipe, name)
