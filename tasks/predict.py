"""Read receipts: image(s) in, JSON out, from a merged model directory or an MLflow model URI.

    python -m tasks.predict --model artifacts/merged receipt.png [more.png ...]
    python -m tasks.predict --model models:/receipt-llava@champion receipt.png

One JSON line per file, in order: its answer (with its confidence and any warnings), or the
reason it is no readable image. A registered version warns under its own low-confidence
threshold; a model directory under `--min-confidence`, which for the pipeline's own
(paths.merged) defaults to the one its evaluation recorded (paths.metrics). Exit
code 1 when any file could not be read, 2 for a usage error (bad params, no such model).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from tasks.core import cli
from tasks.core.io import read_json
from tasks.inference.generation import Settings
from tasks.inference.reader import BadImage, BadModel, ReceiptReader, from_served, open_image


def served_json_schema(signature, asked: bool | None) -> bool:
    """The `json_schema` setting a version (its signature) answers with: `asked`, or its
    registered default."""
    if asked is not None:
        return asked
    specs = {p.name: p for p in signature.params.params}
    return bool(specs["json_schema"].default)


def predict(
    model: str, paths: list[str], settings: Settings, json_schema: bool | None = None
) -> list[dict[str, Any]]:
    """One row per path, in order: the answer read with a model dir (under `settings`) or an
    MLflow model URI (under the settings it was registered with), or `error`, the reason the
    file is no readable image. `json_schema`, when given, overrides either's setting."""
    registry = model.startswith(("models:/", "runs:/"))
    if not registry and not (Path(model) / "config.json").is_file():
        raise BadModel(
            f"{model}: no model directory here (config.json missing); `make run` writes "
            "artifacts/merged, or give a registry URI such as models:/receipt-llava@champion"
        )
    rows: list[dict[str, Any]] = []
    good: list[tuple[int, Any]] = []
    for p in paths:
        try:
            good.append((len(rows), open_image(p)))
            rows.append({"image": p})
        except BadImage as exc:
            rows.append({"image": p, "error": str(exc)})
    if good:
        images = [im for _, im in good]
        read = (
            _read_registered(model, [paths[i] for i, _ in good], json_schema)
            if registry
            else ReceiptReader(model, settings).read(images, json_schema=json_schema)
        )
        for (i, _), answer in zip(good, read, strict=True):
            rows[i] |= answer
    return rows


def _read_registered(uri: str, paths: list[str], json_schema: bool | None) -> list[dict]:
    """Answers of a registered version's pyfunc (what `make serve` runs) for image files."""
    import pandas as pd

    from tasks.registry.tracking import load_pyfunc

    pyfunc = load_pyfunc(uri)
    held = served_json_schema(pyfunc.metadata.signature, json_schema)
    frame = pyfunc.predict(
        pd.DataFrame({"image": [Path(p).read_bytes() for p in paths]}),
        params={"json_schema": held} if json_schema is not None else None,
    )
    return [from_served(a) for a in frame.to_dict("records")]


def main(argv: list[str] | None = None) -> None:
    ap = cli.parser(__doc__, paths=("merged", "metrics"))
    ap.add_argument(
        "--model",
        default=None,
        help="a merged model directory (default: paths.merged) or an MLflow model URI",
    )
    ap.add_argument(
        "--json-schema",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="hold answers to CORD's JSON schema (default: the params' or the version's)",
    )
    ap.add_argument(
        "--min-confidence",
        type=float,
        default=None,
        help="a model directory's low-confidence threshold (mean value log-probability)",
    )
    ap.add_argument("images", nargs="+")
    cli.run("predict", ap, _predict, argv)


def _predict(a, p) -> None:
    """A JSON line per file on stdout (the answer, or `error`); warnings and failures also
    on stderr. Exit 1 when any file could not be read."""
    threshold = a.min_confidence
    own = Path(a.model or a.merged).resolve() == Path(a.merged).resolve()
    if threshold is None and own and Path(a.metrics).is_file():
        threshold = read_json(a.metrics).get("confidence_threshold")  # what evaluate picked
    settings = Settings.from_params(p).but(min_confidence=threshold)
    rows = predict(a.model or a.merged, a.images, settings, a.json_schema)
    for r in rows:
        if "error" in r:
            print(f"predict: {r['error']}", file=sys.stderr)
            print(json.dumps({"image": r["image"], "error": r["error"]}, ensure_ascii=False))
            continue
        row = {k: r[k] for k in ("image", "json", "valid_json", "confidence")}
        if r["warnings"]:
            row["warnings"] = r["warnings"]
            print(f"predict: {r['image']}: warning: {'; '.join(r['warnings'])}", file=sys.stderr)
        print(json.dumps(row, ensure_ascii=False))
    if any("error" in r for r in rows):
        sys.exit(1)


if __name__ == "__main__":
    main()
