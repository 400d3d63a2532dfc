"""What the OCR frame rule would cut from CORD's real photos: their annotated words, at the
quads and image sizes the annotations give, put through `tasks.inference.ocr.framed` as if
the engine had read exactly those words.

    python -m bench.edge_lines [--annotations assets/cord/annotations.jsonl.gz]
        [--grow 0 3 6 10] [--renders data/images] [--ocr-cache assets/cord/ocr.jsonl.gz]
        [--report docs/edge_lines.json]

The photos themselves are not here, only their annotations (900 receipts: CORD train and
dev). A detector's box is a little larger than an annotated quad (on the one real photo:
3-9 px), so each quad is also grown by `--grow` pixels on every side before the rule runs.
Counted: the labelled words on the lines the rule leaves out, the receipts they are on, and
how many of them are a total. The other side, how many real photos have lines of
background at their edge, cannot be counted from annotations.

With `--renders` (a folder of the project's renders, `make data`), the words the engine read
on them (from the OCR cache) are put through the same rule: what it costs the training data.
"""

from __future__ import annotations

import argparse
import json
import math
from collections import Counter
from pathlib import Path

from bench.cpu import write_measured
from tasks.data.sources import cord
from tasks.inference.ocr import EDGE_PX, OcrCache, Word, edge_distance, framed, image_sha256


def annotated_words(ann: dict, grow: float) -> tuple[list[Word], dict[int, str]]:
    """The receipt's labelled words as the engine would give them (quads grown by `grow` px,
    clipped to the image as the engine clips its boxes), and each word's category by id()."""
    width = ann["meta"]["image_size"]["width"]
    height = ann["meta"]["image_size"]["height"]
    words, category = [], {}
    for line in ann["valid_line"]:
        for w in line["words"]:
            q = w["quad"]
            xs = [q[f"x{i}"] for i in range(1, 5)]
            ys = [q[f"y{i}"] for i in range(1, 5)]
            x0, x1 = max(0.0, min(xs) - grow), min(width - 1.0, max(xs) + grow)
            y0, y1 = max(0.0, min(ys) - grow), min(height - 1.0, max(ys) + grow)
            word = Word(w["text"], ((x0, y0), (x1, y0), (x1, y1), (x0, y1)), 1.0)
            words.append(word)
            category[id(word)] = line["category"]
    return words, category


def edge_cuts(rows: list[dict], grow: float) -> dict:
    words = receipts = at_edge = at_edge_receipts = 0
    cut_words, cut_receipts = 0, []
    cut_categories: Counter[str] = Counter()
    for row in rows:
        ann = json.loads(row["ground_truth"])
        found, category = annotated_words(ann, grow)
        size = (ann["meta"]["image_size"]["width"], ann["meta"]["image_size"]["height"])
        kept, cut = framed(found, size)
        words += len(found)
        receipts += 1
        alone = sum(1 for w in found if edge_distance(w, size) <= EDGE_PX)
        at_edge += alone
        at_edge_receipts += bool(alone)
        if cut:
            still = {id(w) for line in kept for w in line}
            cut_words += cut
            cut_receipts.append(f"{row['split']}/{row['name']}")
            cut_categories.update(category[id(w)] for w in found if id(w) not in still)
    return {
        "grow_px": grow,
        "receipts": receipts,
        "labelled_words": words,
        "words_left_out": cut_words,
        "receipts_with_words_left_out": len(cut_receipts),
        "totals_left_out": cut_categories["total.total_price"],
        "categories_left_out": dict(cut_categories.most_common()),
        "receipts_left_out_from": cut_receipts,
        # what a rule by word, not by line, would leave out
        "words_at_edge": at_edge,
        "receipts_with_words_at_edge": at_edge_receipts,
    }


def renders_cut(folder: Path, cache: OcrCache) -> dict:
    """The rule on the engine's words of each render in `folder` that the cache holds."""
    from PIL import Image

    read = cut = 0
    nearest = math.inf
    for f in sorted(folder.iterdir()):
        words = cache.entries.get(image_sha256(f.read_bytes()))
        if words is None:
            continue
        with Image.open(f) as image:
            size = image.size
        read += 1
        cut += framed(words, size)[1]
        nearest = min([nearest, *(edge_distance(w, size) for w in words)])
    return {
        "renders": read,
        "words_left_out": cut,
        "nearest_word_to_edge_px": round(nearest, 1) if read else None,
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--annotations", default=str(cord.SHIPPED))
    ap.add_argument("--grow", type=float, nargs="+", default=[0, 3, 6, 10])
    ap.add_argument("--renders", default=None, help="a folder of renders (data/images)")
    ap.add_argument("--ocr-cache", default="assets/cord/ocr.jsonl.gz")
    ap.add_argument("--report", default="docs/edge_lines.json")
    a = ap.parse_args(argv)
    rows = cord.read_annotations(a.annotations)
    results = [edge_cuts(rows, g) for g in a.grow]
    for r in results:
        print(
            f"grow {r['grow_px']:g} px: {r['words_left_out']} of {r['labelled_words']} labelled "
            f"words left out, on {r['receipts_with_words_left_out']} of {r['receipts']} "
            f"receipts ({r['totals_left_out']} totals); by word: {r['words_at_edge']} on "
            f"{r['receipts_with_words_at_edge']}"
        )
    report = {
        "command": "python -m bench.edge_lines",
        "annotations": a.annotations,
        "rows": results,
    }
    if a.renders:
        report["renders"] = renders_cut(Path(a.renders), OcrCache(a.ocr_cache)) | {
            "folder": a.renders
        }
        print(f"renders: {report['renders']}")
    write_measured(a.report, report)


if __name__ == "__main__":
    main()
