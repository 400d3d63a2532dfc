"""OCR grounding end to end: ingest stores each record's OCR once; the same text reaches the
prompt through `tasks.inference.ocr.instruction` when training, evaluating, predicting and serving; a
receipt on which OCR finds nothing is still answered, with a warning."""

import html
import io
import json

import pandas as pd
import pytest
import torch
from PIL import Image

from tasks.inference.generation import Settings, answers
from tasks.inference.reader import ReceiptReader
from tasks.inference.serving import ReceiptModel
from tasks.model.collator import ReceiptCollator
from tasks.model.modeling import instruction, load_processor, prompt_text
from tests.conftest import small_params, small_reader


class SpyProcessor:
    """The real processor, recording the text of every call (what the model is prompted with)."""

    def __init__(self, processor):
        self._processor = processor
        self.texts: list[str] = []

    def __call__(self, *args, **kwargs):
        text = kwargs["text"]
        self.texts += [text] if isinstance(text, str) else list(text)
        return self._processor(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._processor, name)


@pytest.fixture(scope="module")
def grounded(tmp_path_factory):
    """Synthetic receipts ingested with OCR grounding, and the small pretrained base."""
    from tasks.data.dataset import load_dataset_dir
    from tasks.ingest import run_ingest
    from tasks.refresh_data import run_data

    p = small_params()
    p.model = p.model.model_copy(update={"ocr_prompt": True})
    p.data.synthetic = p.data.synthetic.model_copy(update={"train": 2, "validation": 1, "test": 2})
    root = tmp_path_factory.mktemp("grounded")
    run_data(p.data, root / "data")
    run_ingest(p.ingest, root / "data", root / "ds", ocr=True)
    return {
        "params": p,
        "data": root / "data",
        "dataset": load_dataset_dir(root / "ds"),
        "base": small_reader(p),
    }


def test_ingest_stores_each_records_ocr_and_not_without_grounding(grounded, tmp_path):
    from tasks.data.dataset import load_dataset_dir
    from tasks.data.receipt_json import parse_target
    from tasks.ingest import run_ingest

    test = grounded["dataset"]["test"]
    for record in test:
        total = parse_target(record["target"])["total"]["total_price"]
        assert total in record["ocr"]  # the engine read the printed total
    run_ingest(grounded["params"].ingest, grounded["data"], tmp_path / "plain", ocr=False)
    assert set(load_dataset_dir(tmp_path / "plain")["test"]["ocr"]) == {None}


def test_train_evaluate_predict_and_serve_prompt_with_the_same_ocr_text(grounded):
    p, record = grounded["params"], grounded["dataset"]["test"][0]
    expected = instruction(p.ingest.prompt, record["ocr"])
    reader = ReceiptReader(grounded["base"], Settings.from_params(p).but(max_new_tokens=4))

    spy = SpyProcessor(reader.processor)
    ReceiptCollator(spy, p.ingest.prompt, 10**6, ocr=True).encode(record)  # train
    answers(reader.model, spy, [record["image"]], reader.settings, [record["ocr"]])  # evaluate
    reader.processor = spy
    reader.read([record["image"]])  # predict: OCR read here, from the image
    served = ReceiptModel()
    served.reader = reader
    png = io.BytesIO()
    record["image"].save(png, format="PNG")
    served.predict(None, pd.DataFrame({"image": [png.getvalue()]}))  # serve
    assert len(spy.texts) == 4
    assert all(expected in text for text in spy.texts), spy.texts


def test_a_receipt_where_ocr_finds_nothing_is_answered_with_a_warning(grounded):
    p = grounded["params"]
    reader = ReceiptReader(grounded["base"], Settings.from_params(p).but(max_new_tokens=4))
    blank = Image.new("RGB", (200, 300), (250, 250, 250))
    (row,) = reader.read([blank])
    assert isinstance(row["raw"], str)  # answered
    assert any("OCR found no text" in w for w in row["warnings"])
    (plain,) = ReceiptReader(
        grounded["base"], Settings.from_params(p).but(max_new_tokens=4, ocr_prompt=False)
    ).read([blank])
    assert not any("OCR" in w for w in plain["warnings"])  # no grounding, no OCR warning
    assert json.dumps(row["json"])  # its answer is JSON-serialisable, as predict prints it


def test_the_review_page_shows_the_ocr_lines_the_prompt_carried(grounded):
    from tasks.data.receipt_json import parse_target
    from tasks.evaluation.review import render_review

    record = grounded["dataset"]["test"][0]
    row = {
        "id": record["id"],
        "image": record["image"],
        "target": parse_target(record["target"]),
        "prediction": "{}",
        "parsed": {},
    }
    metrics = {"json_valid_rate": 1.0, "base_json_valid_rate": 0.0}
    grounded_page = render_review([{**row, "ocr": record["ocr"]}], metrics, {})
    first_line = html.escape(record["ocr"].splitlines()[0])
    assert "OCR lines in the prompt" in grounded_page and first_line in grounded_page
    assert "OCR lines" not in render_review([{**row, "ocr": None}], metrics, {})


def test_training_adds_background_lines_to_its_share_of_records_only(grounded):
    """The collator puts background lines into the OCR text of about `background` of the
    records, the same ones for the same seed; a record they would make too long is kept."""
    p, record = grounded["params"], grounded["dataset"]["test"][0]
    processor = load_processor(str(grounded["base"]))
    clean = instruction(p.ingest.prompt, record["ocr"])

    def prompts(collator, records):
        spy = SpyProcessor(processor)
        collator.processor = spy
        batch = collator(records)
        return spy.texts, batch

    plain = ReceiptCollator(processor, p.ingest.prompt, 10**6, ocr=True)
    (text,), _ = prompts(plain, [record])
    assert clean in text
    always = ReceiptCollator(processor, p.ingest.prompt, 10**6, ocr=True, background=1.0)
    (text,), batch = prompts(always, [record])
    assert record["ocr"] in text and clean not in text  # lines added around the receipt's
    again = ReceiptCollator(processor, p.ingest.prompt, 10**6, ocr=True, background=1.0)
    assert torch.equal(prompts(again, [record])[1]["input_ids"], batch["input_ids"])

    ids, _, _ = plain.encode(record)
    tight = ReceiptCollator(processor, p.ingest.prompt, len(ids), ocr=True, background=1.0)
    texts, _ = prompts(tight, [record])
    assert len(texts) == 2 and texts[-1] == prompt_text(processor, clean)  # too long: as read

    half = ReceiptCollator(processor, p.ingest.prompt, 10**6, ocr=True, background=0.5)
    drawn = [half.with_background(record) is not record for _ in range(400)]
    assert 0.4 < sum(drawn) / len(drawn) < 0.6
    off = ReceiptCollator(processor, p.ingest.prompt, 10**6, ocr=False, background=1.0)
    assert off.with_background(record) is record  # no grounding, no OCR text to add to
