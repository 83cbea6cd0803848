"""What a model on the Hugging Face Hub holds, what of it is already on disk, and its errors in words.

No torch here (the Settings tab and the CLI list models without loading any), and nothing fetched
behind the caller's back: listing reads the repo's file metadata and its `model_index.json` only.
Every path comes from huggingface_hub's own settings, read at call time, so `HF_HOME`,
`HF_HUB_CACHE` and `HF_ENDPOINT` are respected and the cache stays the one `from_pretrained` reads.

What the Hub answers becomes paths in that cache (file names, the commit, ETags), and a mirror or a
hostile `HF_ENDPOINT` answers anything: every name and commit is checked here (`check_listing`)
before it names a file, and the index is fetched by our own downloader, which checks ETags too.

Only the files a diffusers pipeline loads are counted and fetched: `model_index.json` and the
folders it names (weights in safetensors when a folder has them). Root single-file checkpoints
(`flux1-dev.safetensors`, `ae.safetensors`), pictures and READMEs are left on the Hub. A Kontext repo
gives only `transformer/` and its index: its text encoders and VAE are FLUX.1-dev's.
"""
from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from ..base import EngineError
from ..local import KONTEXT_CLASS

TOKENS_PAGE = "https://huggingface.co/settings/tokens"
OTHER_WEIGHTS = (".bin", ".pt", ".ckpt", ".msgpack", ".h5", ".onnx", ".onnx_data", ".gguf")
_REPO_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,95}/[A-Za-z0-9][A-Za-z0-9_.-]{0,95}")
COMMIT = re.compile(r"[0-9a-f]{40}")  # a git commit id, as the Hub names snapshots
MAX_FILES = 2000  # a FLUX pipeline loads a few dozen files; a listing asking for more is refused
MAX_FILE_BYTES = 1 << 42  # 4 TB: no single weight file is bigger
MAX_INDEX_BYTES = 1 << 20  # model_index.json is a few hundred bytes


class HubError(EngineError):
    """The Hub refused or failed; the message says what to do (a token, a licence, a name)."""


class GatedError(HubError):
    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class HubFile:
    path: str
    size: int


@dataclass(frozen=True)
class RepoFiles:
    """The files of one repo at one commit that a pipeline needs (and nothing else)."""

    repo_id: str
    commit: str
    files: tuple[HubFile, ...]
    pipeline_class: str | None = None

    @property
    def total(self) -> int:
        return sum(f.size for f in self.files)

    @property
    def is_kontext(self) -> bool:
        return self.pipeline_class == KONTEXT_CLASS


# ---- where things are ----------------------------------------------------------------------
def endpoint() -> str:
    from huggingface_hub import constants

    return constants.ENDPOINT


_APIS: dict = {}


def hub_api():
    """One client per endpoint, so its whoami cache lasts."""
    from huggingface_hub import HfApi

    url = endpoint()
    if url not in _APIS:
        _APIS[url] = HfApi(endpoint=url)
    return _APIS[url]


def cache_root() -> Path:
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def repo_cache(repo_id: str) -> Path:
    from huggingface_hub.file_download import repo_folder_name

    return cache_root() / repo_folder_name(repo_id=repo_id, repo_type="model")


def offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def is_repo_id(text: str) -> bool:
    return bool(_REPO_ID.fullmatch(text or "")) and ".." not in text


def has_weights(folder: Path) -> bool:
    """A local folder in diffusers layout with weights in it: used as it is, nothing downloaded."""
    folder = Path(folder)
    return (folder / "model_index.json").is_file() and any((folder / "transformer").glob("*.safetensors"))


def free_bytes(where: Path | None = None) -> int:
    """Free bytes on the disk that holds `where` (default: the hub cache), even before it exists."""
    path = Path(where or cache_root()).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return shutil.disk_usage(path).free


# ---- what a repo holds ---------------------------------------------------------------------
def needed_files(files: list[HubFile], model_index: dict | None, transformer_only: bool) -> list[HubFile]:
    """The pipeline's files: the index plus the folders it names (safetensors preferred per folder)."""
    if transformer_only:
        folders = {"transformer"}
    elif isinstance(model_index, dict) and model_index:
        folders = {k for k, v in model_index.items()
                   if isinstance(k, str) and not k.startswith("_") and isinstance(v, list) and v and v[0]}
    else:
        folders = {f.path.split("/", 1)[0] for f in files if "/" in f.path}
    chosen = [f for f in files if f.path == "model_index.json"
              or ("/" in f.path and f.path.split("/", 1)[0] in folders)]
    has_safetensors = {f.path.rsplit("/", 1)[0] for f in chosen if f.path.endswith(".safetensors")}
    return [f for f in chosen if not (f.path.endswith(OTHER_WEIGHTS) and f.path.rsplit("/", 1)[0] in has_safetensors)]


def repo_listing(repo_id: str, token: str | None = None, revision: str | None = None) -> tuple[str, list[HubFile]]:
    """A repo's commit and every file in it with its size (the Hub's file metadata), whatever it holds,
    each name and the commit checked before it can become a path (`check_listing`)."""
    if not is_repo_id(repo_id):
        raise HubError(f"{repo_id!r} is not a Hugging Face model id (owner/name) nor a folder here.")
    if offline():
        raise HubError("HF_HUB_OFFLINE is set, so nothing can be listed or downloaded from the Hub. "
                       "Unset it to download, or give a folder that holds the weights.")
    try:
        info = hub_api().model_info(repo_id, revision=revision, files_metadata=True, token=token or None)
    except Exception as exc:  # noqa: BLE001 - every Hub failure becomes one sentence
        raise hub_error(exc, repo_id) from None
    return check_listing(repo_id, info.sha, [(s.rfilename, s.size) for s in info.siblings or []])


def list_repo(repo_id: str, token: str | None = None, transformer_only: bool | None = None,
              revision: str | None = None) -> RepoFiles:
    """The repo's needed files with their sizes (from the Hub's file metadata). `transformer_only`
    None decides by the index: a Kontext repo gives its transformer only."""
    from .download import fetch  # the index goes through the checked downloader (its ETag names a file)

    commit, files = repo_listing(repo_id, token, revision)
    try:
        index = None
        index_file = next((f for f in files if f.path == "model_index.json"), None)
        if index_file is not None:
            if index_file.size > MAX_INDEX_BYTES:
                raise HubError(f"{repo_id}'s model_index.json is {index_file.size} bytes: not a pipeline's index.")
            folder = fetch(RepoFiles(repo_id, commit, (index_file,)), token, lambda n: None, lambda: False, ref=False)
            index = _read_index(folder / "model_index.json", repo_id)
    except Exception as exc:  # noqa: BLE001 - every Hub failure becomes one sentence
        raise hub_error(exc, repo_id) from None
    pipeline_class = index.get("_class_name") if isinstance(index, dict) else None
    only = pipeline_class == KONTEXT_CLASS if transformer_only is None else transformer_only
    chosen = needed_files(files, index, only)
    if not any(f.path.startswith("transformer/") for f in chosen):
        raise HubError(f"{repo_id} has no diffusers-layout transformer/ folder, so it is not a FLUX.1 pipeline "
                       "this app can load.")
    if len(chosen) > MAX_FILES:
        raise HubError(f"{repo_id} lists {len(chosen)} files for its pipeline; a FLUX.1 pipeline has a few dozen, "
                       f"so the listing was refused (at most {MAX_FILES}).")
    return RepoFiles(repo_id, commit, tuple(chosen), pipeline_class)


def safe_name(path) -> bool:
    """A repo file name that stays inside the snapshot folder on every system: relative, '/'-separated,
    no empty, '.' or '..' segment, no backslash, drive colon or control character."""
    if not isinstance(path, str) or not 0 < len(path) <= 1000 or not path.isprintable():
        return False
    if "\\" in path or ":" in path or path.startswith("/"):
        return False
    return all(part not in ("", ".", "..") for part in path.split("/"))


def check_listing(repo_id: str, commit, entries: list[tuple]) -> tuple[str, list[HubFile]]:
    """The commit and (name, size) pairs of a listing, each checked before it can become a path;
    a HubError in words on the first that could not (a mirror or a hostile HF_ENDPOINT)."""
    where = "If HF_ENDPOINT points at a mirror, check it; nothing was downloaded."
    if not isinstance(commit, str) or not COMMIT.fullmatch(commit):
        raise HubError(f"The Hub's answer for {repo_id} gave {_shown(commit)} as its commit, which is not a commit "
                       f"id. {where}")
    files = []
    for name, size in entries:
        if not safe_name(name):
            raise HubError(f"The Hub's answer for {repo_id} lists a file named {_shown(name)}, which would land "
                           f"outside the model's folder. {where}")
        if size is None:
            size = 0
        if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size <= MAX_FILE_BYTES:
            raise HubError(f"The Hub's answer for {repo_id} gives {_shown(name)} the size {_shown(size)}. {where}")
        files.append(HubFile(name, size))
    return commit, files


def _shown(value) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "…"


def _read_index(path: Path, repo_id: str) -> dict:
    try:
        index = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        index = None
    if not isinstance(index, dict):
        raise HubError(f"{repo_id}'s model_index.json is not a pipeline index (a JSON object), so it cannot be "
                       "loaded.")
    return index


TRANSFORMERS_FILES = re.compile(r"[^/]+\.(json|jinja|txt|model|safetensors|bin)")
TRANSFORMERS_SKIPPED = ("README.md", ".gitattributes")


def needed_transformers_files(files: list[HubFile]) -> list[HubFile]:
    """A transformers model's files (a captioner): the root's configs, tokenizer, processor, chat
    template and weights (safetensors when it has them); pictures, READMEs and folders stay on the Hub."""
    chosen = [f for f in files if TRANSFORMERS_FILES.fullmatch(f.path) and f.path not in TRANSFORMERS_SKIPPED]
    if any(f.path.endswith(".safetensors") for f in chosen):
        chosen = [f for f in chosen if not f.path.endswith(".bin")]
    return chosen


def list_transformers_repo(repo_id: str, token: str | None = None, revision: str | None = None) -> RepoFiles:
    """What a captioner's repo (config.json and weights at its root, transformers layout) needs fetched."""
    commit, files = repo_listing(repo_id, token, revision)
    chosen = needed_transformers_files(files)
    if len(chosen) > MAX_FILES:
        raise HubError(f"{repo_id} lists {len(chosen)} model files; a captioner has a few dozen, so the listing "
                       f"was refused (at most {MAX_FILES}).")
    if not any(f.path == "config.json" for f in chosen) or not any(f.path.endswith(".safetensors") for f in chosen):
        raise HubError(f"{repo_id} holds no transformers model with safetensors weights (config.json and "
                       "*.safetensors at its root), so it is not a captioner this app can load.")
    return RepoFiles(repo_id, commit, tuple(chosen))


def cached_commit(repo_id: str) -> str | None:
    ref = repo_cache(repo_id) / "refs" / "main"
    try:
        commit = ref.read_text(encoding="utf-8").strip()
    except (OSError, ValueError):
        return None
    return commit if COMMIT.fullmatch(commit) else None


def snapshot_dir(repo_id: str, commit: str) -> Path:
    if not isinstance(commit, str) or not COMMIT.fullmatch(commit):  # only a checked commit names a folder
        raise HubError(f"{_shown(commit)} is not a commit id of {repo_id}.")
    return repo_cache(repo_id) / "snapshots" / commit


def bytes_on_disk(repo: RepoFiles) -> int:
    """How much of the repo's needed files the cache already holds (finished files only)."""
    folder = snapshot_dir(repo.repo_id, repo.commit)
    return sum(f.size for f in repo.files if (folder / f.path).is_file())


def in_cache(repo_id: str) -> bool:
    """Whether the cache's current snapshot of this repo looks loadable, judged without the network:
    its index, and weights in transformer/."""
    commit = cached_commit(repo_id)
    return commit is not None and has_weights(snapshot_dir(repo_id, commit))


# ---- errors in words -----------------------------------------------------------------------
def gated_text(repo_id: str, status: int) -> str:
    page = f"https://huggingface.co/{repo_id}"
    if status == 403:
        return (f"Your Hugging Face token has no access to {repo_id}: accept its licence at {page} (logged in "
                "as the token's user), then try again. A fine-grained token also needs \"Read access to "
                "contents of all public gated repos you can access\".")
    return (f"{repo_id} is a gated model: it needs a Hugging Face read token. Make one at {TOKENS_PAGE}, "
            f"give it under Settings → Models (or `python -m lora_studio models login`), and accept the "
            f"licence at {page}.")


def hub_error(exc: BaseException, repo_id: str) -> HubError:
    """A Hub failure as one sentence that says what to do about it."""
    from huggingface_hub import errors

    if isinstance(exc, HubError):
        return exc
    status = getattr(getattr(exc, "response", None), "status_code", None)
    if isinstance(exc, errors.GatedRepoError):
        return GatedError(gated_text(repo_id, 403 if status == 403 else 401), 403 if status == 403 else 401)
    if isinstance(exc, errors.RepositoryNotFoundError):
        return HubError(f"No model {repo_id} on the Hugging Face Hub (or it is private and your token cannot "
                        "see it). Check the id on its page.")
    if isinstance(exc, errors.OfflineModeIsEnabled):
        return HubError("HF_HUB_OFFLINE is set, so nothing can be downloaded. Unset it to download.")
    if isinstance(exc, errors.HfHubHTTPError) and status == 401:
        return HubError(f"The Hugging Face token was refused (invalid or revoked). Make a new read token at "
                        f"{TOKENS_PAGE} and give it under Settings → Models.")
    if isinstance(exc, OSError) and getattr(exc, "errno", None) is not None:
        from ...errors import describe_os_error

        return HubError(describe_os_error(exc))
    return HubError(f"The Hugging Face Hub could not be reached for {repo_id} ({type(exc).__name__}). "
                    "Check the connection and try again; finished bytes are kept.")


def load_failure_text(model_id: str, exc: BaseException) -> str:
    """Why `from_pretrained` could not load a model, and the fix: a token or the licence for a gated
    repo, a download for a hub id not in the cache, the layout for a folder."""
    from huggingface_hub import errors

    chain, seen = [], exc
    while seen is not None and len(chain) < 8:
        chain.append(seen)
        seen = seen.__cause__ or seen.__context__
    for item in chain:
        if isinstance(item, errors.GatedRepoError):
            status = getattr(getattr(item, "response", None), "status_code", None)
            return gated_text(model_id, 403 if status == 403 else 401)
    reason = str(exc).strip().splitlines()[0].rstrip(".") if str(exc).strip() else type(exc).__name__
    if Path(model_id).expanduser().is_dir():
        return (f"Could not load the Flux model in the folder {Path(model_id).name} ({reason}). It needs the "
                "FLUX.1 weights in diffusers layout (model_index.json, transformer/, vae/, text_encoder*/, tokenizer*/).")
    if is_repo_id(model_id):
        return (f"Could not load {model_id} ({reason}). If it is not downloaded yet, download it under Settings → "
                f"Models or with `python -m lora_studio models download {model_id}`; a gated model also needs a "
                f"read token ({TOKENS_PAGE}) and its licence accepted at https://huggingface.co/{model_id}.")
    return (f"Could not load the Flux model {model_id!r} ({reason}): give a Hugging Face model id (owner/name) "
            "or a folder with the FLUX.1 weights in diffusers layout.")
