"""Evaluation reports before/after; the merged model reads like the adapter model; predict works."""

import json
import subprocess
import sys

import pytest
import torch

from tasks.data.dataset import load_dataset_dir
from tasks.evaluate import load_for_inference, run_evaluate
from tasks.inference.generation import Settings, generate
from tasks.inference.reader import BadImage, ReceiptReader, open_image
from tasks.merge import run_merge
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
    register logs, gives run_evaluate's predictions for the same model and images."""
    import io

    import mlflow.pyfunc
    import pandas as pd

    run_evaluate(
        params, dataset_dir, base_dir, trained["adapter"], tmp_path / "m.json", tmp_path / "p.jsonl"
    )
    lines = (tmp_path / "p.jsonl").read_text().splitlines()
    evaluated = [json.loads(line)["prediction"] for line in lines]
    mlflow.pyfunc.save_model(
        tmp_path / "pyfunc",
        python_model=str(REPO / "tasks" / "inference" / "serving.py"),
        artifacts={"model": str(merged_dir)},
        model_config=Settings.from_params(params).as_config(),
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
    assert [json.loads(w) for w in served["warnings"]] == [[]] * len(frame)  # receipts, all


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
    )
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
