"""One Flux pipeline in memory, shared by text-to-image, the character sheet and training.

A 4-12 B transformer and its text encoder are many GB: a second copy does not fit. So the manager
loads one base, the configured model of one family at a time (tokenizers, text encoders, VAE,
transformer), and a second transformer only where a job needs other weights, swapped under the same
encoders (transformer_slots.py). Which role each job runs is model_choice.py's:

    FLUX.1          FLUX.1-dev for pictures and training, FLUX.1-Kontext-dev's transformer for the sheet
    FLUX.2 [klein]  the distilled checkpoint for pictures and the sheet (the reference in `image=`, the
                    same pipeline), the base checkpoint for training

LoRAs are named peft adapters on the transformer they run on, weighted per call (loras.py); they stay
on it while another transformer runs. A strength sweep therefore never reloads anything.

The state is four small objects, each with one job:

    loader        BaseLoader: reads a base or a lone transformer as the memory mode says (base_loader.py)
    _base         Loaded: the pipeline in memory, which id, the speed settings it got, its Kontext view
    transformers  TransformerSlots: the transformers by role, which one runs (transformer_slots.py)
    _adapters     LoraAdapters per role: named adapters and the hot-swap slot (loras.py)

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

from ...config import SpeedRequest
from ..base import EngineError, LoraWeight
from ..family import KLEIN, Defaults
from ..speed import (SpeedSettings, accelerate, changes_model, check_supported, fp8_before_placing, fuse_qkv,
                     gpu_info, pick_device, place, prepare_transformer, quantize_fp8, resolve_speed)
from . import model_choice
from . import transformer_slots as slots
from .base_loader import BaseLoader
from .loras import LoraAdapters
from .model_kind import RANDOM_WEIGHTS, TINY_ID, TINY_IDS, architecture_of, model_family

CHECKPOINTS = ("distilled", "base")  # the Klein roles a job may ask for by name (the strength tester's)


@dataclass
class Loaded:
    """The base in memory: its pipeline, the id it came from, the speed settings this load applied
    (plain ones for a training run) and whether QKV ended up fused; the Kontext pipeline made over it."""

    pipe: object  # FluxPipeline | Flux2KleinPipeline
    model_id: str
    speed: SpeedSettings
    fused: bool
    kontext: object | None = None  # FluxKontextPipeline over the same modules (FLUX.1's sheet)


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
        loader: Callable[[str, torch.dtype], object] | None = None,
        transformer_loader: Callable[[str, torch.dtype], torch.nn.Module] | None = None,
    ) -> None:
        self.model_id = model or TINY_ID
        # The second model: FLUX.1-Kontext-dev (only its transformer is loaded), or Klein's other flavour.
        self.kontext_id = kontext_model or None
        # Random weights (tiny, wide, a loader building in memory): one transformer may serve both FLUX.1 jobs.
        self.random_weights = self.model_id in RANDOM_WEIGHTS or loader is not None
        self.family = model_family(self.model_id)
        self.memory_mode = memory_mode
        self.device = pick_device(device)
        self.loader = BaseLoader(self.device, memory_mode, offload)
        self.loader.architecture = architecture_of(self.model_id)
        self.dtype = self.loader.dtype
        self.speed = self._resolve_speed(speed)
        # Hot-swap: one LoRA slot whose weights are replaced in place, so a compiled transformer is
        # never recompiled when the user switches LoRAs (diffusers' enable_lora_hotswap).
        self.hotswap = hotswap or self.speed.hotswap
        self.hotswap_rank = hotswap_rank or self.speed.hotswap_rank
        self.adapter_budget_bytes = adapter_budget_bytes
        self.load_count = 0  # how many times a base was loaded (benchmarks and tests read it)
        self._read_pipeline = loader or (lambda model_id, _dtype: self.loader.pipeline(model_id, self._load_speed()))
        self._read_transformer = transformer_loader or (
            lambda model_id, _dtype: self.loader.transformer(model_id, what=self._transformer_what()))
        self._choice: model_choice.ModelChoice | None = None
        self._training = False  # loaded plain, without the speed settings, for a training run
        self._lock = threading.RLock()
        self._base: Loaded | None = None
        self._adapters: dict[str, LoraAdapters] = {}
        self.transformers = slots.TransformerSlots(self._transformer_for, self._prepare_transformer, self.device)

    def _resolve_speed(self, speed: SpeedSettings | SpeedRequest | None) -> SpeedSettings:
        """Flags (a SpeedRequest) resolve against this GPU and skip in words; SpeedSettings given directly
        are refused in words when this machine cannot run them."""
        gpu = gpu_info(self.device)
        if isinstance(speed, SpeedSettings):
            check_supported(speed, gpu)
            return speed
        return resolve_speed(speed or SpeedRequest(), gpu, tiny=self.model_id in TINY_IDS,
                             memory_mode=self.memory_mode, family=self.family, architecture=self.loader.architecture)

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

    @property
    def _loras(self) -> LoraAdapters:
        """The adapters of the transformer running now (the pictures one before any load)."""
        return self._adapters_of(self.transformers.active or self.choice().pictures)

    def _adapters_of(self, role: str) -> LoraAdapters:
        if role not in self._adapters:
            self._adapters[role] = LoraAdapters(self.adapter_budget_bytes, self.hotswap_rank)
        return self._adapters[role]

    def loaded(self) -> bool:
        return self._base is not None

    def running(self) -> str | None:
        """The role of the transformer the pipeline runs now ("dev", "kontext", "distilled", "base"; None
        before the first load)."""
        return self.transformers.active if self._base is not None else None

    def choice(self) -> model_choice.ModelChoice:
        """Which transformer each job runs (read from the models' model_index.json). Read again while
        nothing is loaded, so a sibling downloaded since is found by the next load."""
        if self._choice is None or self._base is None:
            self._choice = model_choice.choose(self.model_id, self.kontext_id, self.random_weights)
        return self._choice

    def checkpoints(self) -> tuple[str, ...]:
        """The Klein checkpoints a job can be asked to run here (the strength tester's), pictures first."""
        choice = self.choice()
        if choice.family is not KLEIN:
            return ()
        return tuple(sorted(choice.roles, key=lambda role: role != choice.pictures))

    def defaults(self, checkpoint: str | None = None) -> Defaults:
        """Steps and guidance for the checkpoint a picture runs on (the family's, by its flavour)."""
        role = self._role_for(checkpoint)
        return self.family.defaults(role == "distilled")

    # ---- the pipelines a job asks for -----------------------------------------------------------
    def text_to_image(self, checkpoint: str | None = None):
        """The pipeline running the pictures transformer (FLUX.1-dev, Klein distilled), or the named Klein
        checkpoint ("base" for the strength tester's second sweep)."""
        with self._lock:
            slots.refuse(self.choice().refusal_text)
            role = self._role_for(checkpoint)
            pipe = self._ensure().pipe
            self._swap(pipe, role)
            return pipe

    def sheet(self):
        """The pipeline the character sheet runs, without LoRAs: Klein's own (a reference edit), or a
        FluxKontextPipeline over the same encoders and VAE running FLUX.1-Kontext-dev's transformer."""
        with self._lock:
            choice = self.choice()
            slots.refuse(choice.refusal_sheet)
            base = self._ensure()
            transformer = self._swap(base.pipe, choice.sheet)
            if self.family.sheet == "reference-edit" or choice.shared:  # a transformer that carries LoRAs
                self._loras.off(base.pipe)
            if self.family.sheet == "reference-edit":
                return base.pipe
            if base.kontext is None or base.kontext.transformer is not transformer:
                from diffusers import FluxKontextPipeline

                # The same module objects, never cast: from_pipe's dtype handling would touch fp8 weights.
                base.kontext = FluxKontextPipeline(**base.pipe.components)
                base.kontext.set_progress_bar_config(disable=True)
            return base.kontext

    def kontext(self):
        """FLUX.1's name for the sheet's pipeline."""
        return self.sheet()

    @contextmanager
    def for_training(self) -> Iterator[object]:
        """The training transformer's pipeline (FLUX.1-dev, Klein base) as training needs it: no inference
        LoRAs active and, when speed settings changed the model (fused, fp8, compiled, offloaded, hot slot),
        the base reloaded without them for the run (fp8 matmuls have no backward; compiled blocks would
        recompile) and again with them afterwards."""
        with self._lock:
            plain = self.hotswap or changes_model(self.speed)
            if plain:
                self.unload()
                self._training = True
            self._choice = None  # a base downloaded since the last load trains this run
            try:
                choice = self.choice()
                slots.refuse(choice.refusal_text)
                pipe = self._ensure().pipe
                self._swap(pipe, choice.training)
                self._loras.off(pipe)
                yield pipe
            finally:
                for adapters in self._adapters.values():
                    adapters.running = None  # the lease put adapters back as it found them: set them again
                if plain:
                    self.unload()
                    self._training = False

    def training_note(self) -> str:
        """What the training runs on, when it is not the obvious one (Klein without its base), else ''."""
        choice = self.choice()
        return choice.note if choice.family is KLEIN and choice.training != "base" else ""

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
            for adapters in self._adapters.values():
                adapters.reset()
                adapters.converted.clear()  # converted for this load's (fused or not) layers
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
        choice = self.choice()
        speed = self._load_speed()
        pipe = self._read_pipeline(model_id, self.dtype)
        _stamp(pipe.transformer, model_id)
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
        self._adapters_of(choice.loaded).reset(pipe, with_slot=self._hot_swapping(), fused=fused)
        accelerate(pipe, speed)
        self.transformers.adopt(choice.loaded, pipe.transformer)
        self.load_count += 1
        return Loaded(pipe, model_id, speed, fused)

    def _load_speed(self) -> SpeedSettings:
        """The settings this load applies: all of them, or for training only what loading decides (8-bit)."""
        if not self._training:
            return self.speed
        return SpeedSettings(quantize="8bit" if self.speed.quantize == "8bit" else None)

    def _hot_swapping(self) -> bool:
        return self.hotswap and not self._training

    def _role_for(self, checkpoint: str | None) -> str:
        choice = self.choice()
        if not checkpoint:
            return choice.pictures
        if checkpoint not in CHECKPOINTS or self.family is not KLEIN:
            raise EngineError(f"Checkpoint {checkpoint!r} is not one this model has; {self.family.title} runs "
                              + (", ".join(self.checkpoints()) or "one checkpoint") + ".")
        if checkpoint not in choice.roles:
            raise EngineError(f"No FLUX.2 [klein] {checkpoint} checkpoint is on this machine beside {self.model_id}. "
                              f"{choice.note}".strip())
        return checkpoint

    def _swap(self, pipe, role: str) -> torch.nn.Module:
        before, reads = self.transformers.active, self.transformers.loads[role]
        transformer = self.transformers.swap(pipe, role)
        if self.transformers.loads[role] != reads:  # read (again): no adapters on it yet
            self._adapters_of(role).reset(pipe, with_slot=self._hot_swapping() and role == self.choice().loaded,
                                          fused=self.fused)
        if before != role and self.loader.offload and self._base.speed.group_offload is None:
            pipe.enable_model_cpu_offload(device=self.device)  # lay the hooks over the new transformer
        if self.family is KLEIN and getattr(pipe, "config", None) is not None:
            # The pipeline runs CFG only for an undistilled transformer: it must follow the one running now.
            pipe.register_to_config(is_distilled=role == "distilled")
        return transformer

    def _transformer_for(self, role: str) -> torch.nn.Module:
        model_id = self.choice().source(role) or self.model_id
        transformer = self._read_transformer(model_id, self.dtype)
        _stamp(transformer, model_id)
        return transformer

    def _transformer_what(self) -> str:
        return "FLUX.1 Kontext's transformer" if self.family is not KLEIN else "The other FLUX.2 [klein] checkpoint"

    def _prepare_transformer(self, transformer: torch.nn.Module) -> None:
        """The speed settings and placement the base's transformer got, for a swapped-in one."""
        prepare_transformer(self._base.pipe, transformer, self.device, self._base.speed, self.loader.offload)

    # ---- LoRA adapters --------------------------------------------------------------------------
    def adapter_names(self, checkpoint: str | None = None) -> list[str]:
        return list(self._adapters_of(self._role_for(checkpoint)).named)

    def apply_loras(self, loras: tuple[LoraWeight, ...] | list[LoraWeight], checkpoint: str | None = None) -> None:
        """Make exactly these LoRAs active at these weights on the checkpoint a picture runs; load any that
        are missing."""
        with self._lock:
            pipe = self.text_to_image(checkpoint)
            self._loras.apply(pipe, [lora for lora in loras if lora.path is not None])

    def hot_lora(self) -> Path | None:
        return self._adapters_of(self.choice().pictures).hot_file()

    def drop_lora(self, name: str) -> None:
        with self._lock:
            if self._base is None:
                return
            for role, adapters in self._adapters.items():
                module = self.transformers.modules.get(role)
                if module is not None:
                    adapters.drop(self._base.pipe if role == self.transformers.active else _Holder(module), name)


class _Holder:
    """What LoraAdapters asks of a pipeline, for a transformer parked off the pipeline."""

    def __init__(self, transformer: torch.nn.Module) -> None:
        self.transformer = transformer

    def delete_adapters(self, name: str) -> None:
        self.transformer.delete_adapters(name)


def _stamp(transformer: torch.nn.Module, model_id: str) -> None:
    """Name the model a transformer came from in its config, as from_pretrained does: a LoRA trained on
    it records that base (a pipeline's own name is the other flavour's when Klein's were swapped)."""
    register = getattr(transformer, "register_to_config", None)
    if callable(register):
        register(_name_or_path=model_id)
