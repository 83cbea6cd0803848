"""Files to and from Replicate: the dataset zip we upload, and images and weights we download.

Downloads stream to a temporary name and are renamed into place only once checked, so a crash or a
wrong answer never leaves a half-written or fake LoRA where the library would pick it up.
"""
from __future__ import annotations

import base64
import json
import os
import struct
import tarfile
import zipfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import httpx

from ...images import IMAGE_SUFFIXES
from ..base import EngineError, TrainRequest


def zip_dataset(request: TrainRequest) -> Path:
    """Images with their same-named .txt captions, flat, as the Replicate FLUX trainers expect."""
    if not Path(request.dataset_dir).is_dir():
        raise EngineError(f"Dataset folder not found: {request.dataset_dir}")
    files = sorted(p for p in Path(request.dataset_dir).iterdir() if p.is_file())
    images = [p for p in files if p.suffix.lower() in IMAGE_SUFFIXES]
    if not images:
        raise EngineError(f"No training images found in {request.dataset_dir}.")
    folder = Path(request.work_dir)
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / "replicate_dataset.zip"
    tmp = target.with_suffix(".zip.tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as archive:
        for image in images:
            archive.write(image, image.name)
            caption = image.with_suffix(".txt")
            if caption.exists():
                archive.write(caption, caption.name)
    os.replace(tmp, target)
    return target

# ----------------------------------------------------------------- files


def download_bytes(url: str) -> bytes:
    if url.startswith("data:"):
        return base64.b64decode(url.split(",", 1)[1])
    with _downloading(url):
        response = httpx.get(url, follow_redirects=True, timeout=120.0)
        response.raise_for_status()
        return response.content

def download_weights(url: str, target: Path) -> None:
    """Stream to a temp file and rename, so a crash never leaves a half-written LoRA.

    Replicate's FLUX trainers publish a .tar holding the .safetensors; plain files pass through.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    download = target.with_name(target.name + ".download")
    extracted = target.with_name(target.name + ".tmp")
    try:
        with _downloading(url), httpx.stream("GET", url, follow_redirects=True, timeout=120.0) as response:
            response.raise_for_status()
            with open(download, "wb") as out:
                for chunk in response.iter_bytes(1 << 20):
                    out.write(chunk)
        source = download
        if tarfile.is_tarfile(download):
            extract_safetensors(download, extracted)
            source = extracted
        safetensors_header(source)  # refuse to install something that is not a LoRA file
        os.replace(source, target)
    finally:
        download.unlink(missing_ok=True)
        extracted.unlink(missing_ok=True)

@contextmanager
def _downloading(url: str) -> Iterator[None]:
    where = url.split("?", 1)[0]
    try:
        yield
    except httpx.HTTPStatusError as exc:
        raise EngineError(f"Downloading {where} failed with HTTP {exc.response.status_code}.") from None
    except httpx.HTTPError as exc:
        raise EngineError(f"Could not download {where} ({type(exc).__name__}).") from None


def safetensors_header(path: Path) -> dict:
    """Parse the JSON header: cheap proof that a file really is safetensors."""
    try:
        with open(path, "rb") as f:
            (size,) = struct.unpack("<Q", f.read(8))
            if size > 100 * 1024 * 1024:
                raise ValueError("header too large")
            header = json.loads(f.read(size))
        if not isinstance(header, dict):
            raise ValueError("header is not an object")
        return header
    except (OSError, ValueError, struct.error) as exc:
        raise EngineError(f"{Path(path).name} is not a valid .safetensors file ({exc}).") from None


def extract_safetensors(archive: Path, target: Path) -> None:
    with tarfile.open(archive) as tar:
        members = [m for m in tar.getmembers() if m.isfile() and m.name.endswith(".safetensors")]
        if not members:
            raise EngineError("The trained weights archive holds no .safetensors file.")
        member = max(members, key=lambda m: m.size)
        source = tar.extractfile(member)
        with open(target, "wb") as out:
            while chunk := source.read(1 << 20):
                out.write(chunk)
