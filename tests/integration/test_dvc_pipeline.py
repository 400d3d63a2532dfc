"""End to end through DVC itself: make-data -> dvc repro (every stage, register included)
-> no-op repro -> push; a bad record stops the repro at validation."""

import json
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from flows.retrain import STAGES  # the pipeline's stages, in order
from tests.conftest import git_env, make_project, small_params

pytestmark = pytest.mark.slow


def sh(*cmd, cwd, check=True):
    return subprocess.run(
        list(cmd), cwd=cwd, env=git_env(), capture_output=True, text=True, check=check
    )


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    return make_project(tmp_path_factory.mktemp("project"), small_params())


def ran(done) -> list[str]:
    """The stages a `dvc repro` ran, in order."""
    return re.findall(r"Running stage '([a-z]+)'", done.stdout)


def registry(project):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")


def test_make_data_then_full_repro_registers_then_noop(project):
    sh(sys.executable, "-m", "tasks.refresh_data", cwd=project)
    md5 = yaml.safe_load((project / "data.dvc").read_text())["outs"][0]["md5"]
    out = sh("dvc", "repro", cwd=project)
    for stage in STAGES:
        assert f"Running stage '{stage}'" in out.stdout
    metrics = json.loads((project / "reports" / "metrics.json").read_text())
    assert {"json_valid_rate", "base_json_valid_rate", "ted_accuracy", "field_f1"} <= set(metrics)
    assert json.loads((project / "reports" / "validation.json").read_text())["success"] is True
    assert json.loads((project / "reports" / "gate.json").read_text())["passed"] is True
    assert (project / "artifacts" / "merged" / "model.safetensors").is_file()
    lock = yaml.safe_load((project / "dvc.lock").read_text())
    assert next(d for d in lock["stages"]["ingest"]["deps"] if d["path"] == "data")["md5"] == md5
    reg = json.loads((project / "reports" / "registration.json").read_text())
    assert reg["version"] == "1" and reg["tags"]["data_md5"] == md5

    again = sh("dvc", "repro", cwd=project)
    assert ran(again) == ["champion"]  # always changed: it asks the registry, nothing follows
    assert len(registry(project).search_model_versions("name='receipt-llava'")) == 1

    # A change of register's inputs with the same weights re-tags v1: no new version.
    forced = sh("dvc", "repro", "--force", "--single-item", "register", cwd=project)
    assert ran(forced) == ["register"]
    reg = json.loads((project / "reports" / "registration.json").read_text())
    assert reg["reused"] and reg["version"] == "1"
    assert len(registry(project).search_model_versions("name='receipt-llava'")) == 1

    sh("dvc", "push", "-q", cwd=project)
    assert any((project / "dvc-remote").rglob("*"))


def test_a_new_champion_makes_the_gate_stale_and_reruns_it(project):
    sh(sys.executable, "-m", "tasks.promote", cwd=project)
    champion = json.loads((project / "reports" / "champion.json").read_text())
    assert champion["version"] == "1" and champion["model_digest"]
    status = json.loads(sh("dvc", "status", "--json", cwd=project).stdout)
    assert {"changed deps": {"reports/champion.json": "modified"}} in status["gate"]
    out = sh("dvc", "repro", cwd=project)
    assert ran(out) == ["champion", "gate", "register"]  # merge does not follow the gate
    gate = json.loads((project / "reports" / "gate.json").read_text())
    assert gate["champion"]["version"] == "1"
    assert len(registry(project).search_model_versions("name='receipt-llava'")) == 1
    assert ran(sh("dvc", "repro", cwd=project)) == ["champion"]


def _png(image) -> str:
    import base64
    import io

    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def test_the_champion_served_over_http_answers_as_predict_and_refuses_bad_requests(
    project, tmp_path
):
    """`make serve` (tasks.serve, MLflow's scoring app) of models:/receipt-llava@champion: real
    receipts in (base64 PNG, the pyfunc's signature), the answers of tasks.predict out, each
    with its confidence and warnings; each bad request a 4xx naming the row and the reason
    (a body over serve.max_request_mb: 413), and the server still serves afterwards; SIGTERM
    stops it with exit 0 and no traceback."""
    import requests
    from PIL import Image

    from devtools.servers import model_server
    from tasks.core.config import load_params
    from tasks.data.dataset import load_dataset_dir
    from tasks.data.receipt_json import schema_violations
    from tasks.inference.generation import Settings
    from tasks.inference.reader import ReceiptReader

    images = load_dataset_dir(project / "artifacts" / "dataset")["test"]["image"]
    settings = Settings.from_params(load_params(project / "params.yaml"))
    expected = ReceiptReader(project / "artifacts" / "merged", settings).read(images)
    env = {"MLFLOW_TRACKING_URI": f"sqlite:///{project / 'mlflow.db'}"}
    uri = "models:/receipt-llava@champion"
    log = tmp_path / "serve.log"
    with model_server(uri, log, env, cwd=project) as (proc, url):

        def post(body: str | dict):
            data = body if isinstance(body, str) else json.dumps(body)
            return requests.post(
                f"{url}/invocations",
                data=data,
                headers={"Content-Type": "application/json"},
                timeout=300,
            )

        def frame(*cells: str, column: str = "image") -> dict:
            return {"dataframe_split": {"columns": [column], "data": [[c] for c in cells]}}

        ok = post(frame(*map(_png, images)))
        assert ok.status_code == 200, ok.text
        served = ok.json()["predictions"]
        assert [r["raw"] for r in served] == [e["raw"] for e in expected]
        assert [json.loads(r["json"]) for r in served] == [e["json"] for e in expected]
        assert [json.loads(r["confidence"]) for r in served] == [e["confidence"] for e in expected]
        assert [json.loads(r["warnings"]) for r in served] == [e["warnings"] for e in expected]

        # constrained decoding, asked per request: CORD's schema, valid JSON for every receipt
        held = post(frame(*map(_png, images)) | {"params": {"json_schema": True}})
        assert held.status_code == 200, held.text
        reader = ReceiptReader(project / "artifacts" / "merged", settings)
        constrained = reader.read(images, json_schema=True)
        assert [r["raw"] for r in held.json()["predictions"]] == [c["raw"] for c in constrained]
        assert all(r["valid_json"] for r in held.json()["predictions"])
        assert all(not schema_violations(json.loads(r["raw"])) for r in held.json()["predictions"])

        good = _png(images[0])
        huge = tmp_path / "huge.png"  # 110 MP, over tasks.core.io.MAX_IMAGE_PIXELS (100 MP)
        Image.new("1", (11_000, 10_000), 1).save(huge)
        huge_b64 = __import__("base64").b64encode(huge.read_bytes()).decode()
        bad: dict[str, tuple[str | dict, str]] = {
            "not an image": (frame(good, "aGVsbG8="), "row 1: not a readable image"),
            "empty body": ("", ""),
            "wrong column": (frame(good, column="picture"), "image"),
            "huge image": (frame(huge_b64), "row 0: too large to open safely"),
        }
        for case, (body, says) in bad.items():
            r = post(body)
            assert 400 <= r.status_code < 500, (case, r.status_code, r.text[:300])
            assert says in r.json()["message"], (case, r.json()["message"][:500])
        limit = load_params(project / "params.yaml").serve.max_request_mb * 1_000_000
        too_big = post(frame("A" * int(limit)))
        assert too_big.status_code == 413, too_big.text[:300]
        assert "serve.max_request_mb" in too_big.json()["message"]
        again = post(frame(good))  # still serving
        assert (
            again.status_code == 200 and again.json()["predictions"][0]["raw"] == served[0]["raw"]
        )
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
    said = log.read_text()
    assert "Traceback" not in said and "serve: stopped (SIGTERM)" in said, said[-2000:]


def test_a_second_repro_at_once_fails_on_dvc_lock_and_corrupts_nothing(project):
    first = subprocess.Popen(
        ["dvc", "repro", "--force", "--single-item", "evaluate"],
        cwd=project,
        env=git_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert first.stdout is not None
    for line in first.stdout:  # DVC holds the repo lock while the stage's command runs
        if "Running stage 'evaluate'" in line:
            break
    second = sh("dvc", "repro", cwd=project, check=False)
    first.stdout.read()
    assert first.wait() == 0
    assert second.returncode != 0
    # DVC's own words: the repo lock, or the read/write lock on the stage's paths and its PID
    said = second.stderr + second.stdout
    assert "Unable to acquire lock" in said or ("is busy" in said and "PID" in said)
    assert "Running stage" not in second.stdout
    lock = yaml.safe_load((project / "dvc.lock").read_text())
    assert set(lock["stages"]) == set(STAGES)
    status = json.loads(sh("dvc", "status", "--json", cwd=project).stdout)
    # evaluate's rerun is recorded (its metrics carry a timing, so the gate follows it)
    assert not {"ingest", "validate", "base", "train", "evaluate", "merge"} & set(status)


def test_register_waits_out_an_unreachable_mlflow_server(project, tmp_path):
    """The tracking server is down when register starts and comes back 15 s later: MLflow's
    client retries with backoff (MLFLOW_HTTP_REQUEST_MAX_RETRIES, _BACKOFF_FACTOR), and the
    server ends up with exactly one version."""
    import time

    from mlflow import MlflowClient

    from devtools.servers import free_port, mlflow_server

    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    env = {**git_env(), "MLFLOW_TRACKING_URI": uri}
    started = time.monotonic()
    register = subprocess.Popen(
        [sys.executable, "-m", "tasks.register"],
        cwd=project,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    time.sleep(15)
    assert register.poll() is None  # still retrying, not failed
    backend = f"sqlite:///{tmp_path / 'server.db'}"
    with mlflow_server(backend, tmp_path / "artifacts", tmp_path / "mlflow.log", port=port):
        out, _ = register.communicate(timeout=600)
        assert register.returncode == 0, out
        assert time.monotonic() - started > 15
        versions = MlflowClient(tracking_uri=uri).search_model_versions("name='receipt-llava'")
        assert [v.version for v in versions] == ["1"]
    # register wrote its report for the server's version; the project's own registry is untouched
    assert len(registry(project).search_model_versions("name='receipt-llava'")) == 1


def test_a_bad_record_gets_a_new_data_hash_and_stops_the_repro_at_validation(project):
    first = yaml.safe_load((project / "data.dvc").read_text())["outs"][0]["md5"]
    meta = project / "data" / "metadata.jsonl"
    rows = [json.loads(line) for line in meta.read_text().splitlines()]
    rows[0]["ground_truth"] = "{broken"
    meta.unlink()  # dvc add protects cached files: replace, don't edit in place
    meta.write_text("".join(json.dumps(r) + "\n" for r in rows))
    sh("dvc", "add", "-q", "data", cwd=project)
    second = yaml.safe_load((project / "data.dvc").read_text())["outs"][0]["md5"]
    assert second != first
    out = sh("dvc", "repro", cwd=project, check=False)
    assert out.returncode != 0
    bad_id = Path(rows[0]["file_name"]).stem
    assert f"{bad_id}: ground_truth: not JSON" in out.stderr + out.stdout
    assert "Running stage 'train'" not in out.stdout
    assert len(registry(project).search_model_versions("name='receipt-llava'")) == 1
