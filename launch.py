"""Start LoRA Studio: `python launch.py [--engine tiny|local|replicate] [--model PATH_OR_ID] ...`.

With nothing configured it runs on the built-in tiny Flux (noise images, everything else real).
Every flag has an environment variable (LORA_STUDIO_ENGINE, _MODEL, _WORKSPACE, _HOST, _PORT,
_SHARE, _AUTH, _NO_BROWSER), so the same file serves a Hugging Face Space. No model is loaded at
start-up, except on ZeroGPU hardware, where the base is loaded once before launch for every GPU call.
A local launch opens the browser on the app (see `browser_decision`); the start.* launchers run this.
"""
from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")


def parse_args(argv=None) -> argparse.Namespace:
    from lora_studio.cli import add_engine_options

    parser = argparse.ArgumentParser(description="LoRA Studio: one reference image to a FLUX.1 LoRA.")
    add_engine_options(parser)
    parser.add_argument("--host", help="address to listen on (default 127.0.0.1; 0.0.0.0 for a Space)")
    parser.add_argument("--port", type=int)
    parser.add_argument("--share", action="store_true", default=None, help="make a public Gradio link")
    parser.add_argument("--auth", help="USER:PASS required to open the app")
    parser.add_argument("--no-browser", action="store_true",
                        help="do not open a browser on the app (also LORA_STUDIO_NO_BROWSER=1)")
    return parser.parse_args(argv)


LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


def browser_decision(host: str, share: bool, no_browser: bool, env=None,
                     platform: str = sys.platform) -> tuple[bool, str]:
    """Open the user's browser on the app? Only for a local launch that someone sits in front of."""
    from lora_studio.config import truthy

    env = os.environ if env is None else env
    if no_browser or truthy(env.get("LORA_STUDIO_NO_BROWSER")):
        return False, "asked not to (--no-browser or LORA_STUDIO_NO_BROWSER)"
    if env.get("SPACE_ID"):
        return False, "running as a Hugging Face Space"
    if host not in LOCAL_HOSTS and not host.startswith("127."):
        return False, f"serving other machines on {host}"
    if share:
        return False, "serving a public --share link"
    if platform.startswith("linux") and not (env.get("DISPLAY") or env.get("WAYLAND_DISPLAY")):
        return False, "no display here (a server or an SSH session)"
    return True, "local launch"


def main(argv=None) -> None:
    from lora_studio import gpu_calls  # first: on ZeroGPU `spaces` must be imported before torch
    from lora_studio.cli import engine_overrides
    from lora_studio.config import Settings, parse_auth
    from lora_studio.errors import StudioError
    from lora_studio.studio import Studio
    from lora_studio.ui.app import build_app, launch_kwargs

    args = parse_args(argv)
    if os.environ.get("SPACE_ID") and not args.host:
        args.host = "0.0.0.0"  # a Hugging Face Space routes to the container's port
    try:
        settings = Settings.from_env(
            **engine_overrides(args), host=args.host, port=args.port,
            share=args.share, auth=parse_auth(args.auth) if args.auth else None)
    except ValueError as exc:
        sys.exit(f"error: {exc}")
    try:
        studio = Studio(settings)
    except StudioError as exc:  # e.g. a read-only or unwritable workspace: one line, no traceback
        sys.exit(f"error: {exc}")
    # Off the request path: dlib's face models (about a second) and the Training tab's memory plan
    # (it counts FLUX.1-dev's parameters on the meta device, which imports torch and diffusers).
    import threading

    from lora_studio import identity

    threading.Thread(target=_quiet(identity.warm_up, "face identity"), name="identity-warm-up", daemon=True).start()
    threading.Thread(target=_quiet(lambda: studio.training.memory_plan(None), "the memory plan"), name="plan-warm-up",
                     daemon=True).start()
    print(f"LoRA Studio · engine: {studio.engine_description()}\nWorkspace: {studio.store.root}", flush=True)
    for note in studio.startup_notes():  # a settings file that could not be used was moved aside
        print(f"warning: {note}", flush=True)
    if gpu_calls.zero_gpu_active():
        print("ZeroGPU: GPU work runs as spaces.GPU calls; loading the model before launch.", flush=True)
        gpu_calls.preload(studio.engine())
    inbrowser, why = browser_decision(settings.host, settings.share, args.no_browser)
    print(f"Browser: {'opening the app' if inbrowser else 'not opened'} ({why}).", flush=True)
    demo = build_app(studio)
    demo.queue(default_concurrency_limit=4).launch(
        server_name=settings.host, server_port=settings.port, share=settings.share,
        auth=settings.auth, inbrowser=inbrowser, **launch_kwargs(studio))


def _quiet(fn, what: str):
    def run():
        try:
            fn()
        except Exception as exc:  # noqa: BLE001 - the feature reports the same problem when used
            print(f"note: {what} is unavailable ({exc})", flush=True)
    return run


if __name__ == "__main__":
    main()
