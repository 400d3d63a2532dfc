"""CORD's original per-receipt annotations from a directory (`{train,dev,test}/*.json`, v0.1
`valid_line` with word quads), each drawn photo-like from its annotation (tasks.data.sources.photo).
The shipped default (`cord`) is the same annotations in one file; this reads a checkout's."""

from __future__ import annotations

import json
from pathlib import Path

from tasks.core.errors import BadInput, MissingInput
from tasks.data.sources import RawRecord
from tasks.data.sources.photo import render_photos

SPLIT_DIRS = {"train": "train", "dev": "validation", "test": "test"}


def load(directory: str | Path, max_side: int) -> list[RawRecord]:
    """Every `<split>/receipt_*.json` under directory; split from the folder name (dev -> validation)."""
    root = Path(directory)
    if not root.is_dir():
        raise MissingInput(f"cord-json source: directory {root} does not exist")
    jobs, rest = [], []
    for folder, split in SPLIT_DIRS.items():
        for path in sorted((root / folder).glob("*.json")):
            rid = f"cord-{folder}-{path.stem}"
            text = path.read_text()
            try:
                ann = json.loads(text)
            except json.JSONDecodeError as exc:
                raise BadInput(f"record {rid!r} ({path}): ground truth is not JSON: {exc}") from exc
            jobs.append((ann, rid))
            rest.append((split, text))
    if not jobs:
        raise BadInput(f"cord-json source: no {{train,dev,test}}/*.json files under {root}")
    images = render_photos(jobs, max_side)
    return [
        RawRecord(rid, split, image, text)
        for (_, rid), (split, text), image in zip(jobs, rest, images, strict=True)
    ]
