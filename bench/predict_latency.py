"""How long one receipt takes once the model is loaded: the registered pyfunc (what `predict`,
`make serve` and batch scoring run), loaded once, then asked one image at a time.

    python -m bench.predict_latency [--model models:/receipt-llava@champion] IMAGE [IMAGE ...]
        [--report docs/predict_latency.json]

The load (which ends with one small warm-up read) and every call are timed apart, in order,
so the first receipt after loading is reported as it is.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd

from bench.cpu import write_measured
from tasks.core.io import quiet_telemetry


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("images", nargs="+", type=Path)
    ap.add_argument("--model", default="models:/receipt-llava@champion")
    ap.add_argument("--repo", default=".")
    ap.add_argument("--report", type=Path, default=Path("docs/predict_latency.json"))
    a = ap.parse_args(argv)
    quiet_telemetry()
    from tasks.registry.tracking import load_pyfunc

    start = time.perf_counter()
    model = load_pyfunc(a.model, a.repo)
    load_s = time.perf_counter() - start
    calls = []
    for path in a.images:
        frame = pd.DataFrame({"image": [path.read_bytes()]})
        start = time.perf_counter()
        (row,) = model.predict(frame).to_dict("records")
        seconds = time.perf_counter() - start
        calls.append({"image": path.name, "seconds": round(seconds, 2), "json": row["json"]})
        print(f"{path.name}: {seconds:.2f} s", flush=True)
    report = {
        "model": a.model,
        "load_seconds": round(load_s, 1),
        "calls": calls,
        "max_seconds": max(c["seconds"] for c in calls),
    }
    write_measured(a.report, report)
    print(f"load {load_s:.1f} s; slowest call {report['max_seconds']} s -> {a.report}")


if __name__ == "__main__":
    main()
