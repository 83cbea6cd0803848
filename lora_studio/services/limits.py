"""Every number and text a caller sends is checked here, at the door, before any work starts.

The app is shared as a link: a stranger can send the biggest, smallest, non-numeric or repeated
value to any endpoint. Each check refuses in words that say what to give instead. The bounds that
depend on the engine (what the tiny CPU model, a local GPU or Replicate can serve) live in
`EngineLimits`; jobs re-check their stored parameters when they start, so a job queued by an older
version with an impossible size fails with a message instead of taking the app down.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from ..config import MEMORY_MODES
from ..engines.memory import QUANTIZED_MODES
from ..errors import InvalidInput
from ..training.presets import validate_hyperparameters
from . import text as stored_text

SEED_MAX = 2**32 - 1  # numpy's and most UIs' seed range; torch would take more, no one needs it
MAX_SEEDS = 6
MAX_PROMPT = 2000  # characters; CLIP reads 77 tokens and T5 512, the rest would be cut anyway
MAX_NAME = 60
MAX_ID = 64  # record ids are 12-16 characters; anything longer is not one of ours
MAX_TEXT = 4000  # any other free text (lists of strengths, LoRA weights)


@dataclass(frozen=True)
class EngineLimits:
    """What one engine can serve without running the machine out of memory or time."""

    engine: str
    max_side: int  # generated image width/height
    side_multiple: int
    train_resolution: tuple[int, int]  # smallest, largest
    resolution_multiple: int
    max_steps: int  # training steps
    max_rank: int
    max_inference_steps: int
    max_lr: float = 1e-2
    # The most pixels one generated image may have (None: max_side squared): at inference the memory
    # plan holds the base weights, and the activations grow with the pixel count, not with one side.
    max_pixels: int | None = None
    # The most denoising steps this engine really runs whatever is asked (the tiny engine stops at 4,
    # engines/local/engine.py TINY_STEPS: its pictures are noise at any count); None: as asked.
    drawn_steps: int | None = None

    @property
    def pixel_bound(self) -> int:
        return self.max_pixels or self.max_side * self.max_side

    def resolution_hint(self) -> str:
        low, high = self.train_resolution
        return f"from {low} to {high} pixels, a multiple of {self.resolution_multiple}"


# The tiny CPU model takes ~30 s for one 256 px image (attention grows with the square of the pixel
# count); its pictures are noise, so small sizes prove the same code paths. Steps go up to the Expert
# preset's 2000, so every built-in preset trains on it.
TINY = EngineLimits("tiny", max_side=256, side_multiple=16, train_resolution=(16, 256), resolution_multiple=2,
                    max_steps=2000, max_rank=32, max_inference_steps=50, drawn_steps=4)
# FLUX.1-dev on a GPU: 2 MP images (e.g. 2048 x 1024) and 2048 px training are the most its memory
# modes plan for; 4000 steps is twice the Expert preset (a 20-image LoRA is done long before).
LOCAL = EngineLimits("local", max_side=2048, side_multiple=16, train_resolution=(256, 2048), resolution_multiple=64,
                     max_steps=4000, max_rank=128, max_inference_steps=100, max_pixels=2048 * 1024)
# Replicate's Flux trainer takes 512-1024 px and rank up to 128; its dev models refuse > 50 steps.
REPLICATE = EngineLimits("replicate", max_side=1440, side_multiple=16, train_resolution=(512, 1024),
                         resolution_multiple=64, max_steps=4000, max_rank=128, max_inference_steps=50)


def limits_for(engine: str) -> EngineLimits:
    return {"tiny": TINY, "replicate": REPLICATE}.get(engine, LOCAL)


# ---- numbers -----------------------------------------------------------------------------
def whole_number(value, what: str, low: int, high: int, example: str | int | None = None) -> int:
    """An integer in [low, high]; "12" and 12.0 are fine, 1.5, "1e3", "a", NaN and booleans are not."""
    hint = _hint("a whole number", low, high, example)
    value = _given(value, what, hint)
    if isinstance(value, str):
        if len(value) > 40 or not value.lstrip("+-").isdigit():
            raise InvalidInput(f"{what} {_quote(value)} is not a whole number; give {hint}.")
        value = int(value)
    elif isinstance(value, float):
        if not math.isfinite(value) or value != int(value):
            raise InvalidInput(f"{what} {_quote(value)} is not a whole number; give {hint}.")
        value = int(value)
    elif not isinstance(value, int):
        raise InvalidInput(f"{what} must be {hint}.")
    if not low <= value <= high:
        raise InvalidInput(f"{what} {_quote(value)} is out of range; give {hint}.")
    return value


def number(value, what: str, low: float, high: float, example: str | float | None = None) -> float:
    """A finite number in [low, high] (NaN and infinity are refused, as is text that is not a number)."""
    hint = _hint("a number", low, high, example)
    value = _given(value, what, hint)
    try:
        result = float(value if not isinstance(value, str) or len(value) <= 40 else "x")
    except (TypeError, ValueError, OverflowError):
        raise InvalidInput(f"{what} {_quote(value)} is not a number; give {hint}.") from None
    if not math.isfinite(result):
        raise InvalidInput(f"{what} {_quote(value)} is not a finite number; give {hint}.")
    if not low <= result <= high:
        raise InvalidInput(f"{what} {_quote(value)} is out of range; give {hint}.")
    return result


def training_numbers(values: dict, lim: EngineLimits, tiny: bool, image_size: int) -> dict:
    """Steps, rank, learning rate and resolution: well-formed, sensible and within the engine's reach.
    The one rule for a training start and a saved preset, so a saved preset always starts."""
    steps = whole_number(values.get("steps"), "Steps", 1, lim.max_steps, 1000)
    rank = whole_number(values.get("rank"), "Rank", 1, lim.max_rank, 16)
    learning_rate = number(values.get("learning_rate"), "Learning rate", 0.0, lim.max_lr, 0.0001)
    low, high = lim.train_resolution
    resolution = whole_number(values.get("resolution"), "Resolution", low, high, image_size if tiny else 768)
    if resolution % lim.resolution_multiple:
        raise InvalidInput(f"Resolution {resolution} does not fit this engine; give one {lim.resolution_hint()}.")
    errors = validate_hyperparameters(steps, rank, learning_rate, resolution, tiny=tiny)
    if errors:
        raise InvalidInput(" ".join(errors))
    return dict(steps=steps, rank=rank, learning_rate=learning_rate, resolution=resolution)


def image_size(width, height, lim: EngineLimits, min_side: int, multiple: int,
               example: tuple[int, int] = (1024, 1024)) -> tuple[int, int]:
    """(width, height) of an image to draw: whole numbers from `min_side` to the engine's side, each a
    multiple of `multiple` (the family's latent patch), and no more pixels than the engine's bound."""
    sides = []
    for what, value, like in (("Width", width, example[0]), ("Height", height, example[1])):
        side = whole_number(value, what, min_side, lim.max_side, like)
        if side % multiple:
            raise InvalidInput(f"{what} {side} does not fit; give a multiple of {multiple} from {min_side} to "
                               f"{lim.max_side}, e.g. {like}.")
        sides.append(side)
    w, h = sides
    if w * h > lim.pixel_bound:
        raise InvalidInput(f"{w} x {h} is {w * h / 1e6:.2f} MP; this engine draws at most "
                           f"{lim.pixel_bound / 1e6:.2f} MP per image (e.g. {_within(lim.pixel_bound, multiple)}). "
                           "Make it smaller.")
    return w, h


def _within(pixels: int, multiple: int) -> str:
    """A square and a 2:1 size that fit `pixels`, as examples."""
    square = int(math.isqrt(pixels)) // multiple * multiple
    wide = int(math.isqrt(pixels // 2)) // multiple * multiple
    return f"{square} x {square} or {2 * wide} x {wide}"


def flag(value, what: str) -> bool:
    """A yes/no: true/false (or 1/0); anything else is refused rather than read as "yes"."""
    if isinstance(value, bool):
        return value
    if value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("true", "false", "yes", "no", "1", "0"):
        return value.strip().lower() in ("true", "yes", "1")
    raise InvalidInput(f"{what} must be true or false.")


def seed(value, what: str = "Seed") -> int:
    return whole_number(value, what, 0, SEED_MAX, example=42)


def parse_seeds(value, limit: int = MAX_SEEDS) -> list[int]:
    """'1, 2, 3' (or a list) → [1, 2, 3]: each a whole number 0..2^32-1, repeats dropped, at most `limit`."""
    if isinstance(value, (list, tuple)):
        parts = list(value)
    else:
        parts = [p for p in text(value, "Seeds", MAX_TEXT).replace(";", ",").split(",") if p.strip()]
    if not parts:
        raise InvalidInput("Give at least one seed, e.g. 1, 2, 3.")
    if len(parts) > limit:
        raise InvalidInput(f"{len(parts)} seeds given; test at most {limit} at once (e.g. 1, 2, 3).")
    return list(dict.fromkeys(seed(p, "Seed") for p in parts))


# ---- text --------------------------------------------------------------------------------
def text(value, what: str, max_chars: int = MAX_TEXT, required: bool = False, example: str = "") -> str:
    """Text as sent, stripped; refused when it is not text, not storable (services/text.py), too long, or
    empty but required."""
    return stored_text.check_text(value, what, max_chars, required=required, example=example)


def name(value, what: str = "The name", example: str = "Mila") -> str:
    """A label shown in lists: one line, printable, NFKC, one alphabet, at most MAX_NAME characters."""
    return stored_text.check_name(value, what, MAX_NAME, example=example)


def record_id(value, what: str = "id") -> str:
    """An id as we generate them (letters, digits, '_'); anything else cannot name a record."""
    value = text(value, f"The {what}", max_chars=MAX_ID)
    if value and not all(ch.isalnum() or ch in "_-" for ch in value):
        raise InvalidInput(f"{_quote(value)} is not a valid {what}; pick one from the list.")
    return value


def memory_mode(value, engine: str) -> str:
    """A known memory mode that this engine can use (quantized bases need a real model on CUDA)."""
    value = text(value, "Memory mode", 20) or "auto"
    if value not in MEMORY_MODES:
        raise InvalidInput(f"Unknown memory mode {_quote(value)}; choose one of {', '.join(MEMORY_MODES)}.")
    if engine == "tiny" and value in QUANTIZED_MODES:
        raise InvalidInput(f"Memory mode '{value}' quantizes a real FLUX.1 model on an NVIDIA GPU; the tiny "
                           "engine runs in full precision. Choose auto, full or checkpointing.")
    return value


def _hint(kind: str, low, high, example) -> str:
    def shown(v):
        return f"{v:g}" if isinstance(v, float) else str(v)

    return f"{kind} from {shown(low)} to {shown(high)}" + (f", e.g. {example}" if example is not None else "")


def _given(value, what: str, hint: str):
    """Refuse nothing and yes/no where a number belongs; text comes back stripped."""
    if isinstance(value, bool) or value is None:
        raise InvalidInput(f"{what} must be {hint}.")
    return value.strip() if isinstance(value, str) else value


def _quote(value) -> str:
    shown = repr(value)
    return shown if len(shown) <= 24 else shown[:20] + "…" + shown[-1]
