"""Community LoRAs from the Hugging Face Hub: imported by hub id into the library.

`owner/name` picks the repo's one LoRA file (or one of the usual names when it holds several);
`owner/name/path/file.safetensors` (or the file's huggingface.co address) names it. The file comes
through the same downloads as the base models (engines/hub: the Hub cache, a Range-resumed partial
kept across a cancel, its sha256 checked), as a job on the side worker, and is then imported like
an uploaded file: every tensor checked against the model, read at its author's strength (diffusers
metadata, `.alpha` tensors) and stored with that scale folded in. The trigger word, when none is
given, is the repo card's `instance_prompt`; the record keeps where it came from (`metadata.hub`).
"""
from __future__ import annotations

import re

from ..engines import hub
from ..sizes import byte_text
from ..jobs import JobQueue, JobReporter, JobView, UserError
from ..store import Store
from . import limits
from .job_params import HubImportParams
from .library import MAX_IMPORT_BYTES, LibraryService

KIND = "lora_download"
USUAL_NAMES = ("pytorch_lora_weights.safetensors", "lora.safetensors")
_ADDRESS = re.compile(r"https?://(?:www\.)?huggingface\.co/(?P<repo>[^/]+/[^/]+)(?:/(?:blob|resolve)/[^/]+/(?P<path>.+))?")
MAX_CARD_BYTES = 1 << 20


def parse_reference(text: str) -> tuple[str, str | None]:
    """(repo id, file path or None) from `owner/name`, `owner/name/file` or a huggingface.co address."""
    text = limits.text(text, "The Hub LoRA", 400, required=True, example="owner/name")
    found = _ADDRESS.fullmatch(text.split("?")[0])
    repo_id, path = (found["repo"], found["path"]) if found else ("/".join(text.split("/")[:2]),
                                                                  "/".join(text.split("/")[2:]) or None)
    if not hub.is_repo_id(repo_id):
        raise UserError(f"{text[:100]!r} is not a Hub LoRA: write owner/name, or owner/name/file.safetensors.")
    if path is not None and (not path.endswith(".safetensors") or ".." in path.split("/")):
        raise UserError("Name a .safetensors file of the repo (owner/name/file.safetensors).")
    return repo_id, path


class HubImports:
    def __init__(self, store: Store, jobs: JobQueue, library: LibraryService) -> None:
        self.store, self.jobs, self.library = store, jobs, library
        jobs.register(KIND, self._run, params=HubImportParams)

    def start(self, reference: str, name: str = "", trigger: str = "") -> JobView:
        """Check the repo and the file (nothing downloaded yet), then queue its download and import."""
        repo_id, path = parse_reference(reference)
        name = limits.name(name, "The LoRA's name", "film-style")
        trigger = limits.text(trigger, "The trigger word", 64)
        try:
            commit, files = hub.repo_listing(repo_id, hub.active_token())
        except hub.HubError as exc:
            raise UserError(str(exc)) from None
        chosen = self._pick(repo_id, path, files)
        if chosen.size > MAX_IMPORT_BYTES:
            raise UserError(f"{chosen.path} is {byte_text(chosen.size)}: larger than a Flux LoRA ({MAX_IMPORT_BYTES // 1024**2} "
                            "MB at most). Is it a full model?")
        name = name or re.sub(r"[^\w .-]", "", chosen.path.rsplit("/", 1)[-1][:-len(".safetensors")])[:60] or "hub-lora"
        why = self.library.name_taken(name)
        if why:
            raise UserError(why)
        card = next((f for f in files if f.path == "README.md" and f.size <= MAX_CARD_BYTES), None)
        params = HubImportParams(repo_id, commit, chosen.path, chosen.size, name, trigger,
                                 card_size=card.size if card else None)
        return self.jobs.submit(KIND, params, title=f"Import {repo_id}/{chosen.path}")

    @staticmethod
    def _pick(repo_id: str, path: str | None, files: list) -> "hub.HubFile":
        weights = [f for f in files if f.path.endswith(".safetensors")]
        if path is not None:
            found = next((f for f in weights if f.path == path), None)
            if found is None:
                raise UserError(f"{repo_id} has no file {path}.")
            return found
        if len(weights) == 1:
            return weights[0]
        usual = [f for f in weights if f.path in USUAL_NAMES]
        if len(usual) == 1:
            return usual[0]
        if not weights:
            raise UserError(f"{repo_id} holds no .safetensors file, so no LoRA this app can import.")
        names = ", ".join(f.path for f in weights[:8]) + (" …" if len(weights) > 8 else "")
        raise UserError(f"{repo_id} holds {len(weights)} .safetensors files ({names}); name one as "
                        f"{repo_id}/FILE.safetensors.")

    def _run(self, params: HubImportParams, reporter: JobReporter) -> dict:
        repo_id, path = params.repo_id, params.path
        wanted = [hub.HubFile(path, params.size)]
        if params.card_size is not None and not params.trigger:
            wanted.append(hub.HubFile("README.md", params.card_size))
        repo = hub.RepoFiles(repo_id, params.commit, tuple(wanted))
        done = [0]

        def on_bytes(count: int) -> None:
            done[0] += count
            reporter.progress(min(1.0, done[0] / max(1, repo.total)), f"{byte_text(done[0])} of {byte_text(repo.total)}")

        reporter.log(f"Downloading {path} from {repo_id} ({byte_text(params.size)}).")
        folder = hub.fetch(repo, hub.active_token(), on_bytes, lambda: reporter.cancel_requested)
        trigger = params.trigger or _card_trigger(folder / "README.md")
        record = self.library.import_file(folder / path, params.name, trigger)
        meta = dict(record.get("metadata") or {}, hub={"repo_id": repo_id, "path": path, "commit": repo.commit})
        record = self.store.update("loras", record["id"], metadata=meta)
        scale = (meta.get("scale") or {}).get("text", "") if isinstance(meta.get("scale"), dict) else ""
        return {"summary": f"Imported {repo_id}/{path} as {record['name']}" + (f" ({scale})." if scale else "."),
                "lora_id": record["id"], "trigger": trigger}


def _card_trigger(card) -> str:
    """The trigger word a repo card names (`instance_prompt`), if it is one this app accepts."""
    from huggingface_hub import ModelCard

    from .selection import validate_trigger

    try:
        value = ModelCard(card.read_text(encoding="utf-8")).data.to_dict().get("instance_prompt")
        return validate_trigger(str(value)) if isinstance(value, str) else ""
    except Exception:  # noqa: BLE001 - no card, no YAML, a phrase rather than a word: the user gives one
        return ""
