"""Local models: a short catalogue, downloads as jobs, and the Hugging Face token.

A row says what a user must know before fetching tens of GB: the download size (the Hub's file
metadata, only the files the pipeline loads), free disk where the cache lives, how much is already
on disk, the GPU memory the model needs (the memory planner) and what suits the GPU found.

Downloads run as "download" jobs on the queue's side worker (jobs.py): they use the network and the
disk, never the GPU, so a generation or a training never waits behind 30 GB of weights, and the
download goes on while they run. Bytes are kept across a cancel, a dropped connection and a restart
(engines/hub/download.py); after a restart an interrupted download resumes by itself.

The token is huggingface_hub's own (its token file, shared with the `hf` CLI): it is checked with
`whoami`, saved with `login`, and never returned, logged or stored in the workspace.
"""
from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from ...engines import family, hub
from ...engines.hub import bytes_kept, fetch, gb, space_text
from ...errors import UserError
from ...jobs import FINISHED, RUNNING, JobQueue, JobReporter, JobView
from ...store import Store

KIND = "download"
DEFAULT_MODEL = family.KLEIN_4B  # the first-run offer (config.LOCAL_DEFAULT, what `--engine local` loads)
HEADROOM = 0.95  # as the memory planner: a plan must fit 95% of the GPU
PLAN_RESOLUTION = 512


@dataclass(frozen=True)
class CatalogueEntry:
    repo_id: str
    title: str
    memory_mode: str  # the memory mode whose planned need this model's weights imply
    note: str
    kontext: bool = False
    architecture: str = "flux1-dev"  # the full-size model the memory plan counts (engines/memory)
    licence: str = ""
    gated: bool | None = None  # the Hub asks for a token and the licence accepted; None: not known here


def _known(repo_id: str, memory_mode: str, note: str) -> CatalogueEntry:
    """A row for a checkpoint the model families know: title, licence, access and size come from there."""
    known = family.checkpoint(repo_id)
    return CatalogueEntry(repo_id, known.title, memory_mode, f"{note} {known.licence_text()}",
                          kontext=known.editor, architecture=known.architecture, licence=known.licence,
                          gated=known.gated)


CATALOGUE = (
    _known("black-forest-labs/FLUX.1-dev", "checkpointing", "Full bf16 weights: the best FLUX.1 pictures and LoRAs."),
    CatalogueEntry("diffusers/FLUX.1-dev-bnb-8bit", "FLUX.1-dev, 8-bit (bitsandbytes)", "8bit",
                   "FLUX.1-dev quantized by diffusers to 8 bits: about half the GPU memory, a smaller download; "
                   "NVIDIA GPUs only.", licence=family.FLUX1_DEV_NC),
    CatalogueEntry("diffusers/FLUX.1-dev-bnb-4bit", "FLUX.1-dev, 4-bit NF4 (bitsandbytes)", "nf4",
                   "FLUX.1-dev quantized by diffusers to 4 bits: for 12-16 GB GPUs; NVIDIA GPUs only.",
                   licence=family.FLUX1_DEV_NC),
    _known("black-forest-labs/FLUX.1-Kontext-dev", "checkpointing",
           "Draws the FLUX.1 character sheet (image editing). Only its transformer is fetched: it shares "
           "FLUX.1-dev's text encoders and VAE."),
    _known(family.KLEIN_4B, "checkpointing",
           "One 4 B checkpoint for text-to-image and the character sheet (reference edits), 4 steps a picture."),
    _known(family.KLEIN_BASE_4B, "checkpointing",
           "The undistilled 4 B: what Klein LoRAs are trained on (50 steps a picture on its own)."),
    _known(family.KLEIN_9B, "checkpointing", "The 9 B distilled checkpoint: better pictures, twice the memory."),
    _known(family.KLEIN_BASE_9B, "checkpointing", "The undistilled 9 B, for training 9 B LoRAs."),
)


@dataclass(frozen=True)
class ModelRow:
    repo_id: str
    title: str
    note: str
    download_bytes: int | None  # what the pipeline needs from the Hub; None: not known (offline)
    on_disk_bytes: int  # of those, already in the cache (finished and partial files)
    free_bytes: int  # on the cache's disk
    need_gb: float | None  # planned GPU memory (LoRA training at 512 px in the model's memory mode)
    fits: bool | None  # on the GPU found; None without a GPU
    recommendation: str
    problem: str = ""  # why the size is unknown (gated, offline, ...)
    local_folder: bool = False
    in_cache: bool = False  # the cache's snapshot looks loadable (judged without the Hub)
    licence: str = ""  # the model card's licence, when the catalogue knows it
    gated: bool | None = None  # needs a token and the licence accepted; None: not known

    @property
    def status(self) -> str:
        if self.local_folder:
            return "local folder, used as it is"
        if self.download_bytes is None and self.in_cache:
            return "on disk (the Hub was not asked)"
        if self.download_bytes is not None and self.on_disk_bytes >= self.download_bytes:
            return "on disk"
        if self.on_disk_bytes:
            return f"partly on disk ({gb(self.on_disk_bytes)})"
        return "not downloaded" if self.download_bytes is not None else "not known"

    def to_dict(self) -> dict:
        return {**asdict(self), "status": self.status}


@dataclass(frozen=True)
class TokenStatus:
    """What the page shows about the Hugging Face token; the token itself never leaves huggingface_hub."""

    user: str | None
    source: str | None  # "environment" | "file" | None
    problem: str = ""

    def text(self) -> str:
        if self.user and self.source == "environment":
            return (f"Logged in to Hugging Face as **{self.user}** through the HF_TOKEN environment variable: it "
                    "overrides any token saved here until it is unset.")
        if self.user:
            return f"Logged in to Hugging Face as **{self.user}** (token saved by huggingface_hub, shared with the `hf` CLI)."
        if self.problem:
            return self.problem
        return (f"No Hugging Face token. Gated models (FLUX.1-dev, FLUX.1-Kontext-dev, FLUX.2 [klein] 9B) need a read "
                f"token: make one at {hub.TOKENS_PAGE}. FLUX.2 [klein] 4B needs none.")


class Rate:
    """Bytes done, MB/s over the last few seconds, and the time left."""

    WINDOW = 5.0

    def __init__(self, done: int, total: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.done, self.total, self._clock = done, total, clock
        self._samples: deque[tuple[float, int]] = deque([(clock(), done)])

    def add(self, count: int) -> None:
        self.done += count
        now = self._clock()
        self._samples.append((now, self.done))
        while len(self._samples) > 2 and now - self._samples[0][0] > self.WINDOW:
            self._samples.popleft()

    @property
    def per_second(self) -> float:
        (t0, b0), (t1, b1) = self._samples[0], self._samples[-1]
        return (b1 - b0) / (t1 - t0) if t1 > t0 else 0.0

    @property
    def fraction(self) -> float:
        return min(1.0, self.done / self.total) if self.total else 1.0

    def text(self) -> str:
        speed = self.per_second
        left = (self.total - self.done) / speed if speed > 0 else None
        eta = "" if left is None else f" · about {_duration(left)} left"
        return f"{gb(self.done)} of {gb(self.total)} · {speed / 1e6:.1f} MB/s{eta}"


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{max(1, round(seconds))} s"
    if seconds < 5400:
        return f"{round(seconds / 60)} min"
    return f"{seconds / 3600:.1f} h"


class ModelsService:
    def __init__(self, store: Store, jobs: JobQueue, device: str = "auto",
                 free_space: Callable[[Path], int] = hub.free_bytes,
                 gpu_bytes: Callable[[], int | None] | None = None,
                 on_ready: Callable[[str], str] | None = None) -> None:
        """`free_space` and `gpu_bytes` are the seams to the machine (disk and GPU), given in tests;
        `on_ready(model)` switches the app to a model the first-run offer downloaded (a sentence back)."""
        self.store, self.jobs, self.device = store, jobs, device
        self.on_ready = on_ready
        self.free_space = free_space
        self._gpu_bytes = gpu_bytes
        self._listed: dict[str, hub.RepoFiles] = {}
        self._live: dict[str, Rate] = {}
        self._lock = threading.Lock()
        jobs.register(KIND, self._run)

    # ---- the catalogue ---------------------------------------------------------------------
    def catalogue(self, refresh: bool = False) -> list[ModelRow]:
        return [self.describe(e.repo_id, refresh, entry=e) for e in CATALOGUE]

    def describe(self, model: str, refresh: bool = False, entry: CatalogueEntry | None = None) -> ModelRow:
        """One row for a catalogue model, any hub id or a local folder."""
        model = _model_text(model)
        entry = entry or next((e for e in CATALOGUE if e.repo_id == model), None)
        title = entry.title if entry else model
        note = entry.note if entry else "A model you named."
        mode = entry.memory_mode if entry else "checkpointing"
        known = {"licence": entry.licence, "gated": entry.gated} if entry else {}
        free = self.free_space(hub.cache_root())
        need, fits, advice = self._fit(mode, entry)
        if Path(model).expanduser().is_dir():  # a folder wins over a hub id of the same spelling, as in diffusers
            folder = Path(model).expanduser()
            if not hub.has_weights(folder):
                raise UserError(f"The folder {folder.name} holds no FLUX.1 weights in diffusers layout "
                                "(model_index.json and transformer/*.safetensors).")
            return ModelRow(model, title, note, 0, 0, free, need, fits, advice, local_folder=True, **known)
        try:
            repo = self.listing(model, refresh, transformer_only=True if entry and entry.kontext else None)
        except hub.HubError as exc:
            return ModelRow(model, title, note, None, 0, free, need, fits, advice, problem=str(exc),
                            in_cache=hub.in_cache(model), **known)
        kept = min(repo.total, bytes_kept(repo))
        index = sum(f.size for f in repo.files if f.path == "model_index.json")  # read by the listing itself
        return ModelRow(model, title, note, repo.total, kept if kept > index else 0, free, need, fits, advice,
                        **known)

    def listing(self, repo_id: str, refresh: bool = False, transformer_only: bool | None = None) -> hub.RepoFiles:
        with self._lock:
            cached = self._listed.get(repo_id)
        if cached is None or refresh:
            cached = hub.list_repo(repo_id, transformer_only=transformer_only)
            with self._lock:
                self._listed[repo_id] = cached
        return cached

    def gpu_bytes(self) -> int | None:
        if self._gpu_bytes is not None:
            return self._gpu_bytes()
        from ...engines.memory import gpu_memory_bytes

        return gpu_memory_bytes(self.device)

    def _fit(self, mode: str, entry: CatalogueEntry | None) -> tuple[float | None, bool | None, str]:
        from ...engines.memory import estimated_need_gb

        need = estimated_need_gb(mode, PLAN_RESOLUTION, architecture=entry.architecture if entry else "flux1-dev")
        gpu = self.gpu_bytes()
        if entry is not None and entry.kontext:
            return need, None if gpu is None else need * 1e9 <= gpu * HEADROOM, (
                "Needed for the character sheet with the local engine.")
        if gpu is None:
            name = entry.title if entry else "FLUX"
            return need, None, (f"No NVIDIA GPU found here: the weights can be downloaded, but {name} is far too "
                                "slow on a CPU. Use the Replicate engine, or run the app on a GPU machine.")
        fits = need * 1e9 <= gpu * HEADROOM
        best = next((e for e in CATALOGUE if not e.kontext and estimated_need_gb(
            e.memory_mode, PLAN_RESOLUTION, architecture=e.architecture) * 1e9 <= gpu * HEADROOM), None)
        if entry is not None and best is entry:
            return need, True, f"Recommended for this GPU ({gpu / 1e9:.0f} GB)."
        if fits:
            return need, True, f"Fits this GPU ({gpu / 1e9:.0f} GB)."
        return need, False, (f"Too big for this GPU: plans {need:.1f} GB, the GPU has {gpu / 1e9:.0f} GB"
                             + (f"; take {best.title}." if best else "; use the Replicate engine."))

    # ---- downloads -------------------------------------------------------------------------
    def start_download(self, model: str, transformer_only: bool | None = None, then_use: str | None = None) -> JobView:
        """Queue a download after the checks that need no byte of it: the id, access, the free space.
        `transformer_only` fetches only `transformer/` (a Klein base beside its distilled sibling shares the
        sibling's encoders); `then_use` names the model the app switches to once this download and every
        other one with the same `then_use` are done (the first-run offer)."""
        model = _model_text(model)
        if Path(model).expanduser().is_dir():
            raise UserError(f"{Path(model).name} is a folder here: it needs no download (choose it as the model).")
        if not hub.is_repo_id(model):
            raise UserError(f"{model!r} is not a Hugging Face model id (owner/name).")
        for job in self.jobs.list(KIND):
            if job.params.get("repo_id") == model and job.status not in FINISHED and job.status != "interrupted":
                raise UserError(f"{model} is already being downloaded (job {job.id}).")
        entry = next((e for e in CATALOGUE if e.repo_id == model), None)
        if transformer_only:  # not the catalogue's listing of this repo: not cached as it
            repo = hub.list_repo(model, transformer_only=True)
        else:
            repo = self.listing(model, refresh=True, transformer_only=True if entry and entry.kontext else None)
        kept = bytes_kept(repo)
        self._check_space(repo, kept)
        params = {"repo_id": repo.repo_id, "commit": repo.commit, "transformer_only": repo.is_kontext or bool(
            entry and entry.kontext) or bool(transformer_only), "total": repo.total}
        if then_use:
            params["then_use"] = then_use
        what = " (its transformer)" if transformer_only else ""
        return self.jobs.submit(KIND, params, title=f"Download {repo.repo_id}{what}")

    # ---- the first-run offer: FLUX.2 [klein] 4B, no token -------------------------------------
    def default_offer(self) -> str:
        """The first-run card's line: FLUX.2 [klein] 4B, open, its download size and GPU memory, counted
        from the model (its bf16 weights as the repos hold them; the memory planner's needs)."""
        from ...engines.memory import download_bytes, estimated_need_gb

        known = family.checkpoint(DEFAULT_MODEL)
        size = download_bytes(known.architecture) + download_bytes(known.architecture, transformer_only=True)
        low, usual = (estimated_need_gb(mode, PLAN_RESOLUTION, architecture=known.architecture)
                      for mode in ("lowvram", "checkpointing"))
        return (f"**{known.title} — no token needed** ({known.licence}): about {size / 1e9:.0f} GB to download with "
                f"its base checkpoint (what LoRAs train on); a LoRA trains at {PLAN_RESOLUTION} px in "
                f"{low:.0f}–{usual:.0f} GB of GPU memory, and a picture takes 4 steps. The button downloads both "
                "and switches the app to it when they are on disk.")

    def start_default(self) -> tuple[list[JobView], str]:
        """Download FLUX.2 [klein] 4B (whole) and its base (its transformer only: the encoders are shared),
        skipping what is on disk or on its way; switch to it when both are there (`on_ready`)."""
        jobs, waiting = [], []
        for repo_id, transformer_only in ((DEFAULT_MODEL, False), (family.checkpoint(DEFAULT_MODEL).sibling, True)):
            running = [j for j in self.jobs.list(KIND) if j.params.get("repo_id") == repo_id and not j.done]
            if running:
                waiting.append(running[0])
            elif not hub.in_cache(repo_id):
                jobs.append(self.start_download(repo_id, transformer_only=transformer_only, then_use=DEFAULT_MODEL))
        if not jobs and not waiting:
            return [], self._ready(DEFAULT_MODEL)
        names = ", ".join(j.params["repo_id"] for j in jobs + waiting)
        return jobs + waiting, (f"Downloading {names} (progress under Settings → Models); the app switches to "
                                f"{DEFAULT_MODEL} when {'they are' if len(jobs + waiting) > 1 else 'it is'} on disk.")

    def _ready(self, model: str, finishing: str | None = None) -> str:
        """A `then_use` download finished (`finishing`, its job): switch when no other one for it is still
        on its way."""
        if any(j.params.get("then_use") == model and not j.done and j.id != finishing for j in self.jobs.list(KIND)):
            return ""
        return self.on_ready(model) if self.on_ready is not None else f"{model} is on disk: choose it in Settings → Engine."

    def _check_space(self, repo: hub.RepoFiles, kept: int) -> None:
        need, free = max(0, repo.total - kept), self.free_space(hub.cache_root())
        if need > free:
            raise UserError(space_text(need, free))

    def progress(self, job_id: str) -> dict:
        """Bytes done and total, MB/s and time left of a download job (live while it runs)."""
        job = self.jobs.get(job_id)
        if job.kind != KIND:
            raise UserError(f"Job {job_id} is not a download.")
        total = int(job.params.get("total") or 0)
        rate = self._live.get(job_id) if job.status == RUNNING else None
        done = rate.done if rate else int(round(job.progress * total))
        speed = rate.per_second if rate else 0.0
        eta = (total - done) / speed if speed > 0 else None
        return {"job_id": job.id, "repo_id": job.params.get("repo_id"), "status": job.status, "bytes_done": done,
                "bytes_total": total, "mb_per_s": round(speed / 1e6, 2), "eta_s": None if eta is None else round(eta),
                "message": job.error or job.message}

    def downloads(self) -> list[JobView]:
        return self.jobs.list(KIND)

    def cancel(self, job_id: str) -> JobView:
        self._require_download(job_id)
        return self.jobs.cancel(job_id)

    def resume(self, job_id: str) -> JobView:
        self._require_download(job_id)
        return self.jobs.resume(job_id)

    def resume_interrupted(self) -> None:
        """After a restart: downloads the last process left running go on where their bytes stop."""
        for job in self.jobs.list(KIND, status="interrupted"):
            try:
                self.jobs.resume(job.id)
            except UserError:
                pass  # the queue is full: it stays interrupted and can be resumed by hand

    def _require_download(self, job_id: str) -> None:
        if self.jobs.get(job_id).kind != KIND:
            raise UserError(f"Job {job_id} is not a download.")

    def _run(self, params: dict, reporter: JobReporter) -> dict:
        repo_id = str(params.get("repo_id", ""))
        repo = hub.list_repo(repo_id, revision=params.get("commit"), transformer_only=params.get("transformer_only"))
        kept = bytes_kept(repo)
        self._check_space(repo, kept)
        rate = Rate(min(kept, repo.total), repo.total)
        self._live[reporter.job_id] = rate
        reporter.log(f"{repo_id}: {len(repo.files)} files, {gb(repo.total)}; {gb(rate.done)} already on disk.")

        def on_bytes(count: int) -> None:
            rate.add(count)
            reporter.progress(rate.fraction, rate.text())

        try:
            fetch(repo, None, on_bytes, lambda: reporter.cancel_requested, self.free_space)
        finally:
            self._live.pop(reporter.job_id, None)
        self._listed.pop(repo_id, None)
        summary = f"{repo_id} is on disk ({gb(repo.total)}). Choose it as the model to use it."
        then_use = params.get("then_use")
        if isinstance(then_use, str) and then_use == DEFAULT_MODEL:  # the first-run offer: switch to it
            switched = self._ready(then_use, finishing=reporter.job_id)
            if switched:
                summary = f"{repo_id} is on disk ({gb(repo.total)}). {switched}"
                reporter.log(switched)
        return {"summary": summary, "repo_id": repo_id, "bytes": repo.total}

    # ---- the Hugging Face token --------------------------------------------------------------
    def token_status(self) -> TokenStatus:
        state = hub.token_state()
        return TokenStatus(state.user, state.source, state.problem)

    def login(self, token: str) -> TokenStatus:
        if not isinstance(token, str) or len(token) > 200:
            raise UserError(f"Paste a Hugging Face read token (from {hub.TOKENS_PAGE}).")
        user = hub.save_token(token)
        state = self.token_status()
        return state if state.user else TokenStatus(user, "file")

    def logout(self) -> TokenStatus:
        hub.forget_token()
        return self.token_status()


def _model_text(model) -> str:
    if not isinstance(model, str) or not model.strip() or len(model) > 300:
        raise UserError("Give a Hugging Face model id (owner/name) or a folder that holds the weights.")
    return model.strip()
