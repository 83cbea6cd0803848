"""GPU memory: the modes a training can run in, and what each needs, counted from the model.

    plan.py  memory modes as one typed plan: which fits, how the base is loaded, what to try after OOM
    need.py  the bytes a LoRA training needs, from the transformer's own parameter counts

Importing the package loads nothing: each name loads its module on first use (lora_studio.lazy).
"""
from __future__ import annotations

from ...lazy import lazy_exports

_EXPORTS = {
    **dict.fromkeys((
        "MODES", "LADDER", "QUANTIZED_MODES", "PIPELINE_COMPONENTS", "MemoryPlan", "plan_need",
        "estimated_need_gb", "plan_for", "lighter_mode", "gpu_memory_bytes", "describe_plans",
        "base_quantization", "idle_transformer_note", "library_available", "require_support",
        "quantization_config", "is_quantized", "plan_for_pipeline", "is_out_of_memory", "_HEADROOM"), "plan"),
    **dict.fromkeys(("MemoryNeed", "training_need", "transformer_counts", "encoder_counts",
                     "weight_bytes", "t5_block_list"), "need"),
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
