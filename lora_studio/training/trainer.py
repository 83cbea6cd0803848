"""Train a FLUX.1 or FLUX.2 [klein] LoRA on the model manager's own pipeline: the loop, top to bottom.

`train_lora(pipe, request, reporter)` borrows `pipe.transformer` (no second copy of the base, see
lease.py) and runs these steps, each a function below reading and filling one `Run`:

    start_run         captions and aspect buckets, the memory plan, the run's identity (run.py)
    _cache            latents and text embeddings, encoding only what the cache lacks
    _add_adapter      the peft adapter on the borrowed transformer, its optimizer
    _resume           the newest checkpoint of the same run, when asked
    _loop             flow-matching steps (flow_matching.py), samples (monitoring.py), checkpoints
    _write_outputs    the LoRA files, metadata and model card (outputs.py)

and hands the pipeline back exactly as it came. `train_on_manager` is the same, holding the model
manager's lock so no generation runs on the borrowed modules meanwhile (on Klein, on its base
checkpoint). What differs between the families is the run's layout (layouts.py).

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
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from peft import LoraConfig

from ..engines.base import EngineError, OutOfMemory, TrainRequest, TrainResult
from ..engines.flux_stack import quiet
from ..errors import is_out_of_memory
from ..progress import Canceled, Reporter
from . import checkpoints as ckpt
from .dataset import EmbeddingCache, TextEmbedding
from .flow_matching import ADAPTER_NAME, make_optimizer, train_step, trainable_parameters
from .monitoring import report_step, sample
from .oom import out_of_memory_sentence
from .outputs import KOHYA_FILE, LORA_FILE, base_model_id, save_diffusers_lora, write_outputs
from .parallel import SINGLE, DataParallel
from .resume import resume_from
from .run import Run, Scorer, run_device, start_run

if TYPE_CHECKING:
    from ..engines.local import ModelManager

EMA_BETA = 0.95
KEEP_LAST_CHECKPOINTS = 2
NEGATIVE_PROMPT = ""  # what an undistilled Klein's classifier-free guidance samples against (cached too)


def train_on_manager(manager: "ModelManager", request: TrainRequest, reporter: Reporter,
                     sample_scorer: Scorer | None = None) -> TrainResult:
    """Train on the model manager's loaded base; inference waits until the pipeline is handed back."""
    with manager.for_training() as pipe:
        if manager.training_note():
            reporter.log(manager.training_note())
        return train_lora(pipe, request, reporter, device=manager.device, dtype=manager.dtype,
                          sample_scorer=sample_scorer)


def train_lora(
    pipe,
    request: TrainRequest,
    reporter: Reporter,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    sample_scorer: Scorer | None = None,
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
    run = start_run(pipe, request, reporter, run_device(device), dtype, sample_scorer, parallel)
    try:
        with quiet():
            _cache(run)
            _add_adapter(run)
            _resume(run)
            _loop(run)
            if run.loop.step < request.steps or not run.main:  # paused at `stop_after`, or a helper rank
                run.transformer.eval()
                lora = ckpt.checkpoint_dir(run.checkpoints_dir, run.loop.step) / ckpt.LORA_FILE
                return TrainResult(lora_path=lora, steps=run.loop.step, final_loss=run.loop.loss_ema,
                                   stopped_at=run.loop.step)
            return _write_outputs(run)
    except (Canceled, EngineError):
        raise
    except RuntimeError as error:
        if not is_out_of_memory(error):
            raise
        run.optimizer = None
        sentence = out_of_memory_sentence(run.plan, request, run.loop.step + 1, run.device, run.checkpoints_dir)
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        raise OutOfMemory(sentence) from error
    finally:
        run.optimizer = None  # drop the optimizer state before handing the pipeline back
        run.lease.restore()


def _cache(run: Run) -> None:
    """Latents and text embeddings: from the cache, encoding only what is missing. The transformer waits
    where it is meanwhile; quantized (small-GPU) modes run a big text encoder (T5, Qwen3) that is not on
    the GPU block by block. Rank 0 fills the cache first; the other ranks then only read it."""
    lease, device, plan = run.lease, run.device, run.plan
    if plan.offload_blocks:
        lease.take_offload_hooks()
    blockwise = plan.base_quant is not None and lease.device_of(lease.big_text_encoder) != device
    cache = EmbeddingCache(run.work_dir / "cache", run.pipe, run.request.resolution, run.layout)
    bucket_of = {i: b for b, members in run.groups.items() for i in members}
    prompts = [run.sample_prompt] + ([NEGATIVE_PROMPT] if run.layout.needs_negative(run.pipe) else [])
    if not run.main:
        run.parallel.barrier()
    data = cache.load_all(
        run.examples, bucket_of, prompts, device,
        before_encoding=lambda: lease.move_encoders(device, blockwise), check=run.reporter.check_cancel,
    )
    if run.main:
        run.parallel.barrier()
    if data.encoded_images or data.encoded_texts:
        run.reporter.log(f"Cached {data.encoded_images} latent(s) and {data.encoded_texts} text embedding(s) "
                         f"under {run.work_dir / 'cache'}.")
    else:
        run.reporter.log("All latents and text embeddings came from the cache; no encoder ran.")
    if plan.offload_idle and device.type != "cpu":
        lease.move_encoders(torch.device("cpu"))
    lease.move("transformer", device)
    run.latents = [t.to(device=device, dtype=run.dtype) for t in data.latents]
    run.texts = {caption: _to(text, device, run.dtype) for caption, text in data.texts.items()}


def _add_adapter(run: Run) -> None:
    """The adapter on the borrowed transformer (seeded), its trainable fp32 weights and their optimizer."""
    transformer, device, plan, request = run.transformer, run.device, run.plan, run.request
    run.lease.prepare_for_training()
    if plan.gradient_checkpointing:
        transformer.enable_gradient_checkpointing()
    config = LoraConfig(r=run.rank, lora_alpha=run.alpha, init_lora_weights="gaussian", target_modules=run.targets)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(request.seed)
        transformer.add_adapter(config, adapter_name=ADAPTER_NAME)
    run.lease.adapter_added = True
    transformer.enable_adapters()  # in case inference LoRAs were disabled: ours must run
    run.params = trainable_parameters(transformer)
    if plan.offload_blocks:  # after the adapter exists: its weights stay on the GPU, the rest travels
        run.lease.offload_transformer_blocks(device)
    run.optimizer = make_optimizer(run.params, request.learning_rate, plan, device)
    run.model = run.parallel.wrap(transformer)  # DDP when distributed: gradients averaged in backward


def _resume(run: Run) -> None:
    """Continue from the newest checkpoint of this very run, or start clean (a fresh run drops old ones)."""
    if run.request.resume:
        found = ckpt.latest_checkpoint(run.checkpoints_dir, run.fingerprint, max_step=run.request.steps)
        if found is not None:
            resume_from(found, run.transformer, run.optimizer, run.generator, run.loop)
            run.reporter.log(f"Resumed from {found.name} (step {run.loop.step} of {run.request.steps}).")
    elif run.checkpoints_dir.exists() and run.main:
        shutil.rmtree(run.checkpoints_dir)


def _loop(run: Run) -> None:
    """Steps from the loop's position to the end (or `stop_after` steps), sampling and checkpointing as
    asked; a stop saves a checkpoint to resume from, then raises Canceled."""
    request, loop, device, parallel = run.request, run.loop, run.device, run.parallel
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()
    example_texts = [run.texts[example.caption] for example in run.examples]
    image_ids: dict[tuple[int, int], torch.Tensor] = {}
    log_every = max(1, min(50, request.steps // 10))
    run.transformer.train()
    end = min(request.steps, loop.step + request.stop_after) if request.stop_after else request.steps
    try:
        for step in range(loop.step + 1, end + 1):
            run.check_cancel()
            tick = time.perf_counter()
            batch = run.schedule.batch(step)
            loss = train_step(
                run.model, run.optimizer, run.params,
                torch.stack([run.latents[i] for i in batch]),
                [example_texts[i] for i in batch],
                run.layout, run.generator, image_ids, autocast,
                shard=parallel.shard(len(batch)) if parallel.distributed else None,
                backward=parallel.backward if parallel.distributed else None,
            )
            loss = parallel.mean(loss, device)
            loop.step, loop.last_loss = step, loss
            loop.loss_ema = loss if loop.loss_ema is None else EMA_BETA * loop.loss_ema + (1 - EMA_BETA) * loss
            loop.step_seconds = (loop.step_seconds + [time.perf_counter() - tick])[-20:]
            report_step(run.reporter, loop, request.steps, device, log_every)

            last = step == request.steps
            if run.main and request.sample_every > 0 and (step % request.sample_every == 0 or last):
                score = sample(
                    run.pipe, run.lease, run.layout, run.texts[run.sample_prompt], run.texts.get(NEGATIVE_PROMPT),
                    step, request, run.work_dir, device, run.dtype, autocast, loop, run.reporter, run.sample_scorer,
                )
                if score is not None and (loop.best_score is None or score < loop.best_score):
                    loop.best_step, loop.best_score = step, score
                    _save_checkpoint(run)
                    run.reporter.log(f"New best identity distance {score:.3f} at step {step}.")
            if (request.checkpoint_every > 0 and step % request.checkpoint_every == 0) or step == end:
                if step not in loop.saved_steps:
                    _save_checkpoint(run)
    except Canceled:
        run.transformer.eval()
        if loop.step > 0 and loop.step not in loop.saved_steps:
            path = _save_checkpoint(run)
            run.reporter.log(f"Canceled at step {loop.step}; saved {path.name} to resume from.")
        raise


def _save_checkpoint(run: Run) -> Path:
    """The adapter, optimizer, generators and loop position at this step; the state is the same on every
    rank, so rank 0 writes it. Keeps the last KEEP_LAST_CHECKPOINTS and the best."""
    loop = run.loop
    if not run.main:
        loop.saved_steps.add(loop.step)
        return ckpt.checkpoint_dir(run.checkpoints_dir, loop.step)
    state = ckpt.TrainingState(
        step=loop.step, fingerprint=run.fingerprint, loss_ema=loop.loss_ema, last_loss=loop.last_loss,
        best_step=loop.best_step, best_score=loop.best_score,
        data_position=run.schedule.position(loop.step) if loop.step else (0, 0),
    )
    write_lora = partial(save_diffusers_lora, run.transformer, weight_name=ckpt.LORA_FILE, save_dtype=torch.float32)
    path = ckpt.save_checkpoint(run.checkpoints_dir, state, write_lora, run.optimizer.state_dict(), run.generator)
    loop.saved_steps.add(loop.step)
    keep = {loop.best_step} if loop.best_step is not None else set()
    ckpt.prune_checkpoints(run.checkpoints_dir, KEEP_LAST_CHECKPOINTS, keep)
    return path


def _write_outputs(run: Run) -> TrainResult:
    """The finished LoRA in both formats, with the metadata that says how it was made."""
    request, loop, dtype = run.request, run.loop, run.dtype
    best_dir = ckpt.checkpoint_dir(run.checkpoints_dir, loop.best_step) if loop.best_step is not None else None
    save_dtype = torch.float32 if dtype == torch.float32 else torch.bfloat16
    metadata = {
        "format": "lora-studio/1",
        "base_model": base_model_id(run.pipe),
        "trigger": request.trigger,
        "steps": request.steps,
        "rank": run.rank,
        "alpha": run.alpha,
        "folded_scale": run.alpha / run.rank,  # in the weights of both files, which record alpha = rank
        "learning_rate": request.learning_rate,
        "resolution": request.resolution,
        "batch_size": request.batch_size,
        "processes": run.parallel.world,
        "seed": request.seed,
        "train_mlp": request.train_mlp,
        "images": len(run.examples),
        "buckets": {str(b): len(m) for b, m in run.groups.items()},
        "dataset_hash": run.data_hash,
        "final_loss": loop.loss_ema,
        "final_loss_raw": loop.last_loss,
        "best_checkpoint": str(best_dir) if best_dir else None,
        "best_step": loop.best_step,
        "best_identity_distance": loop.best_score,
        "memory_mode": run.plan.mode,
        "family": run.layout.family.key,
        "weighting_scheme": run.layout.family.recipe.loss_weighting,
        "timestep_shift": list(run.layout.family.recipe.shift) if run.layout.family.recipe.shift else None,
        "device": str(run.device),
        "dtype": str(dtype).replace("torch.", ""),
        "seconds": round(time.perf_counter() - run.started, 2),
        "files": {"diffusers": LORA_FILE, "kohya": KOHYA_FILE},
    }
    files = write_outputs(run.transformer, Path(request.output_dir), metadata, save_dtype)
    run.reporter.progress(1.0, f"done · {request.steps} steps · loss {loop.loss_ema:.4f}")
    run.reporter.log(f"Saved {files['lora']} (and a kohya/ComfyUI copy) in {metadata['seconds']:.0f} s.")
    return TrainResult(
        lora_path=files.pop("lora"),
        steps=request.steps,
        final_loss=loop.loss_ema,
        best_checkpoint=str(best_dir) if best_dir else None,
        extra_files=files,
        metadata=metadata,
    )


def _to(text: TextEmbedding, device, dtype) -> TextEmbedding:
    return TextEmbedding(
        text.prompt_embeds.to(device=device, dtype=dtype),
        text.pooled.to(device=device, dtype=dtype),
        text.text_ids.to(device=device, dtype=dtype),
    )


__all__ = ["ADAPTER_NAME", "train_lora", "train_on_manager"]
