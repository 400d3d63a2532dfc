"""A Hugging Face `imagefolder` directory: metadata.jsonl (file_name, ground_truth, optional split)."""

from __future__ import annotations

import json
from pathlib import Path

from tasks.sources import RawRecord


def load(directory: str | Path) -> list[RawRecord]:
    root = Path(directory)
    meta = root / "metadata.jsonl"
    if not meta.is_file():
        raise FileNotFoundError(f"imagefolder source: {meta} does not exist")
    records = []
    for n, line in enumerate(meta.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{meta}:{n}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{where}: line is not JSON: {exc}") from exc
        for field in ("file_name", "ground_truth"):
            if field not in row:
                raise ValueError(f"{where}: field {field!r} missing")
        gt = row["ground_truth"]
        image_path = root / row["file_name"]
        # A missing image is carried as empty bytes so validation reports it by id.
        image = image_path.read_bytes() if image_path.is_file() else b""
        records.append(
            RawRecord(
                id=Path(row["file_name"]).stem,
                split=row.get("split"),
                image_bytes=image,
                ground_truth=gt if isinstance(gt, str) else json.dumps(gt, ensure_ascii=False),
            )
        )
    return records
