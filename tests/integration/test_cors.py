"""`--public-cors`: which origins a page may call the public root API from; the token API
never answers another origin. The real app in this process, over ASGI."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from sandrun.artifacts import LocalArtifactStore
from sandrun.errors import ValidationError
from sandrun.server.app import create_app
from sandrun.server.cors import origins
from sandrun.service import Service
from sandrun.store import open_sqlite


def _get(service: Service, cors: str, path: str, origin: str) -> httpx.Response:
    app = create_app(service, public_cors=cors)

    async def send() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            return await client.get(path, headers={"Origin": origin})

    return asyncio.run(send())


def test_only_the_origins_named_are_answered(tmp_path: Path) -> None:
    service = Service(open_sqlite(tmp_path / "s.db"), LocalArtifactStore(tmp_path / "blobs"))
    try:
        listed = "https://a.example,http://localhost:8000"
        for origin in ("https://a.example", "http://localhost:8000"):
            got = _get(service, listed, "/", origin)
            assert got.headers["access-control-allow-origin"] == origin
        assert (
            "access-control-allow-origin"
            not in _get(service, listed, "/", "https://b.example").headers
        )
        assert (
            "access-control-allow-origin"
            not in _get(service, "off", "/", "https://a.example").headers
        )
        assert (
            "access-control-allow-origin"
            not in _get(service, listed, "/v1/health", "https://a.example").headers
        )
    finally:
        service.close()


@pytest.mark.parametrize(
    ("setting", "says"),
    [
        ("https://a.example/path", "is not an origin"),
        ("a.example", "is not an origin"),
        ("javascript:alert(1)", "is not an origin"),
        (" , ", "names no origin"),
    ],
)
def test_a_setting_that_is_not_origins_is_refused(setting: str, says: str) -> None:
    with pytest.raises(ValidationError, match=says) as refused:
        origins(setting)
    assert refused.value.field == "public_cors"
    assert origins("*") == ["*"] and origins("off") == []
