"""A vision-language captioner: Qwen3-VL through transformers' own classes, no remote code.

transformers 5.23 has Qwen3-VL as a native class (`Qwen3VLForConditionalGeneration`), so nothing
from the model's repo is ever executed. Its processor class, though, also builds a video processor,
and that one needs torchvision, which this app does not install: a captioner never sends a video.
So the three pieces a picture needs are used directly: the image processor (its PIL version), the
tokenizer and the repo's chat template; each image's placeholder token is expanded to its patch
count here, as the processor does (patches / merge_size²), and the image tokens are marked for
Qwen3-VL's multimodal positions (`mm_token_type_ids`).

A model is loaded for one captioning job and released after it: it never sits beside Flux for long.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from ..base import EngineError
from ..hub import cached_commit, is_repo_id, snapshot_dir

ARCHITECTURES = ("Qwen3VLForConditionalGeneration",)
IMAGE_TOKEN, VIDEO_TOKEN = "<|image_pad|>", "<|video_pad|>"
MAX_PIXELS = 768 * 768  # about 580 image tokens: enough for clothing, pose and light, little memory
TEMPLATE_FILES = ("chat_template.jinja", "chat_template.json")


class CaptionerError(EngineError):
    """The captioner cannot run (not downloaded, not a supported model); the message says what to do."""


@dataclass
class Captioner:
    """A loaded captioning model and the pieces that turn a picture and an instruction into its input."""

    model: object
    tokenizer: object
    image_processor: object
    chat_template: str
    source: str  # the folder or hub id it was read from ("built in" for the tiny test model)

    @property
    def weight_bytes(self) -> int:
        return sum(p.numel() * p.element_size() for p in self.model.parameters())

    def caption(self, images: list[Image.Image], instruction: str, max_new_tokens: int | None = None,
                batch_size: int = 4) -> list[str]:
        """One text per image, greedy (the same picture gives the same caption every time); at most
        `max_new_tokens` tokens each (default: the model's generation config, else 120)."""
        if max_new_tokens is None:
            max_new_tokens = getattr(self.model.generation_config, "max_new_tokens", None) or 120
        texts: list[str] = []
        for start in range(0, len(images), batch_size):
            texts += self._batch(images[start:start + batch_size], instruction, max_new_tokens)
        return texts

    def _batch(self, images: list[Image.Image], instruction: str, max_new_tokens: int) -> list[str]:
        import torch

        pictures = [_bounded(image) for image in images]
        vision = self.image_processor(images=pictures, return_tensors="pt")
        merge = int(getattr(self.image_processor, "merge_size", 2)) ** 2
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": instruction}]}]
        prompt = self.tokenizer.apply_chat_template(messages, chat_template=self.chat_template,
                                                    add_generation_prompt=True, tokenize=False)
        if prompt.count(IMAGE_TOKEN) != 1:
            raise CaptionerError(f"The captioner's chat template does not place one image ({self.source}).")
        prompts = [prompt.replace(IMAGE_TOKEN, IMAGE_TOKEN * (int(grid.prod()) // merge))
                   for grid in vision["image_grid_thw"]]
        self.tokenizer.padding_side = "left"  # generation continues from the right end of every row
        encoded = self.tokenizer(prompts, return_tensors="pt", padding=True)
        image_id = self.tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
        device = next(self.model.parameters()).device
        dtype = next(self.model.parameters()).dtype
        inputs = {k: v.to(device) for k, v in encoded.items()}
        inputs["mm_token_type_ids"] = (inputs["input_ids"] == image_id).int()
        inputs["pixel_values"] = vision["pixel_values"].to(device=device, dtype=dtype)
        inputs["image_grid_thw"] = vision["image_grid_thw"].to(device)
        end = self.tokenizer.convert_tokens_to_ids("<|im_end|>")
        with torch.inference_mode():
            out = self.model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False,
                                      eos_token_id=end, pad_token_id=self.tokenizer.pad_token_id)
        new = out[:, inputs["input_ids"].shape[1]:].cpu()
        return [t.strip() for t in self.tokenizer.batch_decode(new, skip_special_tokens=True)]

    def release(self) -> None:
        """Free the weights (and the GPU memory they held) once the job is done."""
        import gc

        import torch

        self.model = None
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def _bounded(image: Image.Image) -> Image.Image:
    image = image.convert("RGB")
    pixels = image.width * image.height
    if pixels <= MAX_PIXELS:
        return image
    scale = (MAX_PIXELS / pixels) ** 0.5
    return image.resize((max(32, int(image.width * scale)), max(32, int(image.height * scale))),
                        Image.Resampling.LANCZOS)


def captioner_folder(source: str | Path) -> Path:
    """The folder a captioner is read from: a local folder, or a hub id's snapshot in the Hugging Face
    cache (downloaded under Settings → Models first; nothing is fetched here)."""
    path = Path(str(source)).expanduser()
    if path.is_dir():
        return path
    if is_repo_id(str(source)):
        commit = cached_commit(str(source))
        folder = snapshot_dir(str(source), commit) if commit else None
        if folder is not None and (folder / "config.json").is_file():
            return folder
        raise CaptionerError(f"The captioner {source} is not downloaded yet: download it under Settings → Models "
                             f"(or `python -m lora_studio models download {source}`), then caption again.")
    raise CaptionerError(f"{str(source)[:200]!r} is neither a folder nor a Hugging Face model id (owner/name).")


def architecture(folder: Path) -> str | None:
    try:
        config = json.loads((Path(folder) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    names = config.get("architectures") if isinstance(config, dict) else None
    return str(names[0]) if isinstance(names, list) and names else None


def read_chat_template(folder: Path, tokenizer) -> str:
    """The repo's own template: the processor's file (where Qwen keeps the image-aware one), else the
    tokenizer's."""
    for name in TEMPLATE_FILES:
        path = Path(folder) / name
        if path.is_file():
            text = path.read_text(encoding="utf-8")
            return str(json.loads(text).get("chat_template", "")) if name.endswith(".json") else text
    if getattr(tokenizer, "chat_template", None):
        return str(tokenizer.chat_template)
    raise CaptionerError(f"The captioner in {Path(folder).name} has no chat template.")


def weight_bytes_on_disk(folder: Path) -> int:
    return sum(p.stat().st_size for p in Path(folder).glob("*.safetensors"))


def free_gpu_bytes(device: str = "auto") -> int | None:
    """Free memory on the CUDA GPU a captioner would use; None when it would run elsewhere."""
    import torch

    from ..speed import pick_device

    target = pick_device(device)
    if target.type != "cuda":
        return None
    return int(torch.cuda.mem_get_info(target)[0])


def pick_dtype(device):
    import torch

    return torch.bfloat16 if device.type == "cuda" else torch.float32


def load_captioner(source: str | Path, device: str = "auto") -> Captioner:
    """Read a Qwen3-VL captioner from disk (never from the network) onto `device`."""
    from transformers import AutoImageProcessor, AutoTokenizer, Qwen3VLForConditionalGeneration

    from ..speed import pick_device

    folder = captioner_folder(source)
    found = architecture(folder)
    if found not in ARCHITECTURES:
        raise CaptionerError(f"{source} holds {found or 'no known model'}, not a captioner this app runs "
                             f"({', '.join(ARCHITECTURES)}: a native transformers class, no remote code).")
    target = pick_device(device)
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder)
        image_processor = AutoImageProcessor.from_pretrained(folder)
        model = Qwen3VLForConditionalGeneration.from_pretrained(folder, dtype=pick_dtype(target))
    except (OSError, ValueError) as exc:
        raise CaptionerError(f"The captioner {source} could not be read ({type(exc).__name__}: "
                             f"{str(exc).splitlines()[0][:200] if str(exc) else ''}). Download it again.") from None
    model.to(target).eval()
    return Captioner(model, tokenizer, image_processor, read_chat_template(folder, tokenizer), str(source))
