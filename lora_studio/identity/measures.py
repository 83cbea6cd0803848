"""Image measures without a face model: colour mode, sharpness, perceptual hash, backgrounds."""
from __future__ import annotations

import numpy as np
from PIL import Image, ImageOps

from .types import Flag


# --------------------------------------------------------------------------------------
# Image helpers (pure numpy / PIL)
# --------------------------------------------------------------------------------------
_MODE_NAMES = {
    "RGBA": "RGBA (with transparency)",
    "LA": "grayscale with transparency (LA)",
    "PA": "palette with transparency (PA)",
    "RGBa": "RGBA (with transparency)",
    "La": "grayscale with transparency (La)",
    "P": "a palette image (P)",
    "L": "grayscale (L)",
    "1": "black and white (1)",
    "CMYK": "CMYK",
    "YCbCr": "YCbCr",
    "LAB": "Lab",
    "HSV": "HSV",
    "I": "32-bit grayscale (I)",
    "I;16": "16-bit grayscale (I;16)",
    "I;16B": "16-bit grayscale (I;16B)",
    "I;16L": "16-bit grayscale (I;16L)",
    "F": "floating-point grayscale (F)",
}


def _to_rgb(image: Image.Image) -> tuple[Image.Image, Flag | None]:
    """RGB copy of the image (EXIF rotation applied) and a not_rgb flag if it had to convert.

    Transparent pixels are put on white, the way a viewer shows them; high bit-depth
    grayscale is scaled to its own range.
    """
    try:
        if image.getexif().get(0x0112, 1) not in (0, 1):  # EXIF orientation: rotated/mirrored
            image = ImageOps.exif_transpose(image)
    except Exception:  # broken EXIF must not stop scoring
        pass
    mode = image.mode
    if mode == "RGB":
        return image, None
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        mode == "P" and "transparency" in image.info
    )
    if has_alpha:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        rgb = Image.alpha_composite(white, rgba).convert("RGB")
    elif mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        arr = np.asarray(image, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        scaled = np.zeros_like(arr) if hi <= lo else (arr - lo) * (255.0 / (hi - lo))
        rgb = Image.fromarray(np.clip(scaled + 0.5, 0, 255).astype(np.uint8), "L").convert("RGB")
    else:
        rgb = image.convert("RGB")
    name = _MODE_NAMES.get(mode, mode)
    extra = " on a white background" if has_alpha else ""
    return rgb, Flag("not_rgb", f"The image was {name}; it was converted to RGB{extra}.")


def _gray_array(image: Image.Image, size: tuple[int, int]) -> np.ndarray:
    """Grayscale float array of the image resized (antialiased) to ``size`` (w, h)."""
    return np.asarray(image.convert("L").resize(size, Image.BILINEAR), dtype=np.float64)


def _sharpness(gray: np.ndarray) -> float:
    """Variance of a 3x3 Laplacian divided by the pixel variance (contrast-normalized).

    The floor on the pixel variance (a standard deviation of 5 gray levels) keeps nearly
    flat images from dividing faint noise by almost nothing.
    """
    if gray.shape[0] < 3 or gray.shape[1] < 3:
        return 0.0
    lap = (
        gray[:-2, 1:-1] + gray[2:, 1:-1] + gray[1:-1, :-2] + gray[1:-1, 2:] - 4.0 * gray[1:-1, 1:-1]
    )
    return float(lap.var() / max(float(gray.var()), 25.0))


def _image_sharpness(image: Image.Image) -> float:
    w, h = image.size
    scale = 256.0 / min(w, h)
    size = (max(3, round(w * scale)), max(3, round(h * scale)))
    return _sharpness(_gray_array(image, size))


def _face_sharpness(image: Image.Image, box: tuple[int, int, int, int]) -> float:
    return _sharpness(_gray_array(image.crop(box), (128, 128)))


def _dct_matrix(n: int) -> np.ndarray:
    k = np.arange(n)[:, None]
    i = np.arange(n)[None, :]
    return np.cos(np.pi * (2 * i + 1) * k / (2 * n))


_DCT32 = _dct_matrix(32)


def _phash(image: Image.Image) -> int:
    """64-bit perceptual hash: the 8x8 lowest frequencies of a 32x32 grayscale DCT
    (without the DC term, which is only brightness) compared with their median."""
    gray = _gray_array(image, (32, 32))
    coeffs = (_DCT32 @ gray @ _DCT32.T)[:8, :8].ravel()
    low = coeffs[1:]
    bits = np.concatenate([[False], low > np.median(low)])
    value = 0
    for bit in bits:
        value = (value << 1) | int(bit)
    return value


def _hamming(a: int, b: int) -> int:
    return bin(int(a) ^ int(b)).count("1")


def _background_signature(image: Image.Image) -> np.ndarray:
    """The outer 4 px ring of a 32x32 RGB thumbnail (448 pixels x 3), where a portrait's
    background is; uint8."""
    thumb = np.asarray(image.resize((32, 32), Image.BOX), dtype=np.uint8)
    mask = np.ones((32, 32), dtype=bool)
    mask[4:-4, 4:-4] = False
    return thumb[mask].copy()


def _background_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).mean() / 255.0)


def _chip_diff(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute difference of two face chips after each is scaled to zero mean and unit
    variance (so brightness and contrast don't count)."""

    def norm(x: np.ndarray) -> np.ndarray:
        x = x.astype(np.float64)
        return (x - x.mean()) / max(float(x.std()), 1.0)

    return float(np.abs(norm(a) - norm(b)).mean())


def face_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Euclidean distance between two face descriptors (under 0.6 = same person)."""
    return float(np.linalg.norm(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)))



# --------------------------------------------------------------------------------------
# Face-free comparison
# --------------------------------------------------------------------------------------
def image_similarity(a: Image.Image, b: Image.Image) -> float:
    """A face-free *distance* in [0, 1]: mean absolute difference of 64x64 RGB thumbnails
    (0 = same thumbnail, 1 = black vs. white).

    Used where images carry no face (the tiny test model draws noise): with and without
    the LoRA at one seed near 0 means the LoRA does nothing; across seeds near 0 means the
    outputs have frozen into one picture. A re-saved JPEG measures under 0.01, a 30 %
    brighter copy about 0.1, a mirrored or an unrelated photo about 0.25-0.35. Blind to
    identity: two photos of one person in different scenes are far apart. Images of
    different shapes are squashed to the same square first.
    """
    ta = np.asarray(_to_rgb(a)[0].resize((64, 64), Image.BOX), dtype=np.float64)
    tb = np.asarray(_to_rgb(b)[0].resize((64, 64), Image.BOX), dtype=np.float64)
    return float(np.abs(ta - tb).mean() / 255.0)
