"""Train a FLUX.1 LoRA on the model manager's own pipeline: the loop, top to bottom.

`train_lora(pipe, request, reporter)` borrows `pipe.transformer` (no second copy of the base, see
lease.py), adds a peft adapter, trains it with the flow-matching step (flow_matching.py), samples and
checkpoints as it goes (monitoring.py, checkpoints.py, resume.py), writes the files (outputs.py),
and hands the pipeline back exactly as it came. `train_on_manager` is the same, holding the model
manager's lock so no generation runs on the borrowed modules meanwhile.

LoRA parameters are kept in float32; on CUDA the forward runs under bf16 autocast. The batch order
is a pure function of (seed, step) (see dataset.BatchSchedule) and every random draw comes from one
generator seeded with `request.seed`, so on the CPU a resumed run ends on the same weights as an
uninterrupted one.
"""
from __future__ import annotations

import gc
import shutil
import time
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import torch
from diffusers import FluxPipeline
from peft import LoraConfig

from ..engines.base import EngineError, OutOfMemory, TrainRequest, TrainResult
from ..engines.lora import target_modules
from ..engines.memory import is_out_of_memory, plan_for_pipeline
from ..progress import Canceled, Reporter
from . import checkpoints as ckpt
from .checkpoints import LoopState
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
from .flow_matching import (
    ADAPTER_NAME,
    WEIGHTING_SCHEME,
    make_optimizer,
    sigma_table,
    train_step,
    trainable_parameters,
)
from .lease import PipelineLease
from .oom import out_of_memory_sentence
from .parallel import SINGLE, DataParallel
from .monitoring import report_step, sample
from .outputs import KOHYA_FILE, LORA_FILE, base_model_id, save_diffusers_lora, write_outputs
from .resume import fingerprint as fingerprint_run
from .resume import resume_from

if TYPE_CHECKING:
    from PIL import Image

    from ..engines.local import ModelManager

EMA_BETA = 0.95
KEEP_LAST_CHECKPOINTS = 2


def train_on_manager(manager: "ModelManager", request: TrainRequest, reporter: Reporter,
                     sample_scorer: Callable[["Image.Image"], float | None] | None = None) -> TrainResult:
    """Train on the model manager's loaded base; inference waits until the pipeline is handed back."""
    with manager.for_training() as pipe:
        return train_lora(pipe, request, reporter, device=manager.device, dtype=manager.dtype,
                          sample_scorer=sample_scorer)


def train_lora(
    pipe: FluxPipeline,
    request: TrainRequest,
    reporter: Reporter,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    sample_scorer: Callable[["Image.Image"], float | None] | None = None,
    parallel: DataParallel = SINGLE,
) -> TrainResult:
    """Train a LoRA on `request.dataset_dir` and write it to `request.output_dir`.

    output_dir/  lora.safetensors (diffusers format + peft metadata), lora_kohya.safetensors,
                 metadata.json, README.md
    work_dir/    cache/latents/*.safetensors, cache/text/*.safetensors,
                 checkpoints/step_XXXXXX/ (see checkpoints.py), samples/step_XXXXXX.png

    Raises progress.Canceled (after saving a checkpoint), engines.base.OutOfMemory (naming a
    lighter memory mode) or EngineError for settings this machine cannot run.

    With `parallel` (worker processes, see parallel.py and worker.py) every rank runs this loop on its
    shard of each global batch; only rank 0 caches, samples, checkpoints and writes the outputs.
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
    rank = int(request.rank)
    plan = plan_for_pipeline(request.memory_mode, pipe, device, request.resolution, rank, request.train_mlp)
    alpha = float(request.alpha if request.alpha is not None else request.rank)
    targets = target_modules(transformer, request.train_mlp)
    if not targets:
        raise EngineError("The transformer has no attention layers to train a LoRA on.")
    data_hash = dataset_hash(examples)
    fingerprint = fingerprint_run(request, rank, alpha, targets, data_hash, module_fingerprint(transformer))

    reporter.log(
        f"Training a LoRA for '{request.trigger}': {len(examples)} images in {len(groups)} aspect "
        f"bucket(s) ({', '.join(f'{b}: {len(m)}' for b, m in groups.items())}), {request.steps} steps, "
        f"rank {rank}, alpha {alpha:g}, learning rate {request.learning_rate:g}, batch {request.batch_size}, "
        f"{request.resolution} px, on {device} in {str(dtype).replace('torch.', '')}."
        + (f" Data-parallel over {parallel.world} processes: each step's batch of {request.batch_size} is "
           "split between them and their gradients averaged (learning rate not scaled)."
           if parallel.distributed else "")
    )
    reporter.log(plan.explain())

    lease = PipelineLease(pipe)
    loop = LoopState()
    optimizer = None
    generator = torch.Generator("cpu").manual_seed(request.seed)
    checkpoints_dir = work_dir / "checkpoints"
    main = parallel.is_main

    def check_cancel() -> None:
        """In step on every rank: rank 0 hears the user, all stop at the same step."""
        if not parallel.distributed:
            reporter.check_cancel()
        elif parallel.any(main and reporter.cancel_requested, device):
            raise Canceled("Canceled by the user.")
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    try:
        # 3. Latents and text embeddings: from the cache, encoding only what is missing. The transformer
        #    waits where it is meanwhile; quantized (small-GPU) modes run a T5 that is not on the GPU
        #    block by block.
        if plan.offload_blocks:
            lease.take_offload_hooks()
        blockwise_t5 = plan.base_quant is not None and lease.device_of("text_encoder_2") != device
        cache = EmbeddingCache(work_dir / "cache", pipe, request.resolution)
        if not main:
            parallel.barrier()  # rank 0 fills the cache first; the others then only read it
        data = cache.load_all(
            examples, bucket_of, [sample_prompt], device,
            before_encoding=lambda: lease.move_encoders(device, blockwise_t5), check=reporter.check_cancel,
        )
        if main:
            parallel.barrier()
        if data.encoded_images or data.encoded_texts:
            reporter.log(
                f"Cached {data.encoded_images} latent(s) and {data.encoded_texts} text embedding(s) "
                f"under {work_dir / 'cache'}."
            )
        else:
            reporter.log("All latents and text embeddings came from the cache; no encoder ran.")
        if plan.offload_idle and device.type != "cpu":
            lease.move_encoders(torch.device("cpu"))
        lease.move("transformer", device)
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
        params = trainable_parameters(transformer)
        if plan.offload_blocks:  # after the adapter exists: its weights stay on the GPU, the rest travels
            lease.offload_transformer_blocks(device)
        optimizer = make_optimizer(params, request.learning_rate, plan, device)
        model = parallel.wrap(transformer)  # DDP when distributed: gradients averaged in backward

        # 5. Resume from the newest matching checkpoint.
        if request.resume:
            found = ckpt.latest_checkpoint(checkpoints_dir, fingerprint, max_step=request.steps)
            if found is not None:
                resume_from(found, transformer, optimizer, generator, loop)
                reporter.log(f"Resumed from {found.name} (step {loop.step} of {request.steps}).")
        elif checkpoints_dir.exists() and main:
            shutil.rmtree(checkpoints_dir)

        def write_lora(folder: Path, weight_name: str = ckpt.LORA_FILE, save_dtype=torch.float32) -> None:
            save_diffusers_lora(transformer, folder, weight_name, save_dtype)

        def save_checkpoint() -> Path:
            if not main:  # the state is the same on every rank: rank 0 writes it
                loop.saved_steps.add(loop.step)
                return ckpt.checkpoint_dir(checkpoints_dir, loop.step)
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
        sigmas_table, timesteps_table = sigma_table(pipe)
        guidance_embeds = bool(getattr(transformer.config, "guidance_embeds", False))
        autocast = (
            torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()
        )
        image_ids: dict[tuple[int, int], torch.Tensor] = {}
        log_every = max(1, min(50, request.steps // 10))
        transformer.train()
        end = min(request.steps, loop.step + request.stop_after) if request.stop_after else request.steps
        try:
            for step in range(loop.step + 1, end + 1):
                check_cancel()
                tick = time.perf_counter()
                batch = schedule.batch(step)
                loss = train_step(
                    model, optimizer, params,
                    torch.stack([latents[i] for i in batch]),
                    [example_texts[i] for i in batch],
                    sigmas_table, timesteps_table, generator, image_ids, guidance_embeds, autocast,
                    shard=parallel.shard(len(batch)) if parallel.distributed else None,
                    backward=parallel.backward if parallel.distributed else None,
                )
                loss = parallel.mean(loss, device)
                loop.step, loop.last_loss = step, loss
                loop.loss_ema = loss if loop.loss_ema is None else EMA_BETA * loop.loss_ema + (1 - EMA_BETA) * loss
                loop.step_seconds = (loop.step_seconds + [time.perf_counter() - tick])[-20:]
                report_step(reporter, loop, request.steps, device, log_every)

                last = step == request.steps
                if main and request.sample_every > 0 and (step % request.sample_every == 0 or last):
                    score = sample(
                        pipe, lease, texts[sample_prompt], step, request, work_dir, device, dtype, autocast,
                        loop, reporter, sample_scorer,
                    )
                    if score is not None and (loop.best_score is None or score < loop.best_score):
                        loop.best_step, loop.best_score = step, score
                        save_checkpoint()
                        reporter.log(f"New best identity distance {score:.3f} at step {step}.")
                if (request.checkpoint_every > 0 and step % request.checkpoint_every == 0) or step == end:
                    if step not in loop.saved_steps:
                        save_checkpoint()
        except Canceled:
            transformer.eval()
            if loop.step > 0 and loop.step not in loop.saved_steps:
                path = save_checkpoint()
                reporter.log(f"Canceled at step {loop.step}; saved {path.name} to resume from.")
            raise

        if loop.step < request.steps or not main:  # paused at `stop_after`, or a helper rank: done here
            transformer.eval()
            lora = ckpt.checkpoint_dir(checkpoints_dir, loop.step) / ckpt.LORA_FILE
            return TrainResult(lora_path=lora, steps=loop.step, final_loss=loop.loss_ema, stopped_at=loop.step)

        # 7. Outputs.
        best_dir = ckpt.checkpoint_dir(checkpoints_dir, loop.best_step) if loop.best_step is not None else None
        save_dtype = torch.float32 if dtype == torch.float32 else torch.bfloat16
        metadata = {
            "format": "lora-studio/1",
            "base_model": base_model_id(pipe),
            "trigger": request.trigger,
            "steps": request.steps,
            "rank": rank,
            "alpha": alpha,
            "folded_scale": alpha / rank,  # in the weights of both files, which record alpha = rank
            "learning_rate": request.learning_rate,
            "resolution": request.resolution,
            "batch_size": request.batch_size,
            "processes": parallel.world,
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
        files = write_outputs(transformer, output_dir, metadata, save_dtype)
        reporter.progress(1.0, f"done · {request.steps} steps · loss {loop.loss_ema:.4f}")
        reporter.log(f"Saved {files['lora']} (and a kohya/ComfyUI copy) in {metadata['seconds']:.0f} s.")
        return TrainResult(
            lora_path=files.pop("lora"),
            steps=request.steps,
            final_loss=loop.loss_ema,
            best_checkpoint=str(best_dir) if best_dir else None,
            extra_files=files,
            metadata=metadata,
        )
    except (Canceled, EngineError):
        raise
    except RuntimeError as error:
        if not is_out_of_memory(error):
            raise
        optimizer = None
        sentence = out_of_memory_sentence(plan, request, loop.step + 1, device, checkpoints_dir)
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        raise OutOfMemory(sentence) from error
    finally:
        optimizer = None  # noqa: F841 - drop the optimizer state before handing the pipeline back
        lease.restore()


def _to(text: TextEmbedding, device, dtype) -> TextEmbedding:
    return TextEmbedding(
        text.prompt_embeds.to(device=device, dtype=dtype),
        text.pooled.to(device=device, dtype=dtype),
        text.text_ids.to(device=device, dtype=dtype),
    )


__all__ = ["ADAPTER_NAME", "train_lora", "train_on_manager"]
