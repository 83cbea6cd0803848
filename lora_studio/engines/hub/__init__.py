"""Models on the Hugging Face Hub: what a repo holds, its token, and downloads that keep every byte.

    repo.py      a repo's needed files and sizes, what is on disk, the Hub's errors in words
    token.py     the Hugging Face token: checked, kept where huggingface_hub looks, forgotten
    download.py  needed files fetched into the Hub cache, resumed with Range after any stop
    publish.py   a token's write access checked, then files committed to a repo (bytes counted)

No torch here: the Settings page and the CLI list models without loading any.
"""
from __future__ import annotations

from .download import bytes_kept, fetch, space_text
from .repo import (TOKENS_PAGE, GatedError, HubError, HubFile, RepoFiles, bytes_on_disk, cache_root,
                   cached_commit, endpoint, free_bytes, has_weights, hub_error, in_cache, is_repo_id,
                   list_repo, list_transformers_repo, load_failure_text, needed_files, offline, repo_cache,
                   repo_listing, snapshot_dir)
from .publish import Published, card_licence, upload, write_user
from .token import (TOKEN_KIND, active_token, forget_token, recover_token_file, save_token, token_state, whoami,
                    whoami_info)

__all__ = [
    "TOKEN_KIND", "TOKENS_PAGE", "GatedError", "HubError", "HubFile", "Published", "RepoFiles", "active_token",
    "bytes_kept", "bytes_on_disk", "cache_root", "card_licence", "cached_commit", "endpoint", "fetch", "forget_token",
    "free_bytes", "has_weights", "hub_error", "in_cache", "is_repo_id", "list_repo", "list_transformers_repo",
    "load_failure_text", "needed_files", "offline", "recover_token_file", "repo_cache", "repo_listing", "save_token",
    "snapshot_dir", "space_text", "token_state", "upload", "whoami", "whoami_info", "write_user",
]
