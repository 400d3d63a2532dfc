"""Where batch scoring's time goes: the registered pyfunc's load (with its warm-up read), then
for a folder's images OCR alone and generation alone from that OCR, each timed apart.

    python -m bench.score_parts IMAGE [IMAGE ...] [--model models:/receipt-llava@champion]
        [--batch-sizes 8 16] [--report docs/score_parts.json]

The pyfunc is the one `tasks.score` calls (`python -m tasks.score --dir <folder>` times the
whole, imports and MLflow's model lookup included, in its score.json). Generation runs under
the version's registered settings, at each batch size given (the pyfunc's own is its
`batch_size`; scoring hands it 8 files a call), and reports how many tokens it generated.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from PIL import Image

from bench.cpu import write_measured
from tasks.core.io import quiet_telemetry


def timed(fn, *args):
    start = time.perf_counter()
    out = fn(*args)
    return out, round(time.perf_counter() - start, 1)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("images", nargs="+", type=Path)
    ap.add_argument("--model", default="models:/receipt-llava@champion")
    ap.add_argument("--repo", default=".")
    ap.add_argument("--batch-sizes", nargs="+", type=int, default=[8, 16])
    ap.add_argument("--report", type=Path, default=Path("docs/score_parts.json"))
    a = ap.parse_args(argv)
    quiet_telemetry()
    from tasks.inference.generation import scored_answers
    from tasks.inference.ocr import ocr_texts
    from tasks.registry.tracking import load_pyfunc

    model, load_s = timed(load_pyfunc, a.model, a.repo)
    reader = model.unwrap_python_model().reader
    images = [Image.open(p).convert("RGB") for p in a.images]
    ocr, ocr_s = timed(ocr_texts, images)
    generation = []
    for size in a.batch_sizes:
        s = reader.settings.but(batch_size=size)
        out, gen_s = timed(scored_answers, reader.model, reader.processor, images, s, ocr)
        tokens = sum(len(o.ids) for o in out)
        generation.append({"batch_size": size, "seconds": gen_s, "tokens": tokens})
        print(f"generation, batch {size}: {gen_s} s, {tokens} tokens", flush=True)
    report = {
        "model": a.model,
        "images": len(images),
        "load_seconds": load_s,
        "ocr_seconds": ocr_s,
        "generation": generation,
    }
    write_measured(a.report, report)
    print(f"load {load_s} s; OCR {ocr_s} s for {len(images)} images -> {a.report}")


if __name__ == "__main__":
    main()
