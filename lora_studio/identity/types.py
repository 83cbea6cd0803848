"""Identity types and thresholds: what every measure returns, and every cut-off in one place."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np


# --------------------------------------------------------------------------------------
# Thresholds
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Thresholds:
    """Every cut-off used in this package, so they can be tuned (and argued about) in one place.

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
