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

from ...engines import hub
from ...engines.hub import bytes_kept, fetch, gb, space_text
from ...errors import UserError
from ...jobs import FINISHED, RUNNING, JobQueue, JobReporter, JobView
from ...store import Store

KIND = "download"
HEADROOM = 0.95  # as the memory planner: a plan must fit 95% of the GPU
PLAN_RESOLUTION = 512


@dataclass(frozen=True)
class CatalogueEntry:
    repo_id: str
    title: str
    memory_mode: str  # the memory mode whose planned need this model's weights imply
    note: str
    kontext: bool = False


CATALOGUE = (
    CatalogueEntry("black-forest-labs/FLUX.1-dev", "FLUX.1-dev", "checkpointing",
                   "Full bf16 weights: the best pictures and LoRAs. Gated: needs a token and the licence accepted."),
    CatalogueEntry("diffusers/FLUX.1-dev-bnb-8bit", "FLUX.1-dev, 8-bit (bitsandbytes)", "8bit",
                   "FLUX.1-dev quantized by diffusers to 8 bits: about half the GPU memory, a smaller download; "
                   "NVIDIA GPUs only."),
    CatalogueEntry("diffusers/FLUX.1-dev-bnb-4bit", "FLUX.1-dev, 4-bit NF4 (bitsandbytes)", "nf4",
                   "FLUX.1-dev quantized by diffusers to 4 bits: for 12-16 GB GPUs; NVIDIA GPUs only."),
    CatalogueEntry("black-forest-labs/FLUX.1-Kontext-dev", "FLUX.1-Kontext-dev (transformer only)", "checkpointing",
                   "Draws the character sheet (image editing). Only its transformer is fetched: it shares "
                   "FLUX.1-dev's text encoders and VAE. Gated, like FLUX.1-dev.", kontext=True),
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
    # Every file the pipeline loads is in the cache: counted against the Hub's list, or, when the Hub
    # could not be asked, judged from the cache's snapshot. "on disk" in `status` says exactly this.
    in_cache: bool = False

    @property
    def status(self) -> str:
        if self.local_folder:
            return "local folder, used as it is"
        if self.download_bytes is None and self.in_cache:
            return "on disk (the Hub was not asked)"
        if self.in_cache:
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
        return (f"No Hugging Face token. Gated models (FLUX.1-dev, FLUX.1-Kontext-dev) need a read token: make one "
                f"at {hub.TOKENS_PAGE}.")


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
        return f"{gb(self.done)} of {gb(self.total)} · {speed_text(speed)}{eta}"


def speed_text(per_second: float) -> str:
    """MB/s from 1 MB/s up, KB/s below it: a slow link reads "35 KB/s", never "0.0 MB/s"."""
    return f"{per_second / 1e6:.1f} MB/s" if per_second >= 1e6 else f"{per_second / 1e3:.0f} KB/s"


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{max(1, round(seconds))} s"
    if seconds < 5400:
        return f"{round(seconds / 60)} min"
    return f"{seconds / 3600:.1f} h"


class ModelsService:
    def __init__(self, store: Store, jobs: JobQueue, device: str = "auto",
                 free_space: Callable[[Path], int] = hub.free_bytes,
                 gpu_bytes: Callable[[], int | None] | None = None) -> None:
        """`free_space` and `gpu_bytes` are the seams to the machine (disk and GPU), given in tests."""
        self.store, self.jobs, self.device = store, jobs, device
        self.free_space = free_space
        self._gpu_bytes = gpu_bytes
        self._listed: dict[str, hub.RepoFiles] = {}
        self._live: dict[str, Rate] = {}
        self._lock = threading.Lock()
        jobs.register(KIND, self._run)

    # ---- the catalogue ---------------------------------------------------------------------
    def catalogue(self, refresh: bool = False) -> list[ModelRow]:
        return [self.describe(e.repo_id, refresh, entry=e) for e in CATALOGUE]

    def rows(self, refresh: bool = False) -> list[ModelRow]:
        """The catalogue, then every other model a download job here fetched (the page's table)."""
        named = [e.repo_id for e in CATALOGUE]
        others = dict.fromkeys(str(j.params.get("repo_id")) for j in self.downloads()
                               if j.params.get("repo_id") not in named)
        return self.catalogue(refresh) + [self.describe(repo_id, refresh) for repo_id in others]

    def chosen(self, job_id: str) -> tuple[str, bool]:
        """(model id, whether it is a Kontext transformer) of a finished download, to use as the model."""
        self._require_download(job_id)
        job = self.jobs.get(job_id)
        if job.status != "succeeded":
            raise UserError(f"{job.params.get('repo_id')} is not downloaded yet ({job.status}); use it once "
                            "its download has finished.")
        return str(job.params["repo_id"]), bool(job.params.get("transformer_only"))

    def describe(self, model: str, refresh: bool = False, entry: CatalogueEntry | None = None) -> ModelRow:
        """One row for a catalogue model, any hub id or a local folder."""
        model = _model_text(model)
        entry = entry or next((e for e in CATALOGUE if e.repo_id == model), None)
        title = entry.title if entry else model
        note = entry.note if entry else "A model you named."
        mode = entry.memory_mode if entry else "checkpointing"
        free = self.free_space(hub.cache_root())
        need, fits, advice = self._fit(mode, entry)
        if Path(model).expanduser().is_dir():  # a folder wins over a hub id of the same spelling, as in diffusers
            folder = Path(model).expanduser()
            if not hub.has_weights(folder):
                raise UserError(f"The folder {folder.name} holds no FLUX.1 weights in diffusers layout "
                                "(model_index.json and transformer/*.safetensors).")
            return ModelRow(model, title, note, 0, 0, free, need, fits, advice, local_folder=True)
        try:
            repo = self.listing(model, refresh, transformer_only=True if entry and entry.kontext else None)
        except hub.HubError as exc:
            return ModelRow(model, title, note, None, 0, free, need, fits, advice, problem=str(exc),
                            in_cache=hub.in_cache(model))
        kept = min(repo.total, bytes_kept(repo))
        index = sum(f.size for f in repo.files if f.path == "model_index.json")  # read by the listing itself
        return ModelRow(model, title, note, repo.total, kept if kept > index else 0, free, need, fits, advice,
                        in_cache=kept >= repo.total)

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

        need = estimated_need_gb(mode, PLAN_RESOLUTION)
        gpu = self.gpu_bytes()
        if entry is not None and entry.kontext:
            return need, None if gpu is None else need * 1e9 <= gpu * HEADROOM, (
                "Needed for the character sheet with the local engine.")
        if gpu is None:
            return need, None, ("No NVIDIA GPU found here: the weights can be downloaded, but FLUX.1 is far too "
                                "slow on a CPU. Use the Replicate engine, or run the app on a GPU machine.")
        fits = need * 1e9 <= gpu * HEADROOM
        best = next((e for e in CATALOGUE if not e.kontext
                     and estimated_need_gb(e.memory_mode, PLAN_RESOLUTION) * 1e9 <= gpu * HEADROOM), None)
        if entry is not None and best is entry:
            return need, True, f"Recommended for this GPU ({gpu / 1e9:.0f} GB)."
        if fits:
            return need, True, f"Fits this GPU ({gpu / 1e9:.0f} GB)."
        return need, False, (f"Too big for this GPU: plans {need:.1f} GB, the GPU has {gpu / 1e9:.0f} GB"
                             + (f"; take {best.title}." if best else "; use the Replicate engine."))

    # ---- downloads -------------------------------------------------------------------------
    def start_download(self, model: str) -> JobView:
        """Queue a download after the checks that need no byte of it: the id, access, the free space."""
        model = _model_text(model)
        if Path(model).expanduser().is_dir():
            raise UserError(f"{Path(model).name} is a folder here: it needs no download (choose it as the model).")
        if not hub.is_repo_id(model):
            raise UserError(f"{model!r} is not a Hugging Face model id (owner/name).")
        for job in self.jobs.list(KIND):
            if job.params.get("repo_id") == model and job.status not in FINISHED and job.status != "interrupted":
                raise UserError(f"{model} is already being downloaded (job {job.id}).")
        entry = next((e for e in CATALOGUE if e.repo_id == model), None)
        repo = self.listing(model, refresh=True, transformer_only=True if entry and entry.kontext else None)
        kept = bytes_kept(repo)
        self._check_space(repo, kept)
        params = {"repo_id": repo.repo_id, "commit": repo.commit, "transformer_only": repo.is_kontext or bool(
            entry and entry.kontext), "total": repo.total}
        return self.jobs.submit(KIND, params, title=f"Download {repo.repo_id}")

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
        return {"summary": f"{repo_id} is on disk ({gb(repo.total)}). Choose it as the model to use it.",
                "repo_id": repo_id, "bytes": repo.total}

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
