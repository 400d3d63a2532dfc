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

from tasks.io import atomic_dir, quiet_telemetry, write_json_atomic


def input_files(folder: str | Path) -> list[Path]:
    """Every non-hidden file under folder, sorted by relative path."""
    root = Path(folder)
    if not root.is_dir():
        raise NotADirectoryError(f"score: {root} is not a directory of receipt images")
    return sorted(
        p
        for p in root.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)
    )


def input_digest(root: Path, files: list[Path]) -> str:
    h = hashlib.sha256()
    for f in files:
        h.update(f"{f.relative_to(root).as_posix()}\0".encode())
        h.update(hashlib.sha256(f.read_bytes()).digest())
    return h.hexdigest()


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
    import mlflow
    import pandas as pd

    from tasks.predict import BadImage, open_image, served_json_schema
    from tasks.tracking import tracking_uri

    started = time.perf_counter()
    root = Path(folder)
    files = input_files(root)
    client = mlflow.MlflowClient(tracking_uri=tracking_uri(repo))
    mv = (
        client.get_model_version(name, version)
        if version
        else client.get_model_version_by_alias(name, "champion")
    )
    mlflow.set_tracking_uri(tracking_uri(repo))
    model = mlflow.pyfunc.load_model(model_uri(name, mv.version))
    json_schema = served_json_schema(model, json_schema, model_uri(name, mv.version))
    rows: list[dict[str, Any]] = []
    for start in range(0, len(files), batch_size):
        chunk = files[start : start + batch_size]
        good: list[tuple[int, bytes]] = []
        for f in chunk:
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
            answers = model.predict(
                pd.DataFrame({"image": [d for _, d in good]}), params={"json_schema": json_schema}
            )
            for (i, _), a in zip(good, answers.to_dict("records"), strict=True):
                rows[i].update(
                    json=json.loads(a["json"]),
                    valid_json=bool(a["valid_json"]),
                    raw=a["raw"],
                    warnings=json.loads(a["warnings"]),
                    error=None,
                )
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


def main(argv: list[str] | None = None) -> None:
    from tasks.config import load_params

    quiet_telemetry()
    ap = argparse.ArgumentParser(description="Score a folder of receipt images.")
    ap.add_argument("--dir", required=True, help="folder of receipt images")
    ap.add_argument("--out", default="reports/score")
    ap.add_argument("--version", default=None, help="a registered version (default: champion)")
    ap.add_argument("--repo", default=".", help="the project (its mlflow.db, unless env says)")
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument(
        "--json-schema",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="hold answers to CORD's JSON schema (default: as the version was registered)",
    )
    args = ap.parse_args(argv)
    name = load_params(Path(args.repo) / args.params).register_.model_name
    s = run_score(args.dir, args.out, name, args.version, args.repo, json_schema=args.json_schema)
    print(
        f"score: {s['scored']} read, {s['errors']} not readable, of {s['input']['files']} files "
        f"with {s['model']['uri']} -> {args.out}/predictions.jsonl"
    )


if __name__ == "__main__":
    main()
