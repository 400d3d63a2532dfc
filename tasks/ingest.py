"""Ingest stage: raw snapshot (imagefolder layout) -> processed dataset (HF `datasets`, on disk).

Every record keeps id, split, image, prompt and target text. Records whose ground
truth cannot be turned into a target are kept too, with `gt_error` saying why, so
the validate stage reports them by id instead of ingest dropping them.
"""

from __future__ import annotations

import json
import logging
import random
from pathlib import Path
from typing import Any

from tasks.core import cli
from tasks.core.config import IngestParams
from tasks.core.cpu import cores
from tasks.core.errors import BadInput, MissingInput
from tasks.core.io import atomic_dir, write_json_atomic
from tasks.data.dataset import SPLITS
from tasks.data.receipt_json import derive_gt_parse, to_target

log = logging.getLogger(__name__)

_SPLIT_ALIASES = {"dev": "validation", "valid": "validation", "val": "validation", "tst": "test"}


def normalise_split(split: str | None) -> str:
    s = (split or "train").lower()
    return _SPLIT_ALIASES.get(s, s)


def gt_parse_of(ground_truth: str) -> tuple[dict[str, Any] | None, str]:
    """(gt_parse, "") from cord-v2 or CORD v0.1 ground truth, or (None, reason naming the field)."""
    try:
        gt = json.loads(ground_truth)
    except (json.JSONDecodeError, TypeError) as exc:
        return None, f"ground_truth: not JSON ({exc})"
    if not isinstance(gt, dict):
        return None, "ground_truth: not a JSON object"
    if "gt_parse" in gt:
        if not isinstance(gt["gt_parse"], dict):
            return None, "ground_truth.gt_parse: not an object"
        return gt["gt_parse"], ""
    if "valid_line" in gt:
        try:
            return derive_gt_parse(gt["valid_line"]), ""
        except (ValueError, KeyError, TypeError) as exc:
            return None, f"ground_truth.valid_line: cannot derive gt_parse ({exc})"
    return None, "ground_truth: no gt_parse (and no valid_line to derive it from)"


CARVE_FILE = "carve.json"  # beside the saved dataset: what ingest carved, for validation's messages


def carve(rows: list[dict[str, Any]], split: str, size: int, seed: int) -> dict[str, Any]:
    """Move `size` train records (a seeded, id-ordered draw) into `split`, in place; return
    what was done (`moved` 0 when train has too few: validation then names the empty split)."""
    train = sorted((r for r in rows if r["split"] == "train"), key=lambda r: r["id"])
    done = {"into": split, "from": "train", "asked": size, "moved": 0, "train_before": len(train)}
    if len(train) <= size:
        return done
    for r in random.Random(f"{seed}-{split}").sample(train, size):
        r["split"] = split
    return {**done, "moved": size}


def read_snapshot(
    raw_dir: Path, p: IngestParams, carves: list[dict[str, Any]] | None = None
) -> list[dict[str, Any]]:
    """The snapshot's records, with test/validation carved from train where the source has
    none (each carve appended to `carves`)."""
    meta = raw_dir / "metadata.jsonl"
    if not meta.is_file():
        raise MissingInput(f"ingest: {meta} not found; create data with `make data`")
    rows = []
    for n, line in enumerate(meta.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            m = json.loads(line)
            file_name, ground_truth = m["file_name"], m["ground_truth"]
        except (json.JSONDecodeError, KeyError) as exc:
            raise BadInput(f"{meta}:{n}: bad metadata row ({exc!r})") from exc
        image_path = raw_dir / file_name
        split = m.get("split")
        if split is not None and not isinstance(split, str):
            raise BadInput(
                f"{meta}:{n}: record {Path(file_name).stem!r}: field split={split!r} is not a name"
            )
        if not image_path.is_file():
            raise BadInput(
                f"{meta}:{n}: record {Path(file_name).stem!r}: field file_name={file_name!r} "
                "names no file in the snapshot"
            )
        gt_parse, error = gt_parse_of(ground_truth)
        rows.append(
            {
                "id": Path(file_name).stem,
                "split": normalise_split(m.get("split")),
                "image": {
                    "bytes": image_path.read_bytes(),
                    "path": None,
                },
                "prompt": p.prompt,
                "target": to_target(gt_parse) if gt_parse is not None else "",
                "ground_truth": ground_truth,
                "gt_error": error,
            }
        )
    present = {r["split"] for r in rows}
    done = []
    if "test" not in present:
        done.append(carve(rows, "test", p.carve_test_size, p.seed) | {"param": "carve_test_size"})
    if "validation" not in present:
        done.append(
            carve(rows, "validation", p.carve_validation_size, p.seed)
            | {"param": "carve_validation_size"}
        )
    if carves is not None:
        carves.extend(done)
    unknown = sorted({r["split"] for r in rows} - set(SPLITS))
    if unknown:
        bad = next(r["id"] for r in rows if r["split"] in unknown)
        raise BadInput(f"record {bad!r}: field split={unknown[0]!r} is not one of {SPLITS}")
    return rows


def run_ingest(
    p: IngestParams,
    raw_dir: str | Path,
    out_dir: str | Path,
    ocr: bool = False,
    ocr_cache: str | Path | None = None,
    workers: int = 1,
) -> dict[str, int]:
    """Write the processed DatasetDict (train/validation/test, possibly empty) to out_dir.

    With `ocr` (params' model.ocr_prompt), every record's OCR text is read once here, into the
    `ocr` column: from `ocr_cache` where that file has the image (by sha256 and engine), by
    the engine on `workers` threads where it does not."""
    import datasets

    carves: list[dict[str, Any]] = []
    rows = read_snapshot(Path(raw_dir), p, carves)
    texts: list[str | None] = [None] * len(rows)
    if ocr:
        from tasks.inference.ocr import OcrCache, read_many

        cache = OcrCache(ocr_cache)
        texts = list(read_many(cache, [r["image"]["bytes"] for r in rows], workers))
        log.info("ingest: OCR of %d images (%d read, the rest cached)", len(rows), cache.misses)
    for r, text in zip(rows, texts, strict=True):
        r["ocr"] = text
    features = datasets.Features(
        {
            "id": datasets.Value("string"),
            "split": datasets.Value("string"),
            "image": datasets.Image(),
            "prompt": datasets.Value("string"),
            "ocr": datasets.Value("string"),  # None without OCR grounding
            "target": datasets.Value("string"),
            "ground_truth": datasets.Value("string"),
            "gt_error": datasets.Value("string"),
        }
    )

    def split_dataset(split: str) -> datasets.Dataset:
        chosen = sorted((r for r in rows if r["split"] == split), key=lambda r: r["id"])
        # column-wise, so an empty split still has its columns
        return datasets.Dataset.from_dict(
            {k: [r[k] for r in chosen] for k in features}, features=features
        )

    # Empty splits are left out: datasets 5.2 cannot load an empty split back from disk.
    # tasks.data.dataset.load_dataset_dir restores them as empty datasets, and validation names them.
    dd = datasets.DatasetDict({s: ds for s in SPLITS if len(ds := split_dataset(s))})
    with atomic_dir(out_dir) as tmp:
        dd.save_to_disk(str(tmp))
        write_json_atomic(tmp / CARVE_FILE, carves)
    return {s: len(dd[s]) if s in dd else 0 for s in SPLITS}


def main(argv: list[str] | None = None) -> None:
    ap = cli.parser(
        "Ingest the raw snapshot into a processed dataset.",
        paths=("data", "dataset", "ocr_cache"),
    )

    def body(a, p) -> str:
        counts = run_ingest(
            p.ingest,
            a.data,
            a.dataset,
            ocr=p.model.ocr_prompt,
            ocr_cache=a.ocr_cache,
            workers=cores(),
        )
        return f"ingest: {', '.join(f'{k}={v}' for k, v in counts.items())} -> {a.dataset}"

    cli.run("ingest", ap, body, argv)


if __name__ == "__main__":
    main()
