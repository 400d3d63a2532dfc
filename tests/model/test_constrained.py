"""Schema-guaranteed JSON (tasks.inference.constrained): CORD's schema as a JSON Schema, and generation
held to it, which closes every answer within the token budget, even the untrained base's."""

import json

import jsonschema
import pytest

from tasks.data.dataset import load_dataset_dir
from tasks.data.receipt_json import derive_gt_parse, is_valid_json, schema_violations
from tasks.evaluate import load_for_inference, run_evaluate
from tasks.inference.constrained import RESERVE, cord_json_schema, in_string
from tasks.inference.generation import Settings, generate
from tests.conftest import CORD_JSON, needs


def _validator():
    return jsonschema.Draft202012Validator(cord_json_schema())


def test_the_schema_accepts_the_synthetic_targets_and_refuses_what_cord_lacks(dataset_dir):
    v = _validator()
    for split in load_dataset_dir(dataset_dir, decode_images=False).values():
        for rid, target in zip(split["id"], split["target"], strict=True):
            assert not list(v.iter_errors(json.loads(target))), rid
    assert list(v.iter_errors({"total": {"total_price": "1,000", "tip": "5"}}))  # unknown key
    assert list(v.iter_errors({"total": {"total_price": 1000}}))  # not a string
    assert list(v.iter_errors({"menu": [{"nm": "x" * 65}]}))  # beyond MAX_CHARS
    assert list(v.iter_errors({"receipt": {}}))  # unknown group


@pytest.mark.real_data
@needs(CORD_JSON)
def test_the_schema_accepts_every_real_cord_annotation():
    v = _validator()
    files = sorted(CORD_JSON.rglob("*.json"))
    assert len(files) == 900
    for f in files:
        gt = derive_gt_parse(json.loads(f.read_text())["valid_line"])
        errors = [e.message for e in v.iter_errors(gt)]
        assert not errors, (f.name, errors[:3])


def test_in_string_follows_quotes_and_escapes():
    assert not in_string('{"menu":[{"nm":"A"')
    assert in_string('{"menu":[{"nm":"A')
    assert in_string('{"total":{"total_price":"say \\"')
    assert not in_string('{"total":{"total_price":"a\\\\"')
    assert in_string('{"')


def test_held_answers_are_cord_json_for_the_base_and_the_finetuned_model(
    params, dataset_dir, base_dir, trained, tmp_path
):
    """The budget (24 tokens here) cuts every free answer; held to the schema, every answer of
    the untrained base and of the adapter closes as valid JSON with CORD's keys only."""
    assert params.evaluate.max_new_tokens < RESERVE + 8
    free = run_evaluate(
        params, dataset_dir, base_dir, trained["adapter"], tmp_path / "m0.json", tmp_path / "p0"
    )
    held_params = params.model_copy(deep=True)
    held_params.evaluate = held_params.evaluate.model_copy(update={"json_schema": True})
    held = run_evaluate(
        held_params, dataset_dir, base_dir, trained["adapter"], tmp_path / "m.json", tmp_path / "p"
    )
    assert free["json_valid_rate"] < 1.0 and free["base_json_valid_rate"] < 1.0
    assert held["json_valid_rate"] == 1.0 and held["base_json_valid_rate"] == 1.0
    for line in (tmp_path / "p").read_text().splitlines():
        row = json.loads(line)
        for answer in (row["prediction"], row["base_prediction"]):
            assert is_valid_json(answer) and not schema_violations(json.loads(answer)), answer


def test_a_rambling_base_held_to_the_schema_closes_within_a_longer_budget(
    params, dataset_dir, base_dir, trained
):
    """With 160 tokens the untrained base writes what it likes inside the schema for 128 of
    them, then closes; Settings read back from a logged config keep the option."""
    images = load_dataset_dir(dataset_dir)["test"]["image"]
    model, processor = load_for_inference(params, base_dir, trained["adapter"])
    with model.disable_adapter():
        answers = generate(model, processor, images, params.ingest.prompt, 160, 4, True)
    assert all(is_valid_json(a) and not schema_violations(json.loads(a)) for a in answers)
    logged = Settings.from_params(params).but(json_schema=True).as_config()
    assert Settings.from_config(logged | {"base": "extra keys are ignored"}).json_schema is True


def test_a_version_answers_with_its_registered_json_schema_default_unless_asked():
    """The registered signature's `json_schema` default decides, and a request overrides it."""

    from tasks.predict import served_json_schema
    from tasks.register import _signature

    for default in (False, True):
        signature = _signature(default)
        assert served_json_schema(signature, None) is default
        assert served_json_schema(signature, not default) is (not default)


def test_ocr_spans_are_word_runs_within_a_line_and_amounts_hold_a_digit():
    from tasks.inference.constrained import numeric_field, ocr_spans, span_values

    ocr = "2 KOPI SUSU 25,000\nTOTAL  25,000\n"
    spans = ocr_spans(ocr)
    assert "KOPI SUSU" in spans and "2 KOPI SUSU 25,000" in spans and "TOTAL 25,000" in spans
    assert "25,000 TOTAL" not in spans  # never across lines
    values = span_values(ocr)
    assert values is not None and set(values["number"]) == {
        "2",
        "25,000",
        "2 KOPI",
        "SUSU 25,000",
        "TOTAL 25,000",
    }
    assert span_values(" \n") is None  # nothing read: the plain schema
    assert numeric_field("total_price") and numeric_field("cnt") and numeric_field("menuqty_cnt")
    assert not numeric_field("nm")


def test_answers_held_to_ocr_spans_copy_every_value_from_their_own_receipt(
    params, dataset_dir, base_dir, trained
):
    """One grammar per row: each answer's every value is a span of its own receipt's OCR lines
    (amounts and counts with a digit), whatever the model would have written; a receipt with
    no OCR text falls back to the plain schema. Settings logged and read back keep the option."""
    from tasks.inference.constrained import numeric_field, span_values
    from tasks.inference.generation import scored_answers

    images = load_dataset_dir(dataset_dir)["test"]["image"][:3]
    ocr = ["1 NASI GORENG 25,000\nTOTAL 25,000", "2 ES TEH 8.000\nCASH 20.000\nCHANGE 12.000", ""]
    s = Settings.from_params(params).but(
        ocr_prompt=True, json_schema=True, ocr_spans=True, max_new_tokens=120, batch_size=3
    )
    model, processor = load_for_inference(params, base_dir, trained["adapter"])
    found = scored_answers(model, processor, images, s, ocr)

    def leaves(x, key=""):
        if isinstance(x, dict):
            for k, v in x.items():
                yield from leaves(v, k)
        elif isinstance(x, list):
            for v in x:
                yield from leaves(v, key)
        else:
            yield key, x

    for answer, text in zip(found[:2], ocr[:2], strict=True):
        assert is_valid_json(answer.text), answer.text
        values = span_values(text)
        pairs = list(leaves(json.loads(answer.text)))
        assert pairs and values is not None, answer.text
        for key, value in pairs:
            kind = "number" if numeric_field(key) else "text"
            assert value in values[kind], (key, value, answer.text)
    assert is_valid_json(found[2].text) and not schema_violations(json.loads(found[2].text))
    logged = s.as_config()
    assert Settings.from_config(logged).ocr_spans is True
    assert (
        Settings.from_config({k: v for k, v in logged.items() if k != "ocr_spans"}).ocr_spans
        is False
    )
