"""What a finished training leaves behind: the LoRA in diffusers and kohya naming, its metadata and
a model card that says how to use it in diffusers, ComfyUI, Forge and ai-toolkit. Every file is
written under a temporary name and renamed, so a crash never leaves half a LoRA.

One strength everywhere. The adapter trains with peft's scale alpha/rank, but loaders disagree on
where to find alpha: diffusers reads `lora_adapter_metadata` (safetensors metadata), ComfyUI and
ai-toolkit read tensors only (an `.alpha` tensor, else scale 1.0) and kohya loaders (Forge/A1111,
sd-scripts) read `.alpha` tensors (else alpha = rank). So both exported files carry each module's
scale folded into lora_B (B' = B * alpha/rank, the update peft applied while training and sampling)
and record alpha = rank: the diffusers metadata says `lora_alpha = r`, the kohya file's `.alpha`
tensors equal each module's rank. Every loader, whether it reads alpha or not, then applies exactly
the update the app used, so the strength tester's recommendation carries over unchanged. The
training's own alpha stays in metadata.json and the card. Checkpoints (for resuming) keep the raw,
unfolded adapter, since training continues under the same alpha.
"""
from __future__ import annotations

import json
from pathlib import Path

import diffusers
import torch
from peft.tuners.lora import LoraLayer
from peft.utils import get_peft_model_state_dict

from ..engines.family import family_of_transformer
from ..engines.lora import save_lora_file, scale_one_config
from ..store import atomic_write_text
from .flow_matching import ADAPTER_NAME
from .kohya_export import save_kohya
from .model_card import KOHYA_FILE, LORA_FILE, model_card

TRAINED_ALPHA_KEY = "lora_studio_trained_alpha"  # kohya metadata: the alpha the LoRA was trained with


def write_outputs(transformer, output_dir: Path, metadata: dict, save_dtype: torch.dtype) -> dict[str, Path]:
    """The finished adapter in both namings (scale folded, alpha = rank), its metadata and model card."""
    output_dir.mkdir(parents=True, exist_ok=True)
    state, rank = folded_state(transformer, save_dtype)
    lora_path = output_dir / LORA_FILE
    ranks = {k.removesuffix('.lora_A.weight'): rank for k in state if k.endswith('.lora_A.weight')}
    save_lora_file(lora_path, state, scale_one_config(ranks))
    kohya_path = save_kohya(output_dir / KOHYA_FILE, state, rank, rank,
                            metadata={"ss_trigger": metadata["trigger"],
                                      TRAINED_ALPHA_KEY: f"{float(metadata['alpha']):g}"},
                            family=family_of_transformer(transformer).key)
    card = output_dir / "README.md"
    meta_path = output_dir / "metadata.json"
    atomic_write_text(meta_path, json.dumps(metadata, indent=2))
    atomic_write_text(card, model_card(metadata))
    return {"lora": lora_path, "kohya": kohya_path, "metadata": meta_path, "card": card}


def folded_state(transformer, save_dtype: torch.dtype) -> tuple[dict[str, torch.Tensor], int]:
    """The trained adapter as diffusers LoRA tensors with each layer's scaling multiplied into lora_B,
    and its rank. The scaling is read from the layers themselves: exactly what their forward applies."""
    state: dict[str, torch.Tensor] = {}
    ranks = set()
    for name, module in transformer.named_modules():
        if not isinstance(module, LoraLayer) or ADAPTER_NAME not in module.lora_A:
            continue
        a = module.lora_A[ADAPTER_NAME].weight.detach().float()
        b = module.lora_B[ADAPTER_NAME].weight.detach().float() * float(module.scaling[ADAPTER_NAME])
        state[f"{name}.lora_A.weight"] = a.to(device="cpu", dtype=save_dtype).contiguous()
        state[f"{name}.lora_B.weight"] = b.to(device="cpu", dtype=save_dtype).contiguous()
        ranks.add(a.shape[0])
    if len(ranks) != 1:
        raise ValueError(f"Expected one LoRA rank across the adapter, found {sorted(ranks)}.")
    return state, ranks.pop()


def save_diffusers_lora(transformer, folder: Path, weight_name: str, save_dtype: torch.dtype) -> None:
    """The raw (unfolded) adapter with its true alpha in the metadata: checkpoints resume from it."""
    state = get_peft_model_state_dict(transformer, adapter_name=ADAPTER_NAME)
    state = {k: v.detach().to(device="cpu", dtype=save_dtype).contiguous() for k, v in state.items()}
    pipeline = getattr(diffusers, family_of_transformer(transformer).pipeline_classes[0])
    pipeline.save_lora_weights(
        str(folder),
        transformer_lora_layers=state,
        transformer_lora_adapter_metadata=transformer.peft_config[ADAPTER_NAME].to_dict(),
        weight_name=weight_name,
    )


def base_model_id(pipe) -> str | None:
    """The model the LoRA was trained on: the name the model manager gave the transformer (on Klein the
    base checkpoint, swapped in under the distilled one's encoders), else the pipeline's. A transformer
    read as part of a pipeline is named by its subfolder's path, which says less than the pipeline."""
    for source in (getattr(pipe, "transformer", None), pipe):
        config = getattr(source, "config", None)
        name = getattr(config, "_name_or_path", None) if config is not None else None
        if not name and isinstance(config, dict):
            name = config.get("_name_or_path")
        if name and not (source is not pipe and Path(str(name)).name == "transformer"):
            return str(name)
    return None
