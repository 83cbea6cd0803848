"""One Flux pipeline in memory, shared by text-to-image, Kontext and training.

FLUX.1 is 24 GB of transformer and 9.5 GB of T5 in bf16: a second copy does not fit. So the manager
loads one base (FLUX.1-dev: tokenizers, text encoders, VAE, transformer) and, for the character sheet,
only FLUX.1-Kontext-dev's transformer, swapped under the same encoders (engines/local/kontext.py). LoRAs are
named peft adapters on FLUX.1-dev's transformer, weighted per call with `set_adapters`; they stay on it
while Kontext runs. A strength sweep therefore never reloads anything. Adapters are evicted
least-recently-used when their total size passes a budget.

Speed settings (engines/speed/) are applied when the base loads (speed/pipeline.py). With compile on,
LoRAs go through one hot-swap slot that exists from the start (speed_lora.py), so neither switching
LoRAs nor changing a strength recompiles; several LoRAs at once fall back to named adapters.
"""
from __future__ import annotations

import gc
import threading
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Iterator

import torch
from diffusers import FluxKontextPipeline, FluxPipeline

from diffusers.utils import logging as diffusers_logging
from transformers.utils import logging as transformers_logging

from ...config import SpeedRequest
from . import kontext as kontext_swap
from ..base import EngineError, LoraWeight
from ..lora import inspect_lora
from .model_kind import RANDOM_WEIGHTS, TINY_ID, WIDE_ID
from ..speed import (SpeedSettings, accelerate, changes_model, check_supported, fp8_before_placing, fuse_qkv, gpu_info,
                     pick_device, place, prepare_transformer, quantize_fp8, resolve_speed)
from ..lora import HOT_SLOT, add_hot_slot, canonical_lora, canonical_rank, set_hot_weight

CANONICAL_CACHE = 4  # LoRAs kept converted for the hot-swap slot (~100-250 MB each for FLUX.1 at rank 16)

# Prompt-truncation notices and dtype hints flood the job logs; real errors still raise.
diffusers_logging.set_verbosity_error()
transformers_logging.set_verbosity_error()


@dataclass(frozen=True)
class LoadedAdapter:
    name: str
    path: Path
    nbytes: int
    mtime: float

    @classmethod
    def on_disk(cls, name: str, lora: LoraWeight) -> "LoadedAdapter":
        path = Path(lora.path)
        if not path.is_file():
            raise EngineError(f"The LoRA file for {lora.name!r} is missing: {path.name}.")
        stat = path.stat()
        return cls(name, path, stat.st_size, stat.st_mtime)

    def same_file(self, other: "LoadedAdapter | None") -> bool:
        """Already loaded from this very file, unchanged since (a retrained LoRA reloads)."""
        return other is not None and other.path == self.path and other.mtime == self.mtime


def pick_dtype(device: torch.device) -> torch.dtype:
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "mps":
        return torch.bfloat16
    return torch.float32


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
        self._choice: kontext_swap.KontextChoice | None = None
        self._quant: str | None = None  # the base's load-time quantization, reused for Kontext's transformer
        self.device = pick_device(device)
        self.dtype = pick_dtype(self.device)
        self.memory_mode = memory_mode
        # "lowvram" (8 GB GPUs) also offloads whole models between uses at inference; training then
        # swaps the transformer's blocks itself (training/block_offload.py).
        self.offload = (offload or memory_mode in ("offload", "lowvram")) and self.device.type == "cuda"
        self.memory_note = ""  # which memory mode the base was loaded in, and why
        self.speed = self._resolve_speed(speed)
        # Hot-swap: one LoRA slot whose weights are replaced in place, so a compiled transformer is
        # never recompiled when the user switches LoRAs (diffusers' enable_lora_hotswap).
        self.hotswap = hotswap or self.speed.hotswap
        self.hotswap_rank = hotswap_rank or self.speed.hotswap_rank
        self._hot: LoadedAdapter | None = None
        self._slot_active = False  # the hot slot (not named adapters) is what the transformer runs
        self._slot_layers: list = []
        self._slot_weight: float | None = None
        self._canonical: "OrderedDict[tuple, dict]" = OrderedDict()  # recent LoRAs, ready to swap in (CPU)
        self._active: tuple | None = None  # (names, weights) last set on named adapters, or "off"
        self._training = False  # loaded plain, without the speed settings, for a training run
        self.fused = False  # QKV projections fused in the loaded base: LoRAs load in the fused form
        self.adapter_budget_bytes = adapter_budget_bytes
        self._loader = loader or self._load_pipeline
        self._transformer_loader = transformer_loader or self._load_transformer
        self._lock = threading.RLock()
        self._pipe: FluxPipeline | None = None
        self._loaded_id: str | None = None
        self._kontext: FluxKontextPipeline | None = None
        self._adapters: "OrderedDict[str, LoadedAdapter]" = OrderedDict()
        self.load_count = 0  # how many times a base was loaded (benchmarks and tests read it)
        self.transformers = kontext_swap.TransformerSlots(self._read_transformer, self._prepare_transformer,
                                                          self.device)

    def _resolve_speed(self, speed: SpeedSettings | SpeedRequest | None) -> SpeedSettings:
        """Flags (a SpeedRequest) resolve against this GPU and skip in words; SpeedSettings given directly
        are refused in words when this machine cannot run them."""
        gpu = gpu_info(self.device)
        if isinstance(speed, SpeedSettings):
            check_supported(speed, gpu)
            return speed
        return resolve_speed(speed or SpeedRequest(), gpu, tiny=self.model_id == TINY_ID, memory_mode=self.memory_mode)

    # ---- base pipelines ---------------------------------------------------------------------
    @property
    def lock(self) -> threading.RLock:
        return self._lock

    def choice(self) -> kontext_swap.KontextChoice:
        """Which transformer a sheet and a text image run on (read from the models' model_index.json once)."""
        if self._choice is None:
            self._choice = kontext_swap.choose(self.model_id, self.kontext_id, self.random_weights)
        return self._choice

    def text_to_image(self) -> FluxPipeline:
        """The pipeline running FLUX.1-dev's transformer (text-to-image and training)."""
        with self._lock:
            kontext_swap.refuse(self.choice().refusal_text)
            pipe = self._ensure(self.model_id)
            self._swap(pipe, "dev")
            return pipe

    def _swap(self, pipe: FluxPipeline, role: str) -> torch.nn.Module:
        before, reads = self.transformers.active, self.transformers.loads["dev"]
        transformer = self.transformers.swap(pipe, role)
        if self.transformers.loads["dev"] != reads:  # dev's was dropped for lack of RAM: its adapters went too
            self._forget_adapters()
            if self.hotswap and not self._training:
                self._slot_layers = add_hot_slot(pipe, self.hotswap_rank, fused=self.fused)
                self._slot_active, self._slot_weight = True, 0.0
        if before != role and self.offload and self._load_speed().group_offload is None:
            pipe.enable_model_cpu_offload(device=self.device)  # lay the hooks over the new transformer
        return transformer

    def kontext(self) -> FluxKontextPipeline:
        """A Kontext pipeline over the same encoders and VAE, running FLUX.1-Kontext-dev's transformer."""
        with self._lock:
            choice = self.choice()
            kontext_swap.refuse(choice.refusal_sheet)
            base = self._ensure(self.model_id)
            transformer = self._swap(base, "dev" if choice.shared else "kontext")
            if choice.shared:  # one transformer for both: the sheet runs it without LoRAs
                self._loras_off(base)
            if self._kontext is None or self._kontext.transformer is not transformer:
                # The same module objects, never cast: from_pipe's dtype handling would touch fp8 weights.
                self._kontext = FluxKontextPipeline(**base.components)
                self._kontext.set_progress_bar_config(disable=True)
            return self._kontext

    def running(self) -> str | None:
        """"dev" or "kontext": the transformer the pipeline runs now (None before the first load)."""
        return self.transformers.active if self._pipe is not None else None

    def loaded(self) -> bool:
        return self._pipe is not None

    def _read_transformer(self, role: str) -> torch.nn.Module:
        model_id = self.choice().kontext if role == "kontext" else self.model_id
        return self._transformer_loader(model_id, self.dtype)

    def _load_transformer(self, model_id: str, dtype: torch.dtype) -> torch.nn.Module:
        config = None
        if self._quant:
            from ..memory import plan_for, quantization_config

            config = quantization_config(plan_for(self._quant, None, 1024))
        return kontext_swap.load_transformer(model_id, dtype, config)

    def _prepare_transformer(self, transformer: torch.nn.Module) -> None:
        """The speed settings and placement the base's transformer got, for a swapped-in one."""
        prepare_transformer(self._pipe, transformer, self.device, self._load_speed(), self.offload)

    def _ensure(self, model_id: str) -> FluxPipeline:
        if self._pipe is not None and self._loaded_id == model_id:
            return self._pipe
        self.unload()  # free the old base before the new one arrives
        speed = self._load_speed()
        pipe = self._loader(model_id, self.dtype)
        note = fuse_qkv(pipe, speed)
        if note:
            self.speed = replace(self.speed, reason=f"{self.speed.reason} {note}")
        fp8_first = fp8_before_placing(pipe, self.device, speed)
        if fp8_first:
            quantize_fp8(pipe, speed)
        place(pipe, self.device, speed, self.offload)
        if not fp8_first:
            quantize_fp8(pipe, speed)
        pipe.set_progress_bar_config(disable=True)
        self.fused = speed.fuse_qkv and not note
        if self.hotswap and not self._training:
            self._slot_layers = add_hot_slot(pipe, self.hotswap_rank, fused=self.fused)
            self._slot_active, self._slot_weight = True, 0.0
        accelerate(pipe, speed)
        self._pipe, self._loaded_id = pipe, model_id
        self.transformers.adopt("dev", pipe.transformer)
        self.load_count += 1
        return pipe

    def _load_speed(self) -> SpeedSettings:
        """The settings this load applies: all of them, or for training only what loading decides (8-bit)."""
        if not self._training:
            return self.speed
        return SpeedSettings(quantize="8bit" if self.speed.quantize == "8bit" else None)

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
                self._active = None  # the lease put adapters back as it found them: set them again next time
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
            loaded = self._pipe is not None
            self.unload()
        return (f"The app's model left GPU {index} for the workers" if loaded else
                f"The app's model stays off GPU {index} while the workers use it") + "; the next image reloads it."

    def _base_quantization(self) -> str | None:
        """8bit / nf4 / fp8 / lowvram (nf4) for the frozen base, as set or by free GPU memory (memory.py)."""
        from ..memory import base_quantization

        choice, offload, self.memory_note = base_quantization(self.device, self.memory_mode)
        self.offload = self.offload or offload
        return choice

    def _load_pipeline(self, model_id: str, dtype: torch.dtype) -> FluxPipeline:
        if model_id == TINY_ID:
            from ..builtin import build_tiny_flux

            self.memory_note = "Tiny model: full precision on the CPU."
            return build_tiny_flux()
        if model_id == WIDE_ID:
            from ..builtin import build_wide_flux

            self.memory_note = "Wide test model (real widths, one block of each kind): full precision."
            return build_wide_flux()
        try:
            speed = self._load_speed()
            if speed.quantize and self.memory_mode == "auto":  # the speed setting decides the base
                quant = "8bit" if speed.quantize == "8bit" else None
                self.memory_note = f"Base weights in {speed.quantize} (speed setting)."
            else:
                quant = self._base_quantization()
            self._quant = quant
            if quant:
                from diffusers import FluxTransformer2DModel

                from ..memory import plan_for, quantization_config

                config = quantization_config(plan_for(quant, None, 1024))  # the plan's quantization only
                transformer = FluxTransformer2DModel.from_pretrained(
                    model_id, subfolder="transformer", quantization_config=config, dtype=dtype)
                return FluxPipeline.from_pretrained(model_id, transformer=transformer, dtype=dtype)
            return FluxPipeline.from_pretrained(model_id, dtype=dtype)
        except (OSError, ValueError) as exc:
            from ..hub import load_failure_text  # a token, the licence or a download: the fix in words

            raise EngineError(load_failure_text(model_id, exc)) from None

    def unload(self) -> None:
        with self._lock:
            self._pipe, self._kontext, self._loaded_id = None, None, None
            self.transformers.clear()
            self._forget_adapters()
            self._canonical.clear()
            self.fused = False
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()

    # ---- LoRA adapters ----------------------------------------------------------------------
    def _forget_adapters(self) -> None:
        """The transformer holding them is gone (unloaded, or dropped and read again)."""
        self._adapters.clear()
        self._hot, self._active = None, None
        self._slot_active, self._slot_layers, self._slot_weight = False, [], None

    def adapter_names(self) -> list[str]:
        return list(self._adapters)

    def apply_loras(self, loras: tuple[LoraWeight, ...] | list[LoraWeight]) -> None:
        """Make exactly these LoRAs active at these weights; load any that are missing."""
        with self._lock:
            pipe = self.text_to_image()
            active = [lora for lora in loras if lora.path is not None]
            if not active:
                self._loras_off(pipe)
                return
            if self.hotswap and not self._training and len(active) == 1 and self._swap_in(pipe, active[0]):
                self._use_slot(pipe, float(active[0].weight))
                return
            names = [self._ensure_adapter(pipe, lora) for lora in active]
            wanted = (tuple(names), tuple(float(lora.weight) for lora in active))
            if wanted != self._active:  # walking every layer costs ~10 ms per call on FLUX.1: only on change
                pipe.enable_lora()
                pipe.set_adapters(names, adapter_weights=list(wanted[1]))
                self._active, self._slot_active = wanted, False

    def _loras_off(self, pipe: FluxPipeline) -> None:
        """The base exactly: the hot slot at 0, or named adapters disabled."""
        if self.hotswap and not self._training and self._slot_layers:
            self._use_slot(pipe, 0.0)
        elif self._adapters and self._active != "off":
            pipe.disable_lora()
            self._active = "off"

    def _use_slot(self, pipe: FluxPipeline, weight: float) -> None:
        """Run the hot slot at `weight` (0 = the base exactly), set in place so nothing recompiles."""
        if not self._slot_active:
            pipe.enable_lora()
            pipe.set_adapters([HOT_SLOT], adapter_weights=[1.0])
            self._slot_active, self._active, self._slot_weight = True, None, None
        if weight != self._slot_weight:
            set_hot_weight(self._slot_layers, weight)
            self._slot_weight = weight

    def _ensure_adapter(self, pipe: FluxPipeline, lora: LoraWeight) -> str:
        adapter = _adapter_name(lora.name)
        wanted = LoadedAdapter.on_disk(adapter, lora)
        loaded = self._adapters.get(adapter)
        if wanted.same_file(loaded):
            self._adapters.move_to_end(adapter)
            return adapter
        if loaded:
            self._delete_adapter(pipe, adapter)
        inspect_lora(wanted.path, pipe.transformer)  # refuses SDXL/SD1.5 and shape mismatches in words
        self._evict_for(pipe, wanted.nbytes)
        # From the file, not the converted dict: the file's metadata carries lora_alpha. A fused transformer
        # takes the canonical form, which has that scale baked in.
        source = canonical_lora(pipe, wanted.path, fused=True) if self.fused else str(wanted.path)
        try:
            pipe.load_lora_weights(source, adapter_name=adapter)
        except (ValueError, RuntimeError, KeyError) as exc:
            raise EngineError(f"The LoRA {lora.name!r} does not fit this Flux model: {exc}") from None
        self._adapters[adapter] = wanted
        self._active = None
        return adapter

    def _swap_in(self, pipe: FluxPipeline, lora: LoraWeight) -> bool:
        """Copy this LoRA's weights into the hot slot; False when it must load as a named adapter instead
        (rank above the slot's, text-encoder or DoRA weights)."""
        wanted = LoadedAdapter.on_disk(HOT_SLOT, lora)
        if wanted.same_file(self._hot):
            return True
        key = (wanted.path, wanted.mtime)
        state = self._canonical.pop(key, None)
        if state is None:  # first use of this file: check it, convert it
            inspect_lora(wanted.path, pipe.transformer)
            try:
                state = canonical_lora(pipe, wanted.path, fused=self.fused)
            except EngineError:
                if self.fused:
                    raise
                return False
        if canonical_rank(state) > self.hotswap_rank:
            return False
        self._canonical[key] = state  # switching back to a recent LoRA is then a copy only
        while len(self._canonical) > CANONICAL_CACHE:
            self._canonical.popitem(last=False)
        try:
            pipe.load_lora_weights(state, adapter_name=HOT_SLOT, hotswap=True)
        except (ValueError, RuntimeError, KeyError) as exc:
            raise EngineError(f"The LoRA {lora.name!r} cannot be hot-swapped in: {exc}") from None
        self._hot, self._slot_weight = wanted, None  # the swap reset the slot's scalings to 1
        return True

    def hot_lora(self) -> Path | None:
        return self._hot.path if self._hot else None

    def _evict_for(self, pipe: FluxPipeline, incoming: int) -> None:
        used = sum(a.nbytes for a in self._adapters.values())
        while self._adapters and used + incoming > self.adapter_budget_bytes:
            oldest = next(iter(self._adapters))
            used -= self._adapters[oldest].nbytes
            self._delete_adapter(pipe, oldest)

    def _delete_adapter(self, pipe: FluxPipeline, adapter: str) -> None:
        pipe.delete_adapters(adapter)
        self._adapters.pop(adapter, None)
        self._active = None

    def drop_lora(self, name: str) -> None:
        with self._lock:
            adapter = _adapter_name(name)
            if self._pipe is not None and adapter in self._adapters:
                self._delete_adapter(self._pipe, adapter)


def _adapter_name(name: str) -> str:
    # peft adapter names become module attribute keys: keep them to [a-z0-9_].
    cleaned = "".join(ch if ch.isalnum() else "_" for ch in name.lower())
    return f"lora_{cleaned}"[:64]
