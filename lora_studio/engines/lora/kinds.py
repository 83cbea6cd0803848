"""Which model family a LoRA file was made for, read from its header alone (no torch, no weights).

A FLUX.1 LoRA on a FLUX.2 [klein] transformer (or the reverse) would fail on load with a shape error,
or worse, load a few matching attention layers and silently do something else: both are 3072 wide at
4 B. So the family is read first and a mismatch is refused in words naming both families.

What tells them apart, in the order it is trusted:
  - metadata: kohya's `ss_base_model_version` / `modelspec.architecture` ("flux2_klein", "flux-1-dev").
  - module names (diffusers, kohya-style or ComfyUI): Klein's fused single-block input `to_qkv_mlp_proj`
    and SwiGLU `linear_in/out`; FLUX.1's `proj_mlp`, `ff.net.*`, per-block modulation (`norm1.linear`,
    `img_mod`, `modulation`) and separate single-block q/k/v.
  - shapes of BFL-named fused layers: a single block's `linear1` is (3 + 2 x 3) = 9x its width on Klein
    (q, k, v and a SwiGLU pair at ratio 3) and (3 + 4) = 7x on FLUX.1; `img_mlp_0` 6x and 4x.
Attention-only files in BFL names have none of these: they are left unknown (None) and the shape
check against the model decides.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

KLEIN, FLUX1 = "flux2-klein", "flux1"
_KLEIN_NAMES = ("to_qkv_mlp_proj", "ff_linear_in", "ff_linear_out", "ff_context_linear_in", "ff_context_linear_out")
# FLUX.1 only: GELU MLPs, per-block modulation (Klein's is global), single blocks' own q/k/v
_FLUX1_NAMES = re.compile(r"proj_mlp|ff_net_\d|ff_context_net_\d|transformer_blocks_\d+_norm1(_context)?_linear"
                          r"|single_transformer_blocks_\d+_norm_linear|single_blocks_\d+_modulation_lin"
                          r"|double_blocks_\d+_(img|txt)_mod_lin|single_transformer_blocks_\d+_attn_to_[qkv]_")
_DOWN = re.compile(r"(lora_A|lora_down|lora\.down)")


def lora_family_of(header: dict) -> str | None:
    """"flux1", "flux2-klein" or None (not told apart) for a safetensors header {key: {"shape": …}, "__metadata__"}."""
    metadata = header.get("__metadata__") or {}
    said = f"{metadata.get('ss_base_model_version', '')} {metadata.get('modelspec.architecture', '')}".lower()
    if "klein" in said:
        return KLEIN
    if "flux1" in said or "flux-1" in said:
        return FLUX1
    config = str(metadata.get("lora_adapter_metadata", ""))
    if "to_qkv_mlp_proj" in config or "linear_in" in config:
        return KLEIN
    keys = [k for k in header if k != "__metadata__"]
    flat = [k.replace(".", "_") + "_" for k in keys]
    if any(name in key for key in flat for name in _KLEIN_NAMES):
        return KLEIN
    if any(_FLUX1_NAMES.search(key) for key in flat):
        return FLUX1
    return _by_fused_widths(header, keys)


def _by_fused_widths(header: dict, keys: list[str]) -> str | None:
    """A BFL-named fused layer's output width over its input width: Klein's ratios or FLUX.1's."""
    ratios = {"linear1": {9: KLEIN, 7: FLUX1}, "img_mlp_0": {6: KLEIN, 4: FLUX1}, "img_mlp.0": {6: KLEIN, 4: FLUX1}}
    for key in keys:
        for name, verdicts in ratios.items():
            if name not in key or not _DOWN.search(key):
                continue
            up = _partner(key, keys)
            down_shape, up_shape = _shape(header, key), _shape(header, up) if up else None
            if not down_shape or not up_shape or len(down_shape) != 2 or len(up_shape) != 2 or not down_shape[1]:
                continue
            ratio = up_shape[0] / down_shape[1]
            if ratio == int(ratio) and int(ratio) in verdicts:
                return verdicts[int(ratio)]
    return None


def _partner(down_key: str, keys: list[str]) -> str | None:
    for a, b in (("lora_A", "lora_B"), ("lora_down", "lora_up"), ("lora.down", "lora.up")):
        if a in down_key and down_key.replace(a, b) in keys:
            return down_key.replace(a, b)
    return None


def _shape(header: dict, key: str | None):
    entry = header.get(key) if key else None
    return entry.get("shape") if isinstance(entry, dict) else None


def read_header(path: Path) -> dict:
    """A safetensors file's header as a dict, without reading a tensor ({} when unreadable: the format
    checks say why)."""
    try:
        with open(path, "rb") as handle:
            size = int.from_bytes(handle.read(8), "little")
            if not 0 < size <= 100 * 1024 * 1024:
                return {}
            header = json.loads(handle.read(size))
    except (OSError, ValueError):
        return {}
    return header if isinstance(header, dict) else {}


def lora_family(path: Path) -> str | None:
    """The family a LoRA file was made for (None when its header cannot tell)."""
    return lora_family_of(read_header(Path(path)))


def mismatch_text(lora: str, model: str, model_id: str = "") -> str:
    """The refusal for a LoRA of one family offered to a model of another, naming both."""
    from ..family import family_named

    made, here = family_named(lora).title, family_named(model).title
    where = f" ({model_id})" if model_id else ""
    return (f"This is a {made} LoRA, and the model here is {here}{where}: a LoRA only works on the model family "
            f"it was trained for. Use it with a {made} model (Settings → Engine), or train a {here} LoRA.")
