"""bench/score_split.py writes a split's images to a folder with the bytes the dataset holds,
so that scoring reads the same files as the dataset's receipts."""

import io

import datasets
from PIL import Image

from bench.score_split import write_split


def _encoded(fmt: str, colour: str) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (24, 40), colour).save(buf, format=fmt)
    return buf.getvalue()


def test_a_split_is_written_as_its_own_image_bytes_named_by_record(tmp_path):
    rows = {"jpeg-1": _encoded("JPEG", "white"), "png-2": _encoded("PNG", "grey")}
    split = datasets.Dataset.from_dict(
        {"id": list(rows), "image": [{"bytes": b, "path": None} for b in rows.values()]},
        features=datasets.Features({"id": datasets.Value("string"), "image": datasets.Image()}),
    )
    other = split.select([0])
    datasets.DatasetDict({"test": split, "validation": other}).save_to_disk(tmp_path / "ds")

    n = write_split(tmp_path / "ds", "test", tmp_path / "out")

    assert n == 2
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["jpeg-1.jpg", "png-2.png"]
    assert (tmp_path / "out/jpeg-1.jpg").read_bytes() == rows["jpeg-1"]
    assert (tmp_path / "out/png-2.png").read_bytes() == rows["png-2"]
