"""OCR of a batch of receipts, two ways: one engine on every core, one image after another (how
a batch was read before), and one engine per core on threads (`tasks.inference.ocr.ocr_texts`,
what predict, serving, scoring and ingest use for two images or more).

    python -m bench.ocr_threads IMAGE [IMAGE ...] [--report docs/ocr_threads.json]

Each way reads one image first, untimed (its engines' first-call setup), then the batch; the
two ways' texts are compared.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from PIL import Image

from bench.cpu import write_measured
from tasks.core.cpu import cores
from tasks.inference import ocr


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("images", nargs="+", type=Path)
    ap.add_argument("--report", type=Path, default=Path("docs/ocr_threads.json"))
    a = ap.parse_args(argv)
    images = [Image.open(p).convert("RGB") for p in a.images]
    n = cores()
    ways = {
        "one engine, every core": lambda ims: [ocr.ocr_text(im) for im in ims],
        f"{n} engines on threads": ocr.ocr_texts,
    }
    seconds, texts = {}, {}
    for name, read in ways.items():
        read(images[:2])  # untimed: the engines' first-call setup
        start = time.perf_counter()
        texts[name] = read(images)
        seconds[name] = round(time.perf_counter() - start, 2)
        print(f"{name}: {seconds[name]} s for {len(images)}", flush=True)
    first, second = texts.values()
    report = {
        "images": len(images),
        "seconds": seconds,
        "receipts_per_second": {k: round(len(images) / v, 2) for k, v in seconds.items()},
        "same_text": sum(x == y for x, y in zip(first, second, strict=True)),
    }
    write_measured(a.report, report)
    print(f"same text on {report['same_text']} of {len(images)} -> {a.report}")


if __name__ == "__main__":
    main()
