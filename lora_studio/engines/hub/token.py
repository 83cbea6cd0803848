"""The Hugging Face token: who it belongs to, and keeping or forgetting it where huggingface_hub looks.

The token itself never leaves huggingface_hub's own file (or `HF_TOKEN`): the page and the CLI see only
the user it belongs to and where it came from. A token file that is not UTF-8 text makes every
huggingface_hub token call raise (logout included), so it is set aside, as a broken settings file
is (store.set_aside), at start-up and before any token call.
"""
from __future__ import annotations

import os
import re
from dataclasses import replace
from pathlib import Path

from ...store import MovedAside, set_aside
from ...tokens import ENVIRONMENT, TokenKind, TokenState
from .repo import TOKENS_PAGE, HubError, hub_api

SAVED = "file"  # the source of a token in huggingface_hub's token file
TOKEN_KIND = TokenKind(
    "Hugging Face",
    missing=(f"No Hugging Face token. Gated models (FLUX.1-dev, FLUX.1-Kontext-dev, FLUX.2 [klein] 9B) need a read "
             f"token: make one at {TOKENS_PAGE}. FLUX.2 [klein] 4B needs none."),
    from_environment=" through the HF_TOKEN environment variable: it overrides any token saved here until it is unset.",
    from_file=" (token saved by huggingface_hub, shared with the `hf` CLI).")


def _environment_token() -> str | None:
    return os.environ.get("HF_TOKEN") or os.environ.get("HUGGING_FACE_HUB_TOKEN") or None


def active_token() -> str | None:
    from huggingface_hub import get_token

    return get_token()


def whoami(token: str, cache: bool = False) -> str:
    """The user a token belongs to; HubError in words when it is refused. `cache`: the Hub rate-limits
    this call, so a status shown on every page open asks once per token and process."""
    return str(whoami_info(token, cache)["name"])


def whoami_info(token: str, cache: bool = False) -> dict:
    """The Hub's whole answer about a token (its user, orgs and `auth.accessToken` role and scopes)."""
    try:
        return dict(hub_api().whoami(token=token, cache=cache))
    except Exception as exc:  # noqa: BLE001
        status = getattr(getattr(exc, "response", None), "status_code", None)
        if status == 401:
            raise HubError(f"Hugging Face refused this token (invalid or revoked). Make a read token at "
                           f"{TOKENS_PAGE} and paste it again.") from None
        raise HubError(f"The Hugging Face Hub could not check the token ({type(exc).__name__}); try again "
                       "when the connection is back.") from None


def recover_token_file() -> MovedAside | None:
    """Set aside huggingface_hub's token file when it cannot be read as text (None when it is fine)."""
    from huggingface_hub import constants

    path = Path(constants.HF_TOKEN_PATH)
    try:
        path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        why = "not readable as UTF-8 text"
    except IsADirectoryError:
        why = "a folder, not a file"
    except OSError:
        return None  # absent (the usual case) or not ours to read: huggingface_hub's own error stands
    else:
        return None
    return replace(set_aside(path, why), name=f"The Hugging Face token file ({path.name} in HF_HOME)")


def token_state() -> TokenState:
    """Whose the active token is (HF_TOKEN first, then the token file) and where it came from."""
    moved = recover_token_file()
    if moved is not None:
        return TokenState(TOKEN_KIND, None, None, f"{moved.sentence()} Give a read token again ({TOKENS_PAGE}).")
    token = active_token()
    if not token:
        return TokenState(TOKEN_KIND)
    source = ENVIRONMENT if _environment_token() else SAVED
    try:
        return TokenState(TOKEN_KIND, whoami(token, cache=True), source)
    except HubError as exc:
        return TokenState(TOKEN_KIND, None, source, str(exc))


def save_token(token: str) -> TokenState:
    """Check the token, then keep it with `huggingface_hub.login` (the same file the `hf` CLI uses)."""
    token = (token or "").strip()
    if not re.fullmatch(r"[A-Za-z0-9_\-]{8,200}", token):
        raise HubError(f"That does not look like a Hugging Face token (they start with hf_). Copy a read "
                       f"token from {TOKENS_PAGE}.")
    user = whoami(token)
    from huggingface_hub import login

    login(token=token, add_to_git_credential=False, skip_if_logged_in=False)
    return TokenState(TOKEN_KIND, user, SAVED)


def forget_token() -> None:
    """Remove the saved token (huggingface_hub.logout); HF_TOKEN in the environment stays in force."""
    from huggingface_hub import constants, logout

    recover_token_file()  # else logout() itself fails on it
    if _environment_token() is None:
        logout()
        return
    for path in (constants.HF_TOKEN_PATH, constants.HF_STORED_TOKENS_PATH):  # logout() raises while HF_TOKEN is set
        Path(path).unlink(missing_ok=True)
