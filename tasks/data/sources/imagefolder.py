"""A Hugging Face `imagefolder` directory: metadata.jsonl (file_name, ground_truth, optional split).

Only files inside the directory are read: a `file_name` that is absolute, climbs out with
`..`, or resolves (through a symlink) outside it is refused, naming the line and record.
Record ids are the file's path below the folder that holds all the images, without its
extension, subfolders joined by "__": `images/x.png` is `x`, and `a/same.png` and
`b/same.png` are `a__same` and `b__same`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path, PurePosixPath

from tasks.core.errors import BadInput, MissingInput
from tasks.data.sources import RawRecord


def _rows(meta: Path) -> list[tuple[str, dict]]:
    rows = []
    for n, line in enumerate(meta.read_text(encoding="utf-8-sig").splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{meta}:{n}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise BadInput(f"{where}: line is not JSON: {exc}") from exc
        if not isinstance(row, dict):
            raise BadInput(f"{where}: a metadata line is a JSON object, not {type(row).__name__}")
        for field in ("file_name", "ground_truth"):
            if field not in row:
                raise BadInput(f"{where}: field {field!r} missing")
        if not isinstance(row["file_name"], str) or not row["file_name"].strip():
            raise BadInput(
                f"{where}: field 'file_name' must be a relative path, got {row['file_name']!r}"
            )
        split = row.get("split")
        if split is not None and not isinstance(split, str):
            raise BadInput(f"{where}: field 'split' must be a split name, got {split!r}")
        rows.append((where, row))
    return rows


def load(directory: str | Path) -> list[RawRecord]:
    root = Path(directory)
    meta = root / "metadata.jsonl"
    if not meta.is_file():
        raise MissingInput(f"imagefolder source: {meta} does not exist")
    inside = root.resolve()
    rows = _rows(meta)
    names = [PurePosixPath(row["file_name"].replace("\\", "/")) for _, row in rows]
    for (where, row), name in zip(rows, names, strict=True):
        if name.name in ("", ".", "..") or any(ord(c) < 32 for c in str(name)):
            raise BadInput(f"{where}: field 'file_name' {row['file_name']!r} names no file")
        if name.is_absolute() or not (root / name).resolve().is_relative_to(inside):
            raise BadInput(
                f"{where}: record {name.stem!r}: field 'file_name' {row['file_name']!r} is "
                f"outside the source directory {root}: only files inside it are read"
            )
    common = os.path.commonpath([str(n.parent) for n in names]) if names else "."
    records = []
    for (_, row), name in zip(rows, names, strict=True):
        rid = "__".join(PurePosixPath(os.path.relpath(name.with_suffix(""), common)).parts)
        image_path = root / name
        gt = row["ground_truth"]
        # A missing image is carried as empty bytes so validation reports it by id.
        image = image_path.read_bytes() if image_path.is_file() else b""
        records.append(
            RawRecord(
                id=rid,
                split=row.get("split"),
                image_bytes=image,
                ground_truth=gt if isinstance(gt, str) else json.dumps(gt, ensure_ascii=False),
            )
        )
    return records
