"""Lineage: what a model version was made from, and restoring that data (`tasks.lineage` is the CLI).

A registered version's tags hold the git commit (+ dirty flag), data.dvc's md5, the
hash of each stage's entry in dvc.lock, and a params digest.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path
from typing import Any

import yaml

from tasks.core.dvc import run_dvc
from tasks.core.errors import MissingInput

# Pipeline bookkeeping that changes while `dvc repro` runs: not "uncommitted code".
_NOT_DIRT = ("dvc.lock", "data.dvc", "reports/")


def git_state(repo: Path) -> tuple[str, bool]:
    """(commit, dirty): dirty when tracked files other than pipeline bookkeeping differ from it."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, check=True
        ).stdout.strip()
    except subprocess.CalledProcessError:
        return "none", True
    status = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"],
        cwd=repo,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    dirty = any(not line[3:].startswith(_NOT_DIRT) for line in status)
    return commit, dirty


def data_md5(repo: Path, dvc_file: str = "data.dvc") -> str:
    return yaml.safe_load((repo / dvc_file).read_text())["outs"][0]["md5"]


def stage_hashes(repo: Path) -> dict[str, str]:
    """A short hash of each stage's dvc.lock entry (its cmd, deps, params and outs hashes)."""
    lock = yaml.safe_load((repo / "dvc.lock").read_text()) if (repo / "dvc.lock").exists() else {}
    return {
        name: hashlib.sha256(json.dumps(entry, sort_keys=True).encode()).hexdigest()[:16]
        for name, entry in (lock.get("stages") or {}).items()
    }


def data_source(data_dir: Path) -> str | None:
    """The source the snapshot in `data_dir` was made from (its SOURCE.json), None if unknown."""
    try:
        return json.loads((data_dir / "SOURCE.json").read_text())["source"]
    except (OSError, ValueError, KeyError):
        return None


def collect(repo: str | Path, params_digest: str, data_dir: str = "data") -> dict[str, str]:
    """Lineage tags for a model version (all strings, as MLflow tags are). `data_source` is
    what the data snapshot holds, whatever params.yaml's data.source says."""
    repo = Path(repo)
    commit, dirty = git_state(repo)
    tags = {
        "git_commit": commit,
        "git_dirty": str(dirty).lower(),
        "data_md5": data_md5(repo),
        "data_source": data_source(repo / data_dir) or "unknown",
        "params_digest": params_digest,
    }
    tags |= {f"dvc_stage.{k}": v for k, v in stage_hashes(repo).items()}
    return tags


def version_of(client, name: str, version: str | None, alias: str | None):
    """The registered version asked for (`alias` defaults to champion); MissingInput if none."""
    from mlflow.exceptions import MlflowException

    from tasks.registry.tracking import alias_version

    if not version:
        mv = alias_version(client, name, alias or "champion")
        if mv is None:
            raise MissingInput(f"model {name!r} has no version with alias {alias or 'champion'!r}")
        return mv
    try:
        return client.get_model_version(name, version)
    except MlflowException as exc:
        raise MissingInput(f"model {name!r} has no version {version!r}") from exc


def show(client, name: str, version: str | None = None, alias: str | None = None) -> dict[str, Any]:
    mv = version_of(client, name, version, alias)
    tags = dict(mv.tags)
    run = client.get_run(mv.run_id)
    return {
        "name": name,
        "version": str(mv.version),
        "aliases": list(mv.aliases),
        "run_id": mv.run_id,
        "git_commit": tags.get("git_commit"),
        "git_dirty": tags.get("git_dirty"),
        "data_md5": tags.get("data_md5"),
        "params_digest": tags.get("params_digest"),
        "dvc_stages": {
            k.split(".", 1)[1]: v for k, v in tags.items() if k.startswith("dvc_stage.")
        },
        "params": dict(run.data.params),
        "metrics": dict(run.data.metrics),
    }


def hash_dir(repo: Path, path: Path) -> str:
    """The md5 DVC computes for a directory (the value `dvc add` writes)."""
    from dvc.repo import Repo
    from dvc_data.hashfile.build import build

    with Repo(str(repo)) as dvc_repo:
        _, _, obj = build(dvc_repo.cache.local, str(path.resolve()), dvc_repo.fs, "md5")
    return str(obj.hash_info.value)


def restore(repo: str | Path, md5: str, dvc_file: str = "data.dvc") -> str:
    """Point data.dvc at `md5`, `dvc checkout` it (pull from the remote on a cache miss),
    and return the md5 recomputed from the restored files."""
    repo = Path(repo)
    meta = yaml.safe_load((repo / dvc_file).read_text())
    out = meta["outs"][0]
    out.update(md5=md5)
    for stale in ("size", "nfiles"):
        out.pop(stale, None)
    (repo / dvc_file).write_text(yaml.safe_dump(meta, sort_keys=False))
    if run_dvc(repo, "checkout", "--force", dvc_file, check=False).returncode != 0:
        run_dvc(repo, "pull", "--force", dvc_file)
    return hash_dir(repo, repo / out["path"])
