"""Moving blobs to and from the server's object store by the URLs the server presigns,
so their bytes do not pass through the server (a server with `--artifacts s3://...`)."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import httpx

from sandrun.artifacts import LocalArtifactStore
from sandrun.errors import AgentError

log = logging.getLogger("sandrun.agent")

RETRY_FOR = 600.0  # how long an upload is retried through the store's own failures


def client() -> httpx.Client:
    """One client for the object store's presigned URLs (its connections kept between
    blobs), holding none of this agent's credentials."""
    return httpx.Client(timeout=httpx.Timeout(10.0, read=300.0, write=300.0))


def download(http: httpx.Client, url: str, artifacts: LocalArtifactStore) -> str:
    """Stream a blob into this agent's store; return the digest of what came."""
    try:
        with http.stream("GET", url) as got:
            if got.status_code != 200:
                raise AgentError(f"the artifact store answered {got.status_code}")
            return artifacts.put_chunks(got.iter_bytes())[0]
    except httpx.HTTPError as exc:
        raise AgentError(f"cannot fetch from the artifact store: {exc}") from None


def upload(http: httpx.Client, url: str, path: Path, headers: dict[str, str]) -> None:
    """Upload a file to a presigned URL; the store's own failures (5xx, a lost
    connection) are tried again for as long as a result is."""
    deadline, delay = time.monotonic() + RETRY_FOR, 0.5
    while True:
        try:
            with open(path, "rb") as handle:
                sent = http.put(url, content=handle, headers=headers)
            if sent.status_code == 200:
                return
            failure = f"{sent.status_code} {sent.text[:200]}"
            if sent.status_code < 500:
                raise AgentError(f"the artifact store refused {path.name}: {failure}")
        except httpx.HTTPError as exc:
            failure = str(exc)
        if time.monotonic() >= deadline:
            raise AgentError(f"cannot upload {path.name} to the artifact store: {failure}")
        log.warning(
            "upload of %s to the artifact store failed, trying again: %s", path.name, failure
        )
        time.sleep(delay)
        delay = min(delay * 2, 5.0)
