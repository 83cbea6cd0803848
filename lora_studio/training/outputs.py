"""What a finished training leaves behind: the LoRA in diffusers and kohya naming, its metadata and
a model card that says how to use it in diffusers, ComfyUI and Forge. Every file is written under a
temporary name and renamed, so a crash never leaves half a LoRA.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch
from diffusers import FluxPipeline
from peft.utils import get_peft_model_state_dict

from .flow_matching import ADAPTER_NAME
from .kohya_export import save_kohya

LORA_FILE = "lora.safetensors"
KOHYA_FILE = "lora_kohya.safetensors"


def write_outputs(transformer, output_dir: Path, metadata: dict, save_dtype: torch.dtype) -> dict[str, Path]:
    """The finished adapter in both namings, its metadata and model card; returns their paths."""
    output_dir.mkdir(parents=True, exist_ok=True)
    lora_path = output_dir / LORA_FILE
    with tempfile.TemporaryDirectory(dir=output_dir, prefix=".tmp_lora_") as tmp:
        save_diffusers_lora(transformer, Path(tmp), LORA_FILE, save_dtype)
        os.replace(Path(tmp) / LORA_FILE, lora_path)
    state = get_peft_model_state_dict(transformer, adapter_name=ADAPTER_NAME)
    state = {k: v.to(save_dtype) for k, v in state.items()}
    kohya_path = save_kohya(output_dir / KOHYA_FILE, state, metadata["alpha"], metadata["rank"],
                            metadata={"ss_trigger": metadata["trigger"]})
    return {
        "lora": lora_path,
        "kohya": kohya_path,
        "metadata": write_text(output_dir / "metadata.json", json.dumps(metadata, indent=2)),
        "card": write_text(output_dir / "README.md", model_card(metadata)),
    }


def save_diffusers_lora(transformer, folder: Path, weight_name: str, save_dtype: torch.dtype) -> None:
    state = get_peft_model_state_dict(transformer, adapter_name=ADAPTER_NAME)
    state = {k: v.detach().to(device="cpu", dtype=save_dtype).contiguous() for k, v in state.items()}
    FluxPipeline.save_lora_weights(
        str(folder),
        transformer_lora_layers=state,
        transformer_lora_adapter_metadata=transformer.peft_config[ADAPTER_NAME].to_dict(),
        weight_name=weight_name,
    )


def base_model_id(pipe) -> str | None:
    for source in (pipe, getattr(pipe, "transformer", None)):
        config = getattr(source, "config", None)
        name = getattr(config, "_name_or_path", None) if config is not None else None
        if not name and isinstance(config, dict):
            name = config.get("_name_or_path")
        if name:
            return str(name)
    return None


def write_text(path: Path, text: str) -> Path:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path


def model_card(meta: dict) -> str:
    trigger = meta["trigger"]
    base = meta["base_model"] or "black-forest-labs/FLUX.1-dev"
    return f"""# {trigger} - FLUX.1 LoRA

Trained with LoRA Studio on {meta['images']} images of one character.

- **Trigger word:** `{trigger}` - put it in every prompt.
- Base model: `{base}`
- Steps {meta['steps']}, rank {meta['rank']}, alpha {meta['alpha']:g}, learning rate {meta['learning_rate']:g}, \
{meta['resolution']} px, memory mode `{meta['memory_mode']}`.
- Final loss (smoothed): {meta['final_loss'] if meta['final_loss'] is None else round(meta['final_loss'], 4)}
- Recommended strength: start at 1.0 and try 0.8-1.2.

## Files
- `{LORA_FILE}` - diffusers format (with its LoRA config, so `lora_alpha` reloads correctly).
- `{KOHYA_FILE}` - kohya / sd-scripts naming (`lora_unet_double_blocks_...`), for ComfyUI, Forge and
  other tools.

## diffusers
```python
import torch
from diffusers import FluxPipeline

pipe = FluxPipeline.from_pretrained("{base}", torch_dtype=torch.bfloat16).to("cuda")
pipe.load_lora_weights("path/to/this/folder", weight_name="{LORA_FILE}", adapter_name="{trigger}")
pipe.set_adapters(["{trigger}"], [1.0])
image = pipe("{trigger}, portrait photo", num_inference_steps=28, guidance_scale=3.5).images[0]
```

## ComfyUI
Copy `{KOHYA_FILE}` (or `{LORA_FILE}`) into `ComfyUI/models/loras/`, add a **LoraLoaderModelOnly**
node after the FLUX.1 model loader, pick the file and set `strength_model` to 1.0.

## Forge
Copy `{KOHYA_FILE}` into `models/Lora/` and write `<lora:{Path(KOHYA_FILE).stem}:1>` in the prompt,
together with the trigger word `{trigger}`.
"""
