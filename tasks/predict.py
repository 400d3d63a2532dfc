"""Read receipts: image(s) in, JSON out, from a merged model directory or an MLflow model URI.

python -m tasks.predict --model artifacts/merged receipt.png [more.png ...]
python -m tasks.predict --model models:/receipt-llava@champion receipt.png
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from tasks.core import cli
from tasks.inference.generation import Settings
from tasks.inference.reader import BadModel, ReceiptReader, open_image


def served_json_schema(model, asked: bool | None) -> bool:
    """The `json_schema` setting a loaded version answers with: `asked`, or its registered default."""
    if asked is not None:
        return asked
    specs = {p.name: p for p in model.metadata.signature.params.params}
    return bool(specs["json_schema"].default)


def predict(
    model: str, paths: list[str], settings: Settings, json_schema: bool | None = None
) -> list[dict[str, Any]]:
    """Read the images with a model dir (under `settings`) or an MLflow model URI (under the
    settings it was registered with); `json_schema`, when given, overrides either's."""
    images = [open_image(p) for p in paths]  # all images checked before the model loads
    if model.startswith(("models:/", "runs:/")):
        import mlflow.pyfunc
        import pandas as pd
        from mlflow.exceptions import MlflowException

        from tasks.registry.tracking import tracking_uri

        mlflow.set_tracking_uri(tracking_uri())
        try:
            pyfunc = mlflow.pyfunc.load_model(model)
        except MlflowException as exc:
            raise BadModel(
                f"{model}: cannot load it from {tracking_uri()} ({exc.message})"
            ) from exc
        held = served_json_schema(pyfunc, json_schema)
        frame = pyfunc.predict(
            pd.DataFrame({"image": [Path(p).read_bytes() for p in paths]}),
            params={"json_schema": held} if json_schema is not None else None,
        )
        return [
            {
                "image": p,
                "json": json.loads(j),
                "valid_json": bool(v),
                "raw": r,
                "warnings": json.loads(w),
            }
            for p, j, v, r, w in zip(
                paths,
                frame["json"],
                frame["valid_json"],
                frame["raw"],
                frame["warnings"],
                strict=True,
            )
        ]
    if not (Path(model) / "config.json").is_file():
        raise BadModel(
            f"{model}: no model directory here (config.json missing); `make run` writes "
            "artifacts/merged, or give a registry URI such as models:/receipt-llava@champion"
        )
    reader = ReceiptReader(model, settings)
    read = reader.read(images, json_schema=json_schema)
    return [{"image": p, **r} for p, r in zip(paths, read, strict=True)]


def main(argv: list[str] | None = None) -> None:
    ap = cli.parser(__doc__, paths=("merged",))
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
    ap.add_argument("images", nargs="+")
    cli.run("predict", ap, _predict, argv)


def _predict(a, p) -> None:
    for r in predict(a.model or a.merged, a.images, Settings.from_params(p), a.json_schema):
        row = {"image": r["image"], "json": r["json"], "valid_json": r["valid_json"]}
        if r["warnings"]:
            row["warnings"] = r["warnings"]
            print(f"predict: {r['image']}: warning: {'; '.join(r['warnings'])}", file=sys.stderr)
        print(json.dumps(row, ensure_ascii=False))


if __name__ == "__main__":
    main()
