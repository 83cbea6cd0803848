"""Block-level offloading that works for training: only the running block's frozen weights are on the GPU.

diffusers' group offloading (`hooks.apply_group_offloading`, block_level) onloads a block in a forward
pre-hook and offloads it in the post-hook. That fits inference but not training with gradient
checkpointing: the backward pass recomputes each block, torch's non-reentrant checkpoint stops that
recomputation as soon as it has the tensors it needs, the post-hook never runs, and by the end of the
backward pass every block is back on the GPU (tests/test_memory_offload.py shows it on the CPU).

Here the pre-hook does all the work: a block that starts running (forward, or recomputed during the
backward pass) first releases whichever other block is resident, then brings its own frozen weights
over. Blocks run one after another in both directions, so one block's frozen weights are on the GPU at
a time. Trainable tensors (the LoRA) never move: they stay on the GPU with their gradients and the
optimizer state. Each frozen tensor keeps a master copy on the CPU (pinned for CUDA, so onloading is an
asynchronous copy) and releasing a block only drops its GPU copy. Everything outside the blocks
(embedders, final layers) is moved to the GPU once.

With gradients flowing this needs gradient checkpointing: without it autograd would keep references
to released weights for the backward pass. bitsandbytes 4-bit weights keep their (small) quantization
state on the GPU for the whole run; only the packed weights travel.
"""
from __future__ import annotations

from functools import partial
from typing import Sequence

import torch


class BlockOffloader:
    """Keeps `blocks` (children of `root`) on the CPU and brings each to `device` only while it runs."""

    def __init__(self, root: torch.nn.Module, blocks: Sequence[torch.nn.Module], device: torch.device | str) -> None:
        self.root = root
        self.blocks = list(blocks)
        self.device = torch.device(device)
        self.pin = self.device.type == "cuda"
        self.onloads = 0  # how many times a block was brought over (tests and benches read it)
        self.resident: int | None = None
        self._frozen: list[list[tuple[torch.Tensor, torch.Tensor, torch.device]]] = []
        self._outside: list[tuple[torch.nn.Module, torch.device]] = []
        self._quant_states: list[tuple[object, torch.device]] = []
        self._hooks: list = []

    # ---- attaching and detaching --------------------------------------------------------------
    def attach(self) -> "BlockOffloader":
        inside = {id(m) for block in self.blocks for m in block.modules()}
        for module in self.root.modules():
            tensors = [*module._parameters.values(), *module._buffers.values()]
            if id(module) in inside or not any(t is not None for t in tensors):
                continue
            origin = next(t.device for t in tensors if t is not None)
            self._outside.append((module, origin))
            module._apply(lambda t: t.to(self.device), recurse=False)
        for index, block in enumerate(self.blocks):
            frozen = []
            for tensor in _tensors(block):
                if isinstance(tensor, torch.nn.Parameter) and tensor.requires_grad:
                    tensor.data = tensor.data.to(self.device)  # trainable: lives on the GPU
                    continue
                state = getattr(tensor, "quant_state", None)
                if state is not None and hasattr(state, "to"):
                    self._quant_states.append((state, tensor.device))
                    state.to(self.device)
                master = tensor.data.to("cpu")
                if self.pin:
                    master = master.pin_memory()
                frozen.append((tensor, master, tensor.device))
                tensor.data = self._released(master)
            self._frozen.append(frozen)
            self._hooks.append(block.register_forward_pre_hook(partial(self._enter, index)))
        return self

    def detach(self) -> None:
        """Remove the hooks and put every tensor back on the device it had before `attach`."""
        for hook in self._hooks:
            hook.remove()
        for frozen in self._frozen:
            for tensor, master, origin in frozen:
                tensor.data = master.to(origin)
        for state, origin in self._quant_states:
            state.to(origin)
        for module, origin in self._outside:
            module._apply(lambda t, origin=origin: t.to(origin), recurse=False)
        self._hooks, self._frozen, self._outside, self._quant_states = [], [], [], []
        self.resident = None

    def __enter__(self) -> "BlockOffloader":
        return self.attach()

    def __exit__(self, *exc) -> None:
        self.detach()

    # ---- the swap ------------------------------------------------------------------------------
    def _enter(self, index: int, module, args) -> None:
        if self.resident == index:
            return
        if self.resident is not None:
            for tensor, master, _ in self._frozen[self.resident]:
                tensor.data = self._released(master)
        for tensor, master, _ in self._frozen[index]:
            tensor.data = self._onloaded(master)
        self.resident = index
        self.onloads += 1

    def _onloaded(self, master: torch.Tensor) -> torch.Tensor:
        return master.to(self.device, non_blocking=self.pin)

    def _released(self, master: torch.Tensor) -> torch.Tensor:
        return master


def _tensors(module: torch.nn.Module) -> list[torch.Tensor]:
    return [t for m in module.modules() for t in [*m._parameters.values(), *m._buffers.values()] if t is not None]


def flux_blocks(transformer: torch.nn.Module) -> list[torch.nn.Module]:
    """A FLUX transformer's double-stream then single-stream blocks, in the order they run."""
    return [*transformer.transformer_blocks, *transformer.single_transformer_blocks]
