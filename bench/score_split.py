"""Batch scoring's throughput on one split of the project's dataset: the split's images, as the
dataset holds them (the same bytes), written to a folder and scored with `tasks.score`.

    python -m bench.score_split [--split test] [--model-version N] [--rounds 2]
        [--report docs/score_split.json]

Each round is a fresh process that runs `tasks.score.run_score` on the folder with `force` (no
answer reused), as `python -m tasks.score --dir <folder> --force` does; its seconds are
score.json's (the model's lookup and load, OCR and generation: everything but the interpreter's
start), with the process's peak RSS. The rounds' answers are compared.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.cpu import write_measured
from tasks.core.config import load_params
from tasks.core.errors import MissingInput
from tasks.core.io import quiet_telemetry
from tasks.data.dataset import load_dataset_dir
from tasks.data.sources import image_ext


def write_split(dataset: Path, split: str, folder: Path) -> int:
    """The split's images, their bytes untouched, as <id>.<ext> files in folder (named as a
    snapshot names them)."""
    splits = load_dataset_dir(dataset, decode_images=False)
    if split not in splits:
        raise MissingInput(f"{dataset}: no split {split!r} (it has {', '.join(splits)})")
    folder.mkdir(parents=True, exist_ok=True)
    for row in splits[split]:
        data = row["image"]["bytes"]
        (folder / f"{row['id']}.{image_ext(data)}").write_bytes(data)
    return len(splits[split])


def score_once(folder: Path, out: Path, name: str, version: str | None, repo: Path) -> dict:
    from tasks.score import run_score

    s = run_score(folder, out, name, version, repo, force=True)
    answers = "\n".join(r.get("raw") or "" for r in s["rows"])
    return {
        "model_version": s["model"]["version"],
        "receipts": s["scored"],
        "seconds": s["seconds"],
        "receipts_per_second": round(s["scored"] / s["seconds"], 3),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "answers_sha256": hashlib.sha256(answers.encode()).hexdigest(),
    }


def main(argv: list[str] | None = None) -> None:
    quiet_telemetry()
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--project", type=Path, default=Path("."))
    ap.add_argument("--split", default="test")
    ap.add_argument("--model-version", default=None, help="default: the champion")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--report", type=Path, default=Path("docs/score_split.json"))
    ap.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    project = a.project.resolve()
    p = load_params(project / "params.yaml")
    name = p.register_.model_name
    if a.folder:  # a child process: one round, its row on stdout
        with tempfile.TemporaryDirectory(prefix="score-split-") as out:
            row = score_once(a.folder, Path(out) / "score", name, a.model_version, project)
        print(json.dumps(row))
        return
    rows = []
    with tempfile.TemporaryDirectory(prefix="score-split-") as tmp:
        folder = Path(tmp) / a.split
        try:
            n = write_split(project / p.paths.dataset, a.split, folder)
        except MissingInput as exc:
            sys.exit(f"score_split: {exc}")
        print(f"score_split: {n} {a.split} images -> {folder}", flush=True)
        cmd = [sys.executable, "-m", "bench.score_split", "--project", str(project)]
        cmd += ["--folder", str(folder)]
        cmd += ["--model-version", a.model_version] if a.model_version else []
        for i in range(a.rounds):
            done = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True, cwd=project)
            row = {"round": i + 1} | json.loads(done.stdout.strip().splitlines()[-1])
            print(json.dumps(row), flush=True)
            rows.append(row)
    same = len({r["answers_sha256"] for r in rows}) == 1
    report = {"split": a.split, "images": n, "same_answers": same, "runs": rows}
    write_measured(a.report, report)
    print(f"score_split: the same answers in every round: {same} -> {a.report}")


if __name__ == "__main__":
    main()
