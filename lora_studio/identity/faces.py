"""Finding faces and scoring one image, or a set of images, against the reference face."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Iterable, Sequence

import numpy as np
from PIL import Image

from .measures import (
    _background_signature,
    _chip_diff,
    _face_sharpness,
    _hamming,
    _image_sharpness,
    _phash,
    _to_rgb,
    face_distance,
)
from .models import _MODELS, _default_workers
from .types import DEFAULT_THRESHOLDS, Face, Flag, ImageScore, NoFaceError, Thresholds


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
