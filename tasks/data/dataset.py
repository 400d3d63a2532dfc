"""The processed dataset that ingest writes and every later stage reads (HF `datasets` on disk)."""

from __future__ import annotations

from pathlib import Path

from tasks.core.errors import MissingInput

SPLITS = ("train", "validation", "test")


def load_dataset_dir(path: str | Path, decode_images: bool = True):
    """The processed DatasetDict; `decode_images=False` keeps raw bytes (for validation)."""
    import datasets

    if not (Path(path) / "dataset_dict.json").is_file():
        raise MissingInput(f"{path}: no processed dataset here (the ingest stage writes it)")
    dd = datasets.load_from_disk(str(path))
    features = next(iter(dd.values())).features
    for split in SPLITS:
        if split not in dd:
            dd[split] = datasets.Dataset.from_dict({k: [] for k in features}, features=features)
    if not decode_images:
        dd = dd.cast_column("image", datasets.Image(decode=False))
    return dd
