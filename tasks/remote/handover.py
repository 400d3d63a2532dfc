"""The train stage on a host that shares no disk with the pipeline, through git and the DVC remote.

    pipeline checkout (CPU)                      GPU host's checkout (its own clone)
    request(repo)                                checkout(workdir, url, commit)
      HEAD clean and named by commit;              fetch; refuse a commit the remote lacks
      train's cached deps `dvc push`ed;            or a checkout with work of its own;
      dvc.lock + uncached deps (small reports)     `git checkout --detach <commit>`
      travel in the request          ─────────►  receive(workdir, request): dvc.lock and the
                                                   small files in, `dvc pull` train's deps
                                                 `dvc repro --single-item train`
    apply(repo, handback)            ◄─────────  handback(workdir): `dvc push train`; its
      same commit, same deps; every cached         dvc.lock entry, its uncached outs (train.json,
      out in the remote, every small file's        the loss curve), host, GPU
      md5 right, or nothing is touched;
      then the entry into dvc.lock, `dvc pull train`

Only pipeline bookkeeping travels beside the commit (dvc.lock, and the uncached outputs the
lock names by md5: what `tasks.lineage` counts as bookkeeping, not code); code and params
come from the commit itself. The Prefect side is flows/retrain.py (`train_stage`).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import yaml

from tasks.core.dvc import run_dvc
from tasks.core.errors import UserError
from tasks.core.io import write_text_atomic
from tasks.registry import lineage

STAGE = "train"
MAX_FILE_BYTES = 1 << 20  # uncached outs/deps travel inline: reports, not models


class HandoverRefused(UserError):
    """The request or the handback cannot be used as it is; nothing was changed."""


def git(repo: Path, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True)
    if done.returncode != 0:
        raise HandoverRefused(f"git {' '.join(args)} in {repo}: {done.stderr.strip()}")
    return done.stdout.strip()


def _stage_io(repo: Path, stage: str = STAGE) -> tuple[dict[str, bool], dict[str, bool]]:
    """The stage's deps that other stages make, and its own outs: {path: cached by DVC}."""
    from dvc.repo import Repo

    with Repo(str(repo)) as r:
        stages = {s.name: s for s in r.index.stages if getattr(s, "name", None)}
        made = {str(o.def_path): o.use_cache for s in stages.values() for o in s.outs}
        deps = {d.def_path: made[d.def_path] for d in stages[stage].deps if d.def_path in made}
        outs = {str(o.def_path): o.use_cache for o in stages[stage].outs}
    return deps, outs


def _read_small(repo: Path, rel: str) -> dict[str, str]:
    """An uncached file or folder as {repo-relative path: text}."""
    path = repo / rel
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    out = {}
    for f in files:
        if f.stat().st_size > MAX_FILE_BYTES:
            raise HandoverRefused(
                f"{f.relative_to(repo)}: {f.stat().st_size} bytes, too large to travel inline; "
                "cache it in DVC (dvc.yaml `cache: true`)"
            )
        out[str(f.relative_to(repo))] = f.read_text()
    return out


def _lock(text: str) -> dict[str, Any]:
    return yaml.safe_load(text) or {}


def request(repo: str | Path, url: str | None = None) -> dict[str, Any]:
    """What the GPU host needs to train `repo`'s HEAD: its commit and git URL, dvc.lock, the
    uncached deps (validation report) inline; pushes the cached deps to the DVC remote."""
    repo = Path(repo).resolve()
    commit, dirty = lineage.git_state(repo)
    if dirty:
        changed = git(repo, "status", "--porcelain", "--untracked-files=no")
        raise HandoverRefused(
            f"{repo} has uncommitted changes, and the GPU host trains commit {commit[:12]} as "
            f"it is on the remote: commit and push them first:\n{changed}"
        )
    url = url or os.environ.get("RECEIPT_GIT_URL") or git(repo, "remote", "get-url", "origin")
    deps, _ = _stage_io(repo)
    cached = [d for d, use_cache in deps.items() if use_cache]
    missing = [d for d in deps if not (repo / d).exists()]
    if missing:
        raise HandoverRefused(f"{STAGE} needs {missing}, absent in {repo}: run the stages before")
    run_dvc(repo, "push", "--quiet", *cached)
    files: dict[str, str] = {}
    for d, use_cache in deps.items():
        if not use_cache:
            files |= _read_small(repo, d)
    return {
        "url": url,
        "commit": commit,
        "lock": (repo / "dvc.lock").read_text(),
        "files": files,
        "from": f"{socket.gethostname()}:{repo}",
    }


def checkout(workdir: str | Path, url: str, commit: str) -> Path:
    """The GPU host's checkout of `url` at `commit`: cloned if absent, else fetched and moved.

    Refused, naming both commits: a commit the remote does not have (never pushed, or gone),
    and a checkout whose HEAD holds work the remote lacks or has local edits to code."""
    workdir = Path(workdir).resolve()
    if not (workdir / ".git").exists():
        workdir.parent.mkdir(parents=True, exist_ok=True)
        git(workdir.parent, "clone", "--quiet", url, str(workdir))
    shallow = git(workdir, "rev-parse", "--is-shallow-repository") == "true"
    git(
        workdir,
        "fetch",
        "--quiet",
        "--prune",
        *(["--unshallow"] if shallow else []),  # `--contains` needs the history
        url,
        "+refs/heads/*:refs/remotes/handover/*",
    )
    head = subprocess.run(
        ["git", "rev-parse", "--verify", "--quiet", "HEAD"], cwd=workdir, capture_output=True
    )
    here = head.stdout.decode().strip() if head.returncode == 0 else ""
    found = subprocess.run(
        ["git", "cat-file", "-e", f"{commit}^{{commit}}"], cwd=workdir, capture_output=True
    )
    on_remote = found.returncode == 0 and git(
        workdir, "branch", "--remotes", "--contains", commit, "--list", "handover/*"
    )
    if not on_remote:
        remote_head = git(workdir, "ls-remote", url, "HEAD").split("\t")[0] or "none"
        raise HandoverRefused(
            f"commit {commit[:12]} is not on {url} (its HEAD is {remote_head[:12]}): "
            "push it before training it remotely"
        )
    if here:
        mine = git(workdir, "branch", "--remotes", "--contains", here, "--list", "handover/*")
        if not mine:
            raise HandoverRefused(
                f"{workdir} is at {here[:12]}, a commit {url} does not have (diverged from "
                f"{commit[:12]}): refusing to move it; push or drop that work first"
            )
        _, dirty = lineage.git_state(workdir)
        if dirty:
            raise HandoverRefused(
                f"{workdir} (at {here[:12]}) has local changes to tracked code; refusing to "
                f"check out {commit[:12]} over them:\n"
                + git(workdir, "status", "--porcelain", "--untracked-files=no")
            )
    # bookkeeping (dvc.lock, data.dvc, reports/) from an earlier run is overwritten by the request
    git(workdir, "checkout", "--quiet", "--force", "--detach", commit)
    return workdir


def receive(workdir: str | Path, req: dict[str, Any]) -> None:
    """Put the request's dvc.lock and small files in place, and `dvc pull` train's cached deps."""
    workdir = Path(workdir)
    write_text_atomic(workdir / "dvc.lock", req["lock"])
    for rel, text in req["files"].items():
        (workdir / rel).parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(workdir / rel, text)
    deps, _ = _stage_io(workdir)
    run_dvc(workdir, "pull", "--quiet", *[d for d, use_cache in deps.items() if use_cache])


def handback(workdir: str | Path) -> dict[str, Any]:
    """After `dvc repro --single-item train`: push its outs; its lock entry and small outs."""
    workdir = Path(workdir)
    run_dvc(workdir, "push", "--quiet", STAGE)
    entry = _lock((workdir / "dvc.lock").read_text())["stages"][STAGE]
    _, outs = _stage_io(workdir)
    files: dict[str, str] = {}
    for out in entry["outs"]:
        if not outs[out["path"]]:
            files |= _read_small(workdir, out["path"])
    from tasks.core.config import load_params

    summary_path = load_params(workdir / "params.yaml").paths.train_summary
    summary = json.loads(files.get(summary_path, "{}"))
    return {
        "commit": git(workdir, "rev-parse", "HEAD"),
        "entry": entry,
        "files": files,
        "host": socket.gethostname(),
        "workdir": str(workdir.resolve()),
        "device": summary.get("device_name"),
        "train_summary": summary,
    }


def _md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


def apply(repo: str | Path, back: dict[str, Any]) -> None:
    """Take the GPU host's train entry into this checkout, or refuse and change nothing.

    Refused: a handback for another commit (this checkout moved on: stale), deps that are
    not this checkout's, a cached out missing from the DVC remote (half-pushed), an inline
    file whose md5 is not the lock's."""
    repo = Path(repo).resolve()
    here = git(repo, "rev-parse", "HEAD")
    if back["commit"] != here:
        raise HandoverRefused(
            f"the GPU host trained commit {back['commit'][:12]}, and {repo} is now at "
            f"{here[:12]}: stale, not applied"
        )
    lock = _lock((repo / "dvc.lock").read_text())
    entry = back["entry"]
    _check_deps(repo, lock, entry)
    _, outs = _stage_io(repo)
    inline = {o["path"] for o in entry["outs"] if not outs[o["path"]]}
    _check_remote_has(repo, [o for o in entry["outs"] if o["path"] not in inline])
    staged = Path(tempfile.mkdtemp(prefix=".handover-", dir=repo))
    try:
        _stage_inline(repo, staged, entry, inline, back["files"])
        # Checked: now change the checkout. The files, then the lock, then the adapter.
        for out in sorted(inline):
            dest = repo / out
            if dest.is_dir():
                shutil.rmtree(dest)
            dest.parent.mkdir(parents=True, exist_ok=True)
            (staged / out).rename(dest)
        lock.setdefault("stages", {})[STAGE] = entry
        write_text_atomic(repo / "dvc.lock", yaml.safe_dump(lock, sort_keys=False))
    finally:
        shutil.rmtree(staged, ignore_errors=True)
    run_dvc(repo, "pull", "--quiet", STAGE)


def _check_deps(repo: Path, lock: dict[str, Any], entry: dict[str, Any]) -> None:
    """The entry's deps that other stages make are the ones this checkout's lock has."""
    made = {
        o["path"]: o.get("md5")
        for name, s in (lock.get("stages") or {}).items()
        if name != STAGE
        for o in s.get("outs", [])
    }
    for dep in entry.get("deps", []):
        if dep["path"] in made and made[dep["path"]] != dep.get("md5"):
            raise HandoverRefused(
                f"the GPU host trained on {dep['path']} {dep.get('md5')}, and {repo} has "
                f"{made[dep['path']]}: not applied"
            )


def _check_remote_has(repo: Path, cached: list[dict[str, Any]]) -> None:
    """Every object of the cached outs is in the DVC remote (a half-push is refused)."""
    from dvc.repo import Repo
    from dvc_data.hashfile.hash_info import HashInfo
    from dvc_data.hashfile.tree import Tree

    with Repo(str(repo)) as r:
        odb = r.cloud.get_remote_odb(command="pull")
        for out in cached:
            oid = out["md5"]
            try:
                oids = [oid]
                if oid.endswith(".dir"):
                    oids += [hi.value for _, _, hi in Tree.load(odb, HashInfo("md5", oid))]
                missing = [o for o in oids if not odb.exists(o)]
            except (FileNotFoundError, OSError) as exc:
                missing = [f"{oid} ({exc.__class__.__name__})"]
            if missing:
                raise HandoverRefused(
                    f"{out['path']} ({oid}) is not whole in the DVC remote ({len(missing)} "
                    f"object(s) missing, e.g. {missing[0]}): half-pushed, not applied"
                )


def _stage_inline(repo: Path, staged: Path, entry, inline: set[str], files: dict[str, str]) -> None:
    """Write the handback's small outs under `staged`, each checked against its lock md5."""
    for out in entry["outs"]:  # a folder out may hold no files
        if out["path"] in inline and out["md5"].endswith(".dir"):
            (staged / out["path"]).mkdir(parents=True, exist_ok=True)
    for rel, text in files.items():
        (staged / rel).parent.mkdir(parents=True, exist_ok=True)
        (staged / rel).write_text(text)
    for out in entry["outs"]:
        if out["path"] not in inline:
            continue
        got = (
            _md5(files.get(out["path"], ""))
            if not out["md5"].endswith(".dir")
            else lineage.hash_dir(repo, staged / out["path"])
        )
        if got != out["md5"]:
            raise HandoverRefused(
                f"{out['path']}: the handback's copy has md5 {got}, its lock entry "
                f"{out['md5']}: not applied"
            )
