"""Face identity and dataset quality: the measure behind every choice in LoRA Studio.

A character LoRA is only as good as the agreement of its training images on one face, so
every image gets a dlib face descriptor (128 numbers; Euclidean distance under 0.6 is the
customary "same person" line) plus cheap quality checks (blur, size, duplicates, ...).
Everything here runs offline on the CPU: dlib comes from the ``dlib-bin`` wheel and its
model files from ``face-recognition-models``; nothing is downloaded at run time.

dlib is imported lazily, on the first call that needs a face, so importing this module is
cheap and the app still starts when dlib is missing (face calls then raise
``IdentityUnavailableError`` with an install hint). Results are deterministic: no jitter,
no randomness, ties broken by input order.
"""
from __future__ import annotations

import importlib.util
import itertools
import math
import os
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np
from PIL import Image, ImageOps

__all__ = [
    "DEFAULT_THRESHOLDS",
    "Face",
    "Flag",
    "IdentityUnavailableError",
    "ImageScore",
    "NoFaceError",
    "SetScore",
    "Thresholds",
    "auto_select",
    "dataset_warnings",
    "detect_faces",
    "face_distance",
    "image_similarity",
    "pairwise_mean",
    "reference_descriptor",
    "score_image",
    "score_images",
    "set_consistency",
    "warm_up",
]


# --------------------------------------------------------------------------------------
# Thresholds
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Thresholds:
    """Every cut-off used in this module, so they can be tuned (and argued about) in one place.

    Per image:
        same_person: dlib distance below this = same person. 0.6 is the value dlib's model
            was tuned for (about 99.4 % accuracy on LFW); crops, flips, lighting and JPEG of
            one photo measure 0.05-0.3.
        min_face_fraction / min_face_px: a detected face box whose side is below this share
            of the image's short side, or below this many pixels, is "too small". FLUX's VAE
            works on 8x8 pixel cells, so a 64 px face is only 8x8 latent cells: the LoRA
            learns almost no facial detail from it. 0.08 of 1024 px is 82 px; a full-length
            figure in a square frame typically has a face box of about that size.
        blur_variance_face: sharpness of the face box, resized to 128x128 grayscale:
            variance of a 3x3 Laplacian divided by the variance of the pixels themselves.
            Dividing by the contrast keeps dim or low-contrast photos from looking blurry
            and resizing to the face keeps the value independent of resolution. A sharp
            face measures about 0.07; a Gaussian blur of 1 % of the face width (sigma 1 px
            on an 88 px face) gives 0.010, 0.7 % gives 0.021.
        blur_variance: the same contrast-normalized measure for the whole image resized so
            its short side is 256 px; used only when no face is found (a sharp face with a
            soft, bokeh background must not count as blurry). Sharp photos measure
            0.1-0.4, a sigma-2 blur 0.01-0.03.
        min_resolution: short side below this is "low resolution" (FLUX LoRAs train at
            512-1024 px; smaller images get upscaled and teach softness).
        near_duplicate_bits: two images whose 64-bit DCT perceptual hashes differ in at most
            this many bits look the same at thumbnail size. Re-saved JPEGs, 2 px shifts,
            brightness changes and resizes measure 0-2 bits, a 10 % crop or a 10 degree
            rotation 10-12, unrelated images about 32.
        near_duplicate_face_diff: ... and, when both have a face, their aligned face crops
            (48x48 grayscale, each scaled to zero mean and unit variance) differ by at most
            this mean absolute difference. Expression edits keep the framing, so the
            whole-image hash matches, but change the face: that is wanted variety, not a
            duplicate. Measured on the astronaut photo: re-saved JPEG, 2 px shift and
            resizes 0.06-0.10, a 30 % brighter or a slightly blurred copy 0.14, painted-over
            eyes 0.27, an opened mouth 0.53.
        max_aspect: long/short side above this is an odd aspect; training crops to
            buckets and may cut the character off.
        detect_max_side: images are downscaled so their long side is at most this before
            face detection (boxes are mapped back), so a 1024x1024 image scores quickly.
            None detects at full size. If nothing is found, detection is retried with 2x
            upsampling, which finds faces down to about 40 px at this scale.
        detection_margin: the "main" face (used for the reference and when there is no
            reference) is the largest face whose detector confidence is within this of the
            most confident one, so a large but doubtful detection (a patch or a poster in
            the background) doesn't win over a clear face.
        max_faces: descriptors are computed for at most this many faces per image (the
            most confident ones); each costs about 75 ms on a CPU core.

    Per selected set (``dataset_warnings``):
        min_images / max_images: character LoRA guides recommend roughly 20-30 images.
        max_category_share: more than this share of one category (angle, expression, ...)
            means the set lacks variety.
        background_diff / background_pairs_share: two images "share a background" when the
            mean absolute difference of their border strips (32x32 RGB thumbnail, outer
            4 px ring, 0-1 scale) is at most background_diff; if at least
            background_pairs_share of all selected pairs do, the LoRA may learn the
            background as part of the character.
        many_share: a per-image problem (small face, no face, blur, low resolution) is
            reported for the set once it affects at least this share of the selection.
        min_consistency: warn when fewer than this share of face pairs in the selection
            are under ``same_person``.
    """

    same_person: float = 0.6
    min_face_fraction: float = 0.08
    min_face_px: int = 64
    blur_variance_face: float = 0.012
    blur_variance: float = 0.02
    min_resolution: int = 512
    near_duplicate_bits: int = 8
    near_duplicate_face_diff: float = 0.2
    max_aspect: float = 2.0
    detect_max_side: int | None = 640
    detection_margin: float = 0.5
    max_faces: int = 6
    min_images: int = 20
    max_images: int = 30
    max_category_share: float = 0.6
    background_diff: float = 0.06
    background_pairs_share: float = 0.5
    many_share: float = 0.25
    min_consistency: float = 0.7


DEFAULT_THRESHOLDS = Thresholds()


# --------------------------------------------------------------------------------------
# Data types
# --------------------------------------------------------------------------------------
class NoFaceError(ValueError):
    """The reference image has no detectable face, so nothing can be compared to it."""


class IdentityUnavailableError(RuntimeError):
    """dlib or its model files are not installed; face measures can't run."""


@dataclass(frozen=True)
class Flag:
    """A quality problem with one image. ``code`` is for code, ``reason`` is shown to the user.

    Codes: no_face, several_faces, face_too_small, blurry, low_resolution, near_duplicate,
    not_rgb, odd_aspect.
    """

    code: str
    reason: str

    def to_dict(self) -> dict[str, str]:
        return {"code": self.code, "reason": self.reason}


@dataclass(frozen=True, eq=False)
class Face:
    """One detected face. eq=False because numpy arrays don't compare to a single bool.

    box: (left, top, right, bottom) in pixels of the image as given (after EXIF rotation),
        clipped to the image.
    descriptor: dlib's 128-d identity vector.
    score: the HOG detector's confidence (higher = clearer face; >= 0 to be reported).
    chip: aligned 48x48 grayscale face crop (uint8), used to tell duplicates from edits.
    """

    box: tuple[int, int, int, int]
    descriptor: np.ndarray
    score: float = 0.0
    chip: np.ndarray | None = field(default=None, repr=False)

    @property
    def side(self) -> int:
        """Side length of the (square) detector box in pixels."""
        return max(self.box[2] - self.box[0], self.box[3] - self.box[1])

    @property
    def area(self) -> int:
        return max(0, self.box[2] - self.box[0]) * max(0, self.box[3] - self.box[1])


@dataclass
class ImageScore:
    """Everything measured about one image; the arrays stay in memory, ``to_dict`` is for JSON.

    ``blur`` is the whole-image sharpness and ``face_blur`` the sharpness of the scored face
    (see ``Thresholds``; lower = blurrier). ``phash`` is a 64-bit perceptual hash.
    ``face_chip`` and ``background`` are small thumbnails used for duplicate and
    same-background checks.
    """

    key: str
    face_found: bool
    n_faces: int
    distance: float | None
    same_person: bool | None
    face_box: tuple[int, int, int, int] | None
    descriptor: np.ndarray | None
    flags: list[Flag]
    blur: float
    width: int
    height: int
    phash: int
    face_blur: float | None = None
    face_chip: np.ndarray | None = field(default=None, repr=False)
    background: np.ndarray | None = field(default=None, repr=False)

    @property
    def flag_codes(self) -> list[str]:
        return [f.code for f in self.flags]

    def has_flag(self, code: str) -> bool:
        return any(f.code == code for f in self.flags)

    def to_dict(self, include_arrays: bool = False) -> dict[str, Any]:
        """JSON-safe dict. With ``include_arrays`` the descriptor and thumbnails are added as
        lists, so ``from_dict`` can rebuild a score that ``auto_select`` can use later."""
        out: dict[str, Any] = {
            "key": self.key,
            "face_found": self.face_found,
            "n_faces": self.n_faces,
            "distance": None if self.distance is None else float(self.distance),
            "same_person": self.same_person,
            "face_box": None if self.face_box is None else [int(v) for v in self.face_box],
            "flags": [f.to_dict() for f in self.flags],
            "blur": float(self.blur),
            "face_blur": None if self.face_blur is None else float(self.face_blur),
            "width": int(self.width),
            "height": int(self.height),
            "phash": int(self.phash),
        }
        if include_arrays:
            desc = self.descriptor
            out["descriptor"] = None if desc is None else [float(v) for v in desc]
            out["face_chip"] = None if self.face_chip is None else self.face_chip.tolist()
            out["background"] = None if self.background is None else self.background.tolist()
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ImageScore":
        """Inverse of ``to_dict`` (arrays are restored when they were included)."""

        def arr(name: str, dtype: Any) -> np.ndarray | None:
            value = data.get(name)
            return None if value is None else np.asarray(value, dtype=dtype)

        box = data.get("face_box")
        return cls(
            key=str(data["key"]),
            face_found=bool(data["face_found"]),
            n_faces=int(data["n_faces"]),
            distance=data.get("distance"),
            same_person=data.get("same_person"),
            face_box=None if box is None else tuple(int(v) for v in box),  # type: ignore[arg-type]
            descriptor=arr("descriptor", np.float64),
            flags=[Flag(f["code"], f["reason"]) for f in data.get("flags", [])],
            blur=float(data.get("blur", 0.0)),
            width=int(data["width"]),
            height=int(data["height"]),
            phash=int(data["phash"]),
            face_blur=data.get("face_blur"),
            face_chip=arr("face_chip", np.uint8),
            background=arr("background", np.uint8),
        )


@dataclass
class SetScore:
    """How well a set of faces agrees: with itself (pairwise) and with the reference."""

    n: int
    mean_pairwise: float | None
    share_under_threshold: float | None
    mean_to_reference: float | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "mean_pairwise": self.mean_pairwise,
            "share_under_threshold": self.share_under_threshold,
            "mean_to_reference": self.mean_to_reference,
        }


# --------------------------------------------------------------------------------------
# dlib models: loaded once, on first use
# --------------------------------------------------------------------------------------
_MODEL_FILES = {
    "five_point": (
        "pose_predictor_five_point_model_location",
        "shape_predictor_5_face_landmarks.dat",
    ),
    "recognition": ("face_recognition_model_location", "dlib_face_recognition_resnet_model_v1.dat"),
}
_INSTALL_HINT = "Install them with: pip install dlib-bin face-recognition-models"


def _model_path(kind: str) -> str:
    """Path of a model file shipped by face-recognition-models.

    The package's own helpers import ``pkg_resources``, which recent setuptools no longer
    ships; in that case the file is located next to the package without importing it.
    """
    func_name, filename = _MODEL_FILES[kind]
    path = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import face_recognition_models  # type: ignore[import-not-found]
        path = getattr(face_recognition_models, func_name)()
    except ImportError:
        spec = importlib.util.find_spec("face_recognition_models")
        if spec is not None and spec.submodule_search_locations:
            path = os.path.join(list(spec.submodule_search_locations)[0], "models", filename)
    if not path or not os.path.isfile(path):
        raise IdentityUnavailableError(
            f"The face model file {filename} was not found (package face-recognition-models). "
            + _INSTALL_HINT
        )
    return str(path)


class _Models:
    """dlib's landmark model and recognition network, created once per process, plus a
    small pool of face detectors.

    The recognition network keeps internal buffers, so calls into it (and into the cheap
    landmark model) are serialized by ``lock``. A HOG detector stores the image it scans
    inside itself, so it can't be shared either; but it releases the GIL while scanning,
    so each concurrent caller borrows its own detector from the pool and detection of one
    image overlaps with the descriptor of another. Creating a detector takes 0.5-1 s, so
    they are kept for reuse.
    """

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self._loaded: tuple[Any, Any, Any] | None = None
        self._detectors: list[Any] = []
        self._made = 0

    def get(self) -> tuple[Any, Any, Any]:
        """(dlib module, shape predictor, recognition model)."""
        with self.lock:
            if self._loaded is None:
                try:
                    import dlib  # type: ignore[import-not-found]
                except ImportError as exc:  # pragma: no cover - depends on the install
                    raise IdentityUnavailableError(
                        "Face analysis needs dlib. " + _INSTALL_HINT
                    ) from exc
                self._loaded = (
                    dlib,
                    dlib.shape_predictor(_model_path("five_point")),
                    dlib.face_recognition_model_v1(_model_path("recognition")),
                )
            return self._loaded

    @contextmanager
    def detector(self) -> Iterator[Any]:
        """Borrow a detector nobody else is using (made on demand, returned afterwards)."""
        dlib = self.get()[0]
        with self.lock:
            det = self._detectors.pop() if self._detectors else None
        if det is None:
            det = dlib.get_frontal_face_detector()
        try:
            yield det
        finally:
            with self.lock:
                self._detectors.append(det)

    def ensure_detectors(self, count: int) -> None:
        dlib = self.get()[0]
        while True:
            with self.lock:
                if len(self._detectors) >= count:
                    return
            det = dlib.get_frontal_face_detector()
            with self.lock:
                self._detectors.append(det)


_MODELS = _Models()


def _default_workers() -> int:
    return max(1, min(2, os.cpu_count() or 1))


def warm_up(workers: int | None = None) -> None:
    """Load the dlib models and ``workers`` detectors now (about 0.5-1 s each on a small
    CPU) instead of during the first scoring call."""
    _MODELS.ensure_detectors(workers or _default_workers())


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
# Faces
# --------------------------------------------------------------------------------------
def _detection_view(rgb: Image.Image, thresholds: Thresholds) -> tuple[Image.Image, float]:
    """The image downscaled so its long side is at most ``detect_max_side`` (and the scale)."""
    w, h = rgb.size
    max_side = thresholds.detect_max_side
    if max_side and max(w, h) > max_side:
        scale = max_side / max(w, h)
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        return rgb.resize(size, Image.BILINEAR), scale
    return rgb, 1.0


def _analyze(
    rgb: Image.Image,
    thresholds: Thresholds,
    view: tuple[Image.Image, float] | None = None,
) -> list[Face]:
    """Detect faces on the (downscaled) view, then landmark and describe each at full size.

    Faces come back most confident first. If nothing is found, detection is retried with
    2x upsampling (slower, finds smaller faces).
    """
    dlib, predictor, recognizer = _MODELS.get()
    small_img, scale = view if view is not None else _detection_view(rgb, thresholds)
    w, h = rgb.size
    full = np.asarray(rgb, dtype=np.uint8)
    small = full if small_img is rgb else np.asarray(small_img, dtype=np.uint8)
    with _MODELS.detector() as detector:
        rects, scores, _ = detector.run(small, 0, 0.0)
        if len(rects) == 0:
            rects, scores, _ = detector.run(small, 1, 0.0)
    found = sorted(zip(rects, scores), key=lambda rs: -rs[1])[: max(1, thresholds.max_faces)]
    faces: list[Face] = []
    for rect, score in found:
        big = dlib.rectangle(
            int(round(rect.left() / scale)),
            int(round(rect.top() / scale)),
            int(round(rect.right() / scale)),
            int(round(rect.bottom() / scale)),
        )
        with _MODELS.lock:
            shape = predictor(full, big)
            vector = recognizer.compute_face_descriptor(full, shape, 0)  # 0 = no jitter
            descriptor = np.asarray(vector, dtype=np.float64)
            chip_rgb = dlib.get_face_chip(full, shape, size=48, padding=0.0)
        chip = np.asarray(Image.fromarray(np.asarray(chip_rgb, dtype=np.uint8)).convert("L"))
        box = (max(0, big.left()), max(0, big.top()), min(w, big.right()), min(h, big.bottom()))
        faces.append(Face(box=box, descriptor=descriptor, score=float(score), chip=chip))
    return faces


def _main_face(faces: Sequence[Face], thresholds: Thresholds) -> Face:
    """The largest face among those about as confident as the most confident one."""
    best = max(f.score for f in faces)
    clear = [f for f in faces if f.score >= best - thresholds.detection_margin]
    return max(clear, key=lambda f: f.area)


def detect_faces(image: Image.Image, thresholds: Thresholds = DEFAULT_THRESHOLDS) -> list[Face]:
    """All faces dlib finds (most confident first), with descriptors."""
    rgb, _ = _to_rgb(image)
    return _analyze(rgb, thresholds)


def reference_descriptor(
    image: Image.Image, thresholds: Thresholds = DEFAULT_THRESHOLDS
) -> np.ndarray:
    """Descriptor of the main (largest clear) face of the reference image.

    Raises NoFaceError with a message for the user when there is none.
    """
    faces = detect_faces(image, thresholds)
    if not faces:
        raise NoFaceError(
            "No face found in the reference image. Use a sharp photo where the face is clearly "
            "visible, roughly frontal, well lit and not too small (at least about a tenth of "
            "the picture's height)."
        )
    return _main_face(faces, thresholds).descriptor.copy()


# --------------------------------------------------------------------------------------
# Scoring
# --------------------------------------------------------------------------------------
def score_image(
    image: Image.Image,
    reference: np.ndarray | None,
    key: str = "",
    thresholds: Thresholds = DEFAULT_THRESHOLDS,
) -> ImageScore:
    """Identity distance to the reference plus per-image quality flags.

    With several faces (or a false detection) the face nearest the reference is scored
    (the main face when there is no reference) and the image is flagged several_faces.
    """
    rgb, mode_flag = _to_rgb(image)
    flags: list[Flag] = [mode_flag] if mode_flag else []
    w, h = rgb.size
    short, long_ = min(w, h), max(w, h)
    if short < thresholds.min_resolution:
        flags.append(
            Flag(
                "low_resolution",
                f"The image is only {w}x{h} pixels (short side under {thresholds.min_resolution}); "
                "training would upscale it and the LoRA would learn a soft, low-detail look.",
            )
        )
    aspect = long_ / max(short, 1)
    if aspect > thresholds.max_aspect:
        shape_word = "wide" if w > h else "tall"
        flags.append(
            Flag(
                "odd_aspect",
                f"The image is very {shape_word} ({aspect:.1f} to 1); training crops may cut "
                "the character off.",
            )
        )

    view = _detection_view(rgb, thresholds)  # also serves the whole-image measures
    faces = _analyze(rgb, thresholds, view)
    face: Face | None = None
    distance: float | None = None
    if faces:
        if reference is not None:
            face = min(faces, key=lambda f: face_distance(f.descriptor, reference))
            distance = face_distance(face.descriptor, reference)
        else:
            face = _main_face(faces, thresholds)
    if not faces:
        flags.append(
            Flag(
                "no_face",
                "No face was found, so this image can't teach the character's face "
                "(it may also be a failed generation).",
            )
        )
    elif len(faces) > 1:
        which = "the one most like the reference" if reference is not None else "the largest"
        flags.append(
            Flag(
                "several_faces",
                f"{len(faces)} faces were found ({which} was measured); other faces in training "
                "images blend into the character.",
            )
        )

    face_blur: float | None = None
    blur = _image_sharpness(view[0])
    if face is not None:
        side = face.side
        if side < thresholds.min_face_px or side < thresholds.min_face_fraction * short:
            flags.append(
                Flag(
                    "face_too_small",
                    f"The face is only about {side} px ({side / short:.0%} of the image's short "
                    "side); the LoRA learns little facial detail from faces this small.",
                )
            )
        face_blur = _face_sharpness(rgb, face.box)
        if face_blur < thresholds.blur_variance_face:
            flags.append(
                Flag(
                    "blurry",
                    "The face looks blurry; blurry training images teach the LoRA to make "
                    "soft, smeared faces.",
                )
            )
    elif blur < thresholds.blur_variance:
        flags.append(
            Flag(
                "blurry",
                "The image looks blurry; blurry training images teach the LoRA a soft look.",
            )
        )

    return ImageScore(
        key=key,
        face_found=face is not None,
        n_faces=len(faces),
        distance=distance,
        same_person=None if distance is None else bool(distance < thresholds.same_person),
        face_box=None if face is None else face.box,
        descriptor=None if face is None else face.descriptor,
        flags=flags,
        blur=blur,
        width=w,
        height=h,
        phash=_phash(view[0]),
        face_blur=face_blur,
        face_chip=None if face is None else face.chip,
        background=_background_signature(view[0]),
    )


def _near_duplicates(a: ImageScore, b: ImageScore, thresholds: Thresholds) -> bool:
    """Same picture at thumbnail size, and (when both have a face) the same face crop too."""
    if _hamming(a.phash, b.phash) > thresholds.near_duplicate_bits:
        return False
    if a.face_chip is not None and b.face_chip is not None:
        return _chip_diff(a.face_chip, b.face_chip) <= thresholds.near_duplicate_face_diff
    return True


def _names(keys: Sequence[str], limit: int = 3) -> str:
    shown = ", ".join(repr(k) for k in keys[:limit])
    more = len(keys) - limit
    return shown + (f" and {more} more" if more > 0 else "")


def score_images(
    items: Iterable[tuple[str, Image.Image]],
    reference: np.ndarray | None,
    thresholds: Thresholds = DEFAULT_THRESHOLDS,
    workers: int | None = None,
) -> list[ImageScore]:
    """``score_image`` for each (key, image), in input order, then near_duplicate flags
    across the set.

    ``workers`` threads (default: up to 2, one per CPU core) score images side by side: face
    detection and image resizing release the GIL, so they overlap with the descriptor
    network (serialized) of another image. Results don't depend on the number of workers.
    """
    items = list(items)
    if workers is None:
        workers = _default_workers()

    def one(item: tuple[str, Image.Image]) -> ImageScore:
        return score_image(item[1], reference, key=item[0], thresholds=thresholds)

    if workers > 1 and len(items) > 1:
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="identity") as pool:
            scores = list(pool.map(one, items))
    else:
        scores = [one(item) for item in items]
    for i, score in enumerate(scores):
        twins = [
            other.key
            for j, other in enumerate(scores)
            if j != i and _near_duplicates(score, other, thresholds)
        ]
        if twins:
            score.flags.append(
                Flag(
                    "near_duplicate",
                    f"Nearly identical to {_names(twins)}; duplicates add no variety and make "
                    "the LoRA overfit to that one picture.",
                )
            )
    return scores


# --------------------------------------------------------------------------------------
# Sets
# --------------------------------------------------------------------------------------
def _distance_matrix(vectors: Sequence[np.ndarray]) -> np.ndarray:
    if not vectors:
        return np.zeros((0, 0))
    m = np.stack([np.asarray(v, dtype=np.float64).ravel() for v in vectors])
    sq = (m * m).sum(axis=1)
    d2 = sq[:, None] + sq[None, :] - 2.0 * (m @ m.T)
    d = np.sqrt(np.clip(d2, 0.0, None))
    np.fill_diagonal(d, 0.0)
    return d


def pairwise_mean(vectors: Iterable[np.ndarray | None]) -> float | None:
    """Mean Euclidean distance over all pairs (None entries skipped); None if < 2 vectors."""
    vecs = [v for v in vectors if v is not None]
    if len(vecs) < 2:
        return None
    d = _distance_matrix(vecs)
    iu = np.triu_indices(len(vecs), k=1)
    return float(d[iu].mean())


def set_consistency(
    descriptors: Sequence[np.ndarray | None],
    reference: np.ndarray | None = None,
    thresholds: Thresholds = DEFAULT_THRESHOLDS,
) -> SetScore:
    """How much a set of face descriptors agrees (None entries, i.e. no face, are skipped)."""
    vecs = [np.asarray(v, dtype=np.float64) for v in descriptors if v is not None]
    n = len(vecs)
    mean_pairwise = share = None
    if n >= 2:
        d = _distance_matrix(vecs)[np.triu_indices(n, k=1)]
        mean_pairwise = float(d.mean())
        share = float((d < thresholds.same_person).mean())
    to_ref = None
    if reference is not None and n:
        to_ref = float(np.mean([face_distance(v, reference) for v in vecs]))
    return SetScore(
        n=n, mean_pairwise=mean_pairwise, share_under_threshold=share, mean_to_reference=to_ref
    )


def _category_of(
    categories: Sequence[str | None] | Mapping[str, str | None] | None,
    scores: Sequence[ImageScore],
) -> dict[str, str | None]:
    if categories is None:
        return {}
    if isinstance(categories, Mapping):
        return {str(k): v for k, v in categories.items()}
    if len(categories) != len(scores):
        raise ValueError(
            "categories must have one entry per score (or be a key -> category mapping)."
        )
    return {s.key: c for s, c in zip(scores, categories)}


def _quotas(counts: Mapping[str, int], order: Sequence[str], n: int) -> dict[str, int]:
    """Round-robin share of n slots over categories, capped by how many each has."""
    quota = {c: 0 for c in order}
    left = n
    while left > 0:
        progressed = False
        for c in order:
            if left > 0 and quota[c] < counts[c]:
                quota[c] += 1
                left -= 1
                progressed = True
        if not progressed:
            break
    return quota


_QUALITY_CODES = ("blurry", "low_resolution", "face_too_small", "several_faces", "odd_aspect")
# Cost terms of auto_select, in units of face distance (same person ~0.2-0.5):
_PENALTY_NO_FACE = 10.0  # no-face images only after every image with a face
_PENALTY_OTHER_PERSON = 1.0  # a face at/over the same-person line ranks after all that are under
_PENALTY_PER_FLAG = 0.25  # each quality flag costs about as much as a clearly worse face match
_BONUS_CATEGORY = 0.5  # an under-quota category beats a mild flag or a somewhat worse match


def auto_select(
    scores: Sequence[ImageScore],
    n: int = 25,
    categories: Sequence[str | None] | Mapping[str, str | None] | None = None,
    locked: Iterable[str] = (),
    excluded: Iterable[str] = (),
    thresholds: Thresholds = DEFAULT_THRESHOLDS,
) -> list[str]:
    """Pick up to ``n`` keys that agree with the reference and with each other and cover the
    categories; returns locked keys first, then the picks in the order they were chosen.

    Greedy: each step takes the candidate with the lowest cost = distance to the reference
    + mean distance to the faces already chosen + quality penalties - a bonus when its
    category is below its round-robin share. Images without a face rank after all images
    with one (so a set of faceless images, e.g. from the tiny test model, still gets a
    deterministic, category-balanced pick that prefers unflagged images). Two
    near-duplicates are never picked together (locked ones are kept as the user chose);
    excluded keys are never picked and win over locked. ``categories`` is either one entry
    per score or a key -> category mapping.
    """
    excluded_set = set(excluded)
    by_key: dict[str, ImageScore] = {}
    for s in scores:
        by_key.setdefault(s.key, s)
    cat_of = _category_of(categories, scores)

    chosen: list[str] = []
    for k in locked:
        if k not in excluded_set and k not in chosen:
            chosen.append(k)
    n = max(0, int(n))
    candidates = [
        s for s in by_key.values() if s.key not in excluded_set and s.key not in chosen
    ]
    if len(chosen) >= n or not candidates:
        return chosen

    pool = [by_key[k] for k in chosen if k in by_key] + candidates
    index = {s.key: i for i, s in enumerate(pool)}
    has_face = [s.descriptor is not None for s in pool]
    face_idx = [i for i, f in enumerate(has_face) if f]
    dist = np.zeros((len(pool), len(pool)))
    if face_idx:
        sub = _distance_matrix([pool[i].descriptor for i in face_idx])  # type: ignore[misc]
        dist[np.ix_(face_idx, face_idx)] = sub

    order: list[str] = []
    counts: dict[str, int] = {}
    for k in chosen + [s.key for s in candidates]:
        c = cat_of.get(k)
        if c is not None:
            if c not in counts:
                order.append(c)
                counts[c] = 0
            counts[c] += 1
    quota = _quotas(counts, order, n)
    taken = {c: 0 for c in order}
    for k in chosen:
        c = cat_of.get(k)
        if c is not None:
            taken[c] += 1

    base: list[float] = []
    for s in pool:
        cost = 0.0
        if s.descriptor is None:
            cost += _PENALTY_NO_FACE
        elif s.distance is not None:
            cost += s.distance
            if s.distance >= thresholds.same_person:
                cost += _PENALTY_OTHER_PERSON
        cost += _PENALTY_PER_FLAG * sum(f.code in _QUALITY_CODES for f in s.flags)
        base.append(cost)

    dup = np.zeros((len(pool), len(pool)), dtype=bool)
    for i, j in itertools.combinations(range(len(pool)), 2):
        dup[i, j] = dup[j, i] = _near_duplicates(pool[i], pool[j], thresholds)

    chosen_idx = [index[k] for k in chosen if k in index]
    remaining = [index[s.key] for s in candidates]
    while len(chosen) < n and remaining:
        chosen_faces = [j for j in chosen_idx if has_face[j]]
        best_i, best_cost = -1, math.inf
        for i in remaining:
            s = pool[i]
            if chosen_idx and dup[i, chosen_idx].any():
                continue
            cost = base[i]
            if has_face[i]:
                if chosen_faces:
                    cost += float(dist[i, chosen_faces].mean())
                else:  # first face: the one most typical of all faces on offer
                    others = [j for j in face_idx if j != i]
                    cost += float(dist[i, others].mean()) if others else 0.0
            c = cat_of.get(s.key)
            if c is not None and taken[c] < quota[c]:
                cost -= _BONUS_CATEGORY
            if cost < best_cost - 1e-12:
                best_i, best_cost = i, cost
        if best_i < 0:
            break  # everything left is a near-duplicate of a pick
        remaining.remove(best_i)
        chosen_idx.append(best_i)
        chosen.append(pool[best_i].key)
        c = cat_of.get(pool[best_i].key)
        if c is not None:
            taken[c] += 1
    return chosen


def dataset_warnings(
    scores: Sequence[ImageScore],
    selected: Sequence[str],
    categories: Mapping[str, str | None] | Sequence[str | None] | None = None,
    thresholds: Thresholds = DEFAULT_THRESHOLDS,
) -> list[str]:
    """Plain-language warnings about a selected training set, the ones LoRA dataset guides
    give: too few or too many images, little variety, same background everywhere, small or
    missing faces, low resolution, blur, duplicates and faces that don't agree."""
    t = thresholds
    by_key = {s.key: s for s in scores}
    cat_of = _category_of(categories, scores)
    keys = list(dict.fromkeys(selected))
    k = len(keys)
    out: list[str] = []
    if k == 0:
        return ["No images are selected for training."]
    if k < t.min_images:
        out.append(
            f"Only {k} images are selected; a character LoRA usually needs about {t.min_images}-"
            f"{t.max_images} varied images. Generate or add more."
        )
    elif k > t.max_images:
        out.append(
            f"{k} images are selected; more than about {t.max_images} rarely helps a character "
            "LoRA and makes training slower. Consider dropping the weakest."
        )

    if cat_of:
        sel_cats = [cat_of.get(key) for key in keys if cat_of.get(key) is not None]
        if len(sel_cats) >= 4:
            top, top_n = max(
                ((c, sel_cats.count(c)) for c in dict.fromkeys(sel_cats)), key=lambda cn: cn[1]
            )
            if top_n / len(sel_cats) > t.max_category_share:
                out.append(
                    f"{top_n} of {len(sel_cats)} selected images are '{top}' images; with so "
                    "little variety the LoRA may only reproduce that one look. Mix in other "
                    "categories."
                )
        missing = [c for c in dict.fromkeys(v for v in cat_of.values() if v) if c not in sel_cats]
        if missing and sel_cats:
            out.append(
                "No " + ", ".join(f"'{c}'" for c in missing) + " images are selected, although "
                "some were made; covering every category makes the LoRA more flexible."
            )

    chosen = [by_key[key] for key in keys if key in by_key]
    m = len(chosen)

    def many(count: int) -> bool:
        return m > 0 and count > 0 and count / m >= t.many_share

    backs = [s.background for s in chosen if s.background is not None]
    if len(backs) >= 3:
        pairs = list(itertools.combinations(backs, 2))
        similar = sum(_background_diff(a, b) <= t.background_diff for a, b in pairs)
        if similar / len(pairs) >= t.background_pairs_share:
            out.append(
                "Most selected images have nearly the same background; the LoRA may learn the "
                "background as part of the character. Include images in different settings."
            )

    no_face = [s.key for s in chosen if not s.face_found]
    if many(len(no_face)):
        out.append(
            f"{len(no_face)} of {m} selected images show no detectable face ({_names(no_face)}); "
            "they teach the LoRA nothing about the face."
        )
    small = [s.key for s in chosen if s.has_flag("face_too_small")]
    if many(len(small)):
        out.append(
            f"In {len(small)} of {m} selected images the face is small; add close-ups so the LoRA "
            "learns facial detail."
        )
    low = [s.key for s in chosen if s.has_flag("low_resolution")]
    if many(len(low)):
        out.append(
            f"{len(low)} of {m} selected images are low resolution (short side under "
            f"{t.min_resolution} px); the LoRA will learn a soft look."
        )
    blurry = [s.key for s in chosen if s.has_flag("blurry")]
    if many(len(blurry)):
        out.append(f"{len(blurry)} of {m} selected images look blurry ({_names(blurry)}).")

    dup_pairs = [
        (a.key, b.key)
        for a, b in itertools.combinations(chosen, 2)
        if _near_duplicates(a, b, t)
    ]
    if dup_pairs:
        shown = "; ".join(f"'{a}' and '{b}'" for a, b in dup_pairs[:3])
        more = f" (and {len(dup_pairs) - 3} more pairs)" if len(dup_pairs) > 3 else ""
        out.append(f"Near-duplicates in the selection: {shown}{more}. Keep only one of each.")

    others = [s.key for s in chosen if s.same_person is False]
    if others:
        out.append(
            f"{len(others)} selected image(s) look like a different person than the reference "
            f"(face distance {t.same_person} or more): {_names(others)}."
        )
    consistency = set_consistency([s.descriptor for s in chosen], thresholds=t)
    if (
        consistency.n >= 3
        and consistency.share_under_threshold is not None
        and consistency.share_under_threshold < t.min_consistency
    ):
        out.append(
            f"Only {consistency.share_under_threshold:.0%} of face pairs in the selection look "
            "like the same person; the LoRA may learn a blend of faces. Remove the odd ones out."
        )
    return out


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
