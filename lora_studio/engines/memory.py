"""Memory modes: how the base is loaded and how a training trades speed for GPU memory, as one typed plan.

A `MemoryPlan` says how the trainer trades speed for GPU memory:

    mode            gradient ckpt  idle modules off GPU  base weights   8-bit AdamW
    full            no             yes                   as loaded      yes (CUDA + bitsandbytes)
    checkpointing   yes            yes                   as loaded      yes
    offload         yes            yes                   as loaded      yes
    8bit            yes            yes                   int8 (bnb)     yes
    fp8             yes            yes                   fp8 (torchao)  yes
    nf4             yes            yes                   nf4 (bnb)      yes

Latents and text embeddings are always cached, so the VAE and both text encoders are idle while the
transformer trains and are moved to the CPU in every mode; "offload" is kept as a name for that
behaviour (it is what older settings files ask for) and behaves like "checkpointing".

Quantized base weights are loaded by whoever loads the base (the model manager):
`quantization_config(plan)` gives the diffusers config to pass to `from_pretrained`. The trainer
borrows that transformer as it is and only checks that it matches the plan.

"auto" picks the first mode of the ladder full -> checkpointing -> 8bit -> nf4 whose estimated
need fits the GPU memory available to the job (95% of it, for headroom). Estimates for FLUX.1-dev
at 768 px, batch 1, cached inputs, anchored on public measurements (diffusers "flux-qlora" blog:
bf16 LoRA with checkpointing and 8-bit Adam ~26 GB at 512x768, NF4 base ~9 GB peak; diffusers
quantization blog: transformer 23.8 GB in bf16, ~12 GB in 8-bit):

    full            ~44 GB   (23.8 GB weights + activations of all 57 blocks kept for backward)
    checkpointing   ~27 GB
    8bit            ~17 GB
    nf4             ~10 GB

The activation part grows with the pixel count, so each need is scaled by (resolution / 768)^2 for
its activation share (18 GB for full, 2.5 GB otherwise). With no GPU (free memory None), "auto" is
"full": full precision on the CPU, nothing to save.
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass, replace

from .base import EngineError

MODES = ("auto", "full", "checkpointing", "offload", "8bit", "fp8", "nf4")
LADDER = ("full", "checkpointing", "8bit", "nf4")  # lightest last; OOM advice walks down it

GB = 1024**3
_REFERENCE_RESOLUTION = 768
# (total need at 768 px in GB, the part of it that is activations and scales with pixel count)
_NEED_GB = {
    "full": (44.0, 18.0),
    "checkpointing": (27.0, 2.5),
    "offload": (27.0, 2.5),
    "8bit": (17.0, 2.5),
    "fp8": (17.0, 2.5),
    "nf4": (10.0, 2.5),
}
_HEADROOM = 0.95

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
    reason: str = ""

    def explain(self) -> str:
        """One sentence: which mode and why."""
        parts = []
        if self.base_quant:
            parts.append(f"{self.base_quant} base weights")
        parts.append("gradient checkpointing" if self.gradient_checkpointing else "no gradient checkpointing")
        if self.offload_idle:
            parts.append("VAE and text encoders off the GPU while training")
        parts.append("cached latents and text embeddings")
        return f"Memory mode '{self.mode}' ({', '.join(parts)}): {self.reason}"


def estimated_need_gb(mode: str, resolution: int) -> float:
    total, activations = _NEED_GB[mode]
    return total + activations * ((resolution / _REFERENCE_RESOLUTION) ** 2 - 1.0)


def _plan(mode: str, reason: str) -> MemoryPlan:
    light = mode != "full"
    return MemoryPlan(
        mode=mode,
        gradient_checkpointing=light,
        offload_idle=True,
        base_quant=mode if mode in _QUANT_LIBRARY else None,
        optimizer_8bit=True,
        reason=reason,
    )


def plan_for(mode: str, free_gpu_bytes: int | None, resolution: int) -> MemoryPlan:
    """The plan for `mode` ("auto" or a named mode).

    `free_gpu_bytes` is the GPU memory the whole job may use, base weights included (on a dedicated
    GPU: its total memory); None means no GPU.
    """
    if mode not in MODES:
        raise EngineError(f"Unknown memory mode {mode!r}; choose one of {', '.join(MODES)}.")
    if mode != "auto":
        return _plan(mode, "chosen in the settings.")
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
    budget = free_gb * _HEADROOM
    for candidate in LADDER:
        need = estimated_need_gb(candidate, resolution)
        if need <= budget:
            return _plan(
                candidate,
                f"auto-picked: {free_gb:.1f} GB of GPU memory fits its estimated "
                f"{need:.0f} GB at {resolution} px.",
            )
    need = estimated_need_gb("nf4", resolution)
    return _plan(
        "nf4",
        f"auto-picked as the lightest mode; {free_gb:.1f} GB is below its estimated {need:.0f} GB "
        f"at {resolution} px, so it may still run out of memory (try a lower resolution).",
    )


def lighter_mode(mode: str) -> str | None:
    """The next mode down the ladder, or None when `mode` is already the lightest."""
    position = {"offload": 1, "fp8": 2}.get(mode, LADDER.index(mode) if mode in LADDER else 0)
    return LADDER[position + 1] if position + 1 < len(LADDER) else None


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

        return BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16
        )
    from diffusers import TorchAoConfig
    from torchao.quantization import Float8WeightOnlyConfig

    return TorchAoConfig(Float8WeightOnlyConfig())


def is_quantized(module) -> bool:
    """Whether a diffusers model was loaded with a quantization config."""
    return getattr(module, "hf_quantizer", None) is not None or bool(getattr(module, "is_quantized", False))


def plan_for_pipeline(mode: str, pipe, device, resolution: int) -> MemoryPlan:
    """The plan for training on this loaded pipeline: the GPU budget counts what it already holds, and a
    quantized mode is only possible when the base was loaded quantized."""
    import torch

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
    plan = plan_for(mode, budget, resolution)
    if plan.base_quant and not is_quantized(pipe.transformer):
        if mode == "auto":
            fallback = plan_for("checkpointing", budget, resolution)
            return replace(
                fallback,
                reason=(
                    f"auto-picked; {budget / GB:.1f} GB suggests '{plan.mode}', but the loaded base is not "
                    f"quantized, so this run trains the loaded weights with checkpointing instead."
                ),
            )
        require_support(plan, device.type)
        raise EngineError(
            f"Memory mode '{plan.mode}' needs the base model loaded with {plan.base_quant} weights; the "
            f"loaded model is not quantized. Reload the model with memory mode '{plan.mode}' "
            f"(memory.quantization_config) or choose 'checkpointing'."
        )
    require_support(plan, device.type)
    return plan


def is_out_of_memory(error: BaseException) -> bool:
    import torch

    return isinstance(error, torch.cuda.OutOfMemoryError) or (
        isinstance(error, RuntimeError) and "out of memory" in str(error).lower()
    )

