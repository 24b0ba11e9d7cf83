"""CORS for the public root API only, as the public sandrun service serves it: a page on
any origin may call `/submit`, `/status/ID`, `/logs/ID`, `/outputs/ID`, `/download/...`,
`/health`, `/`. The token API (`/v1`) and the dashboard (`/ui`) answer no cross-origin
call, preflight included, so a browser refuses them there."""

from __future__ import annotations

import re

from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

from sandrun.errors import ValidationError

CLOSED = ("/v1", "/ui", "/docs", "/redoc", "/openapi.json")
_ORIGIN = re.compile(r"https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?")


def origins(setting: str) -> list[str]:
    """`--public-cors`: '*' (any origin), comma-separated origins, or 'off' (none)."""
    setting = setting.strip()
    if setting == "off":
        return []
    if setting == "*":
        return ["*"]
    listed = [o.strip().rstrip("/") for o in setting.split(",") if o.strip()]
    for origin in listed:
        if not _ORIGIN.fullmatch(origin):
            raise ValidationError(
                f"--public-cors: {origin!r} is not an origin (scheme://host[:port], no path)",
                field="public_cors",
                suggestions=[
                    "--public-cors '*'",
                    "--public-cors https://app.example.com",
                    "--public-cors off",
                ],
            )
    if not listed:
        raise ValidationError("--public-cors names no origin", field="public_cors")
    return listed


class PublicCors:
    """CORSMiddleware around the app for every path but the closed ones."""

    def __init__(self, app: ASGIApp, allow: list[str]) -> None:
        self.app = app
        self.cors = CORSMiddleware(
            app,
            allow_origins=allow,
            allow_methods=["GET", "POST", "OPTIONS"],
            allow_headers=["Authorization", "Content-Type"],
            allow_credentials=False,  # the public API takes a token header, never cookies
            max_age=600,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not _closed(scope["path"]):
            await self.cors(scope, receive, send)
        else:
            await self.app(scope, receive, send)


def _closed(path: str) -> bool:
    return any(path == p or path.startswith(p + "/") for p in CLOSED)
