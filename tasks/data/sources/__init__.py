"""Receipt data sources. Each writes one raw snapshot in the Hugging Face imagefolder layout:

    <out>/metadata.jsonl   {"file_name": "images/<id>.png", "ground_truth": "<json string>", "split": ...}
    <out>/images/<id>.png (or .jpg: photo-like renders are JPEG)

`ground_truth` is either cord-v2's (`{"gt_parse": ..., "meta": ...}`) or CORD's original
annotation (`valid_line`, `meta`, ...); ingest derives `gt_parse` from the latter.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tasks.core.errors import BadInput


@dataclass(frozen=True)
class RawRecord:
    id: str
    split: str | None
    image_bytes: bytes
    ground_truth: str  # kept verbatim: validation judges it, ingest never rewrites it
    extra: dict[str, Any] | None = None


def parse_source(source: str) -> tuple[str, str | None]:
    """'cord-json:../x' -> ('cord-json', '../x'); 'synthetic' -> ('synthetic', None)."""
    kind, _, arg = source.partition(":")
    kinds = ("cord", "synthetic", "imagefolder", "cord-json", "hf")
    if kind not in kinds:
        raise BadInput(
            f"unknown data source {source!r}: expected one of "
            "cord, synthetic, imagefolder:<dir>, cord-json:<dir>, hf:<dataset id>"
        )
    if kind in ("imagefolder", "cord-json") and not arg:
        raise BadInput(f"data source {kind!r} needs a directory: {kind}:<dir>")
    return kind, (arg or None)


def image_ext(data: bytes) -> str:
    """The file extension a snapshot gives an image's bytes: jpg for JPEG, png otherwise."""
    return "jpg" if data[:3] == b"\xff\xd8\xff" else "png"


def write_snapshot(records: list[RawRecord], out_dir: Path, source: str) -> None:
    """Write records in imagefolder layout into out_dir (which must not exist yet)."""
    images = out_dir / "images"
    images.mkdir(parents=True)
    seen: set[str] = set()
    with (out_dir / "metadata.jsonl").open("w") as meta:
        for r in records:
            if r.id in seen:
                raise BadInput(f"record {r.id!r}: duplicate record id in source {source}")
            seen.add(r.id)
            ext = image_ext(r.image_bytes)
            (images / f"{r.id}.{ext}").write_bytes(r.image_bytes)
            row = {"file_name": f"images/{r.id}.{ext}", "ground_truth": r.ground_truth}
            if r.split is not None:
                row["split"] = r.split
            row.update(r.extra or {})
            meta.write(json.dumps(row, ensure_ascii=False) + "\n")
    (out_dir / "SOURCE.json").write_text(
        json.dumps({"source": source, "records": len(records)}) + "\n"
    )
