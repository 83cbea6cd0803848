"""Block offloading for the "lowvram" mode, exercised on the CPU with a tiny Flux of several blocks.

On the CPU the onload device is the CPU, so nothing really travels; to prove that a released block is
never read, the tests make "released" mean an empty tensor: any use of a released weight then fails.
"""
from __future__ import annotations

import math

import pytest
import torch
from diffusers import FluxPipeline, FluxTransformer2DModel
from peft import LoraConfig

from lora_studio.engines.lora.targets import target_modules
from lora_studio.training import block_offload
from lora_studio.training.block_offload import BlockOffloader, flux_blocks
from lora_studio.training.lease import PipelineLease

SIDE, TOKENS, WIDTH = 4, 5, 32


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def poisoned(monkeypatch):
    """Released blocks hold empty tensors, and every block entry checks that only one block is resident."""
    monkeypatch.setattr(BlockOffloader, "_released", lambda self, master: torch.empty(0, dtype=master.dtype))
    enter = BlockOffloader._enter

    def checked(self, index, module, args):
        enter(self, index, module, args)
        resident = [i for i, frozen in enumerate(self._frozen) if frozen and frozen[0][0].numel() > 0]
        assert resident == [index], f"blocks {resident} hold weights while block {index} runs"

    monkeypatch.setattr(BlockOffloader, "_enter", checked)


def deep_tiny_transformer() -> FluxTransformer2DModel:
    torch.manual_seed(0)
    model = FluxTransformer2DModel(
        patch_size=1, in_channels=4, num_layers=2, num_single_layers=3, attention_head_dim=16,
        num_attention_heads=2, joint_attention_dim=WIDTH, pooled_projection_dim=WIDTH, axes_dims_rope=[4, 4, 8],
        guidance_embeds=True,
    ).eval().requires_grad_(False)
    model.add_adapter(LoraConfig(r=4, lora_alpha=4, target_modules=target_modules(model, True),
                                 init_lora_weights="gaussian"))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.1)
    for name, param in model.named_parameters():
        param.requires_grad_("lora_" in name)
    model.enable_gradient_checkpointing()
    model.train()
    return model


def loss_and_grads(model) -> tuple[float, dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(1)
    out = model(
        hidden_states=torch.randn(1, SIDE * SIDE, 4, generator=g),
        encoder_hidden_states=torch.randn(1, TOKENS, WIDTH, generator=g),
        pooled_projections=torch.randn(1, WIDTH, generator=g), timestep=torch.tensor([0.4]),
        guidance=torch.tensor([1.0]), img_ids=FluxPipeline._prepare_latent_image_ids(1, SIDE, SIDE, "cpu", torch.float32),
        txt_ids=torch.zeros(TOKENS, 3), return_dict=False,
    )[0]
    loss = out.pow(2).mean()
    loss.backward()
    loss = loss.detach()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return loss.item(), grads


def test_block_offloader_trains_with_one_block_resident_and_the_same_gradients(poisoned):
    model = deep_tiny_transformer()
    loss, grads = loss_and_grads(model)
    offloader = BlockOffloader(model, flux_blocks(model), "cpu").attach()
    assert all(frozen[0][0].numel() == 0 for frozen in offloader._frozen)  # everything released at first
    for _ in range(2):  # two steps: forward, and the backward pass recomputing each block
        again, offloaded_grads = loss_and_grads(model)
        assert again == loss and offloaded_grads.keys() == grads.keys()
        for name, grad in grads.items():
            assert torch.equal(offloaded_grads[name], grad), name
    # step 1: 5 blocks forward + 4 recomputed (the last one is still resident); step 2 starts with
    # block 0, still resident from the end of the backward pass: 4 + 4
    assert offloader.onloads == 17
    offloader.detach()
    assert all(p.numel() > 0 for p in model.parameters())
    assert loss_and_grads(model)[0] == loss


def test_diffusers_group_offloading_keeps_recomputed_blocks_onloaded(monkeypatch):
    """Why lowvram does not use diffusers' group offloading for training: a step runs (on the CPU) and
    gives a finite loss, but the backward pass re-onloads every checkpointed block and never offloads
    it, so all blocks would be on the GPU at the end of the backward pass."""
    from diffusers.hooks import apply_group_offloading
    from diffusers.hooks import group_offloading

    model = deep_tiny_transformer()
    onloaded: dict[int, bool] = {}
    for name, state in (("onload_", True), ("offload_", False)):
        original = getattr(group_offloading.ModuleGroup, name)

        def traced(self, original=original, state=state):
            onloaded[id(self)] = state
            return original(self)

        monkeypatch.setattr(group_offloading.ModuleGroup, name, traced)
    apply_group_offloading(model, onload_device="cpu", offload_device="cpu", offload_type="block_level",
                           num_blocks_per_group=1)
    loss, grads = loss_and_grads(model)
    assert math.isfinite(loss) and grads
    assert sum(onloaded.values()) == len(flux_blocks(model))  # every block is still onloaded


def test_lease_runs_the_t5_block_by_block_with_the_same_embeddings(tiny_pipe, poisoned):
    expected = tiny_pipe.encode_prompt("a photo of mila", None, max_sequence_length=16)
    lease = PipelineLease(tiny_pipe)
    lease.move_encoders(torch.device("cpu"), blockwise_t5=True)
    assert lease.t5_blocks is not None and len(lease.t5_blocks.blocks) == 2
    got = tiny_pipe.encode_prompt("a photo of mila", None, max_sequence_length=16)
    for a, b in zip(got, expected):
        assert torch.equal(a, b)
    lease.move_encoders(torch.device("cpu"))  # back in whole: the offloader is gone
    assert lease.t5_blocks is None
    assert all(p.numel() > 0 for p in tiny_pipe.text_encoder_2.parameters())


def test_lease_takes_model_offload_hooks_off_and_puts_them_back(tiny_pipe):
    from accelerate import cpu_offload_with_hook

    hooks = {}
    previous = None
    for name in ("text_encoder", "text_encoder_2", "transformer", "vae"):  # the pipeline's offload order
        _, previous = cpu_offload_with_hook(getattr(tiny_pipe, name), "cpu", prev_module_hook=previous)
        hooks[name] = getattr(tiny_pipe, name)._hf_hook
    try:
        lease = PipelineLease(tiny_pipe)
        lease.take_offload_hooks()
        assert not any(hasattr(getattr(tiny_pipe, n), "_hf_hook") for n in hooks)
        lease.restore()
        assert {n: getattr(tiny_pipe, n)._hf_hook for n in hooks} == hooks
    finally:
        from accelerate.hooks import remove_hook_from_module

        for name in hooks:
            remove_hook_from_module(getattr(tiny_pipe, name))
    assert block_offload.flux_blocks(tiny_pipe.transformer)  # the tiny pipe is intact for other tests
