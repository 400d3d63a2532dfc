"""A target longer than the base's positions is named by record before anything trains on it."""

import json
import random
import string

import pytest

from tasks.build_base import run_build_base
from tasks.data.sources import RawRecord, write_snapshot
from tasks.data.sources.synthetic import generate
from tasks.ingest import run_ingest
from tasks.model.modeling import TargetsTooLong
from tasks.train import run_train
from tests.conftest import small_params, small_reader


def overlong_snapshot(p, root):
    """The small synthetic data with one train target far beyond 2,048 tokens: (its id, data)."""
    records = generate(p.data.synthetic)
    i = next(k for k, r in enumerate(records) if r.split == "train")
    gt = json.loads(records[i].ground_truth)
    rng = random.Random(0)  # random letters: no tokenizer merges them into a few tokens
    name = "".join(rng.choice(string.ascii_letters) for _ in range(5000))
    menu = gt["gt_parse"]["menu"]
    (menu[0] if isinstance(menu, list) else menu)["nm"] = name
    r = records[i]
    records[i] = RawRecord(r.id, r.split, r.image_bytes, json.dumps(gt))
    write_snapshot(records, root / "data", "test")
    run_ingest(p.ingest, root / "data", root / "ds")
    return r.id


def test_an_overlong_target_is_named_by_the_base_and_the_train_stage(tmp_path, base_dir):
    p = small_params(train={"too_long": "refuse"})
    rid = overlong_snapshot(p, tmp_path)

    with pytest.raises(TargetsTooLong) as err:
        run_build_base(p, tmp_path / "ds", tmp_path / "base", small_reader(p))
    message = str(err.value)
    assert message.startswith("1 record(s) do not fit the base's 2048 positions")
    assert f"- train/{rid}: field target is " in message
    assert not (tmp_path / "base").exists()  # no half-built base left behind

    # a base built on good data (the session's), handed the long record, refuses it in train
    with pytest.raises(TargetsTooLong, match=f"train/{rid}"):
        run_train(p, tmp_path / "ds", base_dir, *(tmp_path / n for n in ("a", "c", "s.json")))
    assert not (tmp_path / "a").exists()


def test_with_skip_an_overlong_train_record_is_left_out_by_name(tmp_path, base_dir, caplog):
    p = small_params(train={"too_long": "skip", "args": {"max_steps": 1}})
    rid = overlong_snapshot(p, tmp_path)
    run_build_base(p, tmp_path / "ds", tmp_path / "base", small_reader(p))
    assert f"left out of training (train.too_long: skip): {rid}" in caplog.text
    summary = run_train(p, tmp_path / "ds", base_dir, *(tmp_path / n for n in ("a", "c", "s.json")))
    assert summary["left_out_too_long"] == [rid]
    assert summary["train_records"] == p.data.synthetic.train - 1
    assert not list((tmp_path / "ds").rglob("cache-*"))  # the DVC output is left as it was


def test_targets_that_fit_pass_and_the_longest_sequence_is_counted(params, dataset_dir, tmp_path):
    from tasks.data.dataset import load_dataset_dir
    from tasks.model.collator import max_length_for
    from tasks.model.modeling import check_targets_fit, dataset_fit_records, load_processor

    base = run_build_base(params, dataset_dir, tmp_path / "base", small_reader(params))
    processor = load_processor(base)
    dd = load_dataset_dir(dataset_dir, decode_images=False)
    longest = check_targets_fit(
        processor, 2048, params.ingest.prompt, dataset_fit_records(dd, processor)
    )
    targets = [t for split in dd.values() for t in split["target"]]
    assert longest == max_length_for(processor, params.ingest.prompt, targets)
    with pytest.raises(TargetsTooLong, match=f"do not fit the base's {longest - 1} positions"):
        check_targets_fit(
            processor, longest - 1, params.ingest.prompt, dataset_fit_records(dd, processor)
        )
