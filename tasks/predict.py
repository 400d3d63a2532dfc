"""Read receipts: image(s) in, JSON out, from a merged model directory or an MLflow model URI.

python -m tasks.predict --model artifacts/merged receipt.png [more.png ...]
python -m tasks.predict --model models:/receipt-llava@champion receipt.png
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

from tasks.config import load_params
from tasks.generation import Settings, answers


class BadImage(ValueError):
    pass


def open_image(source: str | Path | bytes, name: str | None = None) -> Image.Image:
    """Decode an image from a path or bytes; a clear error for a missing or corrupt file."""
    label = name or (str(source) if not isinstance(source, bytes) else "<bytes>")
    try:
        data = source if isinstance(source, bytes) else Path(source).read_bytes()
    except FileNotFoundError as exc:
        raise BadImage(f"{label}: no such file") from exc
    try:
        img = Image.open(io.BytesIO(data))
        img.load()
    except (UnidentifiedImageError, OSError) as exc:
        raise BadImage(f"{label}: not a readable image ({exc})") from exc
    return img.convert("RGB")


class ReceiptReader:
    """A loaded model + processor that turns receipt images into gt_parse dicts."""

    def __init__(
        self,
        model_dir: str | Path,
        settings: Settings,
        base: str | None = None,
        revision: str | None = None,
    ):
        """`model_dir` is a merged model; with `base`, it is an adapter merged onto that base at load."""
        from tasks.modeling import load_model, load_processor

        kw: dict[str, Any] = {"compute_dtype": settings.dtype, "attn": settings.attn}
        if base is None:
            self.model = load_model(str(model_dir), **kw).eval()
        else:
            from peft import PeftModel

            base_model = load_model(base, revision=revision, **kw)
            self.model = (
                PeftModel.from_pretrained(base_model, str(model_dir)).merge_and_unload().eval()
            )
        self.processor = load_processor(str(model_dir))
        self.settings = settings

    def read(self, images: list[Image.Image]) -> list[dict[str, Any]]:
        from tasks.receipt_json import is_valid_json, parse_target

        outputs = answers(self.model, self.processor, images, self.settings)
        return [
            {"json": parse_target(o), "valid_json": is_valid_json(o), "raw": o} for o in outputs
        ]


def predict(model: str, paths: list[str], settings: Settings) -> list[dict[str, Any]]:
    """Read the images with a model dir (under `settings`) or an MLflow model URI (under the
    settings it was registered with)."""
    images = [open_image(p) for p in paths]  # all images checked before the model loads
    if model.startswith(("models:/", "runs:/")):
        import mlflow.pyfunc
        import pandas as pd

        from tasks.tracking import tracking_uri

        mlflow.set_tracking_uri(tracking_uri())
        pyfunc = mlflow.pyfunc.load_model(model)
        frame = pyfunc.predict(pd.DataFrame({"image": [Path(p).read_bytes() for p in paths]}))
        return [
            {"image": p, "json": json.loads(j), "valid_json": bool(v), "raw": r}
            for p, j, v, r in zip(
                paths, frame["json"], frame["valid_json"], frame["raw"], strict=True
            )
        ]
    reader = ReceiptReader(model, settings)
    return [{"image": p, **r} for p, r in zip(paths, reader.read(images), strict=True)]


def main(argv: list[str] | None = None) -> None:
    from tasks.io import quiet_telemetry

    quiet_telemetry()
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--model", default="artifacts/merged", help="merged model directory")
    ap.add_argument("--params", default="params.yaml", help="settings for a model directory")
    ap.add_argument("images", nargs="+")
    args = ap.parse_args(argv)
    try:
        settings = Settings.from_params(load_params(args.params))
        results = predict(args.model, args.images, settings)
    except BadImage as exc:
        print(f"predict: {exc}", file=sys.stderr)
        sys.exit(2)
    for r in results:
        print(
            json.dumps(
                {"image": r["image"], "json": r["json"], "valid_json": r["valid_json"]},
                ensure_ascii=False,
            )
        )


if __name__ == "__main__":
    main()
