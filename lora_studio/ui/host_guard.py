"""A private launch answers only the browser on this machine (the defence against DNS rebinding).

On loopback, with no --share and no Space, whoever reaches the page is taken for the owner
(ui/owner.py). A web page elsewhere can still reach it: its own host name, re-pointed at 127.0.0.1
after the page loaded ("DNS rebinding"), makes the browser send `Host: rebind.example:PORT` and
`Origin: http://rebind.example:PORT` to this server, and Gradio's CORS check passes a host it does not
know as a local one. So every request (HTTP and websocket) must name a loopback host
(`localhost`, `127.x.x.x`, `[::1]`) and, when it carries an Origin, come from that same host and
port; anything else gets a 403 before any handler runs, as local web tools (Jupyter, dev servers)
answer. Installed through `launch(app_kwargs={"middleware": ...})` on the FastAPI app Gradio builds.
"""
from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.middleware import Middleware
from starlette.responses import PlainTextResponse

REFUSAL = ("This LoRA Studio answers only pages opened on this computer at its own address "
           "(http://127.0.0.1:PORT or http://localhost:PORT). Start it with --host 0.0.0.0 or --share to serve "
           "other machines; then the owner's settings need a login (--auth).")


def loopback_host(host: str) -> bool:
    """Whether a Host header names this machine's loopback (with or without a port)."""
    name = urlsplit(f"//{host or ''}").hostname
    if not name:
        return False
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def allowed(host: str | None, origin: str | None) -> bool:
    if not loopback_host(host or ""):
        return False
    if origin is None:
        return True  # not a browser's cross-site request (gradio_client, curl, a same-origin GET)
    return origin.lower() in (f"http://{host}".lower(), f"https://{host}".lower())


class LoopbackOnly:
    """ASGI middleware: refuse a request whose Host or Origin is not this machine's own address."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] in ("http", "websocket"):
            headers = Headers(scope=scope)
            if not allowed(headers.get("host"), headers.get("origin")):
                if scope["type"] == "websocket":
                    await send({"type": "websocket.close", "code": 1008})
                    return
                await PlainTextResponse(REFUSAL, status_code=403)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def guard_kwargs(private_launch: bool) -> dict:
    """The `launch()` arguments that install the guard on a private launch (none elsewhere)."""
    return {"app_kwargs": {"middleware": [Middleware(LoopbackOnly)]}} if private_launch else {}
