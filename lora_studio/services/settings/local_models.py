"""Local models: the catalogue's rows (model_catalogue.py), downloads as jobs, and the Hugging Face token.

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
from ...engines.hub import bytes_kept, fetch, space_text
from ...errors import UserError
from ...jobs import CANCELED, INTERRUPTED, QUEUED, RUNNING, JobQueue, JobReporter, JobView
from ...sizes import GB, MB, byte_text, rate_text
from ...step_clock import left_text
from ...store import Store
from ...tokens import TokenState
from ...typed_json import from_json_or_none
from ..job_params import DownloadParams
from .model_catalogue import CATALOGUE, CatalogueEntry

KIND = "download"
DEFAULT_MODEL = family.KLEIN_4B  # the first-run offer (config.LOCAL_DEFAULT, what `--engine local` loads)
HEADROOM = 0.95  # as the memory planner: a plan must fit 95% of the GPU
PLAN_RESOLUTION = 512


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
    licence: str = ""  # the model card's licence, when the catalogue knows it
    gated: bool | None = None  # needs a token and the licence accepted; None: not known

    @property
    def status(self) -> str:
        if self.local_folder:
            return "local folder, used as it is"
        if self.download_bytes is None and self.in_cache:
            return "on disk (the Hub was not asked)"
        if self.in_cache:
            return "on disk"
        if self.on_disk_bytes:
            return f"partly on disk ({byte_text(self.on_disk_bytes)})"
        return "not downloaded" if self.download_bytes is not None else "not known"

    @property
    def download_text(self) -> str:
        return byte_text(self.download_bytes)

    @property
    def free_text(self) -> str:
        return byte_text(self.free_bytes)

    def to_dict(self) -> dict:
        return {**asdict(self), "status": self.status}


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
        eta = "" if left is None else f" · about {left_text(max(1.0, left))} left"
        return f"{byte_text(self.done)} of {byte_text(self.total)} · {rate_text(speed)}{eta}"


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
        self._starting: set[str] = set()  # repos whose download job is being made (listed, checked)
        jobs.register(KIND, self._run, params=DownloadParams, owner_only=True)  # a visitor neither sees nor stops a download

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
        known = {"licence": entry.licence, "gated": entry.gated} if entry else {}
        free = self.free_space(hub.cache_root())
        need, fits, advice = self._fit(mode, entry)
        layout = entry.layout if entry else "diffusers"
        if Path(model).expanduser().is_dir():  # a folder wins over a hub id of the same spelling, as in diffusers
            folder = Path(model).expanduser()
            if layout == "transformers" and not _has_model_weights(folder):
                raise UserError(f"The folder {folder.name} holds no captioner (config.json and *.safetensors).")
            if layout == "diffusers" and not hub.has_weights(folder):
                raise UserError(f"The folder {folder.name} holds no FLUX.1 weights in diffusers layout "
                                "(model_index.json and transformer/*.safetensors).")
            return ModelRow(model, title, note, 0, 0, free, need, fits, advice, local_folder=True, **known)
        try:
            repo = self.listing(model, refresh, transformer_only=True if entry and entry.kontext else None,
                                layout=layout)
        except hub.HubError as exc:
            commit = hub.cached_commit(model)
            cached = hub.in_cache(model) if layout == "diffusers" else bool(
                commit and _has_model_weights(hub.snapshot_dir(model, commit)))
            return ModelRow(model, title, note, None, 0, free, need, fits, advice, problem=str(exc), in_cache=cached,
                            **known)
        kept = min(repo.total, bytes_kept(repo))
        index = sum(f.size for f in repo.files if f.path == "model_index.json")  # read by the listing itself
        return ModelRow(model, title, note, repo.total, kept if kept > index else 0, free, need, fits, advice,
                        in_cache=kept >= repo.total, **known)

    def listing(self, repo_id: str, refresh: bool = False, transformer_only: bool | None = None,
                layout: str = "diffusers") -> hub.RepoFiles:
        with self._lock:
            cached = self._listed.get(repo_id)
        if cached is None or refresh:
            cached = _list(repo_id, transformer_only, layout)
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

        gpu = self.gpu_bytes()
        if entry is not None and entry.kind == "captioner":
            need = float(entry.gpu_gb or 0.0)
            fits = None if gpu is None else need * 1e9 <= gpu * HEADROOM
            return need, fits, ("Captions the training images (a caption job on the GPU queue). No GPU here: it "
                                "runs on the CPU, slowly (a minute or more per image)." if gpu is None else
                                "Captions the training images; while it runs, the Flux model leaves the GPU if "
                                "both do not fit.")
        need = estimated_need_gb(mode, PLAN_RESOLUTION, architecture=entry.architecture if entry else "flux1-dev")
        if entry is not None and entry.kontext:
            return need, None if gpu is None else need * GB <= gpu * HEADROOM, (
                "Needed for the character sheet with the local engine.")
        if gpu is None:
            name = entry.title if entry else "FLUX"
            return need, None, (f"No NVIDIA GPU found here: the weights can be downloaded, but {name} is far too "
                                "slow on a CPU. Use the Replicate engine, or run the app on a GPU machine.")
        fits = need * GB <= gpu * HEADROOM
        best = next((e for e in CATALOGUE if not e.kontext and e.kind == "flux" and estimated_need_gb(
            e.memory_mode, PLAN_RESOLUTION, architecture=e.architecture) * GB <= gpu * HEADROOM), None)
        if entry is not None and best is entry:
            return need, True, f"Recommended for this GPU ({gpu / GB:.0f} GB)."
        if fits:
            return need, True, f"Fits this GPU ({gpu / GB:.0f} GB)."
        return need, False, (f"Too big for this GPU: plans {need:.1f} GB, the GPU has {gpu / GB:.0f} GB"
                             + (f"; take {best.title}." if best else "; use the Replicate engine."))

    # ---- downloads -------------------------------------------------------------------------
    def start_download(self, model: str, join: bool = False, transformer_only: bool | None = None,
                       then_use: str | None = None) -> JobView:
        """Queue a download after the checks that need no byte of it: the id, access, the free space.
        A download of it whose process is gone is taken over (its bytes are kept). `join` (the CLI): a
        download this process runs, or the last one stopped, is the one followed to the end.
        `transformer_only` fetches only `transformer/` (a Klein base beside its distilled sibling shares the
        sibling's encoders); `then_use` names the model the app switches to once this download and every
        other one with the same `then_use` are done (the first-run offer)."""
        model = _model_text(model)
        if Path(model).expanduser().is_dir():
            raise UserError(f"{Path(model).name} is a folder here: it needs no download (choose it as the model).")
        if not hub.is_repo_id(model):
            raise UserError(f"{model!r} is not a Hugging Face model id (owner/name).")
        with self._lock:  # the check and the claim in one step: simultaneous starts make one job
            same = self._downloads_of(model)
            for job in (j for j in same if j.status in (QUEUED, RUNNING)):
                if self.jobs.orphaned(job.id):
                    return self.jobs.resume(job.id)  # its process is gone: taken over here, its bytes kept
                here = self.jobs.held_here(job.id)
                if not (join and here):
                    raise UserError(f"{model} is already being downloaded"
                                    f"{'' if here else ' by another process on this workspace'} (job {job.id}).")
                return job
            stopped = [j for j in same if j.status in (CANCELED, INTERRUPTED)]
            if join and stopped:
                return self.jobs.resume(stopped[-1].id)
            if model in self._starting:
                raise UserError(f"{model} is already being downloaded (its job is starting).")
            self._starting.add(model)
        try:
            entry = next((e for e in CATALOGUE if e.repo_id == model), None)
            layout = entry.layout if entry else "diffusers"
            if transformer_only:  # not the catalogue's listing of this repo: not cached as it
                repo = hub.list_repo(model, transformer_only=True)
            else:
                repo = self.listing(model, refresh=True, transformer_only=True if entry and entry.kontext else None,
                                    layout=layout)
            kept = bytes_kept(repo)
            self._check_space(repo, kept)
            params = DownloadParams(repo.repo_id, repo.commit,
                                    repo.is_kontext or bool(entry and entry.kontext) or bool(transformer_only),
                                    repo.total, layout, then_use=then_use or None)
            what = " (its transformer)" if transformer_only else ""
            return self.jobs.submit(KIND, params, title=f"Download {repo.repo_id}{what}")
        finally:
            with self._lock:
                self._starting.discard(model)

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
            live = [j for j in self._downloads_of(repo_id)
                    if j.status in (QUEUED, RUNNING) and not self.jobs.orphaned(j.id)]
            if live:
                waiting.append(live[0])
            elif not hub.in_cache(repo_id):  # a download whose process is gone is taken over there
                jobs.append(self.start_download(repo_id, transformer_only=transformer_only, then_use=DEFAULT_MODEL))
        if not jobs and not waiting:
            return [], self._ready(DEFAULT_MODEL)
        names = ", ".join(j.params["repo_id"] for j in jobs + waiting)
        return jobs + waiting, (f"Downloading {names} (progress under Settings → Models); the app switches to "
                                f"{DEFAULT_MODEL} when {'they are' if len(jobs + waiting) > 1 else 'it is'} on disk.")

    def _downloads_of(self, repo_id: str) -> list[JobView]:
        """Every download job of `repo_id`, oldest first (a damaged record is nobody's)."""
        return [j for j in self.jobs.list(KIND)
                if getattr(from_json_or_none(DownloadParams, j.params), "repo_id", None) == repo_id]

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
        params = from_json_or_none(DownloadParams, job.params)  # None: a damaged record
        total = params.total if params else 0
        rate = self._live.get(job_id) if job.status == RUNNING else None
        done = rate.done if rate else int(round(job.progress * total))
        speed = rate.per_second if rate else 0.0
        eta = (total - done) / speed if speed > 0 else None
        return {"job_id": job.id, "repo_id": params.repo_id if params else None, "status": job.status,
                "bytes_done": done,
                "bytes_total": total, "mb_per_s": round(speed / MB, 2), "eta_s": None if eta is None else round(eta),
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

    def _run(self, params: DownloadParams, reporter: JobReporter) -> dict:
        repo_id = params.repo_id
        layout = "transformers" if params.layout == "transformers" else "diffusers"
        repo = _list(repo_id, params.transformer_only, layout, revision=params.commit)
        kept = bytes_kept(repo)
        self._check_space(repo, kept)
        rate = Rate(min(kept, repo.total), repo.total)
        self._live[reporter.job_id] = rate
        reporter.log(f"{repo_id}: {len(repo.files)} files, {byte_text(repo.total)}; {byte_text(rate.done)} already on disk.")

        def on_bytes(count: int) -> None:
            rate.add(count)
            reporter.progress(rate.fraction, rate.text())

        try:
            fetch(repo, None, on_bytes, lambda: reporter.cancel_requested, self.free_space)
        finally:
            self._live.pop(reporter.job_id, None)
        self._listed.pop(repo_id, None)
        summary = f"{repo_id} is on disk ({byte_text(repo.total)}). Choose it as the model to use it."
        if params.then_use == DEFAULT_MODEL:  # the first-run offer: switch to it
            switched = self._ready(params.then_use, finishing=reporter.job_id)
            if switched:
                summary = f"{repo_id} is on disk ({byte_text(repo.total)}). {switched}"
                reporter.log(switched)
        return {"summary": summary, "repo_id": repo_id, "bytes": repo.total}

    # ---- the Hugging Face token --------------------------------------------------------------
    def token_status(self) -> TokenState:
        """What the page shows about the Hugging Face token; the token itself never leaves huggingface_hub."""
        return hub.token_state()

    def login(self, token: str) -> TokenState:
        if not isinstance(token, str) or len(token) > 200:
            raise UserError(f"Paste a Hugging Face read token (from {hub.TOKENS_PAGE}).")
        saved = hub.save_token(token)
        state = self.token_status()
        return state if state.user else saved

    def logout(self) -> TokenState:
        hub.forget_token()
        return self.token_status()


def _list(repo_id: str, transformer_only: bool | None, layout: str, revision: str | None = None) -> hub.RepoFiles:
    if layout == "transformers":
        return hub.list_transformers_repo(repo_id, revision=revision)
    return hub.list_repo(repo_id, transformer_only=transformer_only, revision=revision)


def _has_model_weights(folder: Path) -> bool:
    return (folder / "config.json").is_file() and any(folder.glob("*.safetensors"))


def _model_text(model) -> str:
    if not isinstance(model, str) or not model.strip() or len(model) > 300:
        raise UserError("Give a Hugging Face model id (owner/name) or a folder that holds the weights.")
    return model.strip()
