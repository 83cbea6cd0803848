"""GPU memory: the modes a training can run in, and what each needs, counted from the model.

    plan.py  memory modes as one typed plan: which fits, how the base is loaded, what to try after OOM
    need.py  the bytes a LoRA training or an image needs, from the model's own parameter counts
             (FLUX.1-dev, FLUX.2 [klein] 4 B and 9 B, or the loaded model)

Importing the package loads nothing: each name loads its module on first use (lora_studio.lazy).
"""
from __future__ import annotations

from ...lazy import lazy_exports

_EXPORTS = {
    **dict.fromkeys((
        "LADDER", "QUANTIZED_MODES", "PIPELINE_COMPONENTS", "MemoryPlan", "plan_need",
        "estimated_need_gb", "plan_for", "lighter_mode", "gpu_memory_bytes", "describe_plans",
        "base_quantization", "idle_transformer_note", "library_available", "require_support",
        "quantization_config", "is_quantized", "plan_for_pipeline", "_HEADROOM", "ARCHITECTURE_TITLES"), "plan"),
    **dict.fromkeys(("MemoryNeed", "training_need", "InferenceNeed", "inference_need",
                     "transformer_counts", "encoder_counts", "weight_bytes", "t5_block_list", "text_block_list",
                     "ARCHITECTURES", "is_klein_config", "download_bytes"), "need"),
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
