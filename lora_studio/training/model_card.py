"""The model card (README.md) beside a trained LoRA: per tool, the file to use and the strength to use it at.

Both files the app writes carry scale 1 in every loader (see training/outputs.py), so one strength
means the same in diffusers, ComfyUI, Forge/A1111 and ai-toolkit: the strength tester's
recommendation when a test has run, else 1.0, said as untested. Kept free of torch so the library
can rewrite the card when a strength test finishes.
"""
from __future__ import annotations

from pathlib import Path

from ..engines import family
from ..engines.local import DEV_HUB_ID, RANDOM_WEIGHTS

LORA_FILE = "lora.safetensors"
KOHYA_FILE = "lora_kohya.safetensors"


def strength_line(strength: float | None, tested: bool = False) -> tuple[float, str]:
    """The strength to write in every tool's example, and where it comes from, in words."""
    if strength is None and tested:
        return 1.0, ("1.0 - the strength test recommended none (see its reason in the Library tab); "
                     "try 0.8-1.2 and judge by eye.")
    if strength is None:
        return 1.0, ("1.0 - no strength test has run yet: run the Strength tester tab, then export again "
                     "for a measured recommendation (try 0.8-1.2 meanwhile).")
    return float(strength), f"{float(strength):g} - recommended by the strength tester."


EXAMPLE_BASE = {"flux1": DEV_HUB_ID, "flux2-klein": family.KLEIN_BASE_4B}  # what the examples name


def base_line(recorded: str | None, title: str = "FLUX.1", example: str = DEV_HUB_ID) -> str:
    """What the LoRA was trained on, in words: a built-in test model is named as one (its LoRAs draw
    noise anywhere else), and a base the training did not record is not guessed."""
    if recorded in RANDOM_WEIGHTS:
        return (f"`{recorded}`, LoRA Studio's built-in test model with random weights: this LoRA proves the "
                f"plumbing and is of no use with any real {title} model (the examples below name {example}).")
    if not recorded:
        return f"not recorded by the training (a {title} model; the examples below name {example})"
    return f"`{recorded}`"


def _number(meta: dict, key: str) -> str:
    value = meta.get(key)
    return f"{value:g}" if isinstance(value, (int, float)) and not isinstance(value, bool) else "?"


def model_card(meta: dict, strength: float | None = None, tested: bool = False) -> str:
    """The card for a LoRA trained with `meta` (training metadata), at the strength the tester
    recommended (None: untested, or `tested` without a recommendation)."""
    trigger = meta.get("trigger") or "your trigger word"
    recorded = meta.get("base_model")
    known = family.checkpoint(recorded) if recorded else None
    kind = family.family_named(meta.get("family") or (known.family if known else "flux1"))
    pipeline = kind.pipeline_classes[0]
    defaults = kind.defaults(bool(known and known.distilled))
    # The examples need a real model; the base line says what was recorded (a test model, or nothing).
    base = recorded if recorded and recorded not in RANDOM_WEIGHTS else EXAMPLE_BASE.get(kind.key, DEV_HUB_ID)
    licence = f"\n- Base model licence: {known.licence_text()}" if known else ""
    if known and known.sibling and not known.distilled:  # trained on a Klein base: drawn on the distilled one
        licence += (f"\n- Trained on the base checkpoint; LoRA Studio draws with it on `{known.sibling}` (the "
                    f"distilled one, {kind.distilled_defaults.steps} steps, no guidance): load it there the same way "
                    f"with `num_inference_steps={kind.distilled_defaults.steps}`. The strength tester's sweep on both "
                    "checkpoints shows whether the strength carries over.")
    value, said = strength_line(strength, tested)
    loss = meta.get("final_loss")
    kohya_stem = Path(KOHYA_FILE).stem
    return f"""# {trigger} - {kind.title} LoRA

Trained with LoRA Studio on {meta.get('images', '?')} images of one character.

- **Trigger word:** `{trigger}` - put it in every prompt.
- Base model: {base_line(recorded, kind.title, base)}{licence}
- Steps {meta.get('steps', '?')}, rank {meta.get('rank', '?')}, alpha {_number(meta, 'alpha')}, learning rate \
{_number(meta, 'learning_rate')}, {meta.get('resolution', '?')} px, memory mode `{meta.get('memory_mode', '?')}`.
- Final loss (smoothed): {loss if not isinstance(loss, (int, float)) else round(loss, 4)}
- **Strength: {said}**

## Which file, at which strength

| tool | file | strength |
|---|---|---|
| diffusers | `{LORA_FILE}` | `set_adapters(..., [{value:g}])` |
| ComfyUI | `{KOHYA_FILE}` (or `{LORA_FILE}`) | `strength_model` {value:g} |
| Forge / A1111 | `{KOHYA_FILE}` | `<lora:{kohya_stem}:{value:g}>` |
| ai-toolkit | `{LORA_FILE}` | network weight {value:g} |

The training's alpha/rank scale is folded into the weights of both files and each records alpha =
rank (`lora_adapter_metadata` in `{LORA_FILE}`, `.alpha` tensors in `{KOHYA_FILE}`), so a tool that
reads alpha and one that ignores it apply the same update: a strength means the same everywhere.

## diffusers
```python
import torch
from diffusers import {pipeline}

pipe = {pipeline}.from_pretrained("{base}", torch_dtype=torch.bfloat16).to("cuda")
pipe.load_lora_weights("path/to/this/folder", weight_name="{LORA_FILE}", adapter_name="{trigger}")
pipe.set_adapters(["{trigger}"], [{value:g}])
image = pipe(prompt="{trigger}, portrait photo", num_inference_steps={defaults.steps}, \
guidance_scale={defaults.guidance:g}).images[0]
```

## ComfyUI
Copy `{KOHYA_FILE}` into `ComfyUI/models/loras/`, add a **LoraLoaderModelOnly** node after the
{kind.title} model loader, pick the file and set `strength_model` to {value:g}.

## Forge / A1111
Copy `{KOHYA_FILE}` into `models/Lora/` and write `<lora:{kohya_stem}:{value:g}>` in the prompt,
together with the trigger word `{trigger}`.

## ai-toolkit
Give `{LORA_FILE}` as a LoRA to sample with (or to continue from) at weight {value:g}.
"""
