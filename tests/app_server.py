"""Start the real Gradio app in-process on a free port (for gradio_client and browser tests)."""
from __future__ import annotations

import socket
from contextlib import contextmanager
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def running_app(workspace: Path, auth: tuple[str, str] | None = None, engine_object=None, concurrency: int = 1,
                **settings):
    """`concurrency` is Gradio's default_concurrency_limit (launch.py runs the app with 4)."""
    from lora_studio.config import Settings
    from lora_studio.studio import Studio
    from lora_studio.ui.app import build_app, launch_kwargs

    studio = Studio(Settings(workspace=workspace, **settings), engine=engine_object)
    demo = build_app(studio)
    port = free_port()
    demo.queue(default_concurrency_limit=concurrency).launch(
        server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, auth=auth,
        **launch_kwargs(studio))
    try:
        yield studio, f"http://127.0.0.1:{port}/"
    finally:
        demo.close()
        studio.close()
