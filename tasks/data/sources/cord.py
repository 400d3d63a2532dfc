"""CORD's own receipts, shipped with the project: the 900 original annotations (CORD train 800,
dev 100; CC-BY-4.0, assets/cord/README.md), rendered photo-like (tasks.data.sources.photo).

Splits: train is CORD's train; CORD's dev is divided by a seeded draw into the test split
(`data.cord.test_size` receipts) and the validation split (the rest). CORD's own test split is
not shipped: nothing here trains or tunes on it.

With `data.cord.exclude_flagged`, the receipts listed in `excluded.json` beside the annotations
are left out, each with the reason the validate stage gave for it: annotation slips (a key word
inside a value, a count split over two lines, `---` for a price) and the train copies of two
receipts that CORD also has in dev. The count is printed and kept in the snapshot's SOURCE.json.
"""

from __future__ import annotations

import gzip
import json
import logging
import random
from pathlib import Path

from tasks.core.config import CordParams
from tasks.core.errors import BadInput, MissingInput
from tasks.data.sources import RawRecord
from tasks.data.sources.photo import render_photos

log = logging.getLogger(__name__)

# The shipped annotations, relative to the repository (a path argument overrides it).
SHIPPED = Path("assets/cord/annotations.jsonl.gz")


def read_annotations(path: str | Path) -> list[dict]:
    """The shipped rows: {"split": "train"|"dev", "name": "receipt_00000", "ground_truth": str}."""
    path = Path(path)
    if not path.is_file():
        raise MissingInput(f"cord source: {path} not found (shipped in assets/cord/)")
    rows = []
    with gzip.open(path, "rt", encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            try:
                row = json.loads(line)
                rows.append({k: row[k] for k in ("split", "name", "ground_truth")})
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                raise BadInput(f"{path}:{n}: bad annotation row ({exc!r})") from exc
    return rows


def dev_splits(names: list[str], p: CordParams) -> dict[str, str]:
    """CORD dev receipt name -> "test" (a seeded draw of p.test_size) or "validation"."""
    ordered = sorted(names)
    test = set(random.Random(f"cord-dev-{p.seed}").sample(ordered, min(p.test_size, len(ordered))))
    return {n: "test" if n in test else "validation" for n in ordered}


def excluded(path: str | Path) -> dict[str, str]:
    """ "<split>/<name>" -> why it is left out, from `excluded.json` beside the annotations."""
    listing = Path(path).parent / "excluded.json"
    return json.loads(listing.read_text()) if listing.is_file() else {}


def load(p: CordParams, max_side: int, path: str | Path = SHIPPED) -> list[RawRecord]:
    rows = read_annotations(path)
    if p.exclude_flagged:
        out = excluded(path)
        rows = [r for r in rows if f"{r['split']}/{r['name']}" not in out]
        log.warning(
            "cord: %d flagged receipts left out, each with its reason in %s",
            len(out),
            Path(path).parent / "excluded.json",
        )
    dev = dev_splits([r["name"] for r in rows if r["split"] == "dev"], p)
    jobs, splits = [], []
    for r in rows:
        rid = f"cord-{r['split']}-{r['name']}"
        try:
            ann = json.loads(r["ground_truth"])
        except json.JSONDecodeError as exc:
            raise BadInput(f"record {rid!r}: field ground_truth is not JSON ({exc})") from exc
        if r["split"] == "train":
            splits.append("train")
        elif r["split"] == "dev":
            splits.append(dev[r["name"]])
        else:
            raise BadInput(f"record {rid!r}: field split={r['split']!r} is not train or dev")
        jobs.append((ann, rid))
    images = render_photos(jobs, max_side)
    return [
        RawRecord(rid, split, image, r["ground_truth"])
        for (_, rid), split, image, r in zip(jobs, splits, images, rows, strict=True)
    ]
