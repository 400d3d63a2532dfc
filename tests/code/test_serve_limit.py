"""The server's request-size bound (tasks.serve.BodyLimit), driven as ASGI: 413 for a body over
the limit, declared or streamed, and the app untouched; a body within it reaches the app whole."""

import asyncio
import json

from tasks.serve import BodyLimit


def call(app, chunks: list[bytes], declared: int | None) -> tuple[int, bytes, list[bytes]]:
    """One request through `app`: (status, response body, what the inner app read)."""
    seen: list[bytes] = []
    sent: list[dict] = []

    async def inner(scope, receive, send):
        message = await receive()
        seen.append(message["body"])
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    pending = [
        {"type": "http.request", "body": c, "more_body": i < len(chunks) - 1}
        for i, c in enumerate(chunks)
    ]

    async def receive():
        return pending.pop(0)

    async def send(message):
        sent.append(message)

    headers = [(b"content-length", str(declared).encode())] if declared is not None else []
    scope = {"type": "http", "method": "POST", "path": "/invocations", "headers": headers}
    asyncio.run(app(inner)(scope, receive, send))
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return sent[0]["status"], body, seen


def limited(inner):
    return BodyLimit(inner, max_bytes=10)


def test_a_body_within_the_limit_reaches_the_app_whole():
    status, body, seen = call(limited, [b"01234", b"56789"], declared=None)
    assert (status, body, seen) == (200, b"ok", [b"0123456789"])


def test_a_declared_oversized_body_gets_413_unread():
    status, body, seen = call(limited, [b"x" * 11], declared=11)
    assert status == 413 and seen == []
    message = json.loads(body)["message"]
    assert "11 bytes" in message and "serve.max_request_mb" in message


def test_a_streamed_body_is_cut_off_at_the_limit():
    status, body, seen = call(limited, [b"x" * 6, b"x" * 6, b"x" * 6], declared=None)
    assert status == 413 and seen == []
    assert json.loads(body)["error_code"] == "REQUEST_TOO_LARGE"
