"""Publishing a LoRA to the Hugging Face Hub: both files, its card and the tester's pictures, one commit.

`start` checks, before anything is queued, that a token is there and may write to the repo's
namespace (`whoami`; a read-only token is refused in words) and that the LoRA has its files; the
"publish" job then runs on the side worker (network, not the GPU), checks the token again, creates
the repo (private unless asked; an existing one keeps its visibility), and commits `lora.safetensors`,
`lora_kohya.safetensors`, `README.md` (services/publish_card.py) and `images/` from the latest strength
test. Progress is bytes sent of the total. Publishing again is a new commit on the same repo, and
files the Hub already holds are not sent again, so an upload cut halfway goes on where it stopped.
The LoRA's record keeps where it went (`published`).
"""
from __future__ import annotations

import time
from pathlib import Path

from ..engines import hub
from ..sizes import byte_text
from ..jobs import JobQueue, JobReporter, JobView, UserError
from ..store import Store, atomic_write_text
from . import limits
from .job_params import PublishParams
from .library import LibraryService
from .publish_card import CardFacts, base_licence, base_of, hub_card

KIND = "publish"
SWEEP_KIND = "sweep"


class PublishService:
    def __init__(self, store: Store, jobs: JobQueue, library: LibraryService) -> None:
        self.store, self.jobs, self.library = store, jobs, library
        jobs.register(KIND, self._run, params=PublishParams)

    def start(self, lora: str, repo_id: str, public: bool = False) -> JobView:
        """Queue a publish after the checks that send nothing: the repo id, the token's write access, the files."""
        record = self.library.resolve(lora)
        repo_id = limits.text(repo_id, "The repo", 200, required=True, example="your-name/mila-lora")
        public = limits.flag(public, "Public")
        try:
            hub.write_user(hub.active_token(), repo_id)
        except hub.HubError as exc:
            raise UserError(str(exc)) from None
        self._files(record)
        for job in self.jobs.list(KIND):
            if job.params.get("repo_id") == repo_id and not job.done:
                raise UserError(f"{repo_id} is already being published (job {job.id}); wait for it.")
        return self.jobs.submit(KIND, PublishParams(record["id"], repo_id, private=not public),
                                title=f"Publish {record['name']} → {repo_id}")

    def card(self, lora: str, repo_id: str) -> str:
        """The README.md a publish would send (also shown before publishing)."""
        record = self.library.resolve(lora)
        return hub_card(_card_meta(record), self._facts(record, repo_id)[0])

    def progress(self, job_id: str) -> dict:
        job = self.jobs.get(job_id)
        if job.kind != KIND:
            raise UserError(f"Job {job_id} is not a publish.")
        done, total = job.outputs.get("bytes_done", 0), job.outputs.get("bytes_total")
        sent = f"{byte_text(done)} of {byte_text(total)} sent" if total else "Checking the token and the repo…"
        return {"job_id": job.id, "status": job.status, "bytes_done": done, "bytes_total": total, "sent": sent,
                "url": job.outputs.get("url"), "message": job.error or job.message}

    # ---- the job ---------------------------------------------------------------------------
    def _run(self, params: PublishParams, reporter: JobReporter) -> dict:
        record = self.library.get(params.lora_id)
        repo_id, private = params.repo_id, params.private
        token = hub.active_token()
        user = hub.write_user(token, repo_id)  # again: the token may have changed while it waited
        facts, pictures = self._facts(record, repo_id)
        card = reporter.dir / "README.md"
        atomic_write_text(card, hub_card(_card_meta(record), facts))
        files = [*self._files(record), ("README.md", card), *pictures]
        total = sum(Path(local).stat().st_size for _, local in files)
        sent = [0]
        last = [0.0]

        def on_bytes(count: int) -> None:
            sent[0] = min(total, sent[0] + count)
            if time.monotonic() - last[0] > 0.5 or sent[0] >= total:
                last[0] = time.monotonic()
                reporter.progress(sent[0] / total if total else 1.0,
                                  f"{byte_text(sent[0])} of {byte_text(total)} sent to {repo_id}")
                reporter.output("bytes_done", sent[0])

        reporter.outputs({"bytes_total": total, "bytes_done": 0})
        reporter.log(f"Publishing {record['name']} to {repo_id} as {user}: {len(files)} files, {byte_text(total)}.")
        done = hub.upload(repo_id, files, f"LoRA Studio: {record['name']}", private=private, token=token,
                          on_bytes=on_bytes, cancelled=lambda: reporter.cancel_requested,
                          description=f"Trigger word `{record.get('trigger') or ''}`, strength "
                                      f"{facts.strength if facts.strength is not None else 'untested'}.")
        visibility = {True: "private", False: "public", None: "its visibility unchanged"}[done.private]
        published = {"repo_id": repo_id, "commit": done.commit, "url": done.url, "at": time.time(),
                     "private": done.private}
        self.store.update("loras", record["id"], published=published)
        return {"summary": f"Published to {done.url} ({visibility}), commit {done.commit[:10]}.", "url": done.url,
                "commit": done.commit, "bytes_done": total, "bytes_total": total}

    def _files(self, record: dict) -> list[tuple[str, Path]]:
        files = record.get("files") or {}
        found = []
        for name, key in (("lora.safetensors", "lora"), ("lora_kohya.safetensors", "kohya")):
            rel = files.get(key) or (files.get("lora", "").rsplit("/", 1)[0] + f"/{name}" if files.get("lora") else "")
            path = self.store.path(rel) if rel else None
            if path is not None and path.is_file():
                found.append((name, path))
        if not found or found[0][0] != "lora.safetensors":
            raise UserError(f"{record['name']} has no lora.safetensors in the library folder; nothing to publish.")
        return found

    def _facts(self, record: dict, repo_id: str) -> tuple[CardFacts, list[tuple[str, Path]]]:
        meta = record.get("metadata") or {}
        scores = record.get("scores") or {}
        base, note = base_of(meta, hub.is_repo_id)
        facts = CardFacts(repo_id, base, base_licence(base, hub.card_licence),
                          scores.get("recommended_strength"), bool(scores), base_note=note)
        sweep = self._last_sweep(record["id"])
        pictures: list[tuple[str, Path]] = []
        if sweep is not None:
            outputs = sweep.outputs
            facts.prompt = str(sweep.params.get("prompt") or "")
            facts.rows = list((outputs.get("analysis") or {}).get("rows") or [])
            cells = [c for c in outputs.get("cells") or [] if c.get("strength") is not None]
            if cells:
                wanted = facts.strength if facts.strength is not None else 1.0
                shown = min({c["strength"] for c in cells}, key=lambda s: (abs(s - wanted), -s))
                facts.widget_strength = shown
                for c in cells:
                    if c["strength"] == shown:
                        path = self.store.path(c["path"])
                        if path.is_file():
                            name = f"images/strength_{shown:g}_seed_{c['seed']}.png"
                            pictures.append((name, path))
                            facts.widget.append(name)
        return facts, pictures

    def _last_sweep(self, lora_id: str):
        runs = [j for j in self.jobs.list(SWEEP_KIND, status="succeeded") if j.params.get("lora_id") == lora_id]
        return max(runs, key=lambda j: j.finished or 0) if runs else None


def _card_meta(record: dict) -> dict:
    """The training metadata with the library's trigger word: an imported LoRA (or one renamed since) keeps
    its word on the record, not in the metadata its file came with."""
    meta = dict(record.get("metadata") or {})
    return {**meta, "trigger": record.get("trigger") or meta.get("trigger") or ""}
