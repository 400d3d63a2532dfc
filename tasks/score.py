"""Batch scoring: a folder of receipt images through a registered version (the champion).

    python -m tasks.score --dir new_receipts/ [--out reports/score] [--version N] [--repo .]

Every file under the folder (hidden ones aside, subfolders included, in sorted order) gets one
line in `<out>/predictions.jsonl`: the answer of the registered pyfunc (the same code that
`mlflow models serve` runs), or the reason it could not be read. Nothing is dropped.
`<out>/score.json` records the model (name, version, run, digest) and the input's hash
(sha256 over each file's relative path and content hash), so a scoring can be traced and
repeated. Both are written atomically: a failed run leaves the previous output in place.
The Prefect flow `flows/score.py` wraps this with progress and a table artifact.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tasks.core import cli
from tasks.core.digest import tree_digest
from tasks.core.errors import MissingInput
from tasks.core.io import atomic_dir, write_json_atomic


def input_files(folder: str | Path) -> list[Path]:
    """Every non-hidden file under folder, sorted by relative path."""
    root = Path(folder)
    if not root.is_dir():
        raise MissingInput(f"{root}: not a folder of receipt images")
    return sorted(
        p
        for p in root.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)
    )


def input_digest(root: Path, files: list[Path]) -> str:
    return tree_digest(root, files)


def model_uri(name: str, version: str | None) -> str:
    return f"models:/{name}/{version}" if version else f"models:/{name}@champion"


def run_score(
    folder: str | Path,
    out_dir: str | Path,
    name: str,
    version: str | None = None,
    repo: str | Path = ".",
    batch_size: int = 8,
    progress: Callable[[int, int], None] | None = None,
    json_schema: bool | None = None,
) -> dict[str, Any]:
    """Score every file under `folder` with version `version` of `name` (default: the champion);
    write predictions.jsonl and score.json to out_dir; return the summary. `json_schema`
    (constrained decoding) defaults to what the version was registered with."""
    from tasks.predict import served_json_schema

    started = time.perf_counter()
    root = Path(folder)
    files = input_files(root)
    mv, model = load_version(name, version, repo)
    json_schema = served_json_schema(model, json_schema)
    rows: list[dict[str, Any]] = []
    for start in range(0, len(files), batch_size):
        rows += score_files(model, root, files[start : start + batch_size], json_schema)
        if progress is not None:
            progress(len(rows), len(files))
    summary = {
        "model": {
            "name": name,
            "version": mv.version,
            "uri": model_uri(name, mv.version),
            "asked": model_uri(name, version),
            "run_id": mv.run_id,
            "model_digest": (mv.tags or {}).get("model_digest"),
            "json_schema": json_schema,
        },
        "input": {
            "dir": str(root.resolve()),
            "files": len(files),
            "sha256": input_digest(root, files),
        },
        "scored": sum(1 for r in rows if not r["error"]),
        "errors": sum(1 for r in rows if r["error"]),
        "valid_json": sum(1 for r in rows if r.get("valid_json")),
        "seconds": round(time.perf_counter() - started, 2),
    }
    with atomic_dir(out_dir) as tmp:
        with (tmp / "predictions.jsonl").open("w") as out:
            for r in rows:
                out.write(json.dumps({**r, "model_version": mv.version}, ensure_ascii=False) + "\n")
        write_json_atomic(tmp / "score.json", summary)
    return {**summary, "rows": rows}


def load_version(name: str, version: str | None, repo: str | Path):
    """(model version, loaded pyfunc) of `version` (default: the champion); MissingInput if the
    registry has no such version."""
    import mlflow

    from tasks.registry.lineage import version_of
    from tasks.registry.tracking import tracking_uri

    mlflow.set_tracking_uri(tracking_uri(repo))
    mv = version_of(mlflow.MlflowClient(), name, version, None)
    return mv, mlflow.pyfunc.load_model(model_uri(name, mv.version))


def score_files(model, root: Path, files: list[Path], json_schema: bool) -> list[dict[str, Any]]:
    """One row per file: the pyfunc's answer, or the reason the file is no readable image."""
    import pandas as pd

    from tasks.inference.reader import BadImage, open_image

    rows: list[dict[str, Any]] = []
    good: list[tuple[int, bytes]] = []
    for f in files:
        rel = f.relative_to(root).as_posix()
        data = f.read_bytes()
        rows.append({"file": rel, "sha256": hashlib.sha256(data).hexdigest()})
        try:
            open_image(data, name=rel)  # the reason, named, instead of a failed batch
        except BadImage as exc:
            rows[-1].update(error=str(exc))
        else:
            good.append((len(rows) - 1, data))
    if good:
        frame = pd.DataFrame({"image": [d for _, d in good]})
        answers = model.predict(frame, params={"json_schema": json_schema})
        for (i, _), a in zip(good, answers.to_dict("records"), strict=True):
            rows[i].update(
                json=json.loads(a["json"]),
                valid_json=bool(a["valid_json"]),
                raw=a["raw"],
                warnings=json.loads(a["warnings"]),
                error=None,
            )
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

    def body(a, p) -> str:
        name = p.register_.model_name
        s = run_score(a.dir, a.score, name, a.version, a.repo, json_schema=a.json_schema)
        return (
            f"score: {s['scored']} read, {s['errors']} not readable, of {s['input']['files']} "
            f"files with {s['model']['uri']} -> {a.score}/predictions.jsonl"
        )

    cli.run("score", ap, body, argv)


if __name__ == "__main__":
    main()
