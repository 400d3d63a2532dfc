"""Training checkpoints kept in the DVC remote, so that a train run on a host that dies resumes
from its last pushed checkpoint on whichever host retries it.

The remote's layout, beside DVC's own `files/` (which `dvc gc` alone manages):

    <remote>/checkpoints/<run key>/checkpoint-<step>/...     Trainer's checkpoint folder
    <remote>/checkpoints/<run key>/checkpoint-<step>.done    written last: the push is whole

The run key is a hash of the train run's digest (params, data, base): a retry with the same
inputs finds its checkpoints, a run with other inputs never resumes them. The train stage
pushes every `remote.checkpoint_every` steps in a run the remote train flow handed over
(PUSH_ENV), keeps the latest push only, and clears them once it finishes.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

log = logging.getLogger(__name__)

# Set by the remote train flow for the stage it runs: a switch, not a value (the value is a param).
PUSH_ENV = "RECEIPT_PUSH_CHECKPOINTS"
DONE = ".done"


class CheckpointStore:
    """One train run's checkpoints in the DVC remote of `repo` (its default remote, or `remote`)."""

    def __init__(self, repo: str | Path, run_digest: str, remote: str | None = None):
        from dvc.repo import Repo

        with Repo(str(repo)) as dvc_repo:
            r = dvc_repo.cloud.get_remote(remote, command="train")
        self.fs, self.remote = r.fs, r.name
        key = hashlib.sha256(run_digest.encode()).hexdigest()[:16]
        self.root = self.fs.join(r.path, "checkpoints", key)

    def __repr__(self) -> str:
        return f"CheckpointStore({self.remote}: {self.root})"

    def steps(self) -> list[int]:
        """Steps with a whole checkpoint in the remote, ascending."""
        try:
            names = [Path(p).name for p in self.fs.ls(self.root, detail=False)]
        except FileNotFoundError:
            return []
        return sorted(int(n[len("checkpoint-") : -len(DONE)]) for n in names if _is_done(n))

    def push(self, local: Path, step: int) -> None:
        """Upload a saved checkpoint folder, then its `.done` marker; drop older pushes."""
        files = sorted(p for p in local.rglob("*") if p.is_file())
        dest = self.fs.join(self.root, f"checkpoint-{step}")
        targets = [self.fs.join(dest, *p.relative_to(local).parts) for p in files]
        self.fs.makedirs(dest, exist_ok=True)
        for target in {self.fs.parent(t) for t in targets}:
            self.fs.makedirs(target, exist_ok=True)
        self.fs.put([str(p) for p in files], targets)
        with self.fs.open(dest + DONE, "w") as marker:
            marker.write(f"{len(files)}\n")
        for older in self.steps():
            if older < step:
                self._remove(older)
        log.info("checkpoint-%d pushed to %s", step, self)

    def restore(self, ckpt_dir: Path) -> int | None:
        """Replace the local checkpoints with the remote's latest; its step, or None.

        The remote is the truth: a checkpoint that only this disk holds was never pushed,
        and a host that dies takes it along."""
        for stale in ckpt_dir.glob("checkpoint-*"):
            shutil.rmtree(stale)
        steps = self.steps()
        if not steps:
            return None
        step = steps[-1]
        src = self.fs.join(self.root, f"checkpoint-{step}")
        remote_files = [p for p in self.fs.find(src) if not p.endswith(DONE)]
        local = ckpt_dir / f"checkpoint-{step}"
        tmp = ckpt_dir / f".pulling-checkpoint-{step}"
        shutil.rmtree(tmp, ignore_errors=True)
        targets = [tmp / os.path.relpath(p, src) for p in remote_files]
        for t in targets:
            t.parent.mkdir(parents=True, exist_ok=True)
        self.fs.get(remote_files, [str(t) for t in targets])
        tmp.rename(local)
        log.info("checkpoint-%d pulled from %s", step, self)
        return step

    def clear(self) -> None:
        """The run finished: its checkpoints would only make a forced rerun train nothing."""
        for step in self.steps():
            self._remove(step)

    def _remove(self, step: int) -> None:
        base = self.fs.join(self.root, f"checkpoint-{step}")
        self.fs.rm(base + DONE)  # first: a half-removed checkpoint is never taken as whole
        files = list(self.fs.find(base))
        if files:
            self.fs.rm(files)


def _is_done(name: str) -> bool:
    return (
        name.startswith("checkpoint-")
        and name.endswith(DONE)
        and name[len("checkpoint-") : -len(DONE)].isdigit()
    )


def push_every(checkpoint_every: int) -> int:
    """Steps between pushes: params' `remote.checkpoint_every` in a run that the remote train
    flow handed over (it sets PUSH_ENV), else 0: checkpoints stay local."""
    return checkpoint_every if os.environ.get(PUSH_ENV) == "1" else 0


class PushCheckpoints(TrainerCallback):
    """Push the Trainer's checkpoint to the store when `every` steps have passed since the
    last push (on the Trainer's saves: set save_steps to divide `every`)."""

    def __init__(self, store: CheckpointStore, every: int, start: int = 0):
        self.store, self.every, self.last = store, every, start
        self.pushed: list[int] = []

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        step = state.global_step
        if not state.is_world_process_zero or step - self.last < self.every:
            return
        self.store.push(Path(args.output_dir) / f"checkpoint-{step}", step)
        self.last = step
        self.pushed.append(step)
