"""Memory modes: how the base is loaded and how a training trades speed for GPU memory, as one typed plan.

A `MemoryPlan` says how the trainer trades speed for GPU memory:

    mode            gradient ckpt  base weights   transformer blocks    8-bit AdamW
    full            no             as loaded      on the GPU            yes (CUDA + bitsandbytes)
    checkpointing   yes            as loaded      on the GPU            yes
    offload         yes            as loaded      on the GPU            yes
    8bit            yes            int8 (bnb)     on the GPU            yes
    fp8             yes            fp8 (torchao)  on the GPU            yes
    nf4             yes            nf4 (bnb)      on the GPU            yes
    lowvram         yes            nf4 (bnb)      one at a time         yes

Latents and text embeddings are always cached, so the VAE and both text encoders are idle while the
transformer trains and are moved to the CPU in every mode; "offload" is kept as a name for that
behaviour (it is what older settings files ask for) and behaves like "checkpointing". "lowvram" also
keeps the transformer's blocks on the CPU and brings each to the GPU only while it runs (forward and
recomputation; training/block_offload.py), for GPUs of 8 GB.

Quantized base weights are loaded by whoever loads the base (the model manager):
`quantization_config(plan)` gives the diffusers config to pass to `from_pretrained`. The trainer
borrows that transformer as it is and only checks that it matches the plan.

Each plan carries the bytes it needs (`MemoryNeed`, memory_need.py), computed from the model's
parameter counts, the LoRA's rank and the activations at the resolution, and `explain()` names them.
"auto" picks the first mode of the ladder full -> checkpointing -> 8bit -> nf4 -> lowvram whose need
fits the GPU memory available to the job (95% of it, for headroom). With no GPU (free memory None),
"auto" is "full": full precision on the CPU, nothing to save.
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass, replace

from ...config import MEMORY_MODES
from ..base import EngineError
from ...sizes import GB
from .need import MemoryNeed, training_need

LADDER = ("full", "checkpointing", "8bit", "nf4", "lowvram")  # lightest last; OOM advice walks down it
_HEADROOM = 0.95

_BASE_QUANT = {"8bit": "8bit", "fp8": "fp8", "nf4": "nf4", "lowvram": "nf4"}
QUANTIZED_MODES = tuple(_BASE_QUANT)  # modes that load a quantized base: a real model on CUDA only
_QUANT_LIBRARY = {"8bit": "bitsandbytes", "nf4": "bitsandbytes", "fp8": "torchao"}
PIPELINE_COMPONENTS = ("transformer", "vae", "text_encoder", "text_encoder_2")


@dataclass(frozen=True)
class MemoryPlan:
    mode: str
    gradient_checkpointing: bool
    offload_idle: bool  # VAE + text encoders to the CPU while the transformer trains
    base_quant: str | None  # None | "8bit" | "nf4" | "fp8"
    optimizer_8bit: bool  # bitsandbytes AdamW8bit, when importable and on CUDA
    cache_latents: bool = True
    offload_blocks: bool = False  # transformer blocks on the CPU, each onloaded while it runs
    reason: str = ""
    need: MemoryNeed | None = None

    def explain(self) -> str:
        """Which mode, why, and the bytes it plans for."""
        parts = []
        if self.base_quant:
            parts.append(f"{self.base_quant} base weights")
        parts.append("gradient checkpointing" if self.gradient_checkpointing else "no gradient checkpointing")
        if self.offload_blocks:
            parts.append("transformer blocks brought to the GPU one at a time")
        if self.offload_idle:
            parts.append("VAE and text encoders off the GPU while training")
        parts.append("cached latents and text embeddings")
        text = f"Memory mode '{self.mode}' ({', '.join(parts)}): {self.reason}"
        if self.need is not None:
            text += f" Planned: {self.need.describe()}."
        return text


def plan_need(mode: str, resolution: int, rank: int = 16, train_mlp: bool = True,
              transformer_config: dict | None = None, pipe=None, architecture: str = "flux1-dev") -> MemoryNeed:
    """The bytes a named mode needs at `resolution` for the named full architecture ("flux1-dev",
    "klein-4b", "klein-9b"), or for the given transformer config and loaded pipe."""
    plan = _plan(mode, "")
    return training_need(
        weights_format=plan.base_quant or "bf16", offload_blocks=plan.offload_blocks,
        checkpointing=plan.gradient_checkpointing, optimizer_8bit=plan.optimizer_8bit,
        resolution=resolution, rank=rank, train_mlp=train_mlp, transformer_config=transformer_config, pipe=pipe,
        architecture=architecture,
    )


def estimated_need_gb(mode: str, resolution: int, rank: int = 16, train_mlp: bool = True,
                      architecture: str = "flux1-dev") -> float:
    return plan_need(mode, resolution, rank, train_mlp, architecture=architecture).total / GB


def _plan(mode: str, reason: str, need: MemoryNeed | None = None) -> MemoryPlan:
    return MemoryPlan(
        mode=mode,
        gradient_checkpointing=mode != "full",
        offload_idle=True,
        base_quant=_BASE_QUANT.get(mode),
        optimizer_8bit=True,
        offload_blocks=mode == "lowvram",
        reason=reason,
        need=need,
    )


def plan_for(mode: str, free_gpu_bytes: int | None, resolution: int, rank: int = 16, train_mlp: bool = True,
             transformer_config: dict | None = None, pipe=None, architecture: str = "flux1-dev") -> MemoryPlan:
    """The plan for `mode` ("auto" or a named mode).

    `free_gpu_bytes` is the GPU memory the whole job may use, base weights included (on a dedicated
    GPU: its total memory); None means no GPU. The needs are the named architecture's (FLUX.1-dev's by
    default) unless `transformer_config` (and the loaded `pipe`, for its encoders) say otherwise.
    """
    if mode not in MEMORY_MODES:
        raise EngineError(f"Unknown memory mode {mode!r}; choose one of {', '.join(MEMORY_MODES)}.")

    def need(candidate: str) -> MemoryNeed:
        return plan_need(candidate, resolution, rank, train_mlp, transformer_config, pipe, architecture)

    if mode != "auto":
        return _plan(mode, "as chosen.", need(mode))
    if free_gpu_bytes is None:
        return MemoryPlan(
            mode="full",
            gradient_checkpointing=False,
            offload_idle=False,
            base_quant=None,
            optimizer_8bit=False,
            reason="no GPU, so the CPU trains in full precision.",
        )
    free_gb = free_gpu_bytes / GB
    budget = free_gpu_bytes * _HEADROOM
    for candidate in LADDER:
        planned = need(candidate)
        if planned.total <= budget:
            return _plan(
                candidate,
                f"auto-picked: {free_gb:.1f} GB of GPU memory fits its planned "
                f"{planned.total / GB:.1f} GB at {resolution} px.",
                planned,
            )
    lightest = LADDER[-1]
    planned = need(lightest)
    return _plan(
        lightest,
        f"auto-picked as the lightest mode; {free_gb:.1f} GB is below its planned {planned.total / GB:.1f} GB "
        f"at {resolution} px, so it may still run out of memory (try a lower resolution).",
        planned,
    )


def lighter_mode(mode: str) -> str | None:
    """The next mode down the ladder, or None when `mode` is already the lightest."""
    position = {"offload": 1, "fp8": 2}.get(mode, LADDER.index(mode) if mode in LADDER else 0)
    return LADDER[position + 1] if position + 1 < len(LADDER) else None


def gpu_memory_bytes(device: str = "auto") -> int | None:
    """Total memory of `device` ("auto": the GPU a job would use) when it is a CUDA GPU, else None."""
    import torch

    if not torch.cuda.is_available() or not (device == "auto" or torch.device(device).type == "cuda"):
        return None
    return torch.cuda.get_device_properties(torch.device("cuda") if device == "auto" else device).total_memory


ARCHITECTURE_TITLES = {"flux1-dev": "FLUX.1-dev", "klein-4b": "FLUX.2 [klein] 4B", "klein-9b": "FLUX.2 [klein] 9B"}


def describe_plans(mode: str, resolution: int, rank: int = 16, train_mlp: bool = True,
                   gpu_bytes: int | None = None, architecture: str = "flux1-dev") -> str:
    """The plan for `mode` in words, for the Training tab: what it needs at this resolution and rank,
    and whether that fits this machine's GPU (None: no GPU here)."""
    if mode == "auto" and gpu_bytes is None:
        needs = " · ".join(f"{m} {estimated_need_gb(m, resolution, rank, train_mlp, architecture):.1f}"
                           for m in LADDER)
        return (f"No GPU here: 'auto' trains on the CPU in full precision. {ARCHITECTURE_TITLES[architecture]} at "
                f"{resolution} px, rank {rank} needs on a GPU (GB): {needs}.")
    plan = plan_for(mode, gpu_bytes, resolution, rank, train_mlp, architecture=architecture)
    text = plan.explain()
    if mode != "auto" and gpu_bytes is not None and plan.need is not None:
        fits = plan.need.total <= gpu_bytes * _HEADROOM
        text += (f" This GPU has {gpu_bytes / GB:.1f} GB: "
                 + ("it fits." if fits else f"too little; try '{lighter_mode(mode) or 'a lower resolution'}'."))
    return text


def base_quantization(device: torch.device, mode: str, architecture: str = "flux1-dev") -> tuple[str | None, bool, str]:
    """(quantization, CPU offload needed, note) for the frozen base at inference: as set, or when "auto"
    by free GPU memory. Public FLUX.1-dev inference peaks: bf16 ~36 GB, 8-bit ~24 GB, NF4 ~17 GB; a
    FLUX.2 [klein] base is sized by its own counted inference need (need.inference_need). Training on
    top adapts to the loaded base (checkpointing etc.), so the base is chosen for inference."""
    import torch

    if device.type != "cuda":
        return None, False, ""
    if mode == "lowvram":
        return mode, False, "Base weights in nf4, each model on the GPU only while it runs (memory mode lowvram)."
    if mode in QUANTIZED_MODES:
        return mode, False, f"Base weights in {mode} (memory mode set)."
    if mode != "auto":
        return None, False, f"Base weights in bf16 (memory mode {mode})."
    free_gb = torch.cuda.mem_get_info(device)[0] / 1024**3
    bf16_gb, int8_gb = 40.0, 26.0
    if architecture != "flux1-dev":
        from .need import inference_need

        bf16_gb, int8_gb = (inference_need(fmt, 1024, architecture=architecture).total / 1024**3 * 1.05
                            for fmt in ("bf16", "8bit"))
    offload, choice = False, None
    if free_gb < bf16_gb:
        if not library_available("bitsandbytes"):
            offload = True
        else:
            choice = "8bit" if free_gb >= int8_gb else "nf4"
    label = choice or ("bf16 with CPU offload" if offload else "bf16")
    return choice, offload, f"Base weights in {label}: auto-picked for {free_gb:.0f} GB of free GPU memory."


def idle_transformer_note(architecture: str = "flux1-dev") -> str:
    """The second transformer in the plan: FLUX.1-Kontext-dev's (or Klein's distilled one) is off the GPU
    while the training transformer trains, so the GPU plan above stands; it costs host RAM instead, when
    there is that much free. Its size is counted like every other plan figure (the same architecture, bf16)."""
    import psutil

    from ..local import fits_in_host_ram
    from .need import transformer_counts, weight_bytes

    size = weight_bytes(transformer_counts(architecture=architecture).total, "bf16")
    free = psutil.virtual_memory().available / GB
    where = "it fits" if fits_in_host_ram(int(size)) else "too little: it is read again from disk after"
    idle = "FLUX.1-Kontext-dev's transformer" if architecture == "flux1-dev" else "The distilled checkpoint's transformer"
    return (f"{idle} (~{size / GB:.1f} GB in bf16) waits in CPU memory meanwhile, "
            f"not on the GPU ({free:.0f} GB of RAM free now: {where}).")


def library_available(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


def require_support(plan: MemoryPlan, device_type: str) -> None:
    """Raise EngineError (a message for the user) when this machine cannot run `plan`."""
    if not plan.base_quant:
        return
    library = _QUANT_LIBRARY[plan.base_quant]
    if device_type != "cuda":
        raise EngineError(
            f"Memory mode '{plan.mode}' quantizes the base model and needs an NVIDIA GPU (CUDA); "
            f"this run is on '{device_type}'. Choose 'auto' or 'full'."
        )
    if not library_available(library):
        raise EngineError(
            f"Memory mode '{plan.mode}' needs the '{library}' package, which is not installed. "
            f"Install it (pip install {library}) or choose 'checkpointing'."
        )


def quantization_config(plan: MemoryPlan):
    """The diffusers quantization config to load the base transformer with, or None.

    For the model manager: ``FluxTransformer2DModel.from_pretrained(..., quantization_config=...)``.
    """
    if not plan.base_quant:
        return None
    require_support(plan, "cuda")
    import torch

    if plan.base_quant == "8bit":
        from diffusers import BitsAndBytesConfig

        return BitsAndBytesConfig(load_in_8bit=True)
    if plan.base_quant == "nf4":
        from diffusers import BitsAndBytesConfig

        # lowvram keeps every block's quantization state on the GPU: double-quantize it (1/64 B per
        # weight instead of 4/64).
        return BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16,
            bnb_4bit_use_double_quant=plan.offload_blocks,
        )
    from diffusers import TorchAoConfig
    from torchao.quantization import Float8WeightOnlyConfig

    return TorchAoConfig(Float8WeightOnlyConfig())


def is_quantized(module) -> bool:
    """Whether a diffusers model was loaded with a quantization config."""
    return getattr(module, "hf_quantizer", None) is not None or bool(getattr(module, "is_quantized", False))


def plan_for_pipeline(mode: str, pipe, device, resolution: int, rank: int = 16,
                      train_mlp: bool = True) -> MemoryPlan:
    """The plan for training on this loaded pipeline: the GPU budget counts what it already holds, the
    needs are counted from its own transformer config and encoders, and a quantized mode is only possible
    when the base was loaded quantized."""
    import torch

    def plan(chosen: str, budget: int | None) -> MemoryPlan:
        return plan_for(chosen, budget, resolution, rank, train_mlp, dict(pipe.transformer.config), pipe)

    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        resident = sum(
            t.numel() * t.element_size()
            for name in PIPELINE_COMPONENTS
            if isinstance(getattr(pipe, name, None), torch.nn.Module)
            for t in [*getattr(pipe, name).parameters(), *getattr(pipe, name).buffers()]
            if t.device == device
        )
        budget = free + resident
    else:
        budget = None
    chosen = plan(mode, budget)
    if chosen.base_quant and not is_quantized(pipe.transformer):
        if mode == "auto":
            fallback = plan("checkpointing", budget)
            return replace(
                fallback,
                reason=(
                    f"auto-picked; {budget / GB:.1f} GB suggests '{chosen.mode}', but the loaded base is not "
                    f"quantized, so this run trains the loaded weights with checkpointing instead."
                ),
            )
        require_support(chosen, device.type)
        raise EngineError(
            f"Memory mode '{chosen.mode}' needs the base model loaded with {chosen.base_quant} weights; the "
            f"loaded model is not quantized. Reload the model with memory mode '{chosen.mode}' "
            f"(memory.quantization_config) or choose 'checkpointing'."
        )
    require_support(chosen, device.type)
    return chosen
