"""Batch scoring: a folder of receipt images through a registered version (the champion).

    python -m tasks.score --dir new_receipts/ [--score reports/score] [--version N] [--force]

Every entry under the folder (hidden ones aside, subfolders included, in sorted order) gets one
line in `<out>/predictions.jsonl`: the answer of the registered pyfunc (the same code that
`make serve` runs), with its confidence and warnings, or the reason it was not read. Only regular files inside the
folder are read: a symbolic link (wherever it points) or a special file is refused by name.
Nothing is dropped. `<out>/score.json` records the model (name, version, run, digest) and the
input's hash (sha256 over each file's relative path and content), so a scoring can be traced
and repeated. Both are written atomically: a failed run leaves the previous output in place.

A rerun with the same model (by its digest) and the same `json_schema` reuses the answers of
files it already scored (by content sha256), unless `--force`. Answers are also appended to
`<out>.partial.jsonl` batch by batch, so an interrupted run (Ctrl-C) keeps its work for the
next one. The Prefect flow `flows/score.py` wraps this with progress and a table artifact.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import os
import stat
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tasks.core import cli
from tasks.core.digest import tree_digest
from tasks.core.errors import MissingInput
from tasks.core.io import atomic_dir, write_json_atomic
from tasks.core.progress import reporter


def folder_entries(folder: str | Path) -> list[tuple[str, Path, str | None]]:
    """(relative path, path, why it is refused or None) for every non-hidden entry under
    folder, sorted. Symbolic links are never followed, to files or folders."""
    root = Path(folder)
    if not root.is_dir():
        raise MissingInput(f"{root}: not a folder of receipt images")
    found: list[tuple[str, Path, str | None]] = []
    for here, dirs, files in os.walk(root, followlinks=False):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in [*files, *(d for d in dirs if (Path(here) / d).is_symlink())]:
            path = Path(here) / name
            rel = path.relative_to(root).as_posix()
            if name.startswith("."):
                continue
            mode = path.lstat().st_mode
            if stat.S_ISLNK(mode):
                why = f"{rel}: a symbolic link (to {os.readlink(path)}), not followed"
            elif not stat.S_ISREG(mode):
                why = f"{rel}: not a regular file, not read"
            else:
                why = None
            found.append((rel, path, why))
    return sorted(found, key=lambda e: e[0])


def input_files(folder: str | Path) -> list[Path]:
    """The regular files under folder that scoring reads, sorted by relative path."""
    return [path for _, path, why in folder_entries(folder) if why is None]


def input_digest(root: Path, files: list[Path]) -> str:
    return tree_digest(root, files)


def model_uri(name: str, version: str | None) -> str:
    return f"models:/{name}/{version}" if version else f"models:/{name}@champion"


def partial_path(out_dir: str | Path) -> Path:
    return Path(f"{Path(out_dir)}.partial.jsonl")


def earlier_answers(out_dir: str | Path, digest: str | None, json_schema: bool) -> dict:
    """Answers already given by this model (digest) under this json_schema, by file sha256:
    from the last finished run's predictions.jsonl and an interrupted run's partial file."""
    from tasks.inference.reader import ANSWER

    found: dict[str, dict[str, Any]] = {}
    for path in (Path(out_dir) / "predictions.jsonl", partial_path(out_dir)):
        if not path.is_file() or digest is None:
            continue
        for line in path.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:  # a line cut short by the interruption
                continue
            same = row.get("model_digest") == digest and row.get("json_schema") == json_schema
            if same and row.get("error") is None and all(k in row for k in ANSWER):
                found[row["sha256"]] = row
    return found


def run_score(
    folder: str | Path,
    out_dir: str | Path,
    name: str,
    version: str | None = None,
    repo: str | Path = ".",
    batch_size: int = 8,
    progress: Callable[[int, int], None] | None = None,
    json_schema: bool | None = None,
    force: bool = False,
) -> dict[str, Any]:
    """Score every file under `folder` with version `version` of `name` (default: the champion);
    write predictions.jsonl and score.json to out_dir; return the summary. `json_schema`
    (constrained decoding) defaults to what the version was registered with; files already
    scored by this model are reused unless `force`."""
    from tasks.predict import served_json_schema

    started = time.perf_counter()
    root = Path(folder)
    entries = folder_entries(root)
    mv, signature, model = load_version(name, version, repo)
    json_schema = served_json_schema(signature, json_schema)
    digest = (mv.tags or {}).get("model_digest")
    known = {} if force else earlier_answers(out_dir, digest, json_schema)
    stamp = {"model_version": mv.version, "model_digest": digest, "json_schema": json_schema}
    rows: list[dict[str, Any]] = []
    partial_path(out_dir).parent.mkdir(parents=True, exist_ok=True)
    with partial_path(out_dir).open("a") as journal:
        for start in range(0, len(entries), batch_size):
            batch = score_entries(model, entries[start : start + batch_size], json_schema, known)
            for row in batch:
                row |= stamp
                journal.write(json.dumps(row, ensure_ascii=False) + "\n")
            journal.flush()
            rows += batch
            if progress is not None:
                progress(len(rows), len(entries))
    files = [path for _, path, why in entries if why is None]
    summary = {
        "model": {
            "name": name,
            "version": mv.version,
            "uri": model_uri(name, mv.version),
            "asked": model_uri(name, version),
            "run_id": mv.run_id,
            "model_digest": digest,
            "json_schema": json_schema,
        },
        "input": {
            "dir": str(root.resolve()),
            "files": len(entries),
            "sha256": input_digest(root, files),
        },
        "scored": sum(1 for r in rows if not r["error"]),
        "reused": sum(1 for r in rows if r.get("reused")),
        "errors": sum(1 for r in rows if r["error"]),
        "valid_json": sum(1 for r in rows if r.get("valid_json")),
        "seconds": round(time.perf_counter() - started, 2),
    }
    with atomic_dir(out_dir) as tmp:
        with (tmp / "predictions.jsonl").open("w") as out:
            for r in rows:
                out.write(
                    json.dumps({k: v for k, v in r.items() if k != "reused"}, ensure_ascii=False)
                    + "\n"
                )
        write_json_atomic(tmp / "score.json", summary)
    partial_path(out_dir).unlink(missing_ok=True)
    return {**summary, "rows": rows}


def load_version(name: str, version: str | None, repo: str | Path):
    """(model version, its signature, its pyfunc loaded on first call) of `version` (default:
    the champion); MissingInput if the registry has no such version. A rerun that has every
    answer already never loads the weights."""
    import mlflow

    from tasks.registry.lineage import version_of
    from tasks.registry.tracking import load_pyfunc, tracking_uri

    mlflow.set_tracking_uri(tracking_uri(repo))
    mv = version_of(mlflow.MlflowClient(), name, version, None)
    uri = model_uri(name, mv.version)
    signature = mlflow.models.get_model_info(uri).signature
    return mv, signature, functools.cache(lambda: load_pyfunc(uri, repo))


def score_entries(model, entries, json_schema: bool, known: dict) -> list[dict[str, Any]]:
    """One row per entry: the pyfunc's answer (or an earlier one for the same content, marked
    `reused`), or the reason the entry was not read."""
    import pandas as pd

    from tasks.inference.reader import ANSWER, BadImage, from_served, open_image

    rows: list[dict[str, Any]] = []
    todo: list[tuple[int, bytes]] = []
    for rel, path, refused in entries:
        if refused:
            rows.append({"file": rel, "sha256": None, "error": refused})
            continue
        data = path.read_bytes()
        sha = hashlib.sha256(data).hexdigest()
        rows.append({"file": rel, "sha256": sha})
        if sha in known:
            rows[-1] |= {k: known[sha][k] for k in ANSWER} | {"error": None, "reused": True}
            continue
        try:
            open_image(data, name=rel)  # the reason, named, instead of a failed batch
        except BadImage as exc:
            rows[-1].update(error=str(exc))
        else:
            todo.append((len(rows) - 1, data))
    if todo:
        frame = pd.DataFrame({"image": [d for _, d in todo]})
        answers = model().predict(frame, params={"json_schema": json_schema})
        for (i, _), a in zip(todo, answers.to_dict("records"), strict=True):
            rows[i].update(from_served(a), error=None)
    return rows


def main(argv: list[str] | None = None) -> None:
    ap = cli.parser("Score a folder of receipt images.", paths=("score",))
    ap.add_argument("--dir", required=True, help="folder of receipt images")
    ap.add_argument("--version", default=None, help="a registered version (default: champion)")
    ap.add_argument("--repo", default=".", help="the project (its mlflow.db, unless env says)")
    ap.add_argument(
        "--json-schema",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="hold answers to CORD's JSON schema (default: as the version was registered)",
    )
    ap.add_argument("--force", action="store_true", help="score again what was scored before")

    def body(a, p) -> str:
        name = p.register_.model_name
        try:
            s = run_score(
                a.dir,
                a.score,
                name,
                a.version,
                a.repo,
                progress=reporter("score:"),
                json_schema=a.json_schema,
                force=a.force,
            )
        except KeyboardInterrupt:
            interrupted(a.score)
        return (
            f"score: {s['scored']} read ({s['reused']} as before), {s['errors']} not read, of "
            f"{s['input']['files']} files with {s['model']['uri']} -> {a.score}/predictions.jsonl"
        )

    cli.run("score", ap, body, argv)


def interrupted_line(out_dir: str | Path) -> str:
    """What Ctrl-C says: how many answers the partial file keeps for the next run."""
    kept = partial_path(out_dir)
    n = len(kept.read_text().splitlines()) if kept.is_file() else 0
    return f"score: interrupted; {n} answers kept in {kept} for the next run"


def interrupted(out_dir: str | Path) -> None:
    """Ctrl-C: one line, the earlier outputs untouched, the answers so far kept for a rerun."""
    print(interrupted_line(out_dir), file=sys.stderr)
    sys.exit(130)


if __name__ == "__main__":
    main()
