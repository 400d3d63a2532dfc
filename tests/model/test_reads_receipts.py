"""The embedded default reads: QLoRA on the shipped pretrained base (models/tiny-reader) gives
answers that follow the image, and the gate tells a trained challenger from an under-trained one.

These fine-tune the real default base with the default recipe on synthetic slips for 300 steps
(3 epochs of 800; 8 to 12 minutes on one thread, by CPU and by what runs beside it), so they
are `slow`; CI runs them. Before the pretrained base, the fine-tuned tiny model gave one of two
answers for every receipt: these tests failed on it.
"""

import json

import numpy as np
import pytest
from PIL import Image

from tasks.build_base import run_build_base
from tasks.core.config import load_params
from tasks.data.dataset import load_dataset_dir
from tasks.data.sources.cord import SHIPPED, read_annotations
from tasks.data.sources.photo import render_photo
from tasks.evaluate import run_evaluate
from tasks.gate import decide
from tasks.inference.generation import Settings
from tasks.inference.reader import ReceiptReader, open_image
from tasks.ingest import run_ingest
from tasks.merge import run_merge
from tasks.refresh_data import run_data
from tasks.train import run_train
from tests.conftest import REPO

pytestmark = pytest.mark.slow

TRAIN_RECORDS, TEST_RECORDS, STEPS = 800, 16, 300
# What 300 steps reached on the 16 test receipts at seeds 0, 1 and 2 (2026-12-07, a 2-core CPU
# without AVX512): 12, 15 and 15 valid answers, 13 to 16 distinct totals, 12 to 14 answers
# with no warning; the tenth-trained challenger none valid, refused by the gate each time.
# (At 450 steps and the earlier rate of 2e-3, 11 to 16 valid across adapter inits.) The
# gate's floor for the CORD default (gate.min_json_valid_rate 0.9) is for that recipe; here
# the floor is 0.6, under the lowest measured, and the gate is judged on what it compares.
# The base before QLoRA stays at <= 0.1.
MIN_JSON_VALID = 0.6


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = tmp_path_factory.mktemp("reads")
    return prepare(root), root


def prepare(root, seed: int = 0):
    """params.yaml made this file's recipe at `seed`, with its data, dataset and base in `root`
    (`bench.reads_fixture` runs the same at other seeds)."""
    p = load_params(REPO / "params.yaml")
    # The base's own kind of receipt: synthetic slips it can read off the image, no OCR in
    # the prompt, batches drawn at random as when the figures above were measured.
    p.data.source = "synthetic"
    p.data.synthetic = p.data.synthetic.model_copy(
        update={"train": TRAIN_RECORDS, "validation": 16, "test": TEST_RECORDS}
    )
    p.model = p.model.model_copy(update={"ocr_prompt": False})
    # Free decoding: what the model writes by itself (the schema would close every answer).
    p.evaluate = p.evaluate.model_copy(update={"json_schema": False})
    p.train.args = p.train.args.model_copy(
        update={
            "max_steps": STEPS,
            "save_steps": 10_000,
            "train_sampling_strategy": "random",
            "seed": seed,
            "data_seed": seed,
        }
    )
    # The last step's weights, as when the figures above were measured (300 steps are 3
    # epochs here: the default's mean of the last 3 would take in the first one)
    p.train.average_last = 1
    p.gate = p.gate.model_copy(update={"min_json_valid_rate": MIN_JSON_VALID})
    run_data(p.data, root / "data")
    run_ingest(p.ingest, root / "data", root / "dataset")
    run_build_base(p, root / "dataset", root / "base", REPO / p.paths.reader)
    return p


def total_price(parse: dict | None) -> str | None:
    """A gt_parse's total.total_price, None where the answer has none (or is no JSON)."""
    return ((parse or {}).get("total") or {}).get("total_price")


def finetune(p, root, steps: int, name: str) -> dict:
    p = p.model_copy(deep=True)
    p.train.args = p.train.args.model_copy(update={"max_steps": steps})
    out = root / name
    run_train(p, root / "dataset", root / "base", out / "adapter", out / "ckpt", out / "t.json")
    # evaluate also picks the low-confidence threshold on the 16 validation receipts
    metrics = run_evaluate(
        p, root / "dataset", root / "base", out / "adapter", out / "m.json", out / "p.jsonl"
    )
    rows = [json.loads(line) for line in (out / "p.jsonl").read_text().splitlines()]
    return {"metrics": metrics, "rows": rows, "adapter": out / "adapter"}


@pytest.fixture(scope="module")
def trained(project):
    p, root = project
    return finetune(p, root, STEPS, "trained")


def test_answers_follow_the_image(trained):
    """Receipts with different totals get different total_price values.

    300 steps of QLoRA do not yet read every amount exactly, so this asserts that the totals
    vary with the receipt, not that they are right; the random tiny base before the reader
    gave 2 answers for 20 receipts and failed this."""
    totals = {total_price(json.loads(r["target"])) for r in trained["rows"]}
    said_totals = {total_price(r["parsed"]) for r in trained["rows"]}
    assert len(totals) >= 12, totals
    assert len(said_totals) >= 4, said_totals
    m = trained["metrics"]
    assert m["distinct_answers"] >= 0.9 and m["json_valid_rate"] >= MIN_JSON_VALID, m
    assert m["base_json_valid_rate"] <= 0.1, m  # the base reads, but does not answer in JSON
    # Not asserted: which fields 300 steps read exactly, which varies from seed to seed.


def test_gate_refuses_an_undertrained_challenger_and_promotes_a_trained_one(project, trained):
    p, root = project
    under = finetune(p, root, STEPS // 10, "under")
    good, bad = trained["metrics"], under["metrics"]
    champion = {"version": "1", **good}
    refused = decide(bad, p, champion)
    assert not refused["passed"]
    lost = [c for c in refused["criteria"] if not c["passed"]]
    assert lost and all(c["margin"] < 0 for c in lost)
    promoted = decide(good, p, {"version": "1", **bad})
    assert promoted["passed"]
    primary = p.gate.primary_metric
    assert good[primary] - bad[primary] >= p.gate.min_improvement


def test_noise_and_foreign_receipts_are_warned_about_and_clean_ones_are_not(
    project, trained, tmp_path
):
    """Every answer carries its confidence and warnings. With the threshold evaluate picked on
    the validation receipts (recorded in the metrics, as registration records it with the
    model): many in-distribution test receipts get no warning, while random noise and a
    photo-like CORD render (a kind of receipt this model never saw) get warnings."""
    p, root = project
    m, rows = trained["metrics"], trained["rows"]
    assert m["validation_n"] == 16 and m["confidence_threshold"] < 0
    clean = [r for r in rows if not r["warnings"]]
    assert len(clean) >= len(rows) // 4, [r["warnings"] for r in rows]
    test = load_dataset_dir(root / "dataset")["test"]
    merged = run_merge(p, root / "base", trained["adapter"], tmp_path / "merged")
    settings = Settings.from_params(p).but(min_confidence=m["confidence_threshold"])
    reader = ReceiptReader(merged, settings)
    noise = Image.fromarray(np.random.default_rng(0).integers(0, 256, (640, 400, 3), np.uint8))
    first = read_annotations(REPO / SHIPPED)[0]
    cord = open_image(render_photo(json.loads(first["ground_truth"]), "cord", 1280))
    answers = reader.read([test["image"][test["id"].index(clean[0]["id"])], noise, cord])
    assert answers[0]["warnings"] == [], answers[0]
    assert answers[1]["warnings"] and answers[2]["warnings"], answers[1:]
    assert all(a["confidence"]["mean_logprob"] <= 0 for a in answers)
