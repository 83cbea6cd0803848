"""Borrowing the model manager's pipeline for training, and giving it back exactly as it was.

There is one copy of FLUX.1 in memory, so training does not load its own: it takes the pipeline the
model manager holds, notes its state (devices, adapters and whether they were active, gradient
checkpointing, progress bar), and `restore()` puts every piece back in a `finally`, so inference
after a training, even a failed one, sees the same modules, in eval mode, without gradients.
"""
from __future__ import annotations

import torch

from ..engines.memory import PIPELINE_COMPONENTS, is_quantized
from .flow_matching import ADAPTER_NAME


class PipelineLease:
    """Records the pipeline's state before training and puts it back afterwards."""

    COMPONENTS = PIPELINE_COMPONENTS

    def __init__(self, pipe) -> None:
        self.pipe = pipe
        self.transformer = pipe.transformer
        modules = {name: getattr(pipe, name, None) for name in self.COMPONENTS}
        self.modules = {name: m for name, m in modules.items() if isinstance(m, torch.nn.Module)}
        self.devices = {name: module_device(m) for name, m in self.modules.items()}
        tr = self.transformer
        if ADAPTER_NAME in (getattr(tr, "peft_config", None) or {}):  # left over by an interrupted run
            tr.delete_adapters(ADAPTER_NAME)
            if not tr.peft_config:
                tr.unload_lora()
                tr._hf_peft_config_loaded = False
        self.peft_flag = getattr(tr, "_hf_peft_config_loaded", None)
        self.had_adapters = bool(getattr(tr, "peft_config", None)) and bool(self.peft_flag)
        self.active = _as_list(tr.active_adapters()) if self.had_adapters else []
        self.adapters_disabled = self.had_adapters and _adapters_disabled(tr)
        self.checkpointing = bool(getattr(tr, "is_gradient_checkpointing", False))
        self.progress_config = getattr(pipe, "_progress_bar_config", None)
        self.adapter_added = False

    def device_of(self, name: str) -> torch.device | None:
        module = self.modules.get(name)
        return None if module is None else module_device(module)

    def move(self, name: str, device: torch.device | None) -> None:
        module = self.modules.get(name)
        if module is None or device is None or is_quantized(module) or module_device(module) == device:
            return
        module.to(device)

    def move_encoders(self, device: torch.device) -> None:
        for name in ("vae", "text_encoder", "text_encoder_2"):
            self.move(name, device)

    def prepare_for_training(self) -> None:
        self.pipe.set_progress_bar_config(disable=True)
        for module in self.modules.values():
            module.requires_grad_(False)

    def restore(self) -> None:
        tr = self.transformer
        try:
            if self.adapter_added or ADAPTER_NAME in (getattr(tr, "peft_config", None) or {}):
                if self.had_adapters:
                    if self.active:
                        tr.set_adapter(self.active)
                    tr.delete_adapters(ADAPTER_NAME)
                    if self.adapters_disabled:
                        tr.disable_adapters()
                    else:
                        tr.enable_adapters()
                else:
                    tr.unload_lora()  # unwraps every peft layer: the module tree is the base again
                    if self.peft_flag is not None:
                        tr._hf_peft_config_loaded = self.peft_flag
        finally:
            if not self.checkpointing and getattr(tr, "is_gradient_checkpointing", False):
                tr.disable_gradient_checkpointing()
            for name, module in self.modules.items():
                self.move(name, self.devices[name])
                module.eval()
                module.requires_grad_(False)
            if self.progress_config is None:
                if hasattr(self.pipe, "_progress_bar_config"):
                    del self.pipe._progress_bar_config
            else:
                self.pipe._progress_bar_config = self.progress_config


def module_device(module: torch.nn.Module) -> torch.device:
    for tensor in module.parameters():
        return tensor.device
    return torch.device("cpu")


def _as_list(value) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


def _adapters_disabled(transformer) -> bool:
    from peft.tuners.tuners_utils import BaseTunerLayer

    for module in transformer.modules():
        if isinstance(module, BaseTunerLayer):
            return bool(module.disable_adapters)
    return False
