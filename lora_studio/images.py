"""Opening untrusted images safely and saving ours atomically.

Uploads come from anyone holding a shared link, so every image is checked before it is decoded:
known format, sane dimensions (a 20000x20000 PNG is a few KB on disk and 1.2 GB in memory),
and a full decode that catches truncated files.
"""
from __future__ import annotations

import io
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import InvalidInput
from .store import atomic_write_bytes

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")  # what a dataset folder may hold
ALLOWED_FORMATS = {"PNG", "JPEG", "WEBP", "BMP", "GIF", "TIFF"}
FORMAT_NAMES = {"PNG": "PNG", "JPEG": "JPEG", "WEBP": "WebP", "BMP": "BMP", "GIF": "GIF", "TIFF": "TIFF"}
MAX_SIDE = 8192
MAX_PIXELS = 40_000_000
MIN_SIDE = 16
MAX_FILE_BYTES = 50 * 1024 * 1024


class ImageError(InvalidInput):
    """An image the app refuses, with a message for the user."""


def accepted_formats() -> str:
    """The formats `open_image` takes, in words ("PNG, JPEG, WebP, BMP, GIF or TIFF")."""
    names = [FORMAT_NAMES[f] for f in FORMAT_NAMES if f in ALLOWED_FORMATS]
    return ", ".join(names[:-1]) + " or " + names[-1]


def open_image(source: str | Path | bytes | Image.Image, label: str = "The image",
               max_side: int | None = None) -> Image.Image:
    """Return a fully decoded RGB image, or raise ImageError saying what is wrong with it.

    `max_side` shrinks the result so its long side is at most that (a JPEG is decoded at a
    reduced scale to begin with, so a 40 MP photo never costs its full size in memory).
    """
    if isinstance(source, Image.Image):
        image = source
        _check_size(image.size, label)
        return _shrink(_to_rgb(image), max_side)
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.is_file():
            raise ImageError(f"{label} was not found.")
        if path.stat().st_size > MAX_FILE_BYTES:
            raise ImageError(f"{label} is larger than {MAX_FILE_BYTES // 2**20} MB; resize or compress it.")
        data = path.read_bytes()
    else:
        data = bytes(source)
        if len(data) > MAX_FILE_BYTES:
            raise ImageError(f"{label} is larger than {MAX_FILE_BYTES // 2**20} MB; resize or compress it.")
    try:
        image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise ImageError(f"{label} is not an image (or its format is not supported); use {accepted_formats()}.") from None
    except Image.DecompressionBombError:
        raise ImageError(
            f"{label} is far too large (over {MAX_PIXELS // 1_000_000} megapixels); the limit is "
            f"{MAX_SIDE} px a side. Resize it first."
        ) from None
    except Exception as exc:  # noqa: BLE001 - PIL raises many types for broken headers
        raise ImageError(f"{label} could not be read: {exc}") from None
    if image.format not in ALLOWED_FORMATS:
        raise ImageError(f"{label} is in {image.format or 'an unknown'} format, which the app does not read; "
                         f"use {accepted_formats()}.")
    _check_size(image.size, label)
    if max_side and image.format == "JPEG":
        image.draft("RGB", (max_side, max_side))  # decode at 1/2, 1/4 or 1/8 scale when that is enough
    try:
        image.load()
        image = ImageOps.exif_transpose(image)
        return _shrink(_to_rgb(image), max_side)
    except MemoryError:
        raise
    except Exception:  # noqa: BLE001 - truncated data, bad EXIF, odd modes: all one message
        raise ImageError(f"{label} is corrupt or truncated; save it again or pick another file.") from None


def _shrink(image: Image.Image, max_side: int | None) -> Image.Image:
    if max_side and max(image.size) > max_side:
        image = image.copy()
        image.thumbnail((max_side, max_side), Image.LANCZOS)
    return image


def _check_size(size: tuple[int, int], label: str) -> None:
    width, height = size
    if width > MAX_SIDE or height > MAX_SIDE or width * height > MAX_PIXELS:
        raise ImageError(
            f"{label} is {width}x{height} pixels; the limit is {MAX_SIDE} px a side "
            f"and {MAX_PIXELS // 1_000_000} megapixels. Resize it first."
        )
    if width < MIN_SIDE or height < MIN_SIDE:
        raise ImageError(f"{label} is only {width}x{height} pixels; use a larger one (512 px or more a side works best).")


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode == "RGB":
        return image
    if image.mode in ("RGBA", "LA", "P"):
        rgba = image.convert("RGBA")
        canvas = Image.new("RGB", rgba.size, (255, 255, 255))
        canvas.paste(rgba, mask=rgba.split()[-1])
        return canvas
    return image.convert("RGB")


def save_png(image: Image.Image, path: Path) -> Path:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    atomic_write_bytes(path, buffer.getvalue())
    return path


def thumbnail(image: Image.Image, side: int = 256) -> Image.Image:
    copy = image.copy()
    copy.thumbnail((side, side))
    return copy
