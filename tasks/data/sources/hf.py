"""A dataset on the Hugging Face Hub (default naver-clova-ix/cord-v2), for machines that reach it."""

from __future__ import annotations

import io
from pathlib import Path

from tasks.core.errors import MissingInput
from tasks.data.sources import RawRecord

OFFLINE_HINT = (
    "the Hugging Face Hub is not reachable from here. Offline sources: "
    "'synthetic', 'imagefolder:<dir>' (e.g. ../shared/cord-v2-sample) or "
    "'cord-json:<dir>' (e.g. ../shared/cord-v1-json)"
)


def load(dataset_id: str | None) -> list[RawRecord]:
    import datasets

    dataset_id = dataset_id or "naver-clova-ix/cord-v2"
    try:
        dd = datasets.load_dataset(dataset_id)
    except (
        Exception
    ) as exc:  # offline: ConnectionError, LocalEntryNotFoundError, OfflineModeIsEnabled
        hint = "" if Path(dataset_id).is_dir() else f"; {OFFLINE_HINT}"
        raise MissingInput(
            f"hf:{dataset_id}: could not load ({type(exc).__name__}: {exc}){hint}"
        ) from exc
    records = []
    for split, ds in dd.items():
        for i, row in enumerate(ds):
            buf = io.BytesIO()
            row["image"].save(buf, format="PNG")
            records.append(
                RawRecord(
                    f"{dataset_id.split('/')[-1]}-{split}-{i:05d}",
                    split,
                    buf.getvalue(),
                    row["ground_truth"],
                )
            )
    return records
