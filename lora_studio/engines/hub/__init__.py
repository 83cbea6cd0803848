"""Models on the Hugging Face Hub: what a repo holds, its token, and downloads that keep every byte.

    repo.py      a repo's needed files and sizes, what is on disk, the Hub's errors in words
    token.py     the Hugging Face token: checked, kept where huggingface_hub looks, forgotten
    download.py  needed files fetched into the Hub cache, resumed with Range after any stop

No torch here: the Settings page and the CLI list models without loading any.
"""
from __future__ import annotations

from .download import bytes_kept, fetch, gb, space_text
from .repo import (TOKENS_PAGE, GatedError, HubError, HubFile, RepoFiles, bytes_on_disk, cache_root,
                   cached_commit, endpoint, free_bytes, has_weights, hub_error, in_cache, is_repo_id,
                   list_repo, load_failure_text, needed_files, offline, repo_cache, snapshot_dir)
from .token import TokenState, active_token, forget_token, recover_token_file, save_token, token_state, whoami

__all__ = [
    "TOKENS_PAGE", "GatedError", "HubError", "HubFile", "RepoFiles", "TokenState", "active_token", "bytes_kept",
    "bytes_on_disk", "cache_root", "cached_commit", "endpoint", "fetch", "forget_token", "free_bytes", "gb",
    "has_weights", "hub_error", "in_cache", "is_repo_id", "list_repo", "load_failure_text", "needed_files",
    "offline", "recover_token_file", "repo_cache", "save_token", "snapshot_dir", "space_text", "token_state", "whoami",
]
