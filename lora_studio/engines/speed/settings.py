"""Speed settings for local generation, and the one-sentence choice `auto` makes from the GPU it finds.

Every setting is optional and keeps images the same within the tolerance tests/test_speed.py states
(fp8 and the first-block cache are the lossy ones, which is why the cache is never picked by auto):

    setting            what it does                                              where it pays
    fuse_qkv           q, k, v (and the text stream's) in one matmul per block  big GPUs, with compile
    compile            torch.compile of the repeated blocks only ("regional"),   CUDA, compute 7.0+
                       with a LoRA hot-swap slot so switching LoRAs never
                       recompiles
    quantize "fp8"     torchao float8 weights and activations in the blocks      compute 8.9+ (Ada, Hopper)
    quantize "8bit"    bitsandbytes int8 base weights, loaded that way           GPUs under 24 GB
    group_offload      blocks stream from CPU memory as they run: "encoders"     "all" under 16 GB,
                       (text encoders + VAE) or "all" (the transformer too)      "encoders" under 30 GB
    batch_edits        Kontext edits per pipeline call in the character sheet    memory to spare
    first_block_cache  skip the other blocks when the first barely changed       off unless asked

`auto_speed(GpuInfo)` is a pure function (tested with made-up GPUs); `resolve_speed` lays the user's
explicit flags over it and drops, in words, whatever this machine cannot run.
"""
from __future__ import annotations

from dataclasses import dataclass, fields, replace

from ...config import SpeedRequest, zero_gpu_requested
from ..base import EngineError

FP8_CAPABILITY = (8, 9)  # fp8 tensor cores: Ada (RTX 40xx, L4, L40S) and Hopper (H100, H200)
COMPILE_CAPABILITY = (7, 0)  # Triton's floor
HOTSWAP_RANK = 64
FUSED_HOTSWAP_RANK = 96  # a rank-32 LoRA's q, k and v side by side in one fused layer
AUTO_RESOLUTION = 1024  # the image size auto sizes the GPU for (FLUX.1-dev's native one)


@dataclass(frozen=True)
class GpuInfo:
    """What auto needs to know about the device: kind, name, memory and CUDA compute capability."""

    kind: str  # "cuda" | "mps" | "cpu"
    name: str = ""
    total_gb: float = 0.0
    free_gb: float = 0.0
    capability: tuple[int, int] = (0, 0)
    zero_gpu: bool = False  # a Hugging Face ZeroGPU Space: every GPU call runs in a fresh worker

    @property
    def usable_gb(self) -> float:
        return min(self.total_gb, self.free_gb) if self.free_gb else self.total_gb

    def label(self) -> str:
        if self.kind != "cuda":
            return self.kind
        return (f"{self.name or 'CUDA GPU'} ({self.free_gb:.0f} of {self.total_gb:.0f} GB free, "
                f"compute {self.capability[0]}.{self.capability[1]})")


@dataclass(frozen=True)
class SpeedSettings:
    fuse_qkv: bool = False
    compile: bool = False  # regional torch.compile; LoRAs then switch through the hot-swap slot
    compile_backend: str = "inductor"  # tests on the CPU use "aot_eager" (no C++ build)
    quantize: str | None = None  # None | "fp8" | "8bit"
    group_offload: str | None = None  # None | "encoders" | "all"
    batch_edits: int = 1
    first_block_cache: float = 0.0  # threshold; 0 = off
    hotswap_rank: int = HOTSWAP_RANK
    reason: str = ""

    @property
    def hotswap(self) -> bool:
        return self.compile

    def summary(self) -> str:
        """The settings in use, in a few words ("regional compile + fp8 base + …" or "none")."""
        parts = []
        if self.compile:
            parts.append("regional compile with LoRA hot-swap")
        if self.quantize:
            parts.append("8-bit base" if self.quantize == "8bit" else f"{self.quantize} base")
        if self.fuse_qkv:
            parts.append("fused QKV")
        if self.group_offload:
            parts.append("group offloading of " + ("everything" if self.group_offload == "all" else "the encoders"))
        if self.batch_edits > 1:
            parts.append(f"{self.batch_edits} sheet edits per call")
        if self.first_block_cache:
            parts.append(f"first-block cache at {self.first_block_cache:g}")
        return " + ".join(parts) or "none"


OFF = SpeedSettings()


def auto_speed(gpu: GpuInfo, needs: dict | None = None) -> SpeedSettings:
    """The settings auto picks for this device, with the reason in one sentence.

    Memory at 1024² is the memory planner's (engines/memory/need.py, counted from FLUX.1-dev's
    parameters): transformer ~24 GB in bf16 or ~12 GB in fp8/8-bit, text encoders and VAE ~10 GB,
    working memory ~4 GB. Whatever does not fit streams from CPU memory (group offloading). `needs`
    (weights format -> InferenceNeed) replaces the planner's figures, e.g. in a test.
    """
    if gpu.kind != "cuda":
        return replace(OFF, reason=f"Speed settings off: no NVIDIA GPU ({gpu.kind}); compile, fp8 and "
                                   "offloading pay off only with CUDA.")
    if gpu.zero_gpu:
        return replace(OFF, batch_edits=3, reason=(
            "Auto speed on ZeroGPU: 3 sheet edits per call (each GPU call costs a worker start, so fewer, "
            "fuller calls); no compile, fp8 or hot-swap, since a fresh worker would redo them every call."))
    from ...sizes import GB

    needs = needs or _inference_needs()
    memory, capability = gpu.usable_gb * GB, gpu.capability
    floor = needs["8bit"].transformer + needs["8bit"].working
    small = memory < floor  # not even a quantized transformer fits
    fp8 = capability >= FP8_CAPABILITY and not small
    quantize = "fp8" if fp8 else ("8bit" if memory < needs["bf16"].total else None)
    planned = needs[quantize or "bf16"]
    need = planned.total
    offload = "all" if small else ("encoders" if need > memory else None)
    compile_ = capability >= COMPILE_CAPABILITY and not small
    fuse = compile_ and memory >= need + planned.fused_extra
    extra = planned.batch_extra
    batch = 3 if memory >= need + 2 * extra + 30 * GB else (2 if memory >= need + extra + 10 * GB else 1)
    chosen = SpeedSettings(fuse_qkv=fuse, compile=compile_, quantize=quantize, group_offload=offload,
                           batch_edits=batch, hotswap_rank=FUSED_HOTSWAP_RANK if fuse else HOTSWAP_RANK)
    why = []
    if quantize == "fp8":
        why.append("fp8 because compute 8.9+ has fp8 matmuls")
    elif quantize == "8bit":
        why.append(f"an 8-bit base because {memory / GB:.0f} GB cannot hold the {needs['bf16'].transformer / GB:.0f} "
                   "GB bf16 transformer and the rest")
    if small:
        why.append(f"group offloading because under {floor / GB:.0f} GB the blocks must stream from CPU memory")
    elif offload:
        why.append(f"the text encoders stream from CPU memory because {need / GB:.0f} GB would not fit")
    if fuse:
        why.append(f"fused QKV because {memory / GB:.0f} GB holds the fused copies")
    if not compile_ and not small:
        why.append("no compile below compute 7.0")
    text = f"Auto speed for {gpu.label()}: {chosen.summary()}"
    text += f" ({'; '.join(why)})" if why else ""
    return replace(chosen, reason=text + "; first-block cache off (it changes images).")


def _inference_needs(architecture: str = "flux1-dev") -> dict:  # weights format -> memory.InferenceNeed
    """The planner's figures for the architecture (FLUX.1-dev, Klein 4 B / 9 B) at AUTO_RESOLUTION, per
    weights format auto may choose."""
    from ..memory import inference_need

    return {fmt: inference_need(fmt, AUTO_RESOLUTION, architecture=architecture) for fmt in ("bf16", "8bit", "fp8")}


def unsupported(settings: SpeedSettings, gpu: GpuInfo) -> dict[str, str]:
    """Setting name -> why this machine cannot run it. Empty when everything can run."""
    from ..memory import library_available

    problems: dict[str, str] = {}
    if settings.quantize not in (None, "fp8", "8bit"):
        problems["quantize"] = f"unknown base quantization {settings.quantize!r} (choose fp8 or 8bit)"
    elif settings.quantize == "fp8":
        if gpu.kind != "cuda" or gpu.capability < FP8_CAPABILITY:
            problems["quantize"] = (f"the fp8 base needs an NVIDIA GPU of compute 8.9 or newer (Ada, Hopper); "
                                    f"this is {gpu.label()}")
        elif not library_available("torchao"):
            problems["quantize"] = "the fp8 base needs the torchao package (pip install torchao)"
    elif settings.quantize == "8bit":
        if gpu.kind != "cuda":
            problems["quantize"] = f"the 8-bit base needs an NVIDIA GPU (CUDA); this is {gpu.label()}"
        elif not library_available("bitsandbytes"):
            problems["quantize"] = "the 8-bit base needs the bitsandbytes package (pip install bitsandbytes)"
    if settings.compile and gpu.kind == "mps":
        problems["compile"] = "torch.compile is not supported for this model on Apple GPUs (mps)"
    elif settings.compile and gpu.kind == "cuda" and gpu.capability < COMPILE_CAPABILITY:
        problems["compile"] = "torch.compile needs compute 7.0 or newer"
    if settings.group_offload not in (None, "encoders", "all"):
        problems["group_offload"] = f"unknown group offloading {settings.group_offload!r} (choose encoders or all)"
    if settings.fuse_qkv and settings.quantize == "8bit":
        problems["fuse_qkv"] = "fused QKV cannot concatenate bitsandbytes 8-bit weights"
    if not 1 <= settings.batch_edits <= 8:
        problems["batch_edits"] = "Sheet edits per call must be between 1 and 8"
    if not 0 <= settings.first_block_cache < 1:
        problems["first_block_cache"] = "the first-block cache threshold must be between 0 and 1 (0 = off)"
    return problems


def check_supported(settings: SpeedSettings, gpu: GpuInfo) -> None:
    """Refuse, in words, settings given directly (not through flags) that this machine cannot run."""
    problems = unsupported(settings, gpu)
    if problems:
        raise EngineError("Speed settings this machine cannot run: " + "; ".join(problems.values()) + ".")


_DEFAULTS = {f.name: f.default for f in fields(SpeedSettings)}
FAMILY_SETTINGS = ("fuse_qkv", "compile", "quantize", "group_offload", "batch_edits", "first_block_cache")


def resolve_speed(request: SpeedRequest, gpu: GpuInfo, tiny: bool = False, memory_mode: str = "auto",
                  family=None, architecture: str = "flux1-dev") -> SpeedSettings:
    """Auto (or off), then the user's explicit flags, minus what this machine cannot run, said in words.

    Auto sizes the GPU for `architecture`'s memory (engines/memory); a `family` (engines/family) drops
    the settings not known to work on it. A memory mode that names a quantized base (8bit, nf4, fp8)
    decides the base weights: the speed setting's quantization (and fused QKV, which cannot
    concatenate quantized weights) step aside."""
    if request.mode == "off":
        base = replace(OFF, reason="Speed settings off (--speed off).")
    elif tiny:
        base = replace(OFF, reason="Speed settings off for the tiny model (nothing to speed up).")
    else:
        base = auto_speed(gpu, _inference_needs(architecture) if architecture != "flux1-dev" else None)
    explicit = request.explicit()
    for name in ("quantize", "group_offload"):
        if explicit.get(name) in ("none", "off"):
            explicit[name] = None
    settings = replace(base, **explicit)
    if settings.fuse_qkv and "hotswap_rank" not in explicit and settings.hotswap_rank < FUSED_HOTSWAP_RANK:
        settings = replace(settings, hotswap_rank=FUSED_HOTSWAP_RANK)
    notes = [base.reason.rstrip(".") + "."]
    if explicit:
        notes.append("Set by you: " + ", ".join(f"{k.replace('_', ' ')} {_word(v)}" for k, v in explicit.items()) + ".")
    for name, why in unsupported(settings, gpu).items():
        settings = replace(settings, **{name: _DEFAULTS[name]})
        notes.append(f"Skipped {name.replace('_', ' ')}: {why}.")
    for name in FAMILY_SETTINGS:
        if family is not None and name not in family.speed_settings and getattr(settings, name) != _DEFAULTS[name]:
            settings = replace(settings, **{name: _DEFAULTS[name]})
            notes.append(f"Skipped {name.replace('_', ' ')}: not tested on {family.title} yet.")
    from ..memory import QUANTIZED_MODES

    if memory_mode in QUANTIZED_MODES and (settings.quantize or settings.fuse_qkv):
        settings = replace(settings, quantize=None, fuse_qkv=False)
        notes.append(f"Base weights left to memory mode {memory_mode} (no speed quantization, no fused QKV).")
    return replace(settings, reason=" ".join(notes))


def _word(value) -> str:
    if value is True:
        return "on"
    if value is False or value is None:
        return "off"
    return str(value)


def pick_device(requested: str = "auto"):
    """The torch device for "auto" | "cpu" | "cuda" | "mps" (auto: CUDA, then Apple, then the CPU)."""
    import torch

    if requested != "auto":
        return torch.device(requested)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def describe_choice(request: SpeedRequest, device: str, memory_mode: str, tiny: bool = False, family=None,
                    architecture: str = "flux1-dev") -> str:
    """The sentence the banner shows before any model is loaded (the engine says the same once built)."""
    return resolve_speed(request, gpu_info(pick_device(device)), tiny=tiny, memory_mode=memory_mode, family=family,
                         architecture=architecture).reason


def gpu_info(device) -> GpuInfo:
    """Describe the torch device the model will run on."""
    import torch

    device = torch.device(device)
    if device.type != "cuda":
        return GpuInfo(kind=device.type)
    if zero_gpu_requested():  # no GPU to ask until a call runs
        return GpuInfo(kind="cuda", name="ZeroGPU", zero_gpu=True)
    index = device.index if device.index is not None else torch.cuda.current_device()
    free, total = torch.cuda.mem_get_info(index)
    return GpuInfo(kind="cuda", name=torch.cuda.get_device_name(index), total_gb=total / 1024**3,
                   free_gb=free / 1024**3, capability=tuple(torch.cuda.get_device_capability(index)))


__all__ = ["GpuInfo", "SpeedSettings", "OFF", "auto_speed", "resolve_speed", "unsupported", "check_supported",
           "pick_device", "describe_choice", "gpu_info"]
