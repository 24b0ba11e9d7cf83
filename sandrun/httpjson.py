"""The one HTTP helper the agent and the SDK share: requests with retries, and server
errors turned back into sandrun's own exceptions."""

from __future__ import annotations

import logging
import time
from collections.abc import Generator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

from sandrun.error_codes import rebuilt
from sandrun.errors import SandrunError, ServerUnreachable
from sandrun.signing import Identity

log = logging.getLogger("sandrun.http")


class HttpJson:
    """`url` may list several servers sharing one database ("http://a:8765,http://b:8765"):
    when one cannot be reached, requests move on to the next."""

    def __init__(
        self,
        url: str,
        token: str | None,
        read_timeout: float = 30.0,
        key: Identity | None = None,
    ) -> None:
        """`key`: sign each request with it instead of sending a token (docs/pool.md)."""
        self.urls = [u.strip().rstrip("/") for u in url.split(",") if u.strip()] or [""]
        self.url = self.urls[0]
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.Client(
            base_url=self.url,
            headers=headers,
            timeout=httpx.Timeout(10.0, read=read_timeout),
            auth=KeySigner(key) if key is not None else None,
        )

    def fail_over(self) -> None:
        """Use the next server in the list (after a connection failure)."""
        if len(self.urls) > 1:
            self.url = self.urls[(self.urls.index(self.url) + 1) % len(self.urls)]
            self.http.base_url = httpx.URL(self.url)

    def close(self) -> None:
        self.http.close()

    def request(
        self,
        method: str,
        path: str,
        *,
        retry_for: float = 0.0,
        **kwargs: Any,
    ) -> httpx.Response:
        """Send; on a connection failure or a 503, retry with backoff for `retry_for` s.
        A server that refuses the connection never saw the request, so the next server in
        the list is tried at once, whatever the method."""
        deadline = time.monotonic() + retry_for
        delay = 0.1
        untried = len(self.urls) - 1
        while True:
            try:
                response = self.http.request(method, path, **kwargs)
            except httpx.TransportError as exc:
                failed = self.url
                self.fail_over()
                if isinstance(exc, httpx.ConnectError) and untried > 0:
                    untried -= 1
                    continue
                if time.monotonic() >= deadline:
                    raise ServerUnreachable(
                        f"cannot reach the sandrun server at {failed}: {exc}"
                    ) from None
                why = str(exc)
            else:
                if response.status_code != 503 or time.monotonic() >= deadline:
                    raise_for_error(response)
                    return response
                why = f"503 {response.text[:200]}"
            # INFO: an agent's log shows it; an SDK user's Python shows WARNING and up only.
            log.info("%s %s: %s; trying again", method, path, why)
            time.sleep(delay)
            delay = min(delay * 2, 2.0)


def raise_for_error(response: httpx.Response) -> None:
    if response.status_code < 400:
        return
    try:
        body = response.json()
    except ValueError:
        body = {}
    if not isinstance(body, dict) or "code" not in body:
        raise SandrunError(f"the server answered {response.status_code}: {response.text[:200]}")
    raise rebuilt(
        str(body["code"]),
        str(body.get("message") or ""),
        body.get("field"),
        list(body.get("suggestions") or []),
    )


class KeySigner(httpx.Auth):
    """Signs every request with a key (sent again, it is signed again: a fresh time)."""

    requires_request_body = True

    def __init__(self, key: Identity) -> None:
        self.key = key

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        target = request.url.raw_path.decode("latin-1")
        request.headers.update(
            self.key.request_headers(request.method, target, request.content, time.time())
        )
        yield request


def ws_url(base: str, path: str) -> str:
    """`path` on the server at `base`, as a WebSocket address (http -> ws, https -> wss)."""
    parts = urlsplit(base)
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    return urlunsplit((scheme, parts.netloc, parts.path.rstrip("/") + path, "", ""))
