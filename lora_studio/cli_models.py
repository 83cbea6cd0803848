"""`python -m lora_studio models list|download ID|login|logout`: the Settings → Models section, headless.

`download` runs the same download job as the page (bytes kept across a cancel or a restart, the
free-space check first), uses the token huggingface_hub finds (`HF_TOKEN` first, then its token
file), prints the page's sentences and exits non-zero on a refusal. `login` reads the token from the
terminal without echo (or one line of stdin), never from the command line, where `ps` would show it.
Only `download` starts the job queue: `list`, `login` and `logout` read and take no job, so they can
run beside the app on its workspace while it downloads. Ctrl-C stops a download with its bytes kept
(cli_follow.py); the same command again goes on with that job and follows it to the end.
"""
from __future__ import annotations

import getpass
import sys
from typing import Callable

from .cli_follow import follow, stopping_on_ctrl_c
from .sizes import byte_text


def models_command(args, settings_from: Callable) -> tuple[object, str]:
    from .studio import Studio

    with Studio(settings_from(args), start=args.action == "download") as studio:
        models = studio.models
        if args.action == "list":
            rows = [r.to_dict() for r in models.catalogue()]
            lines = [f"{r['repo_id']:<40} {r['status']:<24} {byte_text(r['download_bytes']):>10}  "
                     f"{r['problem'] or r['recommendation']}" for r in rows]
            return rows, "\n".join(lines)
        if args.action in ("login", "logout"):
            state = models.logout() if args.action == "logout" else models.login(_read_token())
            return {"user": state.user, "source": state.source}, state.text().replace("**", "")
        if not args.model:
            raise SystemExit("error: give the model to download, e.g. black-forest-labs/FLUX.1-dev")

        def stopped(view) -> str:
            report = models.progress(view.id)
            return (f"Stopped {report['repo_id']} at {byte_text(report['bytes_done'])} of "
                    f"{byte_text(report['bytes_total'])}: the bytes are kept; run the same command again to go on.")

        shown = [""]

        def show(view) -> None:
            if not args.json and view.message != shown[0]:
                shown[0] = view.message
                print(f"\r{shown[0]:<70}", end="", file=sys.stderr, flush=True)

        try:
            with stopping_on_ctrl_c(studio, stopped):
                job = models.start_download(args.model, join=True)  # or the one it resumed, or the last stopped
                follow(studio, job.id, show, poll=0.5)
        finally:
            if not args.json and shown[0]:
                print(file=sys.stderr)
        studio.wait(job.id)  # raises the job's reason when it did not succeed
        report = models.progress(job.id)
        return report, f"{args.model}: {byte_text(report['bytes_total'])} on disk."


def _read_token() -> str:
    if sys.stdin.isatty():
        return getpass.getpass("Hugging Face token (hidden): ")
    return sys.stdin.readline().strip()
