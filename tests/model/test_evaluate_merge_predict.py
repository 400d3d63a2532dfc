"""Evaluation reports before/after; the merged model reads like the adapter model; predict works."""

import json
import subprocess
import sys

import pytest
import torch

from tasks.data.dataset import load_dataset_dir
from tasks.evaluate import load_for_inference, run_evaluate
from tasks.inference.generation import Settings, generate, generate_scored
from tasks.inference.reader import BadImage, ReceiptReader, open_image
from tasks.merge import run_merge
from tasks.model.modeling import prompt_text
from tests.conftest import CORD_SAMPLE, REPO, needs


@pytest.fixture(scope="module")
def merged_dir(params, base_dir, trained, tmp_path_factory):
    return run_merge(
        params, base_dir, trained["adapter"], tmp_path_factory.mktemp("merged") / "merged"
    )


def test_evaluate_reports_base_and_finetuned_metrics(
    params, dataset_dir, base_dir, trained, tmp_path
):
    m = run_evaluate(
        params,
        dataset_dir,
        base_dir,
        trained["adapter"],
        tmp_path / "m.json",
        tmp_path / "p.jsonl",
        tmp_path / "f.json",
    )
    assert json.loads((tmp_path / "m.json").read_text()) == m
    for key in ("json_valid_rate", "ted_accuracy", "field_f1", "exact_match"):
        assert 0.0 <= m[key] <= 1.0 and 0.0 <= m[f"base_{key}"] <= 1.0
    rows = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    test_ids = load_dataset_dir(dataset_dir)["test"]["id"]
    assert [r["id"] for r in rows] == test_ids and m["n"] == len(test_ids)
    assert all({"prediction", "parsed", "base_prediction", "target"} <= set(r) for r in rows)
    # each answer judged; the warning threshold picked on the validation split, recorded
    assert all({"confidence", "warnings"} <= set(r) for r in rows)
    assert all(r["confidence"]["mean_logprob"] <= 0 for r in rows)
    assert m["validation_n"] == len(load_dataset_dir(dataset_dir)["validation"])
    assert m["confidence_threshold"] <= 0 and 0 <= m["warned_rate"] <= 1


def test_merged_model_reads_exactly_like_the_adapter_model(
    params, dataset_dir, base_dir, trained, merged_dir
):
    images = load_dataset_dir(dataset_dir)["test"]["image"]
    model, processor = load_for_inference(params, base_dir, trained["adapter"])
    with_adapter = generate(model, processor, images, params.ingest.prompt, 24, 4)
    settings = Settings.from_params(params)
    assert (settings.max_new_tokens, settings.batch_size) == (24, 4)
    reader = ReceiptReader(merged_dir, settings)
    merged = [r["raw"] for r in reader.read(images)]
    assert merged == with_adapter
    # the merged weights are plain full-precision tensors: nothing 4-bit, no LoRA left
    names = [n for n, _ in reader.model.named_parameters()]
    assert not any("lora_" in n for n in names)
    assert all(p.dtype == torch.float32 for p in reader.model.parameters())


def test_the_served_pyfunc_answers_exactly_as_evaluate_did(
    params, dataset_dir, base_dir, trained, merged_dir, tmp_path
):
    """One scoring path: the pyfunc logged from tasks/inference/serving.py, with the model_config that
    register logs (the threshold evaluate picked included), gives run_evaluate's predictions,
    confidences and warnings for the same model and images."""
    import io

    import mlflow.pyfunc
    import pandas as pd

    metrics = run_evaluate(
        params, dataset_dir, base_dir, trained["adapter"], tmp_path / "m.json", tmp_path / "p.jsonl"
    )
    rows = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    evaluated = [r["prediction"] for r in rows]
    mlflow.pyfunc.save_model(
        tmp_path / "pyfunc",
        python_model=str(REPO / "tasks" / "inference" / "serving.py"),
        artifacts={"model": str(merged_dir)},
        model_config=Settings.from_params(params).as_config()
        | {"min_confidence": metrics["confidence_threshold"]},
        code_paths=[str(REPO / "tasks")],
    )
    frame = []
    for image in load_dataset_dir(dataset_dir)["test"]["image"]:
        buf = io.BytesIO()
        image.save(buf, format="PNG")
        frame.append(buf.getvalue())
    served = mlflow.pyfunc.load_model(str(tmp_path / "pyfunc")).predict(
        pd.DataFrame({"image": frame})
    )
    assert list(served["raw"]) == evaluated
    for c, r in zip(served["confidence"], rows, strict=True):  # merged vs adapter: ~1e-6 apart
        assert json.loads(c) == pytest.approx(r["confidence"], abs=2e-4)
    # synthetic receipts: nothing to say about the input, only about the answers
    assert [json.loads(w) for w in served["warnings"]] == [r["warnings"] for r in rows]


def test_open_image_errors_are_clear(tmp_path):
    with pytest.raises(BadImage, match="nope.png: no such file"):
        open_image(tmp_path / "nope.png")
    (tmp_path / "bad.png").write_bytes(b"not an image")
    with pytest.raises(BadImage, match="bad.png: not a readable image"):
        open_image(tmp_path / "bad.png")


@needs(CORD_SAMPLE)
@pytest.mark.real_data
def test_predict_cli_on_the_sample_receipt(merged_dir, tmp_path):
    image = CORD_SAMPLE / "images" / "cord_tst_receipt_00004.png"
    out = subprocess.run(
        [sys.executable, "-m", "tasks.predict", "--model", str(merged_dir), str(image)],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=True,
    )
    row = json.loads(out.stdout.strip().splitlines()[-1])
    assert (
        row["image"] == str(image)
        and isinstance(row["json"], dict)
        and isinstance(row["valid_json"], bool)
        and row["confidence"]["mean_logprob"] <= 0
    )
    # the notebook's words at the photo's edge were left out of the prompt, and it says so
    assert any("cut by the image's edge were left out" in w for w in row["warnings"])
    # a threshold no answer reaches: the answer says it is unsure, on stdout and stderr
    unsure = subprocess.run(
        [sys.executable, "-m", "tasks.predict", "--model", str(merged_dir)]
        + ["--min-confidence", "0.001", str(image)],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=True,
    )
    said = json.loads(unsure.stdout.strip().splitlines()[-1])
    assert any(w.startswith("low confidence") for w in said["warnings"])
    assert "warning: " in unsure.stderr and "low confidence" in unsure.stderr
    # one bad file among good ones: a line for every file, in order, and exit 1
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n")
    mixed = subprocess.run(
        [sys.executable, "-m", "tasks.predict", "--model", str(merged_dir)]
        + [str(image), str(bad), str(image)],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    rows = [json.loads(line) for line in mixed.stdout.strip().splitlines()]
    assert mixed.returncode == 1 and "Traceback" not in mixed.stderr
    assert [r["image"] for r in rows] == [str(image), str(bad), str(image)]
    assert "json" in rows[0] and "json" in rows[2] and rows[0]["json"] == rows[2]["json"]
    assert rows[1] == {
        "image": str(bad),
        "error": f"{bad}: not a readable image (SyntaxError: broken PNG file)",
    } or ("not a readable image" in rows[1]["error"] and "0x" not in rows[1]["error"])
    assert f"predict: {bad}: not a readable image" in mixed.stderr


def test_the_review_page_shows_every_receipt_worst_first_in_a_real_browser(
    params, dataset_dir, base_dir, trained, tmp_path
):
    """evaluate writes reports/review.html: one self-contained page, a section per test receipt
    sorted by TED accuracy (worst first), differing fields highlighted; headless Chromium
    renders it with every image and no console error."""
    import re
    import shutil

    from tasks.evaluation.metrics import ted_accuracy

    review = tmp_path / "review.html"
    metrics = run_evaluate(
        params,
        dataset_dir,
        base_dir,
        trained["adapter"],
        tmp_path / "m.json",
        tmp_path / "p.jsonl",
        tmp_path / "f.json",
        review,
    )
    page = review.read_text()
    rows = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    ids = re.findall(r'<section class="receipt" data-id="([^"]+)"', page)
    teds = {r["id"]: ted_accuracy(r["parsed"], json.loads(r["target"])) for r in rows}
    assert sorted(ids) == sorted(teds) and len(ids) == metrics["n"]
    assert [teds[i] for i in ids] == sorted(teds[i] for i in ids)  # worst first
    shown = [float(x) for x in re.findall(r'<span class="score">([0-9.]+)</span>', page)]
    assert shown == [round(teds[i], 3) for i in ids]
    assert 'src="http' not in page and "<script" not in page  # self-contained, no script
    # a field the model got wrong is highlighted, one it got right is not
    assert ('class="diff"' in page) == any(t < 1.0 for t in teds.values())
    assert f"<td>json_valid_rate</td><td>{metrics['json_valid_rate']}</td>" in page

    if not (shutil.which("chromium") or shutil.which("chromium-browser")):
        pytest.skip("no chromium here (Debian: apt-get install chromium); the HTML was checked")
    from devtools.screenshot import screenshot

    seen = screenshot(review, tmp_path / "review.png")
    assert seen == {"receipts": len(ids), "images_loaded": len(ids), "console_errors": []}
    assert (tmp_path / "review.png").stat().st_size > 10_000


def test_confidence_is_the_models_own_probability_of_its_answer(params, dataset_dir, merged_dir):
    """The log-probability each generated token carries is what a plain forward pass over
    the prompt and the answer gives that token (batched, left-padded generation included)."""
    reader = ReceiptReader(merged_dir, Settings.from_params(params))
    model, processor = reader.model, reader.processor
    images = load_dataset_dir(dataset_dir)["test"]["image"][:3]
    found = generate_scored(model, processor, images, params.ingest.prompt, 24, 3)
    for image, answer in zip(images, found, strict=True):
        assert answer.ids and len(answer.ids) == len(answer.logprobs) == len(answer.pieces)
        assert "".join(answer.pieces).strip() == answer.text
        enc = processor(
            images=[image.convert("RGB")],
            text=[prompt_text(processor, params.ingest.prompt)],
            return_tensors="pt",
        )
        prompt_len = enc["input_ids"].shape[1]
        ids = torch.cat([enc["input_ids"], torch.tensor([answer.ids])], dim=1)
        with torch.no_grad():
            logits = model(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                pixel_values=enc["pixel_values"],
            ).logits
        logp = torch.log_softmax(logits[0, prompt_len - 1 : -1].float(), dim=-1)
        expected = logp.gather(1, torch.tensor(answer.ids)[:, None])[:, 0]
        assert torch.allclose(torch.tensor(answer.logprobs), expected, atol=1e-3)
