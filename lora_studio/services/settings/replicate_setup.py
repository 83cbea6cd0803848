"""The Replicate part of setup: the API token (checked, stored for the owner only) and the model that
receives trained versions (picked from the account's models or created private).

Replies carry the account's user name and where the token came from, never the token itself.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from ...config import ReplicateSettings
from ...engines import replicate as account
from ...errors import InvalidInput, UserError
from ...tokens import TokenState


class ReplicateSetup:
    def __init__(self, workspace: Path, settings: ReplicateSettings) -> None:
        self.token_file = account.TokenFile(workspace)
        self.settings = settings
        self._username = ""  # the last account the current token proved to be

    @property
    def base_url(self) -> str:
        return account.base_url(self.settings)

    def status(self, check: bool = False) -> TokenState:
        """Who the token belongs to (once proved: `check` asks Replicate) and where it came from."""
        token, state = account.current_token(self.token_file)
        if check and token and not self._username:
            try:
                self._username = account.account_name(account.make_client(token, self.base_url))
            except Exception:  # noqa: BLE001 - a status line: an unreachable Replicate shows no name, no error
                self._username = ""
        return replace(state, user=(self._username or None) if token else None)

    def save_token(self, token: str) -> TokenState:
        """Check the token with the account call first; only a working token is stored."""
        token = account.clean_token(token)
        username = account.account_name(account.make_client(token, self.base_url))
        self.token_file.save(token)
        env_wins = account.current_token(None)[1].present  # REPLICATE_API_TOKEN: another account may be in use
        self._username = "" if env_wins else username
        return self.status(check=True)

    def forget_token(self) -> TokenState:
        self.token_file.clear()
        self._username = ""
        return self.status()

    def _client(self):
        token, _ = account.current_token(self.token_file)
        if not token:
            raise UserError(f"Paste a Replicate API token first (make one at {account.TOKEN_PAGE}).")
        return account.make_client(token, self.base_url)

    def destinations(self) -> list[str]:
        """owner/name of the account's models, for the destination picker."""
        client = self._client()
        return account.account_models(client, account.account_name(client))

    def use_destination(self, destination: str) -> str:
        destination = (destination or "").strip()
        if not destination or "/" not in destination or len(destination) > 201:
            raise InvalidInput("Pick a model (owner/name) from the list, or create one.")
        client = self._client()
        if not account.model_exists(client, destination):
            raise UserError(f"Replicate has no model {destination} in your account: create it here instead.")
        return destination

    def create_destination(self, name: str) -> str:
        name = account.model_name(name)  # refused before any call
        client = self._client()
        return account.create_model(client, account.account_name(client), name)


__all__ = ["ReplicateSetup"]
