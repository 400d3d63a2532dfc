"""Great Expectations validation: passes on good data, names the record on each kind of bad one."""

import json

import pytest

from tasks.data.sources import RawRecord, write_snapshot
from tasks.data.sources.synthetic import generate
from tasks.ingest import run_ingest
from tasks.validate import ValidationFailed, run_validate
from tests.conftest import small_params


@pytest.fixture(scope="module")
def good_records():
    return generate(small_params().data.synthetic)


def validate(records, tmp_path, **validate_params):
    p = small_params(validate=validate_params) if validate_params else small_params()
    write_snapshot(records, tmp_path / "data", "test")
    run_ingest(p.ingest, tmp_path / "data", tmp_path / "ds")
    return run_validate(
        p.validate_, tmp_path / "ds", tmp_path / "validation.json", tmp_path / "docs"
    )


def failing(tmp_path, records, **validate_params):
    with pytest.raises(ValidationFailed) as err:
        validate(records, tmp_path, **validate_params)
    report = json.loads((tmp_path / "validation.json").read_text())
    assert report["success"] is False
    failed = {r["rule"]: r for r in report["expectations"] if not r["success"]}
    return str(err.value), failed


def replace(records, index, **changes):
    r = records[index]
    out = list(records)
    out[index] = RawRecord(
        changes.get("id", r.id),
        changes.get("split", r.split),
        changes.get("image_bytes", r.image_bytes),
        changes.get("ground_truth", r.ground_truth),
    )
    return out


def with_gt(records, index, mutate):
    gt = json.loads(records[index].ground_truth)
    mutate(gt["gt_parse"])
    return replace(records, index, ground_truth=json.dumps(gt))


def test_good_data_passes_and_writes_report_and_data_docs(tmp_path, good_records):
    report = validate(good_records, tmp_path)
    assert report["success"] and report["splits"] == {"train": 12, "validation": 4, "test": 4}
    assert len(report["expectations"]) == 12 and all(e["success"] for e in report["expectations"])
    assert (tmp_path / "docs" / "index.html").is_file()


def test_corrupt_image_is_named(tmp_path, good_records):
    bad_id = good_records[2].id
    message, failed = failing(tmp_path, replace(good_records, 2, image_bytes=b"\x89PNG not really"))
    # the decoder's own words, not only its exception class
    assert f"{bad_id}: image: does not decode (UnidentifiedImageError: cannot identify" in message
    assert [o["id"] for o in failed["the image decodes"]["offending"]] == [bad_id]


def test_an_empty_image_file_is_called_empty_not_missing(tmp_path, good_records):
    bad_id = good_records[5].id
    message, failed = failing(tmp_path, replace(good_records, 5, image_bytes=b""))
    assert f"{bad_id}: image: empty file (0 bytes)" in message
    assert "missing" not in message
    assert [o["id"] for o in failed["the image decodes"]["offending"]] == [bad_id]


def test_an_image_file_gone_from_the_snapshot_stops_ingest_naming_it(tmp_path, good_records):
    p = small_params()
    write_snapshot(good_records, tmp_path / "data", "test")
    gone = good_records[3]
    next((tmp_path / "data").rglob(f"{gone.id}.*")).unlink()
    with pytest.raises(
        ValueError, match=rf"metadata.jsonl:4: record '{gone.id}': field file_name="
    ):
        run_ingest(p.ingest, tmp_path / "data", tmp_path / "ds")
    assert not (tmp_path / "ds").exists()


def test_a_carve_that_leaves_a_split_too_small_is_named(tmp_path, good_records):
    """12 train, 4 validation, no test: carving 11 into test leaves train 1 record."""
    p = small_params(ingest={"carve_test_size": 11})
    write_snapshot([r for r in good_records if r.split != "test"], tmp_path / "data", "test")
    assert run_ingest(p.ingest, tmp_path / "data", tmp_path / "ds") == {
        "train": 1,
        "validation": 4,
        "test": 11,
    }
    with pytest.raises(ValidationFailed) as err:
        run_validate(p.validate_, tmp_path / "ds", tmp_path / "validation.json")
    message = str(err.value)
    assert (
        "train: 1 records (after 11 of its 12 were carved into test by ingest.carve_test_size)"
        in message
    )
    report = json.loads((tmp_path / "validation.json").read_text())
    failed = {r["rule"]: r for r in report["expectations"] if not r["success"]}
    assert [o["split"] for o in failed["every split non-empty and within bounds"]["offending"]] == [
        "train"
    ]
    # the same source with a carve that leaves enough passes, and says what it carved
    p = small_params(ingest={"carve_test_size": 4})
    run_ingest(p.ingest, tmp_path / "data", tmp_path / "ds")
    assert run_validate(p.validate_, tmp_path / "ds", tmp_path / "validation.json")["success"]


def test_ground_truth_not_json_is_named(tmp_path, good_records):
    bad_id = good_records[0].id
    message, failed = failing(tmp_path, replace(good_records, 0, ground_truth="{not json"))
    assert bad_id in message and "ground_truth: not JSON" in message
    assert [o["id"] for o in failed["ground truth parses as JSON"]["offending"]] == [bad_id]
    assert [o["id"] for o in failed["target is not empty"]["offending"]] == [bad_id]


def test_missing_gt_parse_is_named(tmp_path, good_records):
    bad_id = good_records[1].id
    message, failed = failing(
        tmp_path, replace(good_records, 1, ground_truth=json.dumps({"meta": {}}))
    )
    assert f"{bad_id}: ground_truth: no gt_parse" in message
    assert [o["id"] for o in failed["ground truth has gt_parse"]["offending"]] == [bad_id]


@pytest.mark.parametrize("price,why", [("twelve", "not a number"), ("-5,000", "negative")])
def test_bad_price_is_named_with_field(tmp_path, good_records, price, why):
    def mutate(gt):
        gt["total"]["total_price"] = price

    bad_id = good_records[3].id
    message, failed = failing(tmp_path, with_gt(good_records, 3, mutate))
    assert f"{bad_id}: total.total_price={price!r} ({why})" in message
    assert [o["id"] for o in failed["price fields parse as non-negative numbers"]["offending"]] == [
        bad_id
    ]


def test_key_outside_cord_schema_is_named(tmp_path, good_records):
    def mutate(gt):
        gt["total"]["tip"] = "1,000"

    message, _ = failing(tmp_path, with_gt(good_records, 4, mutate))
    assert f"{good_records[4].id}: total.tip" in message


def test_image_duplicated_across_splits_is_named(tmp_path, good_records):
    train_id = good_records[0].id
    test_index = next(i for i, r in enumerate(good_records) if r.split == "test")
    records = replace(good_records, test_index, image_bytes=good_records[0].image_bytes)
    message, failed = failing(tmp_path, records)
    offenders = {
        o["id"]: o["split"]
        for o in failed["no image duplicated within or across splits"]["offending"]
    }
    assert offenders == {train_id: "train", good_records[test_index].id: "test"}
    assert train_id in message


def test_empty_split_is_named(tmp_path, good_records):
    records = [r for r in good_records if r.split != "validation"]
    message, failed = failing(tmp_path, records)
    assert "validation: 0" in message
    assert [o["split"] for o in failed["every split non-empty and within bounds"]["offending"]] == [
        "validation"
    ]


def test_split_above_bound_is_named(tmp_path, good_records):
    message, _ = failing(tmp_path, good_records, max_split_size=10)
    assert "train: 12" in message


def test_values_that_are_not_strings_are_named(tmp_path, good_records):
    def mutate(gt):
        gt["menu"] = {"nm": 42, "cnt": ["x", "1"], "price": "8,500"}

    bad_id = good_records[2].id
    message, failed = failing(tmp_path, with_gt(good_records, 2, mutate))
    assert (
        f"{bad_id}: menu.nm=42 (int, not a string); menu.cnt=['x', '1'] (one value split" in message
    )
    rule = "values are strings, counts and prices one each"
    assert [o["id"] for o in failed[rule]["offending"]] == [bad_id]


def annotation(text: str) -> dict:
    """A minimal CORD word-level annotation: one total line."""
    quad = {"x1": 10, "y1": 10, "x2": 90, "y2": 10, "x3": 90, "y3": 30, "x4": 10, "y4": 30}
    words = [{"quad": quad, "is_key": 0, "row_id": 1, "text": text}]
    line = {"words": words, "category": "total.total_price", "group_id": 1}
    return {"valid_line": [line], "meta": {"image_size": {"width": 200, "height": 300}}}


def test_the_same_annotation_in_two_splits_is_named_though_its_renderings_differ(
    tmp_path, good_records
):
    """Rendered sources draw each receipt on paper seeded by its id: image hashes differ, the
    annotation (words and boxes) does not."""
    from tasks.data.sources.photo import render_photo

    twin = annotation("12,000")
    extra = [
        RawRecord(rid, split, render_photo(twin, rid, 400), json.dumps(twin))
        for rid, split in (("cord-train-a", "train"), ("cord-test-a", "test"))
    ]
    assert extra[0].image_bytes != extra[1].image_bytes
    other = annotation("13,000")
    extra.append(
        RawRecord("cord-train-b", "train", render_photo(other, "b", 400), json.dumps(other))
    )
    message, failed = failing(tmp_path, good_records + extra)
    rule = "no annotation (words and their boxes) duplicated in or across splits"
    assert {o["id"]: o["split"] for o in failed[rule]["offending"]} == {
        "cord-train-a": "train",
        "cord-test-a": "test",
    }
    assert "cord-test-a" in message and "cord-train-b" not in message
