"""The default data: CORD's shipped annotations, rendered photo-like, split train / validation /
test without CORD's own test split."""

import gzip
import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from tasks.data.sources import cord, photo
from tasks.data.sources.photo import render_photo, render_photos
from tests.conftest import CORD_JSON, REPO, needs, small_params

SHIPPED = REPO / cord.SHIPPED


def shipped_rows():
    return cord.read_annotations(SHIPPED)


def write_rows(path, rows):
    path.write_bytes(gzip.compress("".join(json.dumps(r) + "\n" for r in rows).encode()))
    return path


def test_the_shipped_annotations_are_cords_train_and_dev_with_their_licence():
    rows = shipped_rows()
    assert len(rows) == 900
    assert sum(r["split"] == "train" for r in rows) == 800
    assert sum(r["split"] == "dev" for r in rows) == 100
    assert "test" not in {r["split"] for r in rows}  # CORD's test split is never shipped
    readme = (SHIPPED.parent / "README.md").read_text()
    assert "CC-BY-4.0" in readme and "Park" in readme  # licence and attribution travel with it


@needs(CORD_JSON)
@pytest.mark.real_data
def test_the_shipped_annotations_are_the_originals_verbatim():
    for r in shipped_rows():
        original = (CORD_JSON / r["split"] / f"{r['name']}.json").read_text()
        assert r["ground_truth"] == original, r["name"]


def test_dev_is_divided_into_test_and_validation_by_a_seeded_draw():
    p = small_params().data.cord
    names = [f"receipt_{i:05d}" for i in range(100)]
    splits = cord.dev_splits(names, p)
    assert sum(v == "test" for v in splits.values()) == p.test_size
    assert set(splits.values()) == {"test", "validation"}
    assert cord.dev_splits(list(reversed(names)), p) == splits  # order-independent
    other = cord.dev_splits(names, p.model_copy(update={"seed": p.seed + 1}))
    assert other != splits


def test_photo_renders_are_seeded_per_record_and_look_like_photos():
    rows = shipped_rows()[:2]
    anns = [json.loads(r["ground_truth"]) for r in rows]
    a = render_photo(anns[0], "cord-train-a", 640)
    assert a == render_photo(anns[0], "cord-train-a", 640)  # same record, same bytes
    assert a != render_photo(anns[0], "cord-train-b", 640)  # another record's effects
    img = Image.open(io.BytesIO(a))
    assert img.format == "JPEG" and max(img.size) > 600  # the paper plus the surface round it
    grey = np.asarray(img.convert("L"))
    # darker surface round the paper, light paper in the middle, dark ink on it
    h, w = grey.shape
    assert grey[2, 2] < grey[h // 8, w // 2]
    assert grey.min() < 100


def test_many_renders_on_threads_are_the_bytes_drawn_one_at_a_time():
    rows = shipped_rows()[:6]
    jobs = [(json.loads(r["ground_truth"]), f"cord-{r['split']}-{r['name']}") for r in rows]
    one_by_one = [render_photo(ann, rid, 400) for ann, rid in jobs]
    assert render_photos(jobs, 400, workers=3) == one_by_one
    bad = list(jobs)
    bad[4] = ({"valid_line": [], "meta": {}}, "cord-train-broken")
    with pytest.raises(ValueError, match=r"record 'cord-train-broken': field meta.image_size"):
        render_photos(bad, 400, workers=3)


RENDER_ONE = """
import hashlib, json, sys
from tasks.data.sources import cord
from tasks.data.sources.photo import render_photo
r = cord.read_annotations(cord.SHIPPED)[2]
data = render_photo(json.loads(r["ground_truth"]), f"cord-{r['split']}-{r['name']}", 1280)
print(hashlib.sha256(data).hexdigest())
"""


def test_a_render_is_the_same_bytes_whichever_blas_kernels_the_cpu_gets():
    # This receipt's bytes differed between AVX512 and AVX2 machines when its words' warps were
    # solved by numpy.linalg (OpenBLAS picks kernels by CPU); OPENBLAS_CORETYPE forces a pick.
    digests = {
        core: subprocess.run(
            [sys.executable, "-c", RENDER_ONE],
            cwd=REPO,
            env=os.environ | {"OPENBLAS_CORETYPE": core},
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        for core in ("Prescott", "Haswell")
    }
    assert len(set(digests.values())) == 1 and len(digests["Haswell"]) == 64, digests


def test_the_warp_coefficients_map_each_output_corner_to_its_input_corner():
    src = [(0.0, 0.0), (84.0, 0.0), (84.0, 30.0), (0.0, 30.0)]  # the word's rendered mask
    dst = [(3.2, 1.7), (40.9, 2.4), (41.3, 15.8), (2.6, 14.9)]  # its quad on the receipt
    a, b, c, d, e, f, g, h = photo._perspective_coeffs(src, dst)
    for (x, y), (u, v) in zip(dst, src, strict=True):
        w = g * x + h * y + 1
        assert (a * x + b * y + c) / w == pytest.approx(u, abs=1e-9)
        assert (d * x + e * y + f) / w == pytest.approx(v, abs=1e-9)
    with pytest.raises(ValueError, match="singular"):
        photo._perspective_coeffs(src, [(1.0, 1.0)] * 4)  # a quad collapsed to a point


@pytest.mark.parametrize("where", ["valid_line", "repeating_symbol"])
def test_a_degenerate_quad_is_one_line_naming_the_record_and_field(where):
    ann = json.loads(shipped_rows()[0]["ground_truth"])
    # three corners on one line: no perspective warp maps a word onto it
    flat = {"x1": 100, "y1": 100, "x2": 300, "y2": 100, "x3": 500, "y3": 100, "x4": 100, "y4": 300}
    if where == "valid_line":
        ann["valid_line"][0]["words"][0]["quad"] = flat
    else:
        ann["repeating_symbol"] = [[{"quad": flat, "text": "-"}]]
    with pytest.raises(ValueError, match=rf"record 'cord-x': field {where}\[\].*singular"):
        render_photo(ann, "cord-x", 100_000)  # at its own size: the corners stay integers


def test_the_cord_source_renders_every_row_with_its_split(tmp_path):
    rows = shipped_rows()
    some = [r for r in rows if r["split"] == "train"][:3] + [
        r for r in rows if r["split"] == "dev"
    ][:4]
    path = write_rows(tmp_path / "a.jsonl.gz", some)
    p = small_params().data
    records = cord.load(p.cord.model_copy(update={"test_size": 2}), 320, path)
    assert [r.id for r in records][:3] == [f"cord-train-{r['name']}" for r in some[:3]]
    assert [r.split for r in records].count("train") == 3
    assert sorted(str(r.split) for r in records[3:]) == ["test", "test", "validation", "validation"]
    assert all(r.ground_truth == s["ground_truth"] for r, s in zip(records, some, strict=True))


def test_a_bad_annotation_row_names_its_record_and_field(tmp_path):
    row = shipped_rows()[0]
    bad = dict(row, ground_truth=json.dumps({"valid_line": [], "meta": {}}))
    with pytest.raises(
        ValueError, match=r"record 'cord-train-receipt_00000': field meta.image_size"
    ):
        cord.load(small_params().data.cord, 320, write_rows(tmp_path / "b.jsonl.gz", [bad]))
    other = dict(row, split="test")
    with pytest.raises(ValueError, match="field split='test' is not train or dev"):
        cord.load(small_params().data.cord, 320, write_rows(tmp_path / "c.jsonl.gz", [other]))


def test_flagged_receipts_are_left_out_by_name_with_their_reasons(tmp_path, caplog):
    rows = shipped_rows()
    listing = json.loads((SHIPPED.parent / "excluded.json").read_text())
    assert len(listing) == 51 and all(listing.values())  # every one says why
    names = {f"{r['split']}/{r['name']}" for r in rows}
    assert set(listing) <= names
    # the two receipts CORD has in both train and dev: the train copy goes, dev keeps its own
    assert {"train/receipt_00015", "train/receipt_00489"} <= set(listing)
    assert not {"dev/receipt_00035", "dev/receipt_00067"} & set(listing)

    flagged = next(k for k in listing if k.startswith("train/"))
    keep = next(r for r in rows if f"{r['split']}/{r['name']}" not in listing)
    few = [keep, next(r for r in rows if f"{r['split']}/{r['name']}" == flagged)]
    path = write_rows(tmp_path / "a.jsonl.gz", few)
    (tmp_path / "excluded.json").write_text(json.dumps({flagged: listing[flagged]}))
    p = small_params().data.cord
    assert [r.id for r in cord.load(p, 320, path)] == [f"cord-{keep['split']}-{keep['name']}"]
    assert "1 flagged receipts left out" in caplog.text
    every = cord.load(p.model_copy(update={"exclude_flagged": False}), 320, path)
    assert len(every) == 2
