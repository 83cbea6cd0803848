"""Borrowing the model manager's pipeline for training, and giving it back exactly as it was.

There is one copy of FLUX.1 in memory, so training does not load its own: it takes the pipeline the
model manager holds, notes its state (devices, adapters and whether they were active, gradient
checkpointing, progress bar, model-offload hooks), and `restore()` puts every piece back in a
`finally`, so inference after a training, even a failed one, sees the same modules, in eval mode,
without gradients.

For the small-GPU modes the lease also places modules block by block (block_offload.py): the big text
encoder (FLUX.1's T5, Klein's Qwen3) while captions are encoded, the transformer's blocks while the LoRA
trains ("lowvram"). Those need the
pipeline's model-CPU-offload hooks (accelerate) out of the way, since they move whole models.
"""
from __future__ import annotations

import torch

from ..engines.memory import PIPELINE_COMPONENTS, is_quantized, text_block_list
from .block_offload import BlockOffloader, flux_blocks
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
        self.offload_hooks: dict[str, object] = {}  # accelerate hooks taken off, put back by restore()
        self.t5_blocks: BlockOffloader | None = None
        self.transformer_blocks: BlockOffloader | None = None

    def device_of(self, name: str) -> torch.device | None:
        module = self.modules.get(name)
        return None if module is None else module_device(module)

    def move(self, name: str, device: torch.device | None) -> None:
        module = self.modules.get(name)
        if module is None or device is None or is_quantized(module) or module_device(module) == device:
            return
        module.to(device)

    @property
    def big_text_encoder(self) -> str:
        """The text encoder that may not fit a small GPU whole: FLUX.1's T5 (text_encoder_2), else Klein's Qwen3."""
        return "text_encoder_2" if "text_encoder_2" in self.modules else "text_encoder"

    def move_encoders(self, device: torch.device, blockwise_t5: bool = False) -> None:
        """VAE and text encoders to `device`; with `blockwise_t5` the big text encoder goes block by block
        instead (a 4096-wide T5-XXL is 9.5 GB in bf16, Qwen3-4B 8 GB: more than a small GPU has)."""
        if self.t5_blocks is not None:
            self.t5_blocks.detach()
            self.t5_blocks = None
        big = self.modules.get(self.big_text_encoder)
        for name in ("vae", "text_encoder", "text_encoder_2"):
            if name == self.big_text_encoder and blockwise_t5 and big is not None and text_block_list(big):
                self.t5_blocks = BlockOffloader(big, text_block_list(big), device).attach()
            else:
                self.move(name, device)

    def offload_transformer_blocks(self, device: torch.device) -> BlockOffloader:
        """Transformer blocks on the CPU, each brought to `device` while it runs ("lowvram")."""
        self.transformer_blocks = BlockOffloader(self.transformer, flux_blocks(self.transformer), device).attach()
        return self.transformer_blocks

    def take_offload_hooks(self) -> None:
        """Take the pipeline's model-CPU-offload hooks off while modules are placed block by block."""
        from accelerate.hooks import remove_hook_from_module

        for name, module in self.modules.items():
            hook = getattr(module, "_hf_hook", None)
            if hook is not None:
                self.offload_hooks[name] = hook
                remove_hook_from_module(module)

    def prepare_for_training(self) -> None:
        self.pipe.set_progress_bar_config(disable=True)
        for module in self.modules.values():
            module.requires_grad_(False)

    def restore(self) -> None:
        tr = self.transformer
        try:
            for offloader in (self.transformer_blocks, self.t5_blocks):
                if offloader is not None:
                    offloader.detach()  # every weight back where it was, before the adapter goes
            self.transformer_blocks = self.t5_blocks = None
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
            if self.offload_hooks:
                from accelerate.hooks import add_hook_to_module

                for name, hook in self.offload_hooks.items():
                    add_hook_to_module(self.modules[name], hook)  # its init moves the model back to the CPU
                self.offload_hooks = {}


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
