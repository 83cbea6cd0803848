"""Byte counts as people read them: one unit and one way of writing it, for every page and the CLI.

GB is 10^9 bytes, as the Hub, disk vendors and the memory plan's public figures count; a count under
0.1 GB reads better in MB. Imports nothing, so every layer (engines included) can use it.
"""
from __future__ import annotations

GB = 10**9
MB = 10**6


def byte_text(count: int | float | None) -> str:
    """E.g. "12.35 GB", "48.0 MB"; "?" for a size not known (offline, gated)."""
    if count is None:
        return "?"
    return f"{count / GB:.2f} GB" if count >= GB / 10 else f"{count / MB:.1f} MB"


def rate_text(bytes_per_second: float) -> str:
    """A transfer speed: MB/s from 1 MB/s up, KB/s below it, so a slow link reads "35 KB/s", never "0.0 MB/s"."""
    if bytes_per_second >= MB:
        return f"{bytes_per_second / MB:.1f} MB/s"
    return f"{bytes_per_second / 1e3:.0f} KB/s"


__all__ = ["GB", "MB", "byte_text", "rate_text"]
