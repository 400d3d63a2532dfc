"""Serve a registered version over HTTP (`make serve`): MLflow's scoring protocol, bounded.

    python -m tasks.serve [--model models:/receipt-llava@champion] [--host 127.0.0.1] [--port 5001]

The app is MLflow's own scoring server (`mlflow.pyfunc.scoring_server.init`: /invocations,
/ping, /health, /version, the same JSON in and out as `mlflow models serve`), run by uvicorn in
this one process, with three differences:
- a request body over `serve.max_request_mb` gets 413, read no further than the limit;
- inference runs on one thread, and requests queue for it. MLflow hands each request to the
  event loop's default pool, so concurrent clients ran the model at once, each generation with
  its own activations and cache: on 2 cores that bought no throughput and the worker settled
  about 550 MB higher (docs/benchmarks.md, `python -m bench.serve_load`);
- SIGTERM or Ctrl-C: uvicorn finishes the requests in flight, the process says so in one line
  and exits 0.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from tasks.core import cli
from tasks.core.errors import BadInput
from tasks.registry.tracking import load_pyfunc


class BodyLimit:
    """ASGI middleware: a request body over `max_bytes` is answered 413 before the app sees it
    (by its Content-Length when declared, else as soon as the chunks read pass the limit)."""

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            return await self._refuse(send, int(declared))
        body, more = bytearray(), True
        while more:  # read it here, bounded, then hand it on whole
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.max_bytes:
                return await self._refuse(send, None)
        sent = False

        async def replay():
            nonlocal sent
            if sent:
                return await receive()  # only a disconnect can follow
            sent = True
            return {"type": "http.request", "body": bytes(body), "more_body": False}

        return await self.app(scope, replay, send)

    async def _refuse(self, send, size: int | None) -> None:
        limit_mb = self.max_bytes / 1_000_000
        said = f"{size:,} bytes" if size is not None else "more"
        message = (
            f"request body too large: {said}, the limit is {limit_mb:g} MB (serve.max_request_mb)"
        )
        body = json.dumps({"error_code": "REQUEST_TOO_LARGE", "message": message}).encode()
        headers = [(b"content-type", b"application/json"), (b"connection", b"close")]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def app_for(pyfunc, max_request_mb: float):
    """MLflow's scoring app for this pyfunc behind the body limit."""
    from mlflow.pyfunc import scoring_server

    return BodyLimit(scoring_server.init(pyfunc), int(max_request_mb * 1_000_000))


def serve(app: Any, host: str, port: int) -> str:
    """Run until SIGTERM or Ctrl-C; the signal's name once stopped."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning"))
    caught: list[int] = []
    # uvicorn re-raises the signal it stopped on, under the handlers it found: these.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda s, _frame: caught.append(s))

    async def run() -> None:
        # MLflow runs each prediction through asyncio.to_thread: on this one thread.
        loop = asyncio.get_running_loop()
        loop.set_default_executor(ThreadPoolExecutor(1, thread_name_prefix="inference"))
        await server.serve()

    asyncio.run(run())
    if not server.started:
        raise BadInput(f"{host}:{port}: could not listen there (in use, or not this host's)")
    return signal.Signals(caught[0]).name if caught else "shutdown"


def main(argv: list[str] | None = None) -> None:
    ap = cli.parser("Serve a registered version over HTTP (MLflow's scoring protocol).")
    ap.add_argument("--model", default="models:/receipt-llava@champion", help="a model URI")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=5001)

    def body(a, p) -> str:
        pyfunc = load_pyfunc(a.model)
        app = app_for(pyfunc, p.serve.max_request_mb)
        print(
            f"serve: {a.model} on http://{a.host}:{a.port} (POST /invocations; "
            f"bodies up to {p.serve.max_request_mb:g} MB)",
            file=sys.stderr,
            flush=True,
        )
        return f"serve: stopped ({serve(app, a.host, a.port)}), requests in flight were answered"

    cli.run("serve", ap, body, argv)


if __name__ == "__main__":
    main()
