"""CORD's original per-receipt annotations (v0.1 `valid_line` with word quads), rendered to images.

Where no photo exists, the receipt is drawn from its annotation: each word's text
inside its quad, at the receipt's size (scaled down to `max_side`), with the
`repeating_symbol` rules, on paper-like background. Real content, real layout.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from tasks.sources import RawRecord
from tasks.sources.render import draw_text_in_box, paper, png_bytes

SPLIT_DIRS = {"train": "train", "dev": "validation", "test": "test"}


def _box(quad: dict[str, Any], scale: float) -> tuple[int, int, int, int]:
    xs = [quad[f"x{i}"] for i in range(1, 5)]
    ys = [quad[f"y{i}"] for i in range(1, 5)]
    return (
        int(min(xs) * scale),
        int(min(ys) * scale),
        int(max(xs) * scale) + 1,
        int(max(ys) * scale) + 1,
    )


def render_annotation(ann: dict[str, Any], record_id: str, max_side: int) -> bytes:
    """PNG bytes of a receipt drawn from its CORD annotation."""
    try:
        size = ann["meta"]["image_size"]
        width, height = int(size["width"]), int(size["height"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"record {record_id!r}: field meta.image_size missing or invalid") from exc
    scale = min(1.0, max_side / max(width, height))
    rng = random.Random(record_id)
    img = paper(max(1, int(width * scale)), max(1, int(height * scale)), rng)
    for line in ann.get("valid_line", []):
        for word in line.get("words", []):
            draw_text_in_box(img, word["text"], _box(word["quad"], scale))
    # repeating_symbol: rows of '-' or '=' rules; each entry a list of {"quad", "text"}.
    for rule in ann.get("repeating_symbol", []):
        for part in rule if isinstance(rule, list) else [rule]:
            x0, y0, x1, y1 = _box(part["quad"], scale)
            ch = part.get("text") or "-"
            glyph_w = max(1, (y1 - y0) // 2)
            draw_text_in_box(img, ch * max(1, (x1 - x0) // glyph_w), (x0, y0, x1, y1), ink=70)
    return png_bytes(img)


def load(directory: str | Path, max_side: int) -> list[RawRecord]:
    """Every `<split>/receipt_*.json` under directory; split from the folder name (dev -> validation)."""
    root = Path(directory)
    if not root.is_dir():
        raise FileNotFoundError(f"cord-json source: directory {root} does not exist")
    records = []
    for folder, split in SPLIT_DIRS.items():
        for path in sorted((root / folder).glob("*.json")):
            rid = f"cord-{folder}-{path.stem}"
            text = path.read_text()
            try:
                ann = json.loads(text)
            except json.JSONDecodeError as exc:
                raise ValueError(
                    f"record {rid!r} ({path}): ground truth is not JSON: {exc}"
                ) from exc
            records.append(RawRecord(rid, split, render_annotation(ann, rid, max_side), text))
    if not records:
        raise ValueError(f"cord-json source: no {{train,dev,test}}/*.json files under {root}")
    return records
