"""Train a FLUX.1 LoRA on the model manager's own pipeline: the flow-matching loop, top to bottom.

`train_lora(pipe, request, reporter)` borrows `pipe.transformer` (no second copy of the base), adds a
peft adapter named "lora_studio_training", trains it, writes the files, and removes the adapter again
in a `finally`, so the pipeline leaves exactly as it came: same modules, eval mode, no gradients,
same devices and dtypes, and any inference LoRAs it held active again (they are switched off while
training).

The recipe follows diffusers' Flux DreamBooth-LoRA example:

    x      = cached VAE latent mean, already (latent - shift_factor) * scaling_factor
    noise  ~ N(0, I)
    u      ~ density(weighting scheme)           (logit-normal(0, 1) here, the SD3 paper's choice)
    sigma  = scheduler sigma table at u          (FLUX.1-dev's FlowMatchEuler table, unshifted)
    x_t    = (1 - sigma) * x + sigma * noise     packed into 2x2 tokens
    pred   = transformer(x_t, timestep=sigma*1000/1000, guidance=1.0, cached text embeddings)
    loss   = weight(sigma) * |unpack(pred) - (noise - x)|^2    (mean over pixels, then batch)

then grad-norm clipping at 1.0 and an AdamW step (bitsandbytes AdamW8bit on CUDA when installed).
LoRA parameters are kept in float32; on CUDA the forward runs under bf16 autocast. Every random draw
of the loop (noise, timesteps) comes from one `torch.Generator` seeded with `request.seed`, and the
batch order is a pure function of (seed, step) (see dataset.BatchSchedule), so on the CPU a run is
deterministic and a resumed run ends on the same weights as an uninterrupted one.

Files (see `train_lora`'s docstring for the layout) are written atomically: a temporary name, then
`os.replace`.
"""
from __future__ import annotations

import gc
import hashlib
import json
import math
import os
import shutil
import statistics
import tempfile
import time
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import torch
from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline
from diffusers.training_utils import compute_density_for_timestep_sampling, compute_loss_weighting_for_sd3
from peft import LoraConfig
from peft.utils import get_peft_model_state_dict, set_peft_model_state_dict

from ..engines.base import EngineError, OutOfMemory, TrainRequest, TrainResult
from ..progress import Canceled, Reporter
from . import checkpoints as ckpt
from .dataset import (
    BatchSchedule,
    Bucket,
    EmbeddingCache,
    TextEmbedding,
    assign_buckets,
    bucket_multiple,
    dataset_hash,
    load_examples,
    make_buckets,
    module_fingerprint,
)
from .kohya_export import save_kohya
from .memory import GB, MemoryPlan, is_quantized, lighter_mode, plan_for, require_support

if TYPE_CHECKING:
    from PIL import Image

ADAPTER_NAME = "lora_studio_training"
LORA_FILE = "lora.safetensors"
KOHYA_FILE = "lora_kohya.safetensors"

ATTENTION_MODULES = (
    "attn.to_q", "attn.to_k", "attn.to_v", "attn.to_out.0",
    "attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj", "attn.to_add_out",
)
MLP_MODULES = ("ff.net.0.proj", "ff.net.2", "ff_context.net.0.proj", "ff_context.net.2")
SINGLE_MLP_MODULES = ("proj_mlp", "proj_out")  # single-stream blocks: MLP in, fused attn+MLP out

WEIGHTING_SCHEME = "logit_normal"
TRAIN_GUIDANCE = 1.0  # the guidance embedding input while training (diffusers' examples use 1)
SAMPLE_GUIDANCE = 3.5  # FLUX.1-dev's usual inference guidance
MAX_GRAD_NORM = 1.0
ADAM_BETAS = (0.9, 0.999)
ADAM_WEIGHT_DECAY = 1e-4
ADAM_EPS = 1e-8
EMA_BETA = 0.95
KEEP_LAST_CHECKPOINTS = 2
FORMAT_VERSION = 1  # bump when a change makes old checkpoints unfit to resume


def target_modules(transformer: torch.nn.Module, train_mlp: bool) -> list[str]:
    """Full names of the linears that get a LoRA: attention everywhere, plus the MLPs if asked.

    Full names, not suffixes: "proj_out" as a suffix would also catch the model's final projection.
    """
    from peft.tuners.tuners_utils import BaseTunerLayer

    names = []
    for name, module in transformer.named_modules():
        if isinstance(module, BaseTunerLayer):  # already wrapped by an inference LoRA
            module = module.get_base_layer()
        elif ".base_layer" in name or ".lora_" in name:
            continue
        if not isinstance(module, torch.nn.Linear):
            continue
        parts = name.split(".", 2)
        if len(parts) < 3 or not parts[1].isdigit():
            continue
        block, inner = parts[0], parts[2]
        if block == "transformer_blocks":
            if inner in ATTENTION_MODULES or (train_mlp and inner in MLP_MODULES):
                names.append(name)
        elif block == "single_transformer_blocks":
            if inner in ATTENTION_MODULES or (train_mlp and inner in SINGLE_MLP_MODULES):
                names.append(name)
    return names


@dataclass
class _Loop:
    """What changes while training: the position, the loss curve and the best sample so far."""

    step: int = 0
    loss_ema: float | None = None
    last_loss: float | None = None
    best_step: int | None = None
    best_score: float | None = None
    saved_steps: set[int] = field(default_factory=set)
    step_seconds: list[float] = field(default_factory=list)
    peak_bytes: int = 0
    samples: list[str] = field(default_factory=list)


def train_lora(
    pipe: FluxPipeline,
    request: TrainRequest,
    reporter: Reporter,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    sample_scorer: Callable[["Image.Image"], float | None] | None = None,
) -> TrainResult:
    """Train a LoRA on `request.dataset_dir` and write it to `request.output_dir`.

    output_dir/  lora.safetensors (diffusers format + peft metadata), lora_kohya.safetensors,
                 metadata.json, README.md
    work_dir/    cache/latents/*.safetensors, cache/text/*.safetensors,
                 checkpoints/step_XXXXXX/ (see checkpoints.py), samples/step_XXXXXX.png

    Raises progress.Canceled (after saving a checkpoint), engines.base.OutOfMemory (naming a
    lighter memory mode) or EngineError for settings this machine cannot run.
    """
    started = time.perf_counter()
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    work_dir, output_dir = Path(request.work_dir), Path(request.output_dir)
    transformer = pipe.transformer

    # 1. Data: captions with the trigger, aspect buckets, the batch order.
    try:
        examples = load_examples(Path(request.dataset_dir), request.trigger)
    except (OSError, ValueError) as error:
        raise EngineError(f"Cannot read the training images: {error}") from error
    vae_scale = int(getattr(pipe, "vae_scale_factor", 8))
    buckets = make_buckets(request.resolution, bucket_multiple(vae_scale))
    groups = assign_buckets(examples, buckets)
    bucket_of: dict[int, Bucket] = {i: b for b, members in groups.items() for i in members}
    schedule = BatchSchedule(groups, request.batch_size, request.seed)
    sample_prompt = request.sample_prompt.strip() or f"{request.trigger}, portrait photo"

    # 2. Memory plan and the run's identity (what a checkpoint must match to be resumed).
    plan = _resolve_plan(request.memory_mode, pipe, device, request.resolution)
    rank = int(request.rank)
    alpha = float(request.alpha if request.alpha is not None else request.rank)
    targets = target_modules(transformer, request.train_mlp)
    if not targets:
        raise EngineError("The transformer has no attention layers to train a LoRA on.")
    data_hash = dataset_hash(examples)
    fingerprint = _fingerprint(request, rank, alpha, targets, data_hash, module_fingerprint(transformer))

    reporter.log(
        f"Training a LoRA for '{request.trigger}': {len(examples)} images in {len(groups)} aspect "
        f"bucket(s) ({', '.join(f'{b}: {len(m)}' for b, m in groups.items())}), {request.steps} steps, "
        f"rank {rank}, alpha {alpha:g}, learning rate {request.learning_rate:g}, batch {request.batch_size}, "
        f"{request.resolution} px, on {device} in {str(dtype).replace('torch.', '')}."
    )
    reporter.log(plan.explain())

    lease = _Lease(pipe)
    loop = _Loop()
    optimizer = None
    generator = torch.Generator("cpu").manual_seed(request.seed)
    checkpoints_dir = work_dir / "checkpoints"
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    try:
        # 3. Latents and text embeddings: from the cache, encoding only what is missing.
        lease.move("transformer", device)
        cache = EmbeddingCache(work_dir / "cache", pipe, request.resolution)
        data = cache.load_all(
            examples, bucket_of, [sample_prompt], device,
            before_encoding=lambda: lease.move_encoders(device), check=reporter.check_cancel,
        )
        if data.encoded_images or data.encoded_texts:
            reporter.log(
                f"Cached {data.encoded_images} latent(s) and {data.encoded_texts} text embedding(s) "
                f"under {work_dir / 'cache'}."
            )
        else:
            reporter.log("All latents and text embeddings came from the cache; no encoder ran.")
        if plan.offload_idle and device.type != "cpu":
            lease.move_encoders(torch.device("cpu"))
        latents = [t.to(device=device, dtype=dtype) for t in data.latents]
        texts = {c: _to(e, device, dtype) for c, e in data.texts.items()}
        example_texts = [texts[example.caption] for example in examples]
        del data

        # 4. The adapter, on the borrowed transformer.
        lease.prepare_for_training()
        if plan.gradient_checkpointing:
            transformer.enable_gradient_checkpointing()
        config = LoraConfig(r=rank, lora_alpha=alpha, init_lora_weights="gaussian", target_modules=targets)
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(request.seed)
            transformer.add_adapter(config, adapter_name=ADAPTER_NAME)
        lease.adapter_added = True
        transformer.enable_adapters()  # in case inference LoRAs were disabled: ours must run
        params = _trainable_parameters(transformer)
        optimizer = _make_optimizer(params, request.learning_rate, plan, device)

        # 5. Resume from the newest matching checkpoint.
        if request.resume:
            found = ckpt.latest_checkpoint(checkpoints_dir, fingerprint, max_step=request.steps)
            if found is not None:
                _resume(found, transformer, optimizer, generator, loop)
                reporter.log(f"Resumed from {found.name} (step {loop.step} of {request.steps}).")
        elif checkpoints_dir.exists():
            shutil.rmtree(checkpoints_dir)

        def write_lora(folder: Path, weight_name: str = ckpt.LORA_FILE, save_dtype=torch.float32) -> None:
            _save_diffusers_lora(transformer, folder, weight_name, save_dtype)

        def save_checkpoint() -> Path:
            position = schedule.position(loop.step) if loop.step else (0, 0)
            state = ckpt.TrainingState(
                step=loop.step, fingerprint=fingerprint, loss_ema=loop.loss_ema, last_loss=loop.last_loss,
                best_step=loop.best_step, best_score=loop.best_score, data_position=position,
            )
            path = ckpt.save_checkpoint(checkpoints_dir, state, write_lora, optimizer.state_dict(), generator)
            loop.saved_steps.add(loop.step)
            keep = {loop.best_step} if loop.best_step is not None else set()
            ckpt.prune_checkpoints(checkpoints_dir, KEEP_LAST_CHECKPOINTS, keep)
            return path

        # 6. The loop.
        sigmas_table, timesteps_table = _sigma_table(pipe)
        guidance_embeds = bool(getattr(transformer.config, "guidance_embeds", False))
        autocast = (
            torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()
        )
        image_ids: dict[tuple[int, int], torch.Tensor] = {}
        log_every = max(1, min(50, request.steps // 10))
        transformer.train()
        try:
            for step in range(loop.step + 1, request.steps + 1):
                reporter.check_cancel()
                tick = time.perf_counter()
                batch = schedule.batch(step)
                loss = _train_step(
                    transformer, optimizer, params,
                    torch.stack([latents[i] for i in batch]),
                    [example_texts[i] for i in batch],
                    sigmas_table, timesteps_table, generator, image_ids, guidance_embeds, autocast,
                )
                loop.step, loop.last_loss = step, loss
                loop.loss_ema = loss if loop.loss_ema is None else EMA_BETA * loop.loss_ema + (1 - EMA_BETA) * loss
                loop.step_seconds = (loop.step_seconds + [time.perf_counter() - tick])[-20:]
                _report_step(reporter, loop, request.steps, device, log_every)

                last = step == request.steps
                if request.sample_every > 0 and (step % request.sample_every == 0 or last):
                    score = _sample(
                        pipe, lease, texts[sample_prompt], step, request, work_dir, device, dtype, autocast,
                        loop, reporter, sample_scorer,
                    )
                    if score is not None and (loop.best_score is None or score < loop.best_score):
                        loop.best_step, loop.best_score = step, score
                        save_checkpoint()
                        reporter.log(f"New best identity distance {score:.3f} at step {step}.")
                if (request.checkpoint_every > 0 and step % request.checkpoint_every == 0) or last:
                    if step not in loop.saved_steps:
                        save_checkpoint()
        except Canceled:
            transformer.eval()
            if loop.step > 0 and loop.step not in loop.saved_steps:
                path = save_checkpoint()
                reporter.log(f"Canceled at step {loop.step}; saved {path.name} to resume from.")
            raise

        # 7. Outputs.
        best_dir = ckpt.checkpoint_dir(checkpoints_dir, loop.best_step) if loop.best_step is not None else None
        save_dtype = torch.float32 if dtype == torch.float32 else torch.bfloat16
        output_dir.mkdir(parents=True, exist_ok=True)
        lora_path = output_dir / LORA_FILE
        with tempfile.TemporaryDirectory(dir=output_dir, prefix=".tmp_lora_") as tmp:
            write_lora(Path(tmp), LORA_FILE, save_dtype)
            os.replace(Path(tmp) / LORA_FILE, lora_path)
        lora_sd = {k: v.to(save_dtype) for k, v in get_peft_model_state_dict(transformer, adapter_name=ADAPTER_NAME).items()}
        kohya_path = save_kohya(
            output_dir / KOHYA_FILE, lora_sd, alpha, rank, metadata={"ss_trigger": request.trigger}
        )
        metadata = {
            "format": "lora-studio/1",
            "base_model": _base_model_id(pipe),
            "trigger": request.trigger,
            "steps": request.steps,
            "rank": rank,
            "alpha": alpha,
            "learning_rate": request.learning_rate,
            "resolution": request.resolution,
            "batch_size": request.batch_size,
            "seed": request.seed,
            "train_mlp": request.train_mlp,
            "images": len(examples),
            "buckets": {str(b): len(m) for b, m in groups.items()},
            "dataset_hash": data_hash,
            "final_loss": loop.loss_ema,
            "final_loss_raw": loop.last_loss,
            "best_checkpoint": str(best_dir) if best_dir else None,
            "best_step": loop.best_step,
            "best_identity_distance": loop.best_score,
            "memory_mode": plan.mode,
            "weighting_scheme": WEIGHTING_SCHEME,
            "device": str(device),
            "dtype": str(dtype).replace("torch.", ""),
            "seconds": round(time.perf_counter() - started, 2),
            "files": {"diffusers": LORA_FILE, "kohya": KOHYA_FILE},
        }
        metadata_path = _write_text(output_dir / "metadata.json", json.dumps(metadata, indent=2))
        card_path = _write_text(output_dir / "README.md", _model_card(metadata))
        reporter.progress(1.0, f"done · {request.steps} steps · loss {loop.loss_ema:.4f}")
        reporter.log(f"Saved {lora_path} (and a kohya/ComfyUI copy) in {metadata['seconds']:.0f} s.")
        return TrainResult(
            lora_path=lora_path,
            steps=request.steps,
            final_loss=loop.loss_ema,
            best_checkpoint=str(best_dir) if best_dir else None,
            extra_files={"kohya": kohya_path, "metadata": metadata_path, "card": card_path},
            metadata=metadata,
        )
    except (Canceled, EngineError):
        raise
    except RuntimeError as error:
        if not _is_out_of_memory(error):
            raise
        optimizer = None
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        lighter = lighter_mode(plan.mode)
        advice = (
            f"try memory mode '{lighter}' or a lower resolution"
            if lighter
            else "try a lower resolution (512) or a GPU with more memory"
        )
        raise OutOfMemory(
            f"Out of GPU memory while training in memory mode '{plan.mode}' at {request.resolution} px: "
            f"{advice}. Nothing was saved from this attempt."
        ) from error
    finally:
        optimizer = None  # noqa: F841 - drop the optimizer state before handing the pipeline back
        lease.restore()


# --- one training step ----------------------------------------------------------------------------


def _train_step(
    transformer, optimizer, params, latents: torch.Tensor, texts: list[TextEmbedding],
    sigmas_table: torch.Tensor, timesteps_table: torch.Tensor, generator: torch.Generator,
    image_ids: dict, guidance_embeds: bool, autocast,
) -> float:
    batch, channels, height, width = latents.shape
    device, dtype = latents.device, latents.dtype

    noise = torch.randn(latents.shape, generator=generator).to(device=device, dtype=dtype)
    u = compute_density_for_timestep_sampling(
        WEIGHTING_SCHEME, batch, logit_mean=0.0, logit_std=1.0, mode_scale=1.29, generator=generator
    )
    index = (u * len(sigmas_table)).long().clamp(0, len(sigmas_table) - 1)
    sigmas = sigmas_table[index].to(device=device, dtype=dtype)
    timesteps = timesteps_table[index].to(device=device)
    sigma = sigmas.view(batch, 1, 1, 1)
    noisy = (1.0 - sigma) * latents + sigma * noise

    packed = FluxPipeline._pack_latents(noisy, batch, channels, height, width)
    if (height, width) not in image_ids:
        image_ids[(height, width)] = FluxPipeline._prepare_latent_image_ids(batch, height // 2, width // 2, device, dtype)
    prompt_embeds = torch.stack([t.prompt_embeds for t in texts])
    pooled = torch.stack([t.pooled for t in texts])
    guidance = torch.full((batch,), TRAIN_GUIDANCE, device=device, dtype=torch.float32) if guidance_embeds else None

    with autocast:
        prediction = transformer(
            hidden_states=packed,
            timestep=timesteps / 1000,
            guidance=guidance,
            pooled_projections=pooled,
            encoder_hidden_states=prompt_embeds,
            txt_ids=texts[0].text_ids,
            img_ids=image_ids[(height, width)],
            return_dict=False,
        )[0]
    # _unpack_latents takes pixel sizes; with vae_scale_factor 1 they equal the latent sizes.
    prediction = FluxPipeline._unpack_latents(prediction, height, width, 1)

    target = noise - latents
    weighting = compute_loss_weighting_for_sd3(WEIGHTING_SCHEME, sigmas).view(batch, 1, 1, 1)
    loss = (weighting.float() * (prediction.float() - target.float()) ** 2).reshape(batch, -1).mean(1).mean()

    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, MAX_GRAD_NORM)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return float(loss.detach())


def _sigma_table(pipe) -> tuple[torch.Tensor, torch.Tensor]:
    """The training sigma/timestep tables of a fresh copy of the pipeline's scheduler (the pipeline's
    own scheduler is reshaped by every inference call)."""
    scheduler = FlowMatchEulerDiscreteScheduler.from_config(pipe.scheduler.config)
    return scheduler.sigmas.detach().float().cpu(), scheduler.timesteps.detach().float().cpu()


def _trainable_parameters(transformer) -> list[torch.nn.Parameter]:
    params = []
    for name, param in transformer.named_parameters():
        mine = f".{ADAPTER_NAME}." in name
        param.requires_grad_(mine)
        if mine:
            param.data = param.data.float()  # train LoRA weights in fp32 whatever the base dtype
            params.append(param)
    if not params:
        raise EngineError("Adding the LoRA adapter created no trainable weights.")
    return params


def _make_optimizer(params, learning_rate: float, plan: MemoryPlan, device: torch.device):
    if plan.optimizer_8bit and device.type == "cuda":
        try:
            import bitsandbytes as bnb

            return bnb.optim.AdamW8bit(
                params, lr=learning_rate, betas=ADAM_BETAS, weight_decay=ADAM_WEIGHT_DECAY, eps=ADAM_EPS
            )
        except ImportError:
            pass
    return torch.optim.AdamW(params, lr=learning_rate, betas=ADAM_BETAS, weight_decay=ADAM_WEIGHT_DECAY, eps=ADAM_EPS)


def _resume(path: Path, transformer, optimizer, generator, loop: _Loop) -> None:
    loaded = ckpt.load_checkpoint(path)
    lora = {k.removeprefix("transformer."): v for k, v in loaded.lora.items()}
    result = set_peft_model_state_dict(transformer, lora, adapter_name=ADAPTER_NAME)
    unexpected = getattr(result, "unexpected_keys", None) or []
    if unexpected:
        raise EngineError(f"Checkpoint {path.name} does not fit this adapter ({len(unexpected)} unknown weights).")
    optimizer.load_state_dict(loaded.optimizer_state)
    state = loaded.state
    ckpt.restore_rng(loaded.rng, state.python_random, state.numpy_random, generator)
    loop.step = state.step
    loop.loss_ema, loop.last_loss = state.loss_ema, state.last_loss
    loop.best_step, loop.best_score = state.best_step, state.best_score
    loop.saved_steps.add(state.step)


# --- reporting and samples ------------------------------------------------------------------------


def _report_step(reporter: Reporter, loop: _Loop, total: int, device: torch.device, log_every: int) -> None:
    step = loop.step
    it_per_s = 1.0 / max(statistics.median(loop.step_seconds), 1e-9)
    eta = (total - step) / it_per_s
    reporter.metric("loss", loop.last_loss, step)
    reporter.metric("loss_smooth", loop.loss_ema, step)
    reporter.progress(
        step / total,
        f"step {step}/{total} · loss {loop.loss_ema:.4f} · {it_per_s:.2f} it/s · ETA {_duration(eta)}",
    )
    if step % log_every == 0 or step == total or step == 1:
        reporter.metric("it_per_s", it_per_s, step)
        reporter.metric("eta_s", eta, step)
        peak = _peak_memory_bytes(device, loop)
        if peak is not None:
            reporter.metric("peak_mem_gb", peak / GB, step)
        reporter.log(
            f"step {step}/{total}: loss {loop.last_loss:.4f} (smoothed {loop.loss_ema:.4f}), "
            f"{it_per_s:.2f} it/s, ETA {_duration(eta)}"
            + (f", peak memory {peak / GB:.2f} GB" if peak is not None else "")
        )


def _peak_memory_bytes(device: torch.device, loop: _Loop) -> int | None:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    try:
        import psutil
    except ImportError:
        return None
    loop.peak_bytes = max(loop.peak_bytes, psutil.Process().memory_info().rss)
    return loop.peak_bytes


def _duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def _sample(
    pipe, lease: "_Lease", text: TextEmbedding, step: int, request: TrainRequest, work_dir: Path,
    device: torch.device, dtype: torch.dtype, autocast, loop: _Loop, reporter: Reporter,
    scorer: Callable | None,
) -> float | None:
    """One image with the adapter as trained so far, from the cached prompt embedding."""
    transformer = pipe.transformer
    transformer.eval()
    vae_device = lease.device_of("vae")
    lease.move("vae", device)
    try:
        generator = torch.Generator("cpu").manual_seed(request.seed)
        with autocast:
            image = pipe(
                prompt_embeds=text.prompt_embeds[None],
                pooled_prompt_embeds=text.pooled[None],
                height=request.resolution,
                width=request.resolution,
                num_inference_steps=20 if request.resolution >= 256 else 4,
                guidance_scale=SAMPLE_GUIDANCE,
                generator=generator,
                output_type="pil",
                callback_on_step_end=lambda _pipe, _i, _t, kwargs: (reporter.check_cancel(), kwargs)[1],
            ).images[0]
    finally:
        lease.move("vae", vae_device)
        transformer.train()
    path = work_dir / "samples" / f"step_{step:06d}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.png")
    image.save(tmp)
    os.replace(tmp, path)
    loop.samples.append(str(path))
    reporter.output("samples", list(loop.samples))
    if scorer is None:
        return None
    score = scorer(image)
    if score is not None:
        reporter.metric("identity", float(score), step)
    return None if score is None else float(score)


# --- borrowing the pipeline and giving it back ----------------------------------------------------


class _Lease:
    """Records the pipeline's state before training and puts it back afterwards."""

    COMPONENTS = ("transformer", "vae", "text_encoder", "text_encoder_2")

    def __init__(self, pipe) -> None:
        self.pipe = pipe
        self.transformer = pipe.transformer
        modules = {name: getattr(pipe, name, None) for name in self.COMPONENTS}
        self.modules = {name: m for name, m in modules.items() if isinstance(m, torch.nn.Module)}
        self.devices = {name: _device(m) for name, m in self.modules.items()}
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
        return None if module is None else _device(module)

    def move(self, name: str, device: torch.device | None) -> None:
        module = self.modules.get(name)
        if module is None or device is None or is_quantized(module) or _device(module) == device:
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


def _device(module: torch.nn.Module) -> torch.device:
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


def _to(text: TextEmbedding, device, dtype) -> TextEmbedding:
    return TextEmbedding(
        text.prompt_embeds.to(device=device, dtype=dtype),
        text.pooled.to(device=device, dtype=dtype),
        text.text_ids.to(device=device, dtype=dtype),
    )


# --- memory plan, identity, files -----------------------------------------------------------------


def _resolve_plan(mode: str, pipe, device: torch.device, resolution: int) -> MemoryPlan:
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        resident = sum(
            t.numel() * t.element_size()
            for name in _Lease.COMPONENTS
            if isinstance(getattr(pipe, name, None), torch.nn.Module)
            for t in [*getattr(pipe, name).parameters(), *getattr(pipe, name).buffers()]
            if t.device == device
        )
        budget = free + resident
    else:
        budget = None
    plan = plan_for(mode, budget, resolution)
    if plan.base_quant and not is_quantized(pipe.transformer):
        if mode == "auto":
            fallback = plan_for("checkpointing", budget, resolution)
            return replace(
                fallback,
                reason=(
                    f"auto-picked; {budget / GB:.1f} GB suggests '{plan.mode}', but the loaded base is not "
                    f"quantized, so this run trains the loaded weights with checkpointing instead."
                ),
            )
        require_support(plan, device.type)
        raise EngineError(
            f"Memory mode '{plan.mode}' needs the base model loaded with {plan.base_quant} weights; the "
            f"loaded model is not quantized. Reload the model with memory mode '{plan.mode}' "
            f"(memory.quantization_config) or choose 'checkpointing'."
        )
    require_support(plan, device.type)
    return plan


def _is_out_of_memory(error: BaseException) -> bool:
    return isinstance(error, torch.cuda.OutOfMemoryError) or (
        isinstance(error, RuntimeError) and "out of memory" in str(error).lower()
    )


def _fingerprint(request: TrainRequest, rank: int, alpha: float, targets: list[str], data_hash: str, base: str) -> str:
    identity = {
        "version": FORMAT_VERSION,
        "dataset": data_hash,
        "rank": rank,
        "alpha": alpha,
        "learning_rate": request.learning_rate,
        "resolution": request.resolution,
        "batch_size": request.batch_size,
        "seed": request.seed,
        "targets": hashlib.sha256("\n".join(targets).encode()).hexdigest()[:16],
        "base": base,
        "weighting": WEIGHTING_SCHEME,
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]


def _save_diffusers_lora(transformer, folder: Path, weight_name: str, save_dtype: torch.dtype) -> None:
    state = get_peft_model_state_dict(transformer, adapter_name=ADAPTER_NAME)
    state = {k: v.detach().to(device="cpu", dtype=save_dtype).contiguous() for k, v in state.items()}
    FluxPipeline.save_lora_weights(
        str(folder),
        transformer_lora_layers=state,
        transformer_lora_adapter_metadata=transformer.peft_config[ADAPTER_NAME].to_dict(),
        weight_name=weight_name,
    )


def _base_model_id(pipe) -> str | None:
    for source in (pipe, getattr(pipe, "transformer", None)):
        config = getattr(source, "config", None)
        name = getattr(config, "_name_or_path", None) if config is not None else None
        if not name and isinstance(config, dict):
            name = config.get("_name_or_path")
        if name:
            return str(name)
    return None


def _write_text(path: Path, text: str) -> Path:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path


def _model_card(meta: dict) -> str:
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
