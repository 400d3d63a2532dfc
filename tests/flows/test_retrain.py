"""The Prefect retrain flow end to end on the tiny default, on Prefect's local test server,
with a real MLflow SQLite registry and a local DVC remote."""

import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import git_env, make_project, small_params, trainer_pids, updated, write_params

pytestmark = pytest.mark.slow
NAME = "receipt-llava"


@pytest.fixture(scope="module", autouse=True)
def prefect_server():
    from prefect.testing.utilities import prefect_test_harness

    os.environ["PATH"] = (
        f"{Path(sys.executable).parent}:{os.environ['PATH']}"  # dvc, python of the venv
    )
    with prefect_test_harness(server_startup_timeout=90):
        yield


# The flows test the plumbing, not reading: the tiny-tiny base's reader is pretrained for 4 steps
# only, so embeddings and lm_head train too (as the random tiny base once did). 400 steps (~30 s
# here) teach it CORD's JSON: valid JSON for every answer and ted ~0.2 on its 4 validation
# receipts (it answers with a training receipt), where 150 steps left ted at 0.03-0.1 and no
# answer closed. 300 new one-character tokens hold the longest target (~270 characters).
FLOW_TRAIN = {
    "args": {"max_steps": 400, "save_steps": 1000},
    "modules_to_save": ["embed_tokens", "lm_head"],
}


def project_params(**over):
    p = small_params(
        train=FLOW_TRAIN,
        evaluate={"max_new_tokens": 300},
        gate={"min_ted_accuracy": 0.05, "max_regression": 1.0},
    )
    return updated(p, **over)


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    return make_project(tmp_path_factory.mktemp("flowproject"), project_params())


@pytest.fixture(scope="module")
def client(project):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")


def versions(client):
    return sorted(int(v.version) for v in client.search_model_versions(f"name='{NAME}'"))


def test_first_run_registers_with_lineage_and_promotes(project, client):
    from flows.retrain import retrain
    from tasks.registry import lineage

    out = retrain(repo=str(project))
    assert out["registered_now"] and out["registration"]["version"] == "1"
    assert out["promotion"]["promoted"] and out["promotion"]["champion"] == "1"
    mv = client.get_model_version_by_alias(NAME, "champion")
    tags = mv.tags
    commit, _ = lineage.git_state(project)
    assert tags["git_commit"] == commit and tags["git_dirty"] == "false"
    assert tags["data_md5"] == yaml.safe_load((project / "data.dvc").read_text())["outs"][0]["md5"]
    assert tags["params_digest"] == project_params().digest()
    lock_hashes = lineage.stage_hashes(project)
    for stage in ("ingest", "validate", "base", "train", "evaluate", "gate", "merge"):
        assert tags[f"dvc_stage.{stage}"] == lock_hashes[stage]
    metrics = json.loads((project / "reports" / "metrics.json").read_text())
    assert (
        float(tags["metric.ted_accuracy"]) == metrics["ted_accuracy"] > metrics["base_ted_accuracy"]
    )
    assert tags["gate_passed"] == "true" and "first champion" in tags["promotion.reason"]
    assert len(tags["weights_digest"]) == 64 and tags["weights_digest"] != tags["model_digest"]
    run = client.get_run(mv.run_id)
    assert run.inputs.dataset_inputs[0].tags[0].value in (tags["data_md5"], "training")
    assert "train_loss" in run.data.metrics and "reports" in {
        a.path for a in client.list_artifacts(mv.run_id)
    }


def test_unchanged_inputs_register_nothing_new(project, client):
    from flows.retrain import retrain

    # The first run promoted v1: the champion moved, so the gate is re-run against it, and
    # register finds v1's model digest and re-tags v1 instead of making a new version.
    out = retrain(repo=str(project))
    assert out["stages"]["champion"] == "ran" and out["stages"]["gate"] == "ran"
    # DVC alone decides: every stage goes to `dvc repro`, which finds these up to date
    assert {out["stages"][s] for s in ("ingest", "validate", "base", "train", "evaluate")} == {
        "skipped"
    }
    assert out["registration"]["reused"] and not out["registered_now"]
    assert versions(client) == [1]
    gate = json.loads((project / "reports" / "gate.json").read_text())
    assert gate["champion"]["version"] == "1"  # the gate compared against the new champion
    assert not out["promotion"]["promoted"] and "already the champion" in out["promotion"]["reason"]

    # Nothing changed since: only the champion stage (always changed) runs.
    out = retrain(repo=str(project))
    ran = {s for s, how in out["stages"].items() if how == "ran"}
    assert ran == {"champion"} and not out["registered_now"] and versions(client) == [1]


def test_batch_scoring_reads_a_folder_with_the_champion_and_names_what_it_cannot(
    project, client, tmp_path
):
    """flows/score.py on a folder of receipts (a subfolder and a stray text file among them):
    one line per file, the champion's answers as tasks.predict gives them, the unreadable file
    named, the model version and the input's hash recorded, and a Prefect table artifact."""
    import hashlib

    from prefect.artifacts import Artifact

    from flows.score import score
    from tasks.core.config import load_params
    from tasks.data.dataset import load_dataset_dir
    from tasks.inference.generation import Settings
    from tasks.inference.reader import ReceiptReader
    from tasks.score import input_digest, input_files, run_score

    images = load_dataset_dir(project / "artifacts" / "dataset")["test"]["image"][:4]
    assert len(images) == 4
    folder = tmp_path / "inbox"
    (folder / "later").mkdir(parents=True)
    for i, image in enumerate(images):
        image.save(folder / ("later" if i == 3 else ".") / f"r{i}.png")
    (folder / "notes.txt").write_text("not a receipt")
    (folder / ".DS_Store").write_bytes(b"hidden: skipped")
    outside = tmp_path / "secret.png"
    images[0].save(outside)
    (folder / "link.png").symlink_to(outside)  # leads out of the folder: refused, not read
    out = tmp_path / "scored"

    summary = score(str(folder), str(out), None, str(project))

    lines = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]
    assert [x["file"] for x in lines] == [
        "later/r3.png",
        "link.png",
        "notes.txt",
        "r0.png",
        "r1.png",
        "r2.png",
    ]
    assert lines[1]["error"] == f"link.png: a symbolic link (to {outside}), not followed"
    assert lines[1]["sha256"] is None  # never opened
    assert lines[2]["error"] == (
        "notes.txt: not a readable image (UnidentifiedImageError: cannot identify image file "
        "<_io.BytesIO>)"
    )  # the same words every time: no object address
    champion = client.get_model_version_by_alias(NAME, "champion")
    assert {x["model_version"] for x in lines} == {champion.version}
    settings = Settings.from_params(load_params(project / "params.yaml"))
    order = [3, 0, 1, 2]
    expected = ReceiptReader(project / "artifacts" / "merged", settings).read(
        [images[i] for i in order]
    )
    read = [x for x in lines if x["error"] is None]
    assert [x["raw"] for x in read] == [e["raw"] for e in expected]
    assert [x["json"] for x in read] == [e["json"] for e in expected]
    assert all(
        x["sha256"] == hashlib.sha256((folder / x["file"]).read_bytes()).hexdigest()
        for x in lines
        if x["file"] != "link.png"
    )

    recorded = json.loads((out / "score.json").read_text())
    assert recorded == summary
    assert recorded["model"]["version"] == champion.version
    assert recorded["model"]["model_digest"] == champion.tags["model_digest"]
    assert recorded["input"]["sha256"] == input_digest(folder, input_files(folder))
    assert (recorded["scored"], recorded["errors"], recorded["input"]["files"]) == (4, 2, 6)

    # a rerun with the same model reuses every answer (by content sha256 + model digest),
    # and --force scores them again, to the same answers
    again = run_score(folder, out, NAME, None, project)
    assert (again["scored"], again["reused"]) == (4, 4) and again["seconds"] < 10
    assert (out / "predictions.jsonl").read_text().splitlines() == [
        json.dumps(x, ensure_ascii=False) for x in lines
    ]
    forced = run_score(folder, out, NAME, None, project, force=True)
    assert forced["reused"] == 0 and [x.get("raw") for x in forced["rows"]] == [
        x.get("raw") for x in lines
    ]
    assert recorded["model"]["json_schema"] is False  # the version's default (params.yaml)

    # asked for CORD's schema: the constrained answers, recorded as such
    held = run_score(folder, tmp_path / "held", NAME, None, project, json_schema=True)
    assert held["model"]["json_schema"] is True
    reader = ReceiptReader(project / "artifacts" / "merged", settings)
    held_expected = reader.read([images[i] for i in order], json_schema=True)
    held_read = [x for x in held["rows"] if x["error"] is None]
    assert [x["raw"] for x in held_read] == [e["raw"] for e in held_expected]
    assert all(x["valid_json"] for x in held_read)

    table: Any = Artifact.get("receipt-scores")  # sync here (no running event loop)
    assert table is not None and table.type == "table"
    rows: Any = json.loads(table.data) if isinstance(table.data, str) else table.data
    assert [r["file"] for r in rows] == [x["file"] for x in lines]
    assert f"models:/{NAME}/{champion.version}" in (table.description or "")
    progress: Any = Artifact.get("receipt-scoring-progress")
    assert progress is not None and float(progress.data) == 100.0


def test_ctrl_c_stops_scoring_in_seconds_with_one_line_and_a_rerun_resumes(
    project, client, tmp_path
):
    """SIGINT while `make score`'s code runs: out within 10 s, one line and no traceback, no
    output replaced, the answers so far kept; the next run reuses them."""
    import signal
    import subprocess
    import sys
    import time

    from tasks.data.dataset import load_dataset_dir
    from tasks.score import partial_path, run_score

    folder, out = tmp_path / "inbox", tmp_path / "scored"
    folder.mkdir()
    for i, image in enumerate(load_dataset_dir(project / "artifacts" / "dataset")["test"]["image"]):
        # 48 files, 6 batches: the signal lands with batches still to go, however fast they run
        for turn in range(12):
            image.rotate(turn * 0.5).save(folder / f"r{i}-{turn}.png")
    cmd = [sys.executable, "-m", "tasks.score", "--dir", str(folder), "--score", str(out)]
    # As from a terminal: SIGINT not ignored, whatever this test runner inherited (a shell's
    # background job starts with it ignored, and Python then installs no KeyboardInterrupt)
    proc = subprocess.Popen(
        cmd,
        cwd=project,
        env=git_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    partial = partial_path(out)
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline and proc.poll() is None:
        if partial.is_file() and len(partial.read_text().splitlines()) >= 8:
            break
        time.sleep(0.2)
    assert proc.poll() is None, proc.communicate()[1][-3000:]
    asked = time.monotonic()
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert time.monotonic() - asked < 10
    assert proc.returncode == 130 and "Traceback" not in err, err[-3000:]
    kept = len(partial.read_text().splitlines())
    assert err.strip().splitlines()[-1] == (
        f"score: interrupted; {kept} answers kept in {partial} for the next run"
    )
    assert 8 <= kept < 48 and not out.exists()  # nothing half-written, the work kept
    resumed = run_score(folder, out, NAME, None, project)
    assert resumed["reused"] >= 8 and resumed["scored"] == 48 and not partial.exists()


def test_new_data_gets_its_own_version_and_each_version_restores_its_data(project, client):
    from flows.retrain import retrain
    from tasks.registry import lineage

    write_params(
        project,
        project_params(
            data={"synthetic": {"seed": 1}},
            # a data version, not a better model: fewer steps, no quality floor in the gate
            train={"args": {"max_steps": 150}},
            gate={"min_ted_accuracy": 0.0},
        ),
    )
    out = retrain(repo=str(project), promote=False)
    assert out["registered_now"] and versions(client) == [1, 2]
    assert set(out["stages"].values()) == {"ran"}  # new data: every stage reruns
    v1, v2 = (client.get_model_version(NAME, v).tags["data_md5"] for v in ("1", "2"))
    assert v1 != v2 and out["data_md5"] == v2
    assert lineage.restore(project, v1) == v1  # dvc checkout from the cache, hash recomputed
    assert lineage.restore(project, v2) == v2
    info = lineage.show(client, NAME, version="1")
    assert info["data_md5"] == v1 and info["metrics"]["ted_accuracy"] > 0


def test_injected_worse_model_is_stopped_by_the_gate_and_nothing_is_promoted(project, client):
    from flows.retrain import StageFailed, retrain
    from tasks.core.config import load_params
    from tasks.promote import PromotionRefused, promote, rollback
    from tasks.registry import lineage

    champion = client.get_model_version_by_alias(NAME, "champion").version
    # The champion's own data version (the test before left v2's on disk): the gate compares on
    # the test split where the champion passed min_ted_accuracy 0.05. On v2's receipts the tiny
    # champion may score 0 as well, and then no challenger is worse than it.
    data_md5 = client.get_model_version(NAME, champion).tags["data_md5"]
    assert lineage.restore(project, data_md5) == data_md5
    # A learning rate that leaves the adapter at its init: the base model, registered as a "new" model.
    write_params(
        project,
        project_params(
            train={"args": {"max_steps": 20, "learning_rate": 1e-12}},
            gate={"min_ted_accuracy": 0.0, "max_regression": 0.01},
        ),
    )
    with pytest.raises(StageFailed, match="gate failed"):
        retrain(repo=str(project), refresh=False)
    gate = json.loads((project / "reports" / "gate.json").read_text())
    failed = [c for c in gate["criteria"] if not c["passed"]]
    assert not gate["passed"] and any("champion v" in c["criterion"] for c in failed)
    assert all(c["margin"] < 0 for c in failed)
    assert versions(client) == [1, 2]
    assert client.get_model_version_by_alias(NAME, "champion").version == champion

    params = load_params(project / "params.yaml")
    client.set_model_version_tag(NAME, "2", "gate_passed", "false")
    with pytest.raises(PromotionRefused, match="did not pass the gate"):
        promote(client, params, "2")
    client.set_model_version_tag(NAME, "2", "gate_passed", "true")
    assert rollback(client, params, "1")["champion"] == "1"
    assert client.get_model_version(NAME, "1").tags["promotion.reason"].startswith("rollback")


def test_a_train_stage_killed_mid_run_is_retried_and_resumes_from_its_checkpoint(project, client):
    """SIGKILL the train stage's process once its first checkpoint is on disk: the flow's
    retry reruns `dvc repro` for train, which resumes there instead of starting over."""
    import signal
    import threading
    import time

    from flows.retrain import retrain

    # Resuming is plumbing: 100 steps (not the module's 400), and no quality floor in the gate.
    write_params(
        project,
        project_params(
            train={"args": {"save_steps": 20, "max_steps": 100}}, gate={"min_ted_accuracy": 0.0}
        ),
    )
    ckpt = project / "artifacts" / "checkpoints" / "checkpoint-20"
    killed: list[str] = []

    def kill_once_checkpointed() -> None:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and not (ckpt / "trainer_state.json").exists():
            time.sleep(0.05)
        for pid in trainer_pids(project):  # this project's trainer, not another test's
            os.kill(pid, signal.SIGKILL)
            killed.append(str(pid))

    killer = threading.Thread(target=kill_once_checkpointed, daemon=True)
    killer.start()
    out = retrain(repo=str(project), refresh=False, promote=False)
    killer.join(timeout=5)
    assert len(killed) == 1, killed  # the train process was there, and was killed
    summary = json.loads((project / "reports" / "train.json").read_text())
    assert summary["resumed_from"] and summary["resumed_from"].endswith("checkpoint-20")
    assert summary["steps"] == 100 and summary["steps_this_run"] == 80  # not all 100 again
    assert out["stages"]["train"] == "ran" and out["registered_now"]
