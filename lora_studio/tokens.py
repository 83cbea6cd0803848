"""An API token as the app may show it: whose it is and where it came from, never the token itself.

The Hugging Face token (huggingface_hub's file, or HF_TOKEN) and the Replicate token (the workspace's
owner-only file, or REPLICATE_API_TOKEN) are told the same way: engines/hub and engines/replicate
return a `TokenState`, the Settings services and the CLI pass it on, and the page shows `text()`.
What differs between the two services is data, a `TokenKind`. Imports nothing: every layer can use it.
"""
from __future__ import annotations

from dataclasses import dataclass

ENVIRONMENT = "environment"  # the token came from an environment variable, which wins over a saved one


@dataclass(frozen=True)
class TokenKind:
    """How one service's token is described; each part follows "Logged in to <service> as <user>"."""

    service: str  # "Hugging Face"
    missing: str  # the sentence when there is no token: where to make one
    from_environment: str  # e.g. " through the HF_TOKEN environment variable: it overrides ..."
    from_file: str  # e.g. " (token saved by huggingface_hub, ...)."


@dataclass(frozen=True)
class TokenState:
    kind: TokenKind
    user: str | None = None  # who the token belongs to; None: no token, not checked yet, or refused
    source: str | None = None  # ENVIRONMENT, or the saved file's name for it ("file", "page"); None: no token
    problem: str = ""  # why the token is refused or could not be checked, in words

    @property
    def present(self) -> bool:
        return bool(self.source)

    @property
    def logged_in(self) -> bool:
        return self.user is not None

    def text(self) -> str:
        if self.problem:
            return self.problem
        if not self.present:
            return self.kind.missing
        who = f"Logged in to {self.kind.service} as **{self.user}**" if self.user else "A token is set"
        return who + (self.kind.from_environment if self.source == ENVIRONMENT else self.kind.from_file)


__all__ = ["ENVIRONMENT", "TokenKind", "TokenState"]
