"""A small HTTP client for OpenAI-compatible servers: timeouts, retries with backoff, ``Retry-After``, key handling.

Built on ``httpx`` (the ``openai`` extra): one ``httpx.Client`` (a connection pool, thread-safe) shared by the
engine's worker threads. What is retried, and what is not:

* retried: HTTP 429 and 5xx (waiting what ``Retry-After`` says when the server says it, seconds or an HTTP
  date, up to :data:`MAX_RETRY_AFTER`; else ``backoff`` seconds doubled each attempt, with jitter, at most
  ``max_backoff``), a timeout (``timeout`` seconds without an answer: a hung connection), a broken connection,
  and a 200 whose body is not JSON;
* not retried: any other 4xx (a bad request, a bad key, a model the server does not serve), raised at once as
  :class:`ApiError` with the server's own message.

The API key is read from the environment variable *named* by ``api_key_env`` when a request is sent; it is
never stored, and every message this module produces has it replaced by ``***`` (:meth:`Client.redact`), in
case a server echoes it.
"""

from __future__ import annotations

import email.utils
import json
import os
import random
import time
from collections.abc import Callable
from typing import Any

from harness.errors import MissingDependency, UserError

#: the longest ``Retry-After`` honoured (seconds): a longer one fails the request instead of stalling the run
MAX_RETRY_AFTER = 600.0
#: characters of a server's error body kept in messages
BODY_CHARS = 300


class ApiError(Exception):
    """A 4xx answer other than 429: not retried. ``status`` is the HTTP status, ``message`` the server's words."""

    def __init__(self, status: int, message: str):
        super().__init__(f"HTTP {status}: {message}")
        self.status = status
        self.message = message


class RequestFailed(RuntimeError):
    """A request that kept failing (429/5xx, timeouts, broken connections, malformed JSON) after every retry."""


class Client:
    """Requests to one server. ``sleep`` is injectable for tests; ``on_retry(attempt, why, wait)`` is told of each retry."""

    def __init__(
        self,
        base_url: str,
        api_key_env: str | None = None,
        *,
        timeout: float = 120.0,
        connect_timeout: float = 10.0,
        max_retries: int = 5,
        backoff: float = 1.0,
        max_backoff: float = 60.0,
        pool: int = 16,
        sleep: Callable[[float], None] = time.sleep,
        on_retry: Callable[[int, str, float], None] | None = None,
    ):
        try:
            import httpx
        except ImportError:
            raise MissingDependency("httpx", "openai", purpose="the openai engine") from None
        self.base_url = base_url.strip().rstrip("/")
        self.api_key_env = api_key_env
        self.timeout = float(timeout)
        self.max_retries = int(max_retries)
        self.backoff = float(backoff)
        self.max_backoff = float(max_backoff)
        self.sleep = sleep
        self.on_retry = on_retry
        self.retries = 0  # retries made so far (all requests)
        self._httpx = httpx
        self._http = httpx.Client(
            timeout=httpx.Timeout(self.timeout, connect=min(float(connect_timeout), self.timeout)),
            limits=httpx.Limits(max_connections=pool, max_keepalive_connections=pool),
            follow_redirects=True,
        )

    # ------------------------------------------------------------------ the key

    def key(self) -> str | None:
        """The API key from the environment (None: no key configured). A named variable that is unset is an error."""
        if not self.api_key_env:
            return None
        value = os.environ.get(self.api_key_env)
        if not value:
            raise UserError(
                f"the environment variable {self.api_key_env} (named by api_key_env) is not set; export it with the API key of {self.base_url}",
                key="api_key_env",
            )
        return value

    def redact(self, text: str) -> str:
        """``text`` with the API key (if any is set) replaced by ``***``."""
        value = os.environ.get(self.api_key_env) if self.api_key_env else None
        if value and len(value) >= 4:
            text = text.replace(value, "***")
        return text

    def _headers(self) -> dict[str, str]:
        key = self.key()
        return {"Authorization": f"Bearer {key}"} if key else {}

    # ------------------------------------------------------------------ requests

    def get(self, path: str) -> Any:
        return self._request("GET", path, None)

    def post(self, path: str, body: dict[str, Any]) -> Any:
        return self._request("POST", path, body)

    def _request(self, method: str, path: str, body: dict[str, Any] | None) -> Any:
        httpx = self._httpx
        url = f"{self.base_url}/{path.lstrip('/')}"
        headers = self._headers()
        why = ""
        for attempt in range(self.max_retries + 1):
            wait = self._backoff(attempt)
            try:
                response = self._http.request(method, url, json=body, headers=headers)
            except httpx.TimeoutException:
                why = f"no answer within {self.timeout:g} s (timeout)"
            except httpx.TransportError as exc:
                why = f"connection failed ({type(exc).__name__}: {self.redact(str(exc)) or 'no detail'})"
            else:
                status = response.status_code
                if status == 429 or status >= 500:
                    why = f"HTTP {status}: {self._body_text(response)}"
                    after = retry_after(response.headers.get("retry-after"))
                    if after is not None:
                        if after > MAX_RETRY_AFTER:
                            raise RequestFailed(self.redact(f"{method} {url}: the server asks to retry after {after:g} s (more than {MAX_RETRY_AFTER:g} s): {why}"))
                        wait = after
                elif status >= 400:
                    raise ApiError(status, self.redact(self._body_text(response)))
                else:
                    try:
                        return response.json()
                    except ValueError:
                        why = f"HTTP {status} with a body that is not JSON: {self._body_text(response)!r}"
            if attempt == self.max_retries:
                break
            self.retries += 1
            if self.on_retry is not None:
                self.on_retry(attempt + 1, self.redact(why), wait)
            self.sleep(wait)
        tries = self.max_retries + 1
        raise RequestFailed(self.redact(f"{method} {url} failed {tries} time{'s' if tries != 1 else ''}: {why}"))

    def _backoff(self, attempt: int) -> float:
        """Exponential backoff with jitter: ``backoff`` × 2^attempt × [0.5, 1.5), at most ``max_backoff``."""
        return min(self.max_backoff, self.backoff * (2**attempt) * (0.5 + random.random()))

    def _body_text(self, response: Any) -> str:
        try:
            data = response.json()
        except ValueError:
            text = response.text
        else:
            err = data.get("error") if isinstance(data, dict) else None
            if isinstance(err, dict) and err.get("message"):
                text = str(err["message"])
            elif isinstance(data, dict) and isinstance(data.get("message"), str):
                text = data["message"]
            elif isinstance(data, dict) and isinstance(data.get("detail"), str):
                text = data["detail"]
            else:
                text = json.dumps(data)
        text = " ".join(text.split())
        return text[:BODY_CHARS] + ("…" if len(text) > BODY_CHARS else "")

    def close(self) -> None:
        self._http.close()


def retry_after(value: str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: a number of seconds or an HTTP date (None: absent or unreadable)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - time.time())


__all__ = ["Client", "ApiError", "RequestFailed", "retry_after", "MAX_RETRY_AFTER"]
