"""Recognise the LoRA files people bring, and refuse the ones that cannot work on Flux.

Flux LoRAs circulate in diffusers/ai-toolkit naming (`transformer.transformer_blocks.0.attn.to_q
.lora_A.weight`), kohya/sd-scripts naming (`lora_unet_double_blocks_0_img_attn_qkv.lora_down.weight`)
and ComfyUI's (`diffusion_model.double_blocks...`). diffusers converts all of these on load; what it
does not do is tell a user that the SDXL LoRA they picked will never fit, so we check key names and
shapes first and say so in words.

Strength as the author meant it (`fold_lora`). Each tool reads alpha from a different place:
diffusers from `lora_adapter_metadata` or `.alpha` tensors beside diffusers names, kohya loaders
(Forge/A1111, sd-scripts) and ComfyUI from `.alpha` tensors (alpha/rank, else 1.0), ai-toolkit and
Replicate's trainer write peft names with no alpha at all (alpha = rank, scale 1). A file is read
the way the tool that wrote it reads it (diffusers' own readers, which follow these rules), each
layer's alpha/rank is folded into its lora_B and the file is stored in diffusers naming with
alpha = rank: every tool the LoRA is exported to then applies the update its author meant.
"""
from __future__ import annotations

import json
import math
import tempfile
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from ..base import EngineError
from .checks import METADATA_KEY

SD_MARKERS = ("down_blocks", "up_blocks", "mid_block", "input_blocks", "output_blocks", "lora_te1_", "lora_te2_")
KOHYA_MARKERS = ("lora_unet_double_blocks", "lora_unet_single_blocks", "double_blocks.", "single_blocks.")


@dataclass
class LoraInspection:
    format: str  # "diffusers" | "kohya" | "comfyui"
    rank: int | None
    tensors: int
    modules: int  # layers of the transformer this LoRA changes
    state_dict: dict  # in diffusers naming, ready for load_lora_weights
    family: str | None = None  # engines/family key the file was made for (kinds.py), or the model's

    def to_dict(self) -> dict:
        return {"format": self.format, "rank": self.rank, "tensors": self.tensors, "modules": self.modules,
                "family": self.family}


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    if path.suffix.lower() != ".safetensors":
        raise EngineError("LoRAs are accepted as .safetensors files only (pickled .ckpt/.pt can run code).")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise EngineError(f"{path.name} is not a readable .safetensors file ({exc}).") from None


def detect_format(keys: list[str]) -> str:
    if not keys:
        raise EngineError("This LoRA file holds no tensors.")
    joined = " ".join(keys[:400])
    if any(marker in joined for marker in KOHYA_MARKERS):
        return "comfyui" if "diffusion_model." in joined else "kohya"
    if "transformer_blocks" in joined or "single_transformer_blocks" in joined:
        return "diffusers"
    if any(marker in joined for marker in SD_MARKERS):
        raise EngineError(
            "This LoRA was made for Stable Diffusion (SD 1.5 / SDXL UNet), not for FLUX.1: "
            "it cannot be used here. Pick a Flux LoRA."
        )
    raise EngineError("This file does not look like a Flux LoRA (no known key names).")


def inspect_lora(path: Path, transformer: torch.nn.Module | None = None, model: str = "") -> LoraInspection:
    """Read, detect, convert to diffusers naming and (given a transformer) check its family, then every
    shape. `model` names the model the transformer is (for the refusal's words)."""
    import diffusers

    from ..family import FLUX1, family_named, family_of_transformer
    from .kinds import lora_family, mismatch_text

    made = lora_family(path)
    target = family_of_transformer(transformer) if transformer is not None else None
    if made and target is not None and made != target.key:
        raise EngineError(mismatch_text(made, target.key, model))
    raw = read_state_dict(path)
    kind = detect_format(list(raw))
    family = target or (family_named(made) if made else FLUX1)
    try:
        converted = getattr(diffusers, family.pipeline_classes[0]).lora_state_dict(raw)
    except Exception as exc:  # noqa: BLE001 - converters raise assorted errors for odd files
        raise EngineError(f"This {kind} LoRA could not be converted for {family.title}: {exc}") from None
    if isinstance(converted, tuple):
        converted = converted[0]
    ranks = {t.shape[0] for k, t in converted.items() if "lora_A" in k and t.ndim == 2}
    modules = {k.split(".lora_")[0] for k in converted if ".lora_" in k}
    if transformer is not None:
        _check_shapes(converted, transformer)
    return LoraInspection(
        format=kind, rank=max(ranks) if ranks else None, tensors=len(raw), modules=len(modules),
        state_dict=converted, family=made or (target.key if target is not None else None),
    )


def _check_shapes(state: dict[str, torch.Tensor], transformer: torch.nn.Module) -> None:
    named = dict(transformer.named_modules())
    for key, tensor in state.items():
        if ".lora_A" not in key and ".lora_B" not in key:
            continue
        module_name = key.split(".lora_")[0].removeprefix("transformer.")
        module = named.get(module_name)
        base = getattr(module, "base_layer", module)
        if not isinstance(base, torch.nn.Linear):
            raise EngineError(
                f"This LoRA targets a layer this Flux model does not have ({module_name}); it was "
                "made for another model."
            )
        if ".lora_A" in key and tensor.shape[1] != base.in_features:
            raise _size_error(module_name, tensor.shape[1], base.in_features)
        if ".lora_B" in key and tensor.shape[0] != base.out_features:
            raise _size_error(module_name, tensor.shape[0], base.out_features)


def _size_error(module: str, got: int, want: int) -> EngineError:
    return EngineError(
        f"This LoRA does not fit the loaded Flux model: layer {module} is {want} wide, the LoRA "
        f"expects {got}. It was trained for a different model (e.g. full FLUX.1 vs. the tiny test model)."
    )


@dataclass(frozen=True)
class LoraScale:
    """The alpha/rank a file's author meant, as read from it, and whether it was folded into the weights."""

    source: str  # "metadata" | "alpha tensors" | "none"
    alpha: float | None  # one alpha for every layer, else None
    rank: int | None  # one rank for every layer, else None
    low: float  # smallest and largest alpha/rank over the layers
    high: float
    folded: bool

    def describe(self) -> str:
        """E.g. "alpha 16 / rank 32 → ×0.5 folded (from its metadata)"."""
        if self.alpha is not None and self.rank is not None:
            text = f"alpha {self.alpha:g} / rank {self.rank} → ×{self.low:g}"
        elif self.low == self.high:
            text = f"alpha/rank ×{self.low:g} in every layer"
        else:
            text = f"alpha/rank from ×{self.low:g} to ×{self.high:g} by layer"
        if self.low == self.high == 1.0:
            text += ", nothing to fold"
        elif self.folded:
            text += " folded"
        else:
            text += " (kept as is: diffusers applies it on load)"
        where = {"metadata": "from its metadata", "alpha tensors": "from its .alpha tensors",
                 "none": "no alpha in the file: scale 1, as diffusers, ComfyUI and ai-toolkit read it"}
        return f"{text} ({where.get(self.source, self.source)})"

    def to_dict(self) -> dict:
        return dict(asdict(self), text=self.describe())


def _header(path: Path) -> tuple[dict[str, int], dict[str, float], dict]:
    """({layer: rank}, {layer: alpha tensor's value}, safetensors metadata), reading only the alphas."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt", device="cpu") as handle:
        keys = list(handle.keys())
        downs = {k.rsplit(".lora_", 1)[0]: handle.get_slice(k).get_shape()[0] for k in keys
                 if k.endswith((".lora_down.weight", ".lora_A.weight"))}
        alphas = {k.removesuffix(".alpha"): float(handle.get_tensor(k).float().reshape(-1)[0]) for k in keys
                  if k.endswith(".alpha")}
        return downs, alphas, handle.metadata() or {}


def _meant_scales(downs: dict[str, int], alphas: dict[str, float], config) -> tuple[str, list[tuple[float, int]]]:
    """(where alpha came from, [(alpha, rank)] per layer) as the file's own tool reads it."""
    if alphas:
        return "alpha tensors", [(alphas.get(m, float(r)), r) for m, r in downs.items()]
    if config is not None:
        return "metadata", [(_config_alpha(config, m), r) for m, r in downs.items()]
    return "none", [(float(r), r) for r in downs.values()]


def _config_alpha(config, module: str) -> float:
    from peft.utils.other import get_pattern_key

    module = module.removeprefix("transformer.")
    return float(config.alpha_pattern.get(get_pattern_key(config.alpha_pattern.keys(), module), config.lora_alpha))


def _read_for_family(path: Path, family: str) -> tuple[dict, dict | None, dict | None]:
    """(state dict in diffusers naming, network alphas, adapter metadata) as the family's pipeline reads
    the file. FLUX.2's reader folds a kohya file's alpha/rank into the weights itself (no alphas back)."""
    if family == "flux2-klein":
        from diffusers import Flux2KleinPipeline

        state, metadata = Flux2KleinPipeline.lora_state_dict(str(path), return_lora_metadata=True)
        return state, None, metadata
    from diffusers import FluxPipeline

    return FluxPipeline.lora_state_dict(str(path), return_alphas=True, return_lora_metadata=True)


def scaled_pairs(path: Path, family: str = "flux1") -> tuple[dict[str, tuple[torch.Tensor, torch.Tensor]], object,
                                                             torch.dtype]:
    """{transformer module: (A, B with its alpha/r multiplied in, in float32)} as diffusers reads the file
    for a `family` transformer, the peft config diffusers builds for it and the file's dtype. Refuses
    (EngineError) what cannot be folded: text-encoder parts, DoRA, LoKr, LoRA biases."""
    from diffusers.utils.peft_utils import _create_lora_config

    state, alphas, metadata = _read_for_family(path, family)
    if any(not key.startswith("transformer.") for key in state):
        raise EngineError("This LoRA also changes the text encoder; only transformer LoRAs can be folded.")
    part = {k.removeprefix("transformer."): v for k, v in state.items()}
    if any(".lora_magnitude_vector" in k or k.endswith("lora_B.bias") or ".lokr_" in k for k in part):
        raise EngineError("DoRA, LoKr and LoRA-with-bias files cannot be folded into plain LoRA weights.")
    alphas = {k.removeprefix("transformer."): v for k, v in (alphas or {}).items() if k.startswith("transformer.")}
    metadata = {k.removeprefix("transformer."): v for k, v in (metadata or {}).items()
                if k.startswith("transformer.")} or None
    ranks = {f"^{k}": v.shape[1] for k, v in part.items() if "lora_B" in k and v.ndim == 2}
    config = _create_lora_config(part, alphas or None, metadata, ranks)
    pairs = {}
    for key, a in part.items():
        if key.endswith(".lora_A.weight"):
            module = key.removesuffix(".lora_A.weight")
            pairs[module] = (a.float(), part[f"{module}.lora_B.weight"].float() * _peft_scale(config, module))
    return pairs, config, next(iter(part.values())).dtype


def _peft_scale(config, module: str) -> float:
    """The alpha/r peft gives this module (same pattern matching as peft's LoraModel)."""
    from peft.utils.other import get_pattern_key

    rank = config.rank_pattern.get(get_pattern_key(config.rank_pattern.keys(), module), config.r)
    alpha = config.alpha_pattern.get(get_pattern_key(config.alpha_pattern.keys(), module), config.lora_alpha)
    return alpha / math.sqrt(rank) if config.use_rslora else alpha / rank


def scale_one_config(ranks: dict[str, int]) -> dict:
    """A peft LoraConfig (as a dict) with alpha = rank for every module in `ranks` (scale 1 everywhere)."""
    from peft import LoraConfig

    rank = Counter(ranks.values()).most_common(1)[0][0]
    pattern = {m: r for m, r in ranks.items() if r != rank}
    return LoraConfig(r=rank, lora_alpha=rank, rank_pattern=pattern, alpha_pattern=dict(pattern),
                      target_modules=sorted(ranks)).to_dict()


def save_lora_file(path: Path, state: dict[str, torch.Tensor], config: dict) -> None:
    """A diffusers LoRA file (transformer tensors without the "transformer." prefix) with its peft config
    as metadata, written under a temporary name and renamed."""
    from diffusers import FluxPipeline

    path = Path(path)
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=".tmp_lora_") as tmp:
        FluxPipeline.save_lora_weights(tmp, transformer_lora_layers=state,
                                       transformer_lora_adapter_metadata=config, weight_name=path.name)
        Path(tmp, path.name).replace(path)


def fold_lora(source: Path, target: Path, family: str = "flux1") -> LoraScale:
    """Write `source` to `target` in diffusers naming with every layer's alpha/rank folded into lora_B and
    alpha = rank recorded, so every tool applies what its author meant; returns the scale it read.
    A file that cannot be folded (see `scaled_pairs`) raises EngineError and writes nothing."""
    downs, alphas, header = _header(source)
    pairs, config, dtype = scaled_pairs(source, family)
    if not pairs:
        raise EngineError("This LoRA holds no transformer layers to fold.")
    where, meant = _meant_scales(downs, alphas, config if METADATA_KEY in header else None)
    state = {}
    for module, (a, b) in pairs.items():
        state[f"{module}.lora_A.weight"] = a.to(dtype).clone()  # kohya qkv files share one A: copies
        state[f"{module}.lora_B.weight"] = b.to(dtype).clone()
    save_lora_file(target, state, scale_one_config({m: a.shape[0] for m, (a, _) in pairs.items()}))
    return _summary(where, meant, folded=True)


def _summary(where: str, meant: list[tuple[float, int]], folded: bool) -> LoraScale:
    scales = [alpha / rank for alpha, rank in meant] or [1.0]
    alphas, ranks = {alpha for alpha, _ in meant}, {rank for _, rank in meant}
    return LoraScale(source=where, alpha=alphas.pop() if len(alphas) == 1 else None,
                     rank=ranks.pop() if len(ranks) == 1 else None, low=min(scales), high=max(scales), folded=folded)


def read_scale(path: Path) -> LoraScale:
    """The alpha/rank a file's author meant, without folding (for files kept as they are)."""
    downs, alphas, header = _header(path)
    config = None
    if METADATA_KEY in header:
        from peft import LoraConfig

        fields = {k.removeprefix("transformer."): v for k, v in json.loads(header[METADATA_KEY]).items()
                  if k.startswith("transformer.")}
        config = LoraConfig(**fields) if fields else None
    return _summary(*_meant_scales(downs, alphas, config), folded=False)
