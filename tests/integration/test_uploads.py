"""Users' uploads over HTTP: blobs by digest, the size cap, and specs that name them."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from sandrun.artifacts import LocalArtifactStore
from sandrun.roles import Role
from sandrun.server import uploads
from sandrun.server.app import create_app
from sandrun.service import Service, manifest
from sandrun.store import open_sqlite


class Api:
    """The real app in this process, one request at a time (no lifespan: none needed)."""

    def __init__(self, service: Service, token: str) -> None:
        self.app = create_app(service)
        self.headers = {"Authorization": f"Bearer {token}"}

    def request(self, method: str, path: str, **kw: Any) -> httpx.Response:
        headers = {**self.headers, **kw.pop("headers", {})}

        async def send() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
                return await client.request(method, path, headers=headers, **kw)

        return asyncio.run(send())

    def head(self, path: str) -> httpx.Response:
        return self.request("HEAD", path)

    def get(self, path: str) -> httpx.Response:
        return self.request("GET", path)

    def post(self, path: str, **kw: Any) -> httpx.Response:
        return self.request("POST", path, **kw)


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    service = Service(open_sqlite(tmp_path / "s.db"), LocalArtifactStore(tmp_path / "blobs"))
    yield Api(service, service.create_token("alice", Role.USER))
    service.close()


def test_a_blob_is_stored_by_its_digest_and_found_again(api: Api) -> None:
    data = b"print('hi')\n"
    digest = hashlib.sha256(data).hexdigest()
    assert api.head(f"/v1/artifacts/{digest}").status_code == 404
    stored = api.post("/v1/artifacts", content=data)
    assert stored.json() == {"digest": digest, "size": len(data)}
    assert api.head(f"/v1/artifacts/{digest}").status_code == 200
    job = api.post("/v1/jobs", json={"command": ["python3", "a.py"], "inputs": {"a.py": digest}})
    assert job.status_code == 201


def test_a_spec_naming_a_blob_never_uploaded_is_refused(api: Api) -> None:
    missing = "0" * 64
    answer = api.post("/v1/jobs", json={"shell": "true", "code": missing})
    assert answer.status_code == 404
    assert answer.json()["field"] == "code"
    assert api.get("/v1/jobs").json()["jobs"] == []


def test_too_large_an_upload_is_413_and_stores_nothing(
    api: Api, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(uploads, "MAX_UPLOAD_MB", 1)
    answer = api.post("/v1/artifacts", content=b"x" * (2 << 20))
    assert answer.status_code == 413
    assert answer.json()["code"] == "upload_too_large"
    assert "2.0 MiB" in answer.json()["message"]
    assert not list((tmp_path / "blobs").rglob("*"))


@pytest.mark.parametrize("declared", [True, False])
def test_a_public_submit_over_the_limit_is_413_before_it_is_read(
    api: Api, monkeypatch: pytest.MonkeyPatch, declared: bool
) -> None:
    monkeypatch.setattr(manifest, "MAX_UPLOAD", 1 << 20)
    head = b'--x\r\nContent-Disposition: form-data; name="files"; filename="big.bin"\r\n\r\n'
    body = head + b"\0" * (3 << 20) + b"\r\n--x--\r\n"

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted as it comes
        for start in range(0, len(body), 1 << 16):
            yield body[start : start + (1 << 16)]

    answer = api.post(
        "/submit",
        content=body if declared else chunks(),
        headers={"Content-Type": "multipart/form-data; boundary=x"},
    )
    assert answer.status_code == 413
    assert "over 2 MiB" in answer.json()["error"]
