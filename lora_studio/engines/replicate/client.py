"""The one way this app talks to Replicate: where, with which client, and what its failures mean.

Every call (predictions, trainings, files, the account) goes through `make_client` and is wrapped in
`calling`, so a timeout, a refused token or a rate limit reads the same wherever it happens. The token
goes straight into the `replicate.Client` and is never part of a message.
"""
from __future__ import annotations

import os
import time
from contextlib import contextmanager
from email.utils import parsedate_to_datetime
from typing import Any, Iterator, Mapping

from ...config import ReplicateSettings
from ..base import EngineError

DEFAULT_BASE_URL = "https://api.replicate.com"
TOKEN_PAGE = "https://replicate.com/account/api-tokens"
DEFAULT_RETRY_AFTER_S = 1.0  # a 429 without a Retry-After header waits this long (then longer)
MAX_RETRY_AFTER_S = 60.0  # what we honour of one Retry-After at most


class RateLimited(Exception):
    """Replicate answered 429 to a request that creates something (POST): nothing was created, so the
    caller may send it again after `retry_after` seconds. (The client itself retries GETs on 429.)"""

    def __init__(self, retry_after: float | None) -> None:
        super().__init__(f"429 Too Many Requests (retry after {retry_after} s)")
        self.retry_after = retry_after


def base_url(settings: ReplicateSettings) -> str:
    """The API's address: the setting, else REPLICATE_BASE_URL (as the client reads it), else Replicate."""
    return settings.base_url or os.environ.get("REPLICATE_BASE_URL") or DEFAULT_BASE_URL


def make_client(token: str, url: str):
    """A `replicate.Client` for `token` at `url`. Creating calls that meet a 429 raise `RateLimited`
    with the server's retry time, which the client's own error would drop."""
    import httpx
    import replicate  # imported lazily: the app starts without it unless Replicate is used

    return replicate.Client(
        api_token=token, base_url=url,
        timeout=httpx.Timeout(10.0, read=60.0, write=120.0, pool=10.0),
        event_hooks={"response": [_signal_rate_limit]},
    )


def _signal_rate_limit(response) -> None:
    if response.status_code == 429 and response.request.method == "POST":
        response.close()
        raise RateLimited(retry_after(response.headers))


def retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds a Retry-After header asks for (delta-seconds or an HTTP date); None when absent or unreadable."""
    value = (headers.get("Retry-After") or "").strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError, IndexError):
            return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_S)


def explain(exc: Any, action: str, special: Mapping[int, str] | None = None) -> str:
    """A sentence for a `ReplicateError`; `special` words a status the way one caller means it."""
    status = getattr(exc, "status", None)
    detail = str(getattr(exc, "detail", None) or getattr(exc, "title", None) or "")[:300]
    if special and status in special:
        return special[status]
    if status == 401:
        return (f"Replicate refused this token (401) while {action}: check REPLICATE_API_TOKEN, or make a new "
                f"one at {TOKEN_PAGE} and paste it in Settings → Engine.")
    if status == 402:
        return "Replicate needs billing set up or more credit on the account (402 Payment Required)."
    if status == 404:
        return f"Replicate has no such model or account (404) while {action}: {detail}"
    if status == 422:
        return f"Replicate refused the input while {action} (422): {detail}"
    if status == 429:
        return rate_limited_text(action)
    return f"Replicate answered {status or 'an error'} while {action}: {detail}"


def rate_limited_text(action: str) -> str:
    return (f"Replicate is rate-limiting this account (429 Too Many Requests) while {action}, longer than "
            "this job waits: wait a minute and start it again.")


@contextmanager
def calling(action: str, url: str = "", special: Mapping[int, str] | None = None) -> Iterator[None]:
    """Turn client and HTTP failures into EngineErrors a user can act on (the cause kept for callers);
    `url`, when given, is named so a wrong base URL shows."""
    import httpx
    from replicate.exceptions import ReplicateError

    where = f" at {url}" if url else ""
    try:
        yield
    except RateLimited:
        raise EngineError(rate_limited_text(action)) from None
    except ReplicateError as exc:
        raise EngineError(explain(exc, action, special)) from exc
    except httpx.TimeoutException:
        raise EngineError(f"Timed out talking to Replicate{where} while {action}.") from None
    except httpx.HTTPError as exc:
        raise EngineError(f"Could not reach Replicate{where} while {action} ({type(exc).__name__}).") from None


__all__ = ["DEFAULT_BASE_URL", "RateLimited", "TOKEN_PAGE", "base_url", "calling", "explain", "make_client",
           "rate_limited_text", "retry_after"]
