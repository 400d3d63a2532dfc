import json
import re

import pytest
from PIL import Image

from tasks.core.errors import MissingInput
from tasks.data.dataset import load_dataset_dir
from tasks.data.receipt_json import parse_target
from tasks.data.sources import parse_source
from tasks.data.sources.render import CELL
from tasks.data.sources.synthetic import generate
from tasks.ingest import run_ingest
from tasks.refresh_data import load_source, run_data
from tests.conftest import CORD_JSON, CORD_SAMPLE, REPO, SAMPLE_GT_PARSE, needs, small_params


def test_synthetic_generator_is_deterministic():
    p = small_params().data.synthetic.model_copy(
        update={"train": 5, "validation": 2, "test": 2, "seed": 3}
    )
    a, b = generate(p), generate(p)
    assert [(r.id, r.image_bytes, r.ground_truth) for r in a] == [
        (r.id, r.image_bytes, r.ground_truth) for r in b
    ]
    other = generate(p.model_copy(update={"seed": 4}))
    assert [r.image_bytes for r in other] != [r.image_bytes for r in a]


def test_synthetic_ground_truth_is_cord_v2_shaped():
    records = generate(
        small_params().data.synthetic.model_copy(
            update={"train": 30, "validation": 1, "test": 1, "max_items": 3}
        )
    )
    splits = {r.split for r in records}
    assert splits == {"train", "validation", "test"}
    for r in records:
        gt = json.loads(r.ground_truth)
        assert set(gt) == {"gt_parse", "meta"}
        assert gt["meta"]["split"] == r.split
        total = gt["gt_parse"]["total"]["total_price"]
        assert "," in total or len(total) <= 3  # thousands separators as CORD writes them
    menus = [json.loads(r.ground_truth)["gt_parse"]["menu"] for r in records]
    assert any(isinstance(m, dict) for m in menus) and any(isinstance(m, list) for m in menus)


def test_unknown_or_incomplete_source_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown data source 'ftp'"):
        parse_source("ftp")
    with pytest.raises(ValueError, match="needs a directory"):
        parse_source("cord-json")


def test_hf_source_offline_names_the_alternatives(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(MissingInput, match="Offline sources: 'synthetic', 'imagefolder:<dir>'"):
        load_source("hf:naver-clova-ix/cord-v2", small_params().data)


def test_ingest_round_trip_on_synthetic(tmp_path):
    p = small_params()
    run_data(p.data, tmp_path / "data")
    counts = run_ingest(p.ingest, tmp_path / "data", tmp_path / "ds")
    assert counts == {"train": 12, "validation": 4, "test": 4}
    dd = load_dataset_dir(tmp_path / "ds")
    meta = {
        json.loads(line)["file_name"].split("/")[-1][:-4]: json.loads(line)
        for line in (tmp_path / "data" / "metadata.jsonl").read_text().splitlines()
    }
    for split in dd:
        for r in dd[split]:
            assert r["prompt"] == p.ingest.prompt and r["gt_error"] == ""
            assert (
                parse_target(r["target"]) == json.loads(meta[r["id"]]["ground_truth"])["gt_parse"]
            )
            assert r["image"].size == (  # plus the right-margin cell
                (p.data.synthetic.columns + 1) * CELL,
                p.data.synthetic.rows * CELL,
            )


def test_snapshot_is_written_atomically(tmp_path, monkeypatch):
    p = small_params()
    run_data(p.data, tmp_path / "data")
    before = (tmp_path / "data" / "metadata.jsonl").read_text()

    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr("tasks.refresh_data.write_snapshot", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        run_data(p.data, tmp_path / "data")
    assert (tmp_path / "data" / "metadata.jsonl").read_text() == before
    assert [x.name for x in tmp_path.iterdir()] == ["data"]


@needs(CORD_SAMPLE)
@pytest.mark.real_data
def test_real_photo_goes_through_ingest(tmp_path):
    p = small_params()
    run_data(p.data, tmp_path / "data", source=f"imagefolder:{CORD_SAMPLE}")
    counts = run_ingest(p.ingest, tmp_path / "data", tmp_path / "ds")
    assert counts == {"train": 0, "validation": 0, "test": 1}
    rec = load_dataset_dir(tmp_path / "ds")["test"][0]
    assert rec["id"] == "cord_tst_receipt_00004"
    assert rec["image"].size == (864, 1296)
    assert parse_target(rec["target"]) == SAMPLE_GT_PARSE


@needs(CORD_JSON)
@pytest.mark.real_data
def test_cord_json_renders_and_carves_a_test_split(tmp_path):
    from tasks.data.sources import cord_json

    records = cord_json.load(CORD_JSON, max_side=400)
    assert len(records) == 900
    assert {r.split for r in records} == {"train", "validation"}
    p = small_params()
    # a small slice through the whole source -> ingest path
    from tasks.data.sources import write_snapshot

    write_snapshot(records[:30] + records[-5:], tmp_path / "data", "cord-json")
    counts = run_ingest(
        p.ingest.model_copy(update={"carve_test_size": 10}), tmp_path / "data", tmp_path / "ds"
    )
    assert counts == {"train": 20, "validation": 5, "test": 10}
    again = run_ingest(
        p.ingest.model_copy(update={"carve_test_size": 10}), tmp_path / "data", tmp_path / "ds2"
    )
    assert (
        load_dataset_dir(tmp_path / "ds")["test"]["id"]
        == load_dataset_dir(tmp_path / "ds2")["test"]["id"]
    )
    assert again == counts


@pytest.mark.slow  # a hub-layout build, ingest and validation end to end
@needs(CORD_JSON)
@needs(CORD_SAMPLE)
def test_hf_source_reads_a_local_replica_of_the_cord_v2_hub_repo(tmp_path, monkeypatch):
    """`hf:<dir>` through the same `datasets.load_dataset` call as `hf:naver-clova-ix/cord-v2`,
    on parquet shards in the hub's layout and schema, made of real CORD annotations and the
    real sample photo; then ingest and Great Expectations validation run on it."""
    import datasets

    from devtools.replica import build_cord_v2_replica
    from tasks.core.config import load_params
    from tasks.data.receipt_json import price_violations, type_violations
    from tasks.validate import ValidationFailed, run_validate

    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))
    sizes = {"train": 6, "validation": 3, "test": 3}
    hub = build_cord_v2_replica(CORD_JSON, CORD_SAMPLE, tmp_path / "cord-v2", sizes)
    shards = sorted(p.name for p in (hub / "data").iterdir())
    assert [s.split("-")[0] for s in shards] == ["test", "train", "validation"]
    features = datasets.load_dataset(str(hub), split="train").features
    assert features == datasets.Features(
        {"image": datasets.Image(), "ground_truth": datasets.Value("string")}
    )

    p = load_params(REPO / "params.yaml")
    run_data(p.data, tmp_path / "data", source=f"hf:{hub}")
    counts = run_ingest(p.ingest, tmp_path / "data", tmp_path / "ds")
    assert counts == sizes
    # Real annotations carry real slips (README: 53 of 900 fail a rule): validation
    # names exactly the records whose prices or value types break one, and no other.
    dd = load_dataset_dir(tmp_path / "ds")
    slips = {
        rid
        for split in dd.values()
        for rid, target in zip(split["id"], split["target"], strict=True)
        if price_violations(json.loads(target)) or type_violations(json.loads(target))
    }
    assert slips  # the first train receipts hold some (a negative change, a split count)
    with pytest.raises(ValidationFailed) as failed:
        run_validate(p.validate_, tmp_path / "ds", tmp_path / "validation.json")
    named = set(re.findall(r"cord-v2-[a-z]+-\d{5}", str(failed.value)))
    assert named == slips
    test = dd["test"]
    assert json.loads(test["target"][0]) == SAMPLE_GT_PARSE  # the real photo's receipt
    assert test[0]["image"].size == Image.open(next((CORD_SAMPLE / "images").iterdir())).size


def _imagefolder(root, rows, images=()):
    """An imagefolder source at root: metadata rows, and a small PNG at each path in images."""
    root.mkdir(parents=True, exist_ok=True)
    for rel in images:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (40, 60), "white").save(root / rel)
    lines = [r if isinstance(r, str) else json.dumps(r) for r in rows]
    (root / "metadata.jsonl").write_text("\n".join(lines) + "\n")
    return root


GT = json.dumps({"gt_parse": {"total": {"total_price": "1,000"}}})


@pytest.mark.parametrize("trick", ["absolute", "dotdot", "symlink"])
def test_an_imagefolder_source_reads_nothing_outside_its_directory(tmp_path, trick):
    secret = tmp_path / "secret.png"
    Image.new("RGB", (40, 60), "red").save(secret)
    src = tmp_path / "src"
    src.mkdir()
    name = {"absolute": str(secret), "dotdot": "../secret.png", "symlink": "link.png"}[trick]
    if trick == "symlink":
        (src / "link.png").symlink_to(secret)
    _imagefolder(
        src,
        [{"file_name": "ok.png", "ground_truth": GT}, {"file_name": name, "ground_truth": GT}],
        ["ok.png"],
    )
    p = small_params()
    with pytest.raises(
        ValueError,
        match=r"metadata\.jsonl:2: record '(secret|link)': field 'file_name' .* outside the source directory",
    ):
        run_data(p.data, tmp_path / "data", source=f"imagefolder:{src}")
    assert not (tmp_path / "data").exists()  # nothing written, nothing versioned


def test_the_same_file_name_in_two_subfolders_is_two_records(tmp_path):
    src = _imagefolder(
        tmp_path / "src",
        [{"file_name": f"{d}/same.png", "ground_truth": GT, "split": "train"} for d in "ab"],
        ["a/same.png", "b/same.png"],
    )
    records = load_source(f"imagefolder:{src}", small_params().data)
    assert [r.id for r in records] == ["a__same", "b__same"]
    assert all(r.image_bytes for r in records)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (
            '["images/x.png", "gt"]',
            r"metadata\.jsonl:1: a metadata line is a JSON object, not list",
        ),
        (
            json.dumps({"file_name": 7, "ground_truth": GT}),
            r"metadata\.jsonl:1: field 'file_name' must be a relative path, got 7",
        ),
        (  # found by tests/data/test_fuzz_sources.py
            json.dumps({"file_name": ".", "ground_truth": GT}),
            r"metadata\.jsonl:1: field 'file_name' '\.' names no file",
        ),
        (  # found by tests/data/test_fuzz_sources.py
            json.dumps({"file_name": "x.png", "ground_truth": GT, "split": 5}),
            r"metadata\.jsonl:1: field 'split' must be a split name, got 5",
        ),
    ],
)
def test_a_bad_metadata_line_is_named_not_a_traceback(tmp_path, line, message):
    src = _imagefolder(tmp_path / "src", [line])
    with pytest.raises(ValueError, match=message):
        load_source(f"imagefolder:{src}", small_params().data)


def test_a_utf8_bom_in_metadata_is_read(tmp_path):
    src = _imagefolder(tmp_path / "src", [{"file_name": "x.png", "ground_truth": GT}], ["x.png"])
    meta = src / "metadata.jsonl"
    meta.write_bytes(b"\xef\xbb\xbf" + meta.read_bytes())
    assert [r.id for r in load_source(f"imagefolder:{src}", small_params().data)] == ["x"]
