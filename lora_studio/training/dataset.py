"""The training data: images and captions, aspect-ratio buckets, and the latent/embedding cache.

Reading order:
1. `load_examples` finds the images in a folder and their same-stem `.txt` captions; every caption
   contains the trigger word (a missing caption becomes the trigger word, a caption without it gets
   it prepended).
2. `make_buckets` / `assign_buckets` put each image into the nearest of a set of sizes with about
   resolution^2 pixels and aspect ratios from 1:2 to 2:1, instead of center-cropping everything to a
   square. Sides are multiples of `2 * vae_scale_factor` (the VAE downsamples by the scale factor and
   Flux packs 2x2 latent patches into one token): 16 for FLUX.1, 2 for the tiny engine. Buckets step
   by about resolution/16 so a data set does not scatter into one-image buckets.
3. `build_cache` runs the VAE and the text encoders once per (image bytes, caption, bucket size, model
   identity) and stores the results under `work_dir/cache/`; later runs and resumes read the files
   and never call the encoders.

   Latents: the cache keeps the *mean* of the VAE posterior in the form the transformer reads, as the
   family's layout makes it (layouts.py: FLUX.1 shifted and scaled, Klein patchified and normalised),
   so the same bytes come back on every run and resume is exact. (diffusers' DreamBooth script samples
   the cached distribution each step instead; the FLUX VAEs' posteriors are narrow, so the mean loses little.)
   Text: the pipeline's own `encode_prompt` -> prompt_embeds [seq, dim], a pooled vector [dim] (FLUX.1's
   CLIP; empty for Klein) and text_ids [seq, 3] (FLUX.1) or [seq, 4] (Klein).
4. `BatchSchedule` decides which examples form the batch of each step: per epoch, a shuffle seeded
   by (seed, epoch) of batches drawn within one bucket. It is a pure function of the step, so a resumed
   run sees exactly the batches an uninterrupted one would.
"""
from __future__ import annotations

import hashlib
import json
import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image, ImageOps
from safetensors.torch import load_file, save_file

from ..images import IMAGE_SUFFIXES

MAX_SEQUENCE_LENGTH = 512  # text tokens (T5's, Qwen3's), as both families use at inference


@dataclass(frozen=True)
class Example:
    image_path: Path
    caption: str
    width: int
    height: int
    image_sha: str


@dataclass(frozen=True)
class Bucket:
    width: int
    height: int

    @property
    def aspect(self) -> float:
        return self.width / self.height

    def __str__(self) -> str:
        return f"{self.width}x{self.height}"


def caption_with_trigger(caption: str | None, trigger: str) -> str:
    caption = (caption or "").strip()
    if not caption:
        return trigger
    if trigger.lower() not in caption.lower():
        return f"{trigger}, {caption}"
    return caption


def load_examples(dataset_dir: Path, trigger: str) -> list[Example]:
    dataset_dir = Path(dataset_dir)
    if not dataset_dir.is_dir():
        raise FileNotFoundError(f"the data set folder {dataset_dir.name} does not exist (moved or deleted?); "
                                "export the data set again.")
    paths = sorted(p for p in dataset_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not paths:
        raise FileNotFoundError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in the data set folder {dataset_dir.name}.")
    examples = []
    for path in paths:
        caption_path = path.with_suffix(".txt")
        caption = caption_path.read_text(encoding="utf-8") if caption_path.exists() else None
        data = path.read_bytes()
        try:
            with Image.open(path) as image:
                width, height = ImageOps.exif_transpose(image).size
        except (OSError, SyntaxError) as error:  # PIL raises UnidentifiedImageError (an OSError)
            raise ValueError(f"{path.name} is not a readable image ({error}).") from error
        examples.append(
            Example(
                image_path=path,
                caption=caption_with_trigger(caption, trigger),
                width=width,
                height=height,
                image_sha=hashlib.sha256(data).hexdigest(),
            )
        )
    return examples


def dataset_hash(examples: list[Example]) -> str:
    digest = hashlib.sha256()
    for example in examples:
        digest.update(f"{example.image_path.name}\0{example.image_sha}\0{example.caption}\0".encode())
    return digest.hexdigest()[:16]


# --- aspect-ratio buckets -------------------------------------------------------------------------


def bucket_multiple(vae_scale_factor: int) -> int:
    """Image sides must divide by this: VAE downsampling times the 2x2 latent packing."""
    return 2 * int(vae_scale_factor)


def make_buckets(resolution: int, multiple: int, max_aspect: float = 2.0) -> list[Bucket]:
    """Sizes of about resolution^2 pixels, aspect from 1/max_aspect to max_aspect, sides % multiple == 0."""
    step = max(multiple, (resolution // 16) // multiple * multiple)
    area = resolution * resolution
    low = resolution / math.sqrt(max_aspect)
    high = resolution * math.sqrt(max_aspect)
    buckets = {Bucket(_round_to(resolution, multiple), _round_to(resolution, multiple))}
    width = math.ceil(low / step) * step
    while width <= high:
        height = int(area / width) // step * step
        if height >= multiple and 1 / max_aspect <= width / height <= max_aspect:
            buckets.add(Bucket(width, height))
        width += step
    return sorted(buckets, key=lambda b: b.aspect)


def _round_to(value: float, multiple: int) -> int:
    return max(multiple, int(round(value / multiple)) * multiple)


def nearest_bucket(width: int, height: int, buckets: list[Bucket]) -> Bucket:
    log_aspect = math.log(width / height)
    return min(buckets, key=lambda b: (abs(math.log(b.aspect) - log_aspect), -b.width * b.height))


def assign_buckets(examples: list[Example], buckets: list[Bucket]) -> dict[Bucket, list[int]]:
    """Example indices grouped by their nearest bucket."""
    groups: dict[Bucket, list[int]] = {}
    for index, example in enumerate(examples):
        groups.setdefault(nearest_bucket(example.width, example.height, buckets), []).append(index)
    return dict(sorted(groups.items(), key=lambda item: item[0].aspect))


def load_pixels(path: Path, bucket: Bucket) -> torch.Tensor:
    """The image resized to cover `bucket`, center-cropped to it, as a [3, H, W] tensor in [-1, 1]."""
    with Image.open(path) as opened:
        image = ImageOps.exif_transpose(opened).convert("RGB")
    scale = max(bucket.width / image.width, bucket.height / image.height)
    size = (max(bucket.width, math.ceil(image.width * scale)), max(bucket.height, math.ceil(image.height * scale)))
    if size != image.size:
        image = image.resize(size, Image.Resampling.LANCZOS)
    left = (image.width - bucket.width) // 2
    top = (image.height - bucket.height) // 2
    image = image.crop((left, top, left + bucket.width, top + bucket.height))
    array = np.asarray(image, dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


# --- which batch each step trains on --------------------------------------------------------------


class BatchSchedule:
    """Batches within one bucket, reshuffled every epoch from (seed, epoch); a function of the step."""

    def __init__(self, groups: dict[Bucket, list[int]], batch_size: int, seed: int) -> None:
        self.groups = [sorted(indices) for indices in groups.values()]
        self.batch_size = max(1, int(batch_size))
        self.seed = int(seed)
        self.batches_per_epoch = sum(math.ceil(len(g) / self.batch_size) for g in self.groups)
        self._epoch = -1
        self._batches: list[list[int]] = []

    def epoch_batches(self, epoch: int) -> list[list[int]]:
        if epoch != self._epoch:
            rng = random.Random(f"lora-studio:{self.seed}:{epoch}")
            batches = []
            for group in self.groups:
                order = list(group)
                rng.shuffle(order)
                batches += [order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)]
            rng.shuffle(batches)
            self._epoch, self._batches = epoch, batches
        return self._batches

    def position(self, step: int) -> tuple[int, int]:
        """(epoch, index within the epoch) of 1-based `step`."""
        return divmod(step - 1, self.batches_per_epoch)

    def batch(self, step: int) -> list[int]:
        epoch, index = self.position(step)
        return self.epoch_batches(epoch)[index]


# --- the cache ------------------------------------------------------------------------------------


def module_fingerprint(module: torch.nn.Module) -> str:
    """A cheap identity for a model: class, config, dtype and a sample of its first and last weights."""
    digest = hashlib.sha256(type(module).__name__.encode())
    config = getattr(module, "config", None)
    if config is not None:
        as_dict = config.to_dict() if hasattr(config, "to_dict") else dict(config)
        as_dict = {k: v for k, v in as_dict.items() if not k.startswith("_") and k not in ("transformers_version",)}
        digest.update(json.dumps(as_dict, sort_keys=True, default=str).encode())
    # Adapter weights (inference LoRAs loaded on the model) are not part of its identity.
    params = [p for name, p in module.named_parameters() if "lora_" not in name]
    if params:
        digest.update(str(params[0].dtype).encode())
        for param in (params[0], params[-1]):
            try:
                sample = param.detach().reshape(-1)[:4096].float().cpu().numpy()
                digest.update(sample.tobytes())
            except (RuntimeError, TypeError, NotImplementedError):  # exotic quantized tensor types
                digest.update(str(tuple(param.shape)).encode())
        digest.update(str(sum(p.numel() for p in params)).encode())
    return digest.hexdigest()[:16]


def _key(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:32]


@dataclass
class TextEmbedding:
    prompt_embeds: torch.Tensor  # [seq, dim]
    pooled: torch.Tensor  # [dim] (FLUX.1's CLIP vector; empty for Klein)
    text_ids: torch.Tensor  # [seq, 3] (FLUX.1) or [seq, 4] (Klein)


@dataclass
class CachedData:
    latents: list[torch.Tensor]  # per example: [C, h, w], shifted and scaled
    texts: dict[str, TextEmbedding]  # by caption / prompt
    encoded_images: int  # images that went through the VAE in this call (0 = all from the cache)
    encoded_texts: int  # captions/prompts that went through the text encoders in this call


def _atomic_save(tensors: dict[str, torch.Tensor], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp))
    tmp.replace(path)


def _load(path: Path) -> dict[str, torch.Tensor] | None:
    if not path.exists():
        return None
    try:
        return load_file(str(path))
    except Exception:  # a torn or foreign file: recompute it
        return None


class EmbeddingCache:
    """Latents and text embeddings on disk under `root` (work_dir/cache), keyed by content hashes;
    `layout` (layouts.py) encodes them as the pipeline's family does."""

    def __init__(self, root: Path, pipe, resolution: int, layout) -> None:
        self.root = Path(root)
        self.pipe = pipe
        self.resolution = resolution
        self.layout = layout
        self.vae_id = module_fingerprint(pipe.vae)
        self.text_id = "".join(module_fingerprint(m) for m in layout.text_encoders(pipe))

    def latent_path(self, example: Example, bucket: Bucket) -> Path:
        key = _key("latent", example.image_sha, str(bucket), str(self.resolution), self.vae_id)
        return self.root / "latents" / f"{key}.safetensors"

    def text_path(self, caption: str) -> Path:
        key = _key("text", caption, str(MAX_SEQUENCE_LENGTH), self.text_id)
        return self.root / "text" / f"{key}.safetensors"

    @torch.no_grad()
    def encode_latent(self, example: Example, bucket: Bucket, device: torch.device) -> dict[str, torch.Tensor]:
        vae = self.pipe.vae
        pixels = load_pixels(example.image_path, bucket)[None].to(device=vae.device, dtype=vae.dtype)
        data = {"latent": self.layout.encode_latent(vae, pixels)[0].float().cpu()}
        _atomic_save(data, self.latent_path(example, bucket))
        return data

    @torch.no_grad()
    def encode_text(self, caption: str, device: torch.device) -> dict[str, torch.Tensor]:
        data = self.layout.encode_text(self.pipe, caption, device, MAX_SEQUENCE_LENGTH)
        _atomic_save(data, self.text_path(caption))
        return data

    def load_all(
        self,
        examples: list[Example],
        bucket_of: dict[int, Bucket],
        prompts: list[str],
        device: torch.device,
        before_encoding: Callable[[], None] = lambda: None,
        check: Callable[[], None] = lambda: None,
    ) -> CachedData:
        """Everything the training loop needs, from the cache; encodes (and stores) only what is missing.

        `before_encoding` runs once, just before the first encoder call (to move the encoders to the
        GPU); when everything is cached it never runs. `check` runs before each encoder call (the
        trainer passes its cancel check).
        """
        ready = False

        def ensure_ready() -> None:
            nonlocal ready
            if not ready:
                before_encoding()
                ready = True

        latents, encoded_images = [], 0
        for index, example in enumerate(examples):
            data = _load(self.latent_path(example, bucket_of[index]))
            if data is None:
                check()
                ensure_ready()
                data = self.encode_latent(example, bucket_of[index], device)
                encoded_images += 1
            latents.append(data["latent"])
        texts, encoded_texts = {}, 0
        for caption in dict.fromkeys([*(example.caption for example in examples), *prompts]):
            data = _load(self.text_path(caption))
            if data is None:
                check()
                ensure_ready()
                data = self.encode_text(caption, device)
                encoded_texts += 1
            texts[caption] = TextEmbedding(data["prompt_embeds"], data["pooled"], data["text_ids"])
        return CachedData(latents, texts, encoded_images, encoded_texts)
