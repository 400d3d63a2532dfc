"""The train stage between two clones that share no working tree (tasks/remote/handover.py): a bare
git origin, a pipeline clone and a GPU host's clone, one DVC remote. No Prefect here (the
deployments test runs the same through a Prefect server and two workers)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tasks.remote import handover
from tasks.remote.checkpoints import PUSH_ENV
from tests.conftest import git_env, make_project, small_params

pytestmark = pytest.mark.slow


def sh(cwd: Path, *cmd: str, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(cmd, cwd=cwd, env=git_env() | (env or {}), capture_output=True, text=True)
    assert done.returncode == 0, f"{' '.join(cmd)}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def hosts(tmp_path_factory):
    """origin.git, the pipeline's clone with train's upstream stages run, the DVC remote."""
    root = tmp_path_factory.mktemp("hosts")
    project = make_project(root / "project", small_params(remote={"checkpoint_every": 3}))
    sh(root, "git", "clone", "-q", "--bare", str(project), str(root / "origin.git"))
    sh(root, "git", "clone", "-q", str(root / "origin.git"), str(root / "cpu"))
    cpu = root / "cpu"
    sh(cpu, "python", "-m", "tasks.refresh_data")
    sh(cpu, "dvc", "repro", "validate", "base")
    return {"root": root, "cpu": cpu, "gpu": root / "gpu", "remote": project / "dvc-remote"}


@pytest.fixture(scope="module")
def trained(hosts):
    """request (cpu) -> checkout, receive, repro, handback (gpu) -> apply (cpu)."""
    cpu, gpu = hosts["cpu"], hosts["gpu"]
    before = (cpu / "dvc.lock").read_text()
    req = handover.request(cpu)
    wd = handover.checkout(gpu, req["url"], req["commit"])
    handover.receive(wd, req)
    sh(wd, "dvc", "repro", "--single-item", "train", env={PUSH_ENV: "1"})
    back = handover.handback(wd)
    return {"req": req, "back": back, "lock_before": before}


def test_the_request_carries_the_commit_and_bookkeeping_only(hosts, trained):
    req = trained["req"]
    assert req["commit"] == sh(hosts["cpu"], "git", "rev-parse", "HEAD").strip()
    assert req["url"] == str(hosts["root"] / "origin.git")
    # the validation report is the one uncached dep; the dataset and base went to the remote
    assert set(req["files"]) == {"reports/validation.json"}
    assert yaml.safe_load(req["lock"])["stages"].keys() >= {"ingest", "validate", "base"}
    # the GPU clone is its own working tree at exactly that commit
    assert sh(hosts["gpu"], "git", "rev-parse", "HEAD").strip() == req["commit"]
    assert not (hosts["gpu"] / "data").exists()  # train's deps only, not the raw data


def test_handback_applied_in_the_pipeline_clone(hosts, trained):
    cpu, gpu, back = hosts["cpu"], hosts["gpu"], trained["back"]
    handover.apply(cpu, back)
    lock_cpu = yaml.safe_load((cpu / "dvc.lock").read_text())["stages"]
    lock_gpu = yaml.safe_load((gpu / "dvc.lock").read_text())["stages"]
    assert lock_cpu["train"] == lock_gpu["train"] == back["entry"]
    assert {k: v for k, v in lock_cpu.items() if k != "train"} == {
        k: v for k, v in yaml.safe_load(trained["lock_before"])["stages"].items()
    }
    # the adapter came through the DVC remote, byte for byte
    for f in (gpu / "artifacts" / "adapter").rglob("*"):
        if f.is_file():
            assert (cpu / f.relative_to(gpu)).read_bytes() == f.read_bytes(), f
    summary = json.loads((cpu / "reports" / "train.json").read_text())
    assert summary["workdir"] == str(gpu.resolve()) and summary["steps"] == 6
    # pushed at steps 3 and 6 as it went, cleared from the remote once finished
    assert summary["checkpoints"]["pushed_steps"] == [3, 6]
    assert not list((hosts["remote"] / "checkpoints").rglob("*.done"))
    status = json.loads(sh(cpu, "dvc", "status", "train", "--json") or "{}")
    assert status == {}, status


def test_stale_and_half_pushed_handbacks_change_nothing(hosts, trained, tmp_path):
    cpu, back = hosts["cpu"], trained["back"]
    snapshot = {p: p.read_bytes() for p in (cpu / "dvc.lock", cpu / "reports" / "train.json")}
    # a handback for another commit
    stale = back | {"commit": "0" * 40}
    with pytest.raises(handover.HandoverRefused, match=r"0{12}.*now at [0-9a-f]{12}: stale"):
        handover.apply(cpu, stale)
    # an adapter whose files are not all in the remote
    (adapter,) = [o for o in back["entry"]["outs"] if o["path"] == "artifacts/adapter"]
    moved = tmp_path / "moved"
    store = hosts["remote"] / "files" / "md5"
    manifest = json.loads((store / adapter["md5"][:2] / adapter["md5"][2:]).read_text())
    weights = next(e["md5"] for e in manifest if e["relpath"].endswith(".safetensors"))
    obj = store / weights[:2] / weights[2:]
    shutil.move(obj, moved)
    try:
        with pytest.raises(handover.HandoverRefused, match=r"artifacts/adapter .*half-pushed"):
            handover.apply(cpu, back)
    finally:
        shutil.move(moved, obj)
    # a small output altered on the way
    bad = back | {"files": back["files"] | {"reports/train.json": "{}"}}
    with pytest.raises(handover.HandoverRefused, match="reports/train.json: the handback"):
        handover.apply(cpu, bad)
    assert all(p.read_bytes() == b for p, b in snapshot.items())
    assert adapter["md5"].endswith(".dir")


def test_unpushed_and_diverged_commits_are_refused_naming_both(hosts, trained):
    cpu, gpu, root = hosts["cpu"], hosts["gpu"], hosts["root"]
    url = str(root / "origin.git")
    pushed = trained["req"]["commit"]
    sh(cpu, "git", "commit", "-q", "--allow-empty", "-m", "not pushed")
    local = sh(cpu, "git", "rev-parse", "HEAD").strip()
    try:
        with pytest.raises(
            handover.HandoverRefused, match=rf"{local[:12]} is not on .*HEAD is {pushed[:12]}"
        ):
            handover.checkout(gpu, url, local)
    finally:
        sh(cpu, "git", "reset", "-q", "--hard", pushed)
    sh(gpu, "git", "commit", "-q", "--allow-empty", "-m", "work on the GPU host")
    mine = sh(gpu, "git", "rev-parse", "HEAD").strip()
    try:
        with pytest.raises(handover.HandoverRefused, match=rf"at {mine[:12]}.*from {pushed[:12]}"):
            handover.checkout(gpu, url, pushed)
    finally:
        sh(gpu, "git", "checkout", "-q", "--detach", pushed)
