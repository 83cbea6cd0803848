"""Publishing to the Hub: a token's write access checked before any byte, then one commit of files.

The token is asked about with `whoami` first: a read token (role "read"), a fine-grained token
without "repo.write" on the target's namespace, or a user who is no member of the target
organisation is refused in words, before the repo is created and before a byte is sent.

Files go up in one `create_commit`, given as open file objects: huggingface_hub then uses the plain
LFS protocol (preupload, LFS batch, PUT, commit) instead of Xet, which counts no bytes for us; the
objects count the bytes as the upload reads them (the page shows MB of MB) and stop a canceled job.
A repeated publish is a new commit on the same repo; a file the Hub already holds (same sha256) is
not sent again, so a publish cut halfway and started again sends only what is missing.
"""
from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ...progress import Canceled
from .repo import TOKENS_PAGE, HubError, hub_api, hub_error, is_repo_id
from .token import whoami_info

WRITE_SCOPE = "repo.write"


@dataclass(frozen=True)
class Published:
    repo_id: str
    commit: str
    url: str  # the repo's page
    commit_url: str
    private: bool | None  # None: the repo existed already and kept its visibility


def write_user(token: str | None, repo_id: str) -> str:
    """The user whose token may write to `repo_id`'s namespace; HubError in words otherwise."""
    if not is_repo_id(repo_id):
        raise HubError(f"{repo_id!r} is not a Hugging Face repo id: write it as your-name/lora-name.")
    if not token:
        raise HubError(f"Publishing needs a Hugging Face token with write access: make one (role \"Write\") at "
                       f"{TOKENS_PAGE} and give it under Settings → Models (or `python -m lora_studio models login`).")
    info = whoami_info(token)
    user = str(info.get("name", ""))
    namespace = repo_id.split("/")[0]
    orgs = {str(o.get("name")): str(o.get("roleInOrg", "")) for o in info.get("orgs") or [] if isinstance(o, dict)}
    if namespace != user and namespace not in orgs:
        raise HubError(f"The Hugging Face token is {user}'s, who cannot publish under {namespace!r}: publish as "
                       f"{user}/{repo_id.split('/')[1]}, or use a token of a member of {namespace}.")
    if namespace in orgs and orgs[namespace] == "read":
        raise HubError(f"{user} may only read in the organisation {namespace}: ask its admins for the write role.")
    access = (info.get("auth") or {}).get("accessToken") or {}
    role = str(access.get("role", ""))
    if role == "read":
        raise HubError(f"This Hugging Face token can only read (role \"read\"), and publishing writes a repo. Make a "
                       f"token with the \"Write\" role at {TOKENS_PAGE}, give it under Settings → Models, and publish "
                       "again. Nothing was uploaded.")
    if role == "fineGrained":
        scoped = (access.get("fineGrained") or {}).get("scoped") or []
        allowed = any(isinstance(s, dict) and (s.get("entity") or {}).get("name") == namespace
                      and WRITE_SCOPE in (s.get("permissions") or []) for s in scoped)
        if not allowed:
            raise HubError(f"This fine-grained Hugging Face token has no \"Write access to contents/settings of "
                           f"all repos\" under {namespace} ({WRITE_SCOPE}). Add it at {TOKENS_PAGE}, or use a "
                           "token with the \"Write\" role. Nothing was uploaded.")
    return user


class CountedFile(io.BufferedReader):
    """A file that reports the bytes the upload reads (after its hash is taken) and stops on cancel."""

    def __init__(self, path: Path, on_bytes: Callable[[int], None], cancelled: Callable[[], bool]) -> None:
        super().__init__(io.FileIO(str(path), "rb"))
        self.on_bytes, self.cancelled, self.counting = on_bytes, cancelled, False

    def read(self, size: int | None = -1) -> bytes:
        data = super().read(size)
        if self.counting:
            if self.cancelled():
                raise Canceled("Canceled by the user; what reached the Hub stays there for the next publish.")
            self.on_bytes(len(data))
        return data

    def read1(self, size: int = -1) -> bytes:
        return self.read(size)


def upload(repo_id: str, files: list[tuple[str, Path]], message: str, *, private: bool, token: str,
           on_bytes: Callable[[int], None] = lambda n: None, cancelled: Callable[[], bool] = lambda: False,
           description: str = "") -> Published:
    """Create the repo (private unless told; an existing one keeps its visibility) and commit `files`
    (path in repo, local file) to it as one new commit."""
    from huggingface_hub import CommitOperationAdd

    write_user(token, repo_id)
    api = hub_api()
    handles: list[CountedFile] = []
    try:
        existed = api.repo_exists(repo_id, token=token)
        url = api.create_repo(repo_id, private=private, exist_ok=True, token=token)
        operations = []
        for path_in_repo, local in files:
            handle = CountedFile(Path(local), on_bytes, cancelled)
            handles.append(handle)
            operations.append(CommitOperationAdd(path_in_repo=path_in_repo, path_or_fileobj=handle))
        for handle in handles:  # hashed at construction; from here on, reads are the upload
            handle.counting = True
        info = api.create_commit(repo_id, operations, commit_message=message, commit_description=description,
                                 token=token)
    except (Canceled, HubError):
        raise
    except Exception as exc:  # noqa: BLE001 - every Hub failure in words
        cause = exc.__cause__ if isinstance(exc, RuntimeError) and exc.__cause__ is not None else exc
        if isinstance(cause, Canceled):
            raise cause from None
        raise _refusal(cause, repo_id) from None
    finally:
        for handle in handles:
            handle.close()
    return Published(repo_id, str(info.oid), str(url), str(info.commit_url), None if existed else private)


def _refusal(exc: BaseException, repo_id: str) -> HubError:
    status = getattr(getattr(exc, "response", None), "status_code", None)
    if status == 403:
        return HubError(f"The Hub refused to write to {repo_id} (403): the token has no write access there. Check "
                        f"the repo's owner and the token's role at {TOKENS_PAGE}; what was sent so far is kept.")
    if status == 401:
        return HubError(f"The Hub refused the token while publishing (401): make a write token at {TOKENS_PAGE}.")
    if isinstance(exc, (ValueError, OSError)) and status is None and not getattr(exc, "errno", None):
        return HubError(f"Publishing to {repo_id} failed: {str(exc).splitlines()[0][:200] if str(exc) else exc!r}. "
                        "Publish again: files the Hub already holds are not sent twice.")
    error = hub_error(exc, repo_id)
    return HubError(str(error).replace("finished bytes are kept", "files the Hub already holds are not sent again"))


def card_licence(repo_id: str) -> tuple[str, str | None, str | None] | None:
    """(license, license_name, license_link) from a model's own card on the Hub; None when unknown."""
    try:
        data = hub_api().model_info(repo_id).card_data
    except Exception:  # noqa: BLE001 - unknown: the caller says so
        return None
    if data is None or not data.get("license"):
        return None
    return str(data.get("license")), data.get("license_name"), data.get("license_link")
