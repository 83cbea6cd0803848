"""One strength everywhere: every file the app writes or imports applies the update its LoRA was meant to.

Each tool's loader rule is re-implemented here, compactly, from that tool's own code:

- ComfyUI (comfy/lora.py `model_lora_keys_unet`, comfy/utils.py `flux_to_diffusers`,
  comfy/weight_adapter/lora.py): a LoRA key maps to a model weight, possibly a row range of a fused
  one (q, k, v at rows 0/H/2H of `img_attn.qkv` and `linear1`, proj_mlp at 3H..7H of `linear1`);
  it reads tensors only: `up @ down * (alpha_tensor / down.shape[0])`, or `* 1.0` with no `.alpha`.
- diffusers: the peft config in `lora_adapter_metadata` (`lora_alpha`/`r`, with rank/alpha patterns).
- kohya / sd-scripts (Forge, A1111): `lora_unet_*` names only; `.alpha / dim`, alpha = dim without one.
- ai-toolkit (toolkit/lora_special.py, network_mixins.py): Flux LoRAs in peft names, alpha forced to
  the rank and `.alpha` keys skipped on load: scale 1.

For ranks 8, 16 and 32 with the presets' alphas (16 and 32) the update each rule reads from each
exported file must equal the one the app's adapter applied while training and sampling.
"""
from __future__ import annotations

import json
import re

import pytest
import torch
from peft import LoraConfig
from peft.tuners.lora import LoraLayer
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from lora_studio.config import Settings
from lora_studio.jobs import UserError
from lora_studio.services.training_jobs import TrainOptions
from lora_studio.studio import Studio
from lora_studio.training.flow_matching import ADAPTER_NAME
from lora_studio.training.model_card import model_card
from tests.lora_factory import make_lora

RELATIVE = 1e-3
Patch = tuple  # (model weight, first row, up, down, scale)


# ---- where a diffusers module lands in the BFL model (ComfyUI's flux_to_diffusers) -------------------
def bfl_place(module: str, hidden: int) -> tuple[str, int, int | None]:
    """(BFL weight, first row, rows or None for all) of a diffusers transformer module."""
    kind, index, inner = module.split(".", 2)
    if kind == "transformer_blocks":
        fused = {"attn.to_q": ("img_attn.qkv", 0), "attn.to_k": ("img_attn.qkv", 1), "attn.to_v": ("img_attn.qkv", 2),
                 "attn.add_q_proj": ("txt_attn.qkv", 0), "attn.add_k_proj": ("txt_attn.qkv", 1),
                 "attn.add_v_proj": ("txt_attn.qkv", 2)}
        plain = {"attn.to_out.0": "img_attn.proj", "attn.to_add_out": "txt_attn.proj", "ff.net.0.proj": "img_mlp.0",
                 "ff.net.2": "img_mlp.2", "ff_context.net.0.proj": "txt_mlp.0", "ff_context.net.2": "txt_mlp.2",
                 "norm1.linear": "img_mod.lin", "norm1_context.linear": "txt_mod.lin"}
        prefix = f"double_blocks.{index}."
    else:
        fused = {"attn.to_q": ("linear1", 0), "attn.to_k": ("linear1", 1), "attn.to_v": ("linear1", 2)}
        plain = {"proj_out": "linear2", "norm.linear": "modulation.lin"}
        prefix = f"single_blocks.{index}."
        if inner == "proj_mlp":
            return prefix + "linear1", 3 * hidden, 4 * hidden
    if inner in fused:
        name, part = fused[inner]
        return prefix + name, part * hidden, hidden
    return prefix + plain[inner], 0, None


def kohya_name(bfl: str) -> str:
    return "lora_unet_" + bfl.replace(".", "_")


# ---- the loaders' rules --------------------------------------------------------------------------
def comfy_rule(sd: dict, modules: list[str], hidden: int) -> list[Patch]:
    """ComfyUI: diffusers names ("transformer.X") at their row offsets, kohya names on whole weights;
    alpha tensor / rank, else 1.0."""
    key_map = {f"transformer.{m}": bfl_place(m, hidden)[:2] for m in modules}
    key_map.update({kohya_name(bfl): (bfl, 0) for bfl, _, _ in (bfl_place(m, hidden) for m in modules)})
    patches = []
    for x, (bfl, row) in key_map.items():
        for up_key, down_key in ((".lora_up.weight", ".lora_down.weight"), (".lora_B.weight", ".lora_A.weight")):
            if x + up_key in sd:
                up, down = sd[x + up_key].float(), sd[x + down_key].float()
                scale = sd[x + ".alpha"].item() / down.shape[0] if x + ".alpha" in sd else 1.0
                patches.append((bfl, row, up, down, scale))
    return patches


def kohya_rule(sd: dict, modules: list[str], hidden: int) -> list[Patch]:
    """sd-scripts' create_network_from_weights (and Forge): lora_unet_ names, alpha/dim, alpha = dim if absent."""
    names = {kohya_name(bfl): bfl for bfl, _, _ in (bfl_place(m, hidden) for m in modules)}
    dims = {k.split(".")[0]: v.shape[0] for k, v in sd.items() if "lora_down" in k}
    alphas = {k.split(".")[0]: v.item() for k, v in sd.items() if k.endswith(".alpha")}
    return [(names[n], 0, sd[n + ".lora_up.weight"].float(), sd[n + ".lora_down.weight"].float(),
             alphas.get(n, dim) / dim) for n, dim in dims.items() if n in names]


def aitoolkit_rule(sd: dict, modules: list[str], hidden: int) -> list[Patch]:
    """ai-toolkit's Flux (peft-format) network: lora_A/lora_B on diffusers modules, alpha = rank."""
    return [(*bfl_place(m, hidden)[:2], sd[f"transformer.{m}.lora_B.weight"].float(),
             sd[f"transformer.{m}.lora_A.weight"].float(), 1.0)
            for m in modules if f"transformer.{m}.lora_A.weight" in sd]


def diffusers_rule(sd: dict, metadata: dict, modules: list[str], hidden: int) -> list[Patch]:
    """diffusers: the peft config saved as `lora_adapter_metadata` gives each module's alpha and r."""
    config = {k.removeprefix("transformer."): v for k, v in json.loads(metadata["lora_adapter_metadata"]).items()
              if k.startswith("transformer.")}

    def pick(pattern: dict, module: str, default):
        hits = [v for k, v in pattern.items() if re.search(rf"(^|\.){re.escape(k.lstrip('^'))}$", module)]
        return hits[0] if hits else default

    patches = []
    for m in modules:
        if f"transformer.{m}.lora_A.weight" in sd:
            r = pick(config.get("rank_pattern", {}), m, config["r"])
            alpha = pick(config.get("alpha_pattern", {}), m, config["lora_alpha"])
            patches.append((*bfl_place(m, hidden)[:2], sd[f"transformer.{m}.lora_B.weight"].float(),
                            sd[f"transformer.{m}.lora_A.weight"].float(), alpha / r))
    return patches


Factor = tuple  # (up, down, scale): the update up @ down * scale, never formed (FLUX's widths are large)


def block(patches: list[Patch], bfl: str, row: int, rows: int) -> list[Factor]:
    """The update `patches` make to rows [row, row + rows) of weight `bfl`, as factors."""
    found = []
    for name, start, up, down, scale in patches:
        if name != bfl or start + up.shape[0] <= row or start >= row + rows:
            continue
        assert start <= row and start + up.shape[0] >= row + rows, "a patch covers part of a module"
        found.append((up[row - start:row - start + rows], down, scale))
    assert found, f"nothing lands on {bfl} rows {row}+{rows}"
    return found


def inner(left: list[Factor], right: list[Factor]) -> float:
    """Frobenius inner product of two sums of low-rank updates, in float64 from their factors:
    <u1 d1, u2 d2> = sum((u1^T u2) * (d1 d2^T))."""
    total = 0.0
    for u1, d1, s1 in left:
        for u2, d2, s2 in right:
            total += s1 * s2 * ((u1.double().T @ u2.double()) * (d1.double() @ d2.double().T)).sum().item()
    return total


def relative_error(got: list[Factor], want: list[Factor]) -> float:
    """||got - want|| / ||want|| (Frobenius) of the two updates."""
    squared = inner(got, got) + inner(want, want) - 2 * inner(got, want)
    return max(squared, 0.0) ** 0.5 / inner(want, want) ** 0.5


def assert_same_updates(patches: list[Patch], wanted: dict[str, list[Factor]], hidden: int, what: str) -> None:
    for module, factors in wanted.items():
        bfl, row, _ = bfl_place(module, hidden)
        error = relative_error(block(patches, bfl, row, factors[0][0].shape[0]), factors)
        assert error < RELATIVE, f"{what}: {module} off by {error:.2e}"
    landed = {p[0] for p in patches}
    assert landed == {bfl_place(m, hidden)[0] for m in wanted}, f"{what}: updates land on other weights"


def adapter_updates(transformer, adapter: str) -> dict[str, list[Factor]]:
    """(B, A, scaling) of every LoRA layer of `adapter`: the update its forward applies."""
    return {name: [(layer.lora_B[adapter].weight.detach().float(), layer.lora_A[adapter].weight.detach().float(),
                    float(layer.scaling[adapter]))]
            for name, layer in transformer.named_modules() if isinstance(layer, LoraLayer) and adapter in layer.lora_A}


# ---- the exported files, on FLUX.1-dev's real widths ----------------------------------------------
CASES = [(rank, alpha) for rank in (8, 16, 32) for alpha in (16.0, 32.0)]


@pytest.mark.wide
@pytest.mark.parametrize("rank,alpha", CASES, ids=[f"r{r}-a{a:g}" for r, a in CASES])
def test_every_loader_applies_the_update_the_app_trained(wide, tmp_path, rank, alpha):
    from lora_studio.engines.lora.targets import target_modules
    from lora_studio.training.outputs import write_outputs

    transformer = wide.transformer
    hidden = transformer.config.num_attention_heads * transformer.config.attention_head_dim
    config = LoraConfig(r=rank, lora_alpha=alpha, init_lora_weights="gaussian",
                        target_modules=target_modules(transformer, True))
    transformer.add_adapter(config, adapter_name=ADAPTER_NAME)  # as the trainer adds it
    generator = torch.Generator().manual_seed(rank)
    with torch.no_grad():
        for name, param in transformer.named_parameters():
            if f".{ADAPTER_NAME}." in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.02)
    trained = adapter_updates(transformer, ADAPTER_NAME)  # what the samples and the tester were made with
    files = write_outputs(transformer, tmp_path, {"trigger": "ohwx", "rank": rank, "alpha": alpha}, torch.float32)
    wide.unload_lora_weights()
    modules = sorted(trained)

    diffusers_file, kohya_file = load_file(str(files["lora"])), load_file(str(files["kohya"]))
    with safe_open(str(files["lora"]), "pt") as handle:
        metadata = handle.metadata()
    for rule, name, state in ((comfy_rule, "ComfyUI", diffusers_file), (comfy_rule, "ComfyUI", kohya_file),
                              (kohya_rule, "kohya/Forge", kohya_file), (aitoolkit_rule, "ai-toolkit", diffusers_file)):
        assert_same_updates(rule(state, modules, hidden), trained, hidden, f"{name} on {len(state)} tensors")
    assert_same_updates(diffusers_rule(diffusers_file, metadata, modules, hidden), trained, hidden, "diffusers rule")

    # diffusers itself, on both files (its kohya reader splits the fused layers back): once, for the
    # issue's case (Standard's alpha 16 at rank 32), as loading at this width takes a while.
    for path in (files["lora"], files["kohya"]) if (rank, alpha) == (32, 16.0) else ():
        wide.load_lora_weights(str(path), adapter_name="probe")
        loaded = adapter_updates(transformer, "probe")
        wide.unload_lora_weights()
        assert sorted(loaded) == modules
        for module, factors in trained.items():
            assert relative_error(loaded[module], factors) < RELATIVE, (path.name, module)


# ---- imports: read as their authors meant, folded, shown ----------------------------------------------
def test_a_legacy_diffusers_file_imports_at_its_meant_strength(studio, tmp_path, tiny_pipe):
    """alpha 8 / rank 4 only in the metadata: ComfyUI would read it at half strength; after import the
    library's file gives every loader the update diffusers read from the original."""
    transformer = tiny_pipe.transformer
    targets = ["attn.to_q", "attn.to_k", "attn.to_v", "attn.to_out.0"]
    source = make_lora(transformer, tmp_path / "legacy.safetensors", targets, seed=3, rank=4, alpha=8.0)
    hidden = transformer.config.num_attention_heads * transformer.config.attention_head_dim
    tiny_pipe.load_lora_weights(str(source), adapter_name="meant")
    meant = adapter_updates(tiny_pipe.transformer, "meant")
    tiny_pipe.unload_lora_weights()
    modules = sorted(meant)
    original = load_file(str(source))
    assert comfy_rule(original, modules, hidden)[0][4] == 1.0  # tensors only: the legacy file reads 2x too weak

    record = studio.library.import_file(source, "legacy")
    stored = studio.library.path(record)
    assert (stored.parent / "original.safetensors").read_bytes() == source.read_bytes()
    scale = record["metadata"]["scale"]
    assert scale["text"].startswith("alpha 8 / rank 4 → ×2 folded") and scale["source"] == "metadata"
    state = load_file(str(stored))
    with safe_open(str(stored), "pt") as handle:
        metadata = handle.metadata()
    for rule, name in ((comfy_rule, "ComfyUI"), (aitoolkit_rule, "ai-toolkit")):
        assert_same_updates(rule(state, modules, hidden), meant, hidden, name)
    assert_same_updates(diffusers_rule(state, metadata, modules, hidden), meant, hidden, "diffusers rule")
    tiny_pipe.load_lora_weights(str(stored), adapter_name="stored")
    try:
        for module, factors in adapter_updates(tiny_pipe.transformer, "stored").items():
            assert relative_error(factors, meant[module]) < 1e-6
    finally:
        tiny_pipe.unload_lora_weights()


def test_kohya_and_ai_toolkit_files_keep_their_authors_scale(studio, tmp_path):
    g = torch.Generator().manual_seed(0)
    kohya = {}
    for stream in ("img", "txt"):  # the tiny model's double block 0, qkv fused, alpha 2 / rank 8
        prefix = f"lora_unet_double_blocks_0_{stream}_attn_qkv"
        kohya[f"{prefix}.lora_down.weight"] = torch.randn(8, 32, generator=g) * 0.3
        kohya[f"{prefix}.lora_up.weight"] = torch.randn(96, 8, generator=g) * 0.3
        kohya[f"{prefix}.alpha"] = torch.tensor(2.0)
    save_file(kohya, str(tmp_path / "kohya.safetensors"))
    record = studio.library.import_file(tmp_path / "kohya.safetensors", "kohya")
    assert record["metadata"]["scale"]["text"].startswith("alpha 2 / rank 8 → ×0.25 folded (from its .alpha")
    stored = load_file(str(studio.library.path(record)))
    modules = sorted(k.removeprefix("transformer.").removesuffix(".lora_A.weight") for k in stored if "lora_A" in k)
    wanted = {}
    for module in modules:  # kohya's rule on the original, row block by row block
        bfl, row, rows = bfl_place(module, 32)
        wanted[module] = block(kohya_rule(kohya, [module], 32), bfl, row, rows)
    assert len(wanted) == 6
    assert_same_updates(comfy_rule(stored, modules, 32), wanted, 32, "ComfyUI on the stored file")

    ai_toolkit = {f"transformer.transformer_blocks.0.attn.to_q.lora_{ab}.weight": torch.randn(*shape, generator=g)
                  for ab, shape in (("A", (4, 32)), ("B", (32, 4)))}  # peft names, no alpha: scale 1
    save_file(ai_toolkit, str(tmp_path / "aitk.safetensors"))
    plain = studio.library.import_file(tmp_path / "aitk.safetensors", "aitk")
    assert plain["metadata"]["scale"]["text"].startswith("alpha 4 / rank 4 → ×1, nothing to fold (no alpha")
    key, tensor = next(iter(ai_toolkit.items()))
    assert torch.equal(load_file(str(studio.library.path(plain)))[key], tensor)


def test_a_file_that_cannot_be_folded_is_kept_as_given_and_says_why(studio, tmp_path, tiny_pipe, caplog):
    """LoRA biases cannot be folded into plain LoRA weights: the file is stored as given (diffusers reads it
    at its meant strength), and the record, the library's scale text and the log all say it was not folded."""
    from lora_studio.services.library import scale_text

    source = make_lora(tiny_pipe.transformer, tmp_path / "plain.safetensors", ["attn.to_q", "attn.to_k"], seed=5,
                       rank=4, alpha=8.0)
    with safe_open(str(source), "pt") as handle:
        metadata = handle.metadata()
    state = load_file(str(source))
    for key in [k for k in state if k.endswith("lora_B.weight")]:
        state[key.replace("lora_B.weight", "lora_B.bias")] = torch.full((state[key].shape[0],), 0.1)
    save_file(state, str(tmp_path / "biased.safetensors"), metadata=metadata)

    with caplog.at_level("WARNING", logger="lora_studio.services.library"):
        record = studio.library.import_file(tmp_path / "biased.safetensors", "biased")
    stored = studio.library.path(record)
    assert stored.read_bytes() == (tmp_path / "biased.safetensors").read_bytes()
    assert not (stored.parent / "original.safetensors").exists()
    scale = record["metadata"]["scale"]
    assert scale["folded"] is False and "LoRA-with-bias" in scale["not_folded"]
    assert scale["text"].startswith("alpha 8 / rank 4 → ×2 (kept as is")
    assert "Not folded: DoRA, LoKr and LoRA-with-bias files cannot be folded" in scale_text(studio.library.get(record["id"]))
    assert any("biased.safetensors is kept unfolded" in r.getMessage() and "LoRA-with-bias" in r.getMessage()
               for r in caplog.records)


# ---- alpha as a setting ------------------------------------------------------------------------------
def test_alpha_defaults_to_the_presets_ratio_so_the_rank_alone_never_changes_the_scale(tmp_path):
    with Studio(Settings(workspace=tmp_path), start=False) as studio:
        def alpha(**typed):
            return studio.training.resolve(TrainOptions(name="x", trigger="t", **typed))["alpha"]

        assert alpha(preset="Standard") == 16 and alpha(preset="Standard", rank=32) == 32
        assert alpha(preset="Expert", rank=8) == 8 and alpha(preset="Beginner", rank=4, alpha=2) == 2
        studio.training.save_preset("Half", TrainOptions(name="", trigger="", steps=100, rank=16, alpha=8,
                                                         learning_rate=1e-4, resolution=64))
        assert studio.training.preset_fields("Half")["alpha"] == 8
        assert alpha(preset="Half") == 8 and alpha(preset="Half", rank=32) == 16  # its ratio, 1/2, is kept
        for bad in (0, -1, "x", float("nan"), 1000):
            with pytest.raises(UserError, match="Alpha"):
                alpha(preset="Standard", alpha=bad)
        assert studio.training.preset_fields("Standard")["alpha"] is None  # blank in the form: = rank


def test_replicate_trains_at_alpha_equal_to_rank_and_says_so(tmp_path):
    with Studio(Settings(engine="replicate", workspace=tmp_path), start=False) as studio:
        assert studio.training.resolve(TrainOptions(name="x", trigger="t", rank=32))["alpha"] == 32
        with pytest.raises(UserError, match="alpha = rank"):
            studio.training.resolve(TrainOptions(name="x", trigger="t", rank=32, alpha=16))


def test_cli_takes_alpha():
    from lora_studio.cli import build_parser

    args = build_parser().parse_args(["train", "folder", "--trigger", "t", "--name", "n", "--alpha", "8"])
    assert args.alpha == 8.0


# ---- the model card ------------------------------------------------------------------------------------
def test_the_card_names_file_and_strength_per_tool(studio):
    meta = {"trigger": "ohwx", "rank": 32, "alpha": 16.0, "steps": 10}
    untested = model_card(meta)
    assert "1.0 - no strength test has run yet" in untested
    tested = model_card(meta, 0.8)
    for line in ("| diffusers | `lora.safetensors` | `set_adapters(..., [0.8])` |",
                 "| ComfyUI | `lora_kohya.safetensors` (or `lora.safetensors`) | `strength_model` 0.8 |",
                 "| Forge / A1111 | `lora_kohya.safetensors` | `<lora:lora_kohya:0.8>` |",
                 "| ai-toolkit | `lora.safetensors` | network weight 0.8 |"):
        assert line in tested
    assert "recommended by the strength tester" in tested

    folder = studio.store.lora_dir("lora_cardtest")
    (folder / "README.md").write_text(untested)
    studio.store.insert("loras", dict(id="lora_cardtest", name="card", trigger="ohwx", source="trained",
                                      path="loras/lora_cardtest/README.md",
                                      files={"card": "loras/lora_cardtest/README.md"}, metadata=meta, scores={}))
    studio.library.set_scores("lora_cardtest", {"recommended_strength": 0.8, "verdict": "good", "reason": "."})
    assert (folder / "README.md").read_text() == tested
    studio.library.set_scores("lora_cardtest", {"recommended_strength": None, "verdict": "inert", "reason": "."})
    assert "the strength test recommended none" in (folder / "README.md").read_text()
