"""Shared fixtures: real configs shrunk for 2 cores, outputs under tmp paths.

Tests build the production config through `tasks.core.config.Params` and then shrink it
(tiny data, tiny model, few steps), in the lightning-hydra-template manner.
"""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
from pathlib import Path

# `make test` runs test files on pytest-xdist workers: each worker, and the stage processes it
# starts, gets its share of the cores. Measured here (2 cores, 12 QLoRA steps of the default
# recipe): alone with 2 threads 16.6 s; two at once with 2 threads each 77 s, with 1 thread
# each 26 s. Set before torch is imported; an explicit OMP_NUM_THREADS wins.
WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if WORKERS > 1:
    _threads = max(1, len(os.sched_getaffinity(0)) // WORKERS)
    os.environ.setdefault("OMP_NUM_THREADS", str(_threads))
    os.environ.setdefault("MKL_NUM_THREADS", os.environ["OMP_NUM_THREADS"])
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

import pytest  # noqa: E402

from tasks.core.io import quiet_telemetry  # noqa: E402

quiet_telemetry()
os.environ.setdefault("HF_HUB_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
CORD_JSON = SHARED / "cord-v1-json"
CORD_SAMPLE = SHARED / "cord-v2-sample"
# Small pretrained bases, one per pretrain config, shared by every test of a session.
READERS = Path(tempfile.mkdtemp(prefix="receipt-readers-"))
atexit.register(shutil.rmtree, READERS, ignore_errors=True)

# What ../shared/cord-v2-sample/README.md says receipt_00004 holds (hand-checked).
SAMPLE_GT_PARSE = {
    "menu": [
        {"nm": "ICE BLACKCOFFE", "cnt": "2", "price": "82,000"},
        {"nm": "AVOCADO COFFEE", "cnt": "1", "price": "61,000"},
        {"nm": "CHIKEN KATSU FF", "cnt": "1", "price": "51,000"},
    ],
    "sub_total": {"subtotal_price": "194,000", "discount_price": "19,400"},
    "total": {"total_price": "174,600", "cashprice": "200,000", "changeprice": "25,400"},
}


# The longest test files first (from the durations pytest prints): with
# `--no-loadscope-reorder` (Makefile) xdist's loadfile scheduler hands files to workers in
# collection order, so the workers finish close together instead of one running the longest
# file alone, on its one thread, at the end.
LONGEST_FIRST = (
    "model/test_reads_receipts.py",
    "flows/test_retrain.py",
    "integration/test_servers.py",
    "integration/test_dvc_pipeline.py",
    "model/test_hub_replica.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        rel = item.path.relative_to(Path(__file__).parent).as_posix()
        return LONGEST_FIRST.index(rel) if rel in LONGEST_FIRST else len(LONGEST_FIRST)

    items.sort(key=rank)  # stable: a file's tests keep their order and stay together


def trainer_pids(checkout: Path) -> list[int]:
    """The train stage's processes (`python -m tasks.train`) working in `checkout` (and only
    there: another test may be training in its own project at the same time)."""
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            cmd = (proc / "cmdline").read_bytes().split(b"\0")
            if b"tasks.train" in cmd and Path(os.readlink(proc / "cwd")) == checkout.resolve():
                pids.append(int(proc.name))
        except (OSError, ValueError):
            continue
    return pids


def needs(path: Path):
    return pytest.mark.skipif(
        not path.is_dir(), reason=f"{path} absent (real CORD data lives beside the repo)"
    )


def small_params(**sections):
    """The real params.yaml, shrunk: 12/4/4 synthetic receipts, a tiny-tiny model, a few steps."""
    from tasks.core.config import load_params

    p = load_params(REPO / "params.yaml")
    # Synthetic receipts without OCR grounding: seconds per stage. The default's CORD renders
    # and OCR have tests of their own (tests/data/test_cord.py, tests/model/test_ocr_prompt.py).
    p.data.source = "synthetic"
    p.data.synthetic = p.data.synthetic.model_copy(
        update={"train": 12, "validation": 4, "test": 4, "max_items": 2}
    )
    p.model = p.model.model_copy(update={"ocr_prompt": False})
    # A smaller pretraining config: a 48-px, 4x4-cell base pretrained for a few steps. It
    # cannot read, but it is built, saved and loaded by the same code as models/tiny-reader.
    p.pretrain = p.pretrain.model_copy(
        update={
            "model": p.pretrain.model.model_copy(
                update={
                    "image_size": 48,
                    "vision_hidden": 32,
                    "vision_layers": 1,
                    "text_hidden": 64,
                    "text_layers": 2,
                    "text_intermediate": 128,
                }
            ),
            "steps": 4,
            "schedule_steps": 4,
            "batch_size": 2,
            "warmup_steps": 1,
            "curriculum_steps": 2,
            "natural": p.pretrain.natural.model_copy(
                update={"steps": 2, "batch_size": 2, "warmup_steps": 1, "eval_every": 2}
            ),
            "copy_phase": p.pretrain.copy_phase.model_copy(
                update={
                    "steps": 2,
                    "repeat_steps": 1,
                    "batch_size": 2,
                    "warmup_steps": 1,
                    "max_lines": 3,
                    "reading_every": 2,
                    "eval_every": 2,
                    "eval_records": 1,
                }
            ),
            "eval_every": 4,
            "eval_pages": 2,
        }
    )
    p.train.args = p.train.args.model_copy(
        update={
            "max_steps": 6,
            "per_device_train_batch_size": 4,
            "save_steps": 3,
            "logging_steps": 1,
        }
    )
    # Free decoding: constrained decoding (the default's) has tests of its own (test_constrained.py).
    p.evaluate = p.evaluate.model_copy(
        update={"max_new_tokens": 24, "batch_size": 4, "json_schema": False}
    )
    # A few steps teach a tiny model little: gate on what it can reach, judge the gate separately.
    p.gate = p.gate.model_copy(update={"min_json_valid_rate": 0.0, "max_regression": 1.0})
    return updated(p, **sections)


def updated(params, **sections):
    """`params` with `sections` merged in, nested keys and all (train={"args": {"seed": 1}}),
    validated again: a misspelt key fails here, not silently."""
    from tasks.core.config import Params

    def merge(into: dict, new: dict) -> dict:
        for key, value in new.items():
            if isinstance(value, dict) and isinstance(into.get(key), dict):
                merge(into[key], value)
            else:
                into[key] = value
        return into

    return Params.model_validate(merge(params.model_dump(by_alias=True), sections))


def small_reader(params) -> Path:
    """models/tiny-reader for `params` (small_params: a few seconds), built once per session."""
    from tasks.reader.pretrain import run_pretrain

    out = READERS / params.pretrain.digest()
    if not (out / "pretrain.json").is_file():
        run_pretrain(params.pretrain, out)
    return out


def make_project(root: Path, params) -> Path:
    """A fresh clone-like project: this repo's code, dvc.yaml and .gitignore, the given params,
    a tiny base pretrained with them in models/tiny-reader, git and DVC initialised with a
    local remote, everything committed."""
    import subprocess

    import yaml

    shutil.copytree(REPO / "tasks", root / "tasks", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(small_reader(params), root / "models" / "tiny-reader")
    shutil.copytree(REPO / "assets", root / "assets")
    for name in ("dvc.yaml", ".gitignore"):
        shutil.copy(REPO / name, root / name)
    write_params(root, params)
    env = git_env()
    for cmd in (
        ["git", "init", "-q"],
        ["dvc", "init", "-q"],
        ["dvc", "remote", "add", "-d", "local", str(root / "dvc-remote")],
        ["git", "add", "-A"],
        ["git", "commit", "-qm", "project"],
    ):
        subprocess.run(cmd, cwd=root, env=env, check=True, capture_output=True)
    assert yaml.safe_load((root / "params.yaml").read_text())
    return root


def write_params(root: Path, params) -> None:
    import yaml

    (root / "params.yaml").write_text(yaml.safe_dump(params.model_dump(mode="json", by_alias=True)))


def git_env() -> dict[str, str]:
    """The environment for a project's subprocesses: the venv's tools first, a git identity,
    and no inherited MLFLOW_TRACKING_URI (each project uses its own mlflow.db)."""
    import sys

    return {
        **{k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"},
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@t",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@t",
    }


@pytest.fixture(autouse=True)
def _isolated_tracking_uri():
    """mlflow.set_tracking_uri() exports MLFLOW_TRACKING_URI to child processes: keep it per test."""
    before = os.environ.get("MLFLOW_TRACKING_URI")
    yield
    if before is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = before


@pytest.fixture(scope="session")
def params():
    return small_params()


@pytest.fixture(scope="session")
def dataset_dir(tmp_path_factory, params):
    """A processed synthetic dataset (raw snapshot -> ingest)."""
    from tasks.ingest import run_ingest
    from tasks.refresh_data import run_data

    root = tmp_path_factory.mktemp("ds")
    run_data(params.data, root / "data")
    run_ingest(params.ingest, root / "data", root / "dataset")
    return root / "dataset"


@pytest.fixture(scope="session")
def base_dir(tmp_path_factory, params, dataset_dir):
    from tasks.build_base import run_build_base

    out = tmp_path_factory.mktemp("base") / "base"
    run_build_base(params, dataset_dir, out, small_reader(params))
    return out


@pytest.fixture(scope="session")
def trained(tmp_path_factory, params, dataset_dir, base_dir):
    """A QLoRA-trained adapter on the tiny base (6 steps, 4-bit NF4 on CPU)."""
    from tasks.train import run_train

    root = tmp_path_factory.mktemp("train")
    summary = run_train(
        params,
        dataset_dir,
        base_dir,
        root / "adapter",
        root / "ckpt",
        root / "train.json",
        root / "loss.csv",
    )
    return {"adapter": root / "adapter", "summary": summary, "root": root}
