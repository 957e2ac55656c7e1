"""ASGI middleware that refuses request bodies over the limit with 413, by the declared length or
by counting the stream (a chunked upload declares none).

``streamed`` names the paths whose route reads its body as a stream and bounds it itself (a
collection's import: a whole collection, bounded line by line); they are passed through uncounted."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from fastapi.responses import JSONResponse


class BodyLimit:
    def __init__(self, app: Any, max_bytes: int, streamed: Collection[str] = ()) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.streamed = frozenset(streamed)

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] in self.streamed:
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            return await self._too_large(send)
        seen = 0
        overflow = False
        started = False

        async def counting_receive() -> dict:
            nonlocal seen, overflow
            if overflow:
                return {"type": "http.disconnect"}
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                # Stop reading: to the app it looks like the client went away; we answer 413.
                overflow = True
                return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: dict) -> None:
            nonlocal started
            if overflow and not started:
                return  # whatever the app makes of a cut-off body is moot
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except Exception:
            if not overflow:
                raise
        if overflow and not started:
            await self._too_large(send)

    def _message(self) -> str:
        return f"request body over {self.max_bytes} bytes; send smaller batches"

    async def _too_large(self, send: Any) -> None:
        response = JSONResponse(
            status_code=413,
            content={"error": {"code": "payload_too_large", "message": self._message()}},
        )
        await response({"type": "http"}, None, send)
