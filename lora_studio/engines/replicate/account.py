"""The Replicate account behind the app: its API token, who it is, and where trained LoRAs go.

The token is a password to a paid account. It is read from REPLICATE_API_TOKEN when that is set
(it wins), else from a file only the app's user may read (0600, in the workspace's `secrets/`
folder, which is never served). It never enters the database, a log line, a job record or a reply:
callers get the account's user name and where the token came from, never the token.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

from ...tokens import ENVIRONMENT, TokenKind, TokenState
from ..base import EngineError
from .client import TOKEN_PAGE, calling

TOKEN_ENV = "REPLICATE_API_TOKEN"
MODEL_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,99}$")  # Replicate's rule: lowercase, digits, - _ .
DESTINATION_HARDWARE = "gpu-t4"  # a trained version runs on the trainer's hardware; this is only the model's default
MAX_TOKEN = 200
MODEL_PAGES = 3  # /v1/models pages read when listing the account's models
TAKEN = "A model with that name already exists in your account: pick it from the list instead."
SAVED = "page"  # the source of a token pasted on the Settings page (kept in TokenFile)
TOKEN_KIND = TokenKind(
    "Replicate", missing=f"No Replicate token yet. Make one at {TOKEN_PAGE} and paste it here.",
    from_environment=f" — token {TOKEN_ENV} in the environment (it wins over this page).",
    from_file=" — token saved here, readable by this computer's user only.")


class TokenFile:
    """The page's token, in a file readable by the owner only; written atomically, never logged."""

    def __init__(self, workspace: Path) -> None:
        self.path = Path(workspace) / "secrets" / "replicate_token"

    def read(self) -> str:
        try:
            return self.path.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError):
            return ""

    def save(self, token: str) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(self.path.parent, 0o700)
        temp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # 0600 from the first byte
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(token)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temp, self.path)
        finally:
            temp.unlink(missing_ok=True)

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)


def current_token(token_file: TokenFile | None) -> tuple[str, TokenState]:
    """The token to use and where it came from (whose it is is not asked here): the environment wins
    over the page's file."""
    env = os.environ.get(TOKEN_ENV, "").strip()
    if env:
        return env, TokenState(TOKEN_KIND, source=ENVIRONMENT)
    stored = token_file.read() if token_file is not None else ""
    return stored, TokenState(TOKEN_KIND, source=SAVED if stored else None)


def clean_token(token: str) -> str:
    token = (token or "").strip()
    if not token or len(token) > MAX_TOKEN or not token.isprintable() or " " in token:
        raise EngineError(f"Paste the API token from {TOKEN_PAGE} (one word, no spaces).")
    return token


def account_name(client) -> str:
    """The account's user name (GET /v1/account): proves the token works."""
    return _call(lambda: client.accounts.current().username, "checking the token")


def account_models(client, owner: str) -> list[str]:
    """owner/name of the account's models among the first pages of /v1/models."""
    found: list[str] = []

    def read() -> None:
        page = client.models.list()
        for _ in range(MODEL_PAGES):
            found.extend(f"{m.owner}/{m.name}" for m in page.results if m.owner == owner)
            if not page.next:
                return
            page = client.models.list(cursor=page.next)

    _call(read, "listing your models")
    return sorted(set(found))


def model_exists(client, destination: str) -> bool:
    from replicate.exceptions import ReplicateError

    try:
        _call(lambda: client.models.get(destination), "looking up the model")
    except EngineError as exc:
        if isinstance(exc.__cause__, ReplicateError) and getattr(exc.__cause__, "status", None) == 404:
            return False
        raise
    return True


def model_name(name: str) -> str:
    """A name Replicate accepts for a new model, or a refusal that says what it takes."""
    name = (name or "").strip()
    if not MODEL_NAME.match(name):
        raise EngineError("A model name is lowercase letters, digits, '-', '_' or '.', up to 100 characters.")
    return name


def create_model(client, owner: str, name: str) -> str:
    """A private model under the account, to receive trained versions."""
    name = model_name(name)
    _call(lambda: client.models.create(owner=owner, name=name, visibility="private", hardware=DESTINATION_HARDWARE),
          "creating the model")
    return f"{owner}/{name}"


def _call(fn, action: str):
    """One account call, its failures worded by `client.calling` (a taken model name said as such)."""
    with calling(action, special={409: TAKEN}):
        return fn()


__all__ = ["TOKEN_KIND", "TokenFile", "current_token", "clean_token", "account_name", "account_models",
           "model_exists", "model_name", "create_model"]
