"""The public API's `/submit` takes a multipart upload: its size is refused as it arrives,
before the form parser spools it (middleware, since FastAPI reads a form before any route
code runs)."""

from __future__ import annotations

from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sandrun.service import manifest as manifests


class SubmitSizeLimit:
    """Refuse a `/submit` body over the upload limit while it arrives: 413 `{"error"}`."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != "/submit":
            await self.app(scope, receive, send)
            return
        limit = manifests.MAX_UPLOAD + (1 << 20)  # the files, and the form framing
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > limit:
            await _too_large(limit)(scope, receive, send)
            return
        seen, answered = 0, False

        async def counted() -> Message:
            # Over the limit: answer 413 ourselves, and tell the app the client has gone.
            nonlocal seen, answered
            if answered:
                return {"type": "http.disconnect"}
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > limit:
                await _too_large(limit)(scope, receive, send)
                answered = True
                return {"type": "http.disconnect"}
            return message

        async def unless_answered(message: Message) -> None:
            if not answered:
                await send(message)

        try:
            await self.app(scope, counted, unless_answered)
        except Exception:
            if not answered:
                raise


def _too_large(limit: int) -> JSONResponse:
    message = f"the upload is over {limit >> 20} MiB; leave large files out of it"
    return JSONResponse({"error": message}, status_code=413)
