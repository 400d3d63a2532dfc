"""Load test of the served model on loopback: latency, throughput, the worker's memory, the stop.

    python -m bench.serve_load [--model models:/receipt-llava@champion] [--server tasks|mlflow]
                               [--requests 500] [--warmup 20] [--clients 4] [--out FILE]

Starts the server (`tasks`: `make serve`'s `python -m tasks.serve`; `mlflow`: `mlflow models
serve --workers 1`, for comparison) on a free loopback port, sends `warmup` requests, then
`requests` more from `clients` concurrent clients, each one receipt of the project's test split
(base64 PNG, cycled). The worker's RSS is sampled after the warm-up and every 25 requests. Then
one body over `serve.max_request_mb` (its status is recorded: 413 wanted) and SIGTERM (exit code
and whether a traceback was printed). Prints a markdown summary; `--out` keeps the JSON.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import io
import json
import os
import platform
import signal
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import requests

from devtools.servers import model_server
from tasks.core.config import load_params
from tasks.data.dataset import load_dataset_dir


def payloads(dataset: Path, n: int) -> list[str]:
    """Request bodies: one test receipt each, as the pyfunc's signature takes it."""
    bodies = []
    for image in load_dataset_dir(dataset)["test"]["image"][:n]:
        buf = io.BytesIO()
        image.convert("RGB").save(buf, format="PNG")
        cell = base64.b64encode(buf.getvalue()).decode()
        frame = {"dataframe_split": {"columns": ["image"], "data": [[cell]]}}
        bodies.append(json.dumps(frame))
    return bodies


def worker(proc: psutil.Process) -> psutil.Process:
    """The process that runs the model: the server itself, or its biggest child (uvicorn's)."""
    kids = proc.children(recursive=True)
    return max([proc, *kids], key=lambda p: p.memory_info().rss)


def post(url: str, body: str) -> tuple[float, int]:
    start = time.perf_counter()
    r = requests.post(url, data=body, headers={"Content-Type": "application/json"}, timeout=600)
    return time.perf_counter() - start, r.status_code


def load(url: str, bodies: list[str], n: int, clients: int, rss) -> dict:
    """n requests from `clients` threads; RSS sampled every 25 answered requests."""
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    curve = [(0, rss())]
    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        for k, (sec, status) in enumerate(
            pool.map(lambda i: post(url, bodies[i % len(bodies)]), range(n)), start=1
        ):
            latencies.append(sec)
            statuses[status] = statuses.get(status, 0) + 1
            if k % 25 == 0 or k == n:
                curve.append((k, rss()))
    wall = time.perf_counter() - start
    q = statistics.quantiles(latencies, n=20)
    return {
        "requests": n,
        "clients": clients,
        "statuses": statuses,
        "p50_s": round(statistics.median(latencies), 3),
        "p95_s": round(q[18], 3),
        "requests_per_s": round(n / wall, 3),
        "wall_s": round(wall, 1),
        "rss_mb": [[k, round(v / 1e6, 1)] for k, v in curve],
        "rss_growth": round(curve[-1][1] / curve[0][1] - 1, 4) if curve[0][1] else None,
    }


def run(args) -> dict:
    params = load_params(args.params)
    bodies = payloads(Path(params.paths.dataset), args.images)
    log = Path(tempfile.mkdtemp(prefix="serve-load-")) / "server.log"
    with model_server(args.model, log, {}, server=args.server, timeout=600) as (proc, url):
        ps = worker(psutil.Process(proc.pid))
        load(f"{url}/invocations", bodies, args.warmup, args.clients, lambda: 0)  # warm-up
        result = load(
            f"{url}/invocations", bodies, args.requests, args.clients, lambda: ps.memory_info().rss
        )
        too_big = "x" * int(params.serve.max_request_mb * 1_000_000 + 1)
        result["oversized_status"] = post(f"{url}/invocations", too_big)[1]
        proc.send_signal(signal.SIGTERM)
        result["sigterm_exit"] = proc.wait(60)
    said = log.read_text(errors="replace")
    result["traceback_on_stop"] = "Traceback" in said
    result["log_tail"] = said[-600:]
    return result | {
        "server": args.server,
        "model": args.model,
        "warmup": args.warmup,
        "machine": machine(),
        "date": time.strftime("%Y-%m-%d"),
    }


def machine() -> str:
    """The CPU model and the cores this process may use."""
    model = platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return f"{model}, {len(os.sched_getaffinity(0))} cores"


def summary(r: dict) -> str:
    curve = ", ".join(f"{k}: {mb:.0f}" for k, mb in r["rss_mb"])
    return "\n".join(
        [
            "| server | requests | clients | p50 s | p95 s | req/s | RSS growth | 413? | SIGTERM exit | traceback |",
            "|---|---|---|---|---|---|---|---|---|---|",
            f"| {r['server']} | {r['requests']} (after {r['warmup']}) | {r['clients']} | {r['p50_s']} "
            f"| {r['p95_s']} | {r['requests_per_s']} | {r['rss_growth']:+.1%} | "
            f"{r['oversized_status']} | {r['sigterm_exit']} | {r['traceback_on_stop']} |",
            "",
            f"RSS (MB) by requests answered: {curve}",
        ]
    )


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--model", default="models:/receipt-llava@champion")
    ap.add_argument("--server", choices=("tasks", "mlflow"), default="tasks")
    ap.add_argument("--requests", type=int, default=500)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--images", type=int, default=16, help="distinct test receipts, cycled")
    ap.add_argument("--out", type=Path, default=None, help="write the JSON result here")
    args = ap.parse_args(argv)
    result = run(args)
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(summary(result))
    sys.exit(0 if result["sigterm_exit"] == 0 else 1)


if __name__ == "__main__":
    main()
